"""Partial re-training, DMM paper Appendix D.4 (I): discard the original model and train a new
one from scratch on the retain set, with the original training recipe (Appendix D.1) but for
fewer epochs, "on the same learning rate schedule" (the schedule is stretched over the shorter
run, e.g. one-cycle still warms up over its first ``warmup_fraction`` and decays to 0). Full
re-training is the oracle itself; the partial runs trade compute against unlearning quality.

The hyper-parameters are the fields of :class:`~unlearnflow.core.training.TrainConfig`: pass the
original models' ``training`` recipe and set ``epochs``. BatchNorm follows the recipe
(statistics recalibrated on the retain set), as in training from scratch. The model is
re-initialised in place with weights drawn from `seed` (``init_model``), so a partial retrain
with the original recipe's epochs and an oracle's seed reproduces that oracle.
"""

from __future__ import annotations

from typing import Any, Mapping

import torch
from torch import nn

from unlearnflow.core.models import Classifier, build_model
from unlearnflow.core.training import TrainConfig, fit, init_model
from unlearnflow.errors import UserError
from unlearnflow.methods.declarations import PARTIAL_RETRAIN_DEFAULTS, resolve
from unlearnflow.methods.request import MethodResult, UnlearningRequest


@torch.no_grad()
def reinitialise(model: nn.Module, seed: int) -> None:
    """Overwrite the parameters of `model` with a fresh initialisation drawn from `seed`."""
    if not isinstance(model, Classifier):
        raise UserError(f"partial_retrain: needs a model built by unlearnflow.core.models, got {type(model).__name__}")
    fresh = init_model(lambda: build_model(model.arch, model.input_shape, model.num_classes, **model.options), seed)
    for parameter, initial in zip(model.parameters(), fresh.parameters(), strict=True):
        parameter.copy_(initial)


def unlearn(model: nn.Module, request: UnlearningRequest, hp: Mapping[str, Any], seed: int) -> MethodResult:
    """Re-initialise `model` and train it on ``request.retain`` with the recipe in `hp`."""
    config = TrainConfig.from_mapping(resolve("partial_retrain", PARTIAL_RETRAIN_DEFAULTS, hp))
    reinitialise(model, seed)
    return MethodResult(fit(model, request.inputs, request.labels, config, seed, subset=request.retain))
