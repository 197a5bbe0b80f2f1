"""Oracle Matching (OM), DMM paper Algorithm C.1; with datamodel-predicted targets it is the
fine-tuning loop of Datamodel Matching (DMM, Algorithm C.3).

The fine-tuning set is the forget set repeated ``forget_multiplier`` times plus
``retain_multiplier * |F|`` retain points drawn once per seed (all retain points when that is
more); each epoch visits it in a fresh random order, minimising the squared error between the
model's logits and ``request.side["targets"]`` (the mean oracle logits for OM, DM-DIRECT predictions,
Algorithm C.2, for DMM), averaged over classes and batch like ``mse_loss``. Adam, no weight
decay, lr decayed by ``decay`` (0.95) per epoch, as in the DMM authors' public code; the
retain sample and the forget repetitions follow their ``oracle_matching`` (5x forget, 20x
retain, lr 5e-4, batch 256; a set smaller than a batch is one partial batch).
"""

from __future__ import annotations

from typing import Any, Mapping

import torch
from torch import nn

from unlearnflow.core.training import fit
from unlearnflow.dmm.declarations import ORACLE_MATCHING_DEFAULTS
from unlearnflow.errors import UserError
from unlearnflow.methods.common import fine_tune_config, rng
from unlearnflow.methods.declarations import resolve
from unlearnflow.methods.request import MethodResult, UnlearningRequest


def fine_tuning_set(request: UnlearningRequest, forget_multiplier: int, retain_multiplier: float,
                    seed: int) -> torch.Tensor:
    """Indices: the forget set `forget_multiplier` times, then a retain sample drawn once per seed."""
    if forget_multiplier < 1 or retain_multiplier < 0:
        raise UserError("oracle_matching: forget_multiplier must be >= 1 and retain_multiplier >= 0")
    size = min(int(retain_multiplier * len(request.forget)), len(request.retain))
    chosen = rng(seed, "oracle_matching").choice(len(request.retain), size, replace=False)
    sample = request.retain[torch.from_numpy(chosen).to(request.retain.device)]
    return torch.cat([request.forget.repeat(forget_multiplier), sample])


def squared_error(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Per-example mean over classes of (logit - target logit)^2."""
    return (logits - targets).square().mean(dim=1)


def unlearn(model: nn.Module, request: UnlearningRequest, hp: Mapping[str, Any], seed: int) -> MethodResult:
    """Fit the logits of the fine-tuning set to ``request.side["targets"]`` (BatchNorm frozen)."""
    hp = resolve("oracle_matching", ORACLE_MATCHING_DEFAULTS, hp)
    if "targets" not in request.side:
        raise UserError("oracle_matching: the request has no target logits (oracle or datamodel predictions)")
    subset = fine_tuning_set(request, hp["forget_multiplier"], hp["retain_multiplier"], seed)
    config = fine_tune_config(hp, schedule="exponential", gamma=hp["decay"])
    return MethodResult(fit(model, request.inputs, request.side["targets"], config, seed, subset=subset,
                            loss=squared_error))
