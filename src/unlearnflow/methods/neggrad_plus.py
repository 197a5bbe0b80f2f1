"""NegGrad+ (Kurmanji et al., NeurIPS 2023, "Towards Unbounded Machine Unlearning", Sec. 5):
minimise ``beta * CE(retain) - (1 - beta) * CE(forget)``, gradient descent on the retain set
and ascent on the forget set in the same steps. Not one of the DMM paper's Appendix D.4
baselines; it is the deep-network form of the GD+GA method of the paper's linear analysis
(Sec. 5, Appendix E.3), whose stochastic version likewise draws each minibatch uniformly from
the whole training set and ascends only on the forget points it contains.

One fit over retain + forget. Kurmanji et al. pair every retain batch with a forget batch and
take the two batch means; here each step draws one batch from the union, and every example
carries a signed weight in the targets tensor, ``w = beta * N / |R|`` on retain points and
``w = -(1 - beta) * N / |F|`` on forget points (N = |R| + |F|), next to its label. A batch of
B uniform draws then has mean weighted CE whose expectation is exactly
``beta * mean_R CE - (1 - beta) * mean_F CE``, the NegGrad+ objective: the same objective and
the same per-epoch compute as GD on the union, with a noisier forget term per step.
``beta = 1`` is GD on the retain set (forget points ride along with weight 0).
"""

from __future__ import annotations

from typing import Any, Mapping

import torch
from torch import nn

from unlearnflow.core.training import cross_entropy_loss, fit
from unlearnflow.errors import UserError
from unlearnflow.methods.common import fine_tune_config, split_labels, with_labels
from unlearnflow.methods.declarations import NEGGRAD_PLUS_DEFAULTS, resolve
from unlearnflow.methods.request import MethodResult, UnlearningRequest

_CROSS_ENTROPY = cross_entropy_loss()


def signed_weights(request: UnlearningRequest, beta: float) -> torch.Tensor:
    """Per-example weights (n,): beta*N/|R| on retain, -(1-beta)*N/|F| on forget, 0 elsewhere."""
    n_retain, n_forget = len(request.retain), len(request.forget)
    weights = torch.zeros(len(request.inputs), device=request.inputs.device)
    weights[request.retain] = beta * (n_retain + n_forget) / n_retain
    weights[request.forget] = -(1 - beta) * (n_retain + n_forget) / n_forget
    return weights


def weighted_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Per-example ``weight * CE`` with targets (B, 2) = [weight, label]."""
    weights, labels = split_labels(targets)
    return weights[:, 0] * _CROSS_ENTROPY(logits, labels)


def unlearn(model: nn.Module, request: UnlearningRequest, hp: Mapping[str, Any], seed: int) -> MethodResult:
    """Fit the signed-weight CE over retain + forget for ``epochs`` epochs (BatchNorm frozen)."""
    hp = resolve("neggrad_plus", NEGGRAD_PLUS_DEFAULTS, hp)
    if not 0 <= hp["beta"] <= 1:
        raise UserError(f"neggrad_plus: beta must be in [0, 1], got {hp['beta']}")
    targets = with_labels(signed_weights(request, hp["beta"])[:, None], request.labels)
    return MethodResult(fit(model, request.inputs, targets, fine_tune_config(hp), seed, subset=request.trained_on,
               loss=weighted_cross_entropy))
