"""Gradient Descent (GD), DMM paper Appendix D.4 (III): fine-tune the original model on the
retain set with cross-entropy (provable unlearning in the convex case, Neel et al. 2021; in deep
networks it barely moves the forget-set predictions).
"""

from __future__ import annotations

from typing import Any, Mapping

from torch import nn

from unlearnflow.core.training import fit
from unlearnflow.methods.common import fine_tune_config
from unlearnflow.methods.declarations import GRADIENT_DESCENT_DEFAULTS, resolve
from unlearnflow.methods.request import MethodResult, UnlearningRequest


def unlearn(model: nn.Module, request: UnlearningRequest, hp: Mapping[str, Any], seed: int) -> MethodResult:
    """Minimise CE on ``request.retain`` for ``epochs`` epochs (BatchNorm frozen)."""
    hp = resolve("gradient_descent", GRADIENT_DESCENT_DEFAULTS, hp)
    return MethodResult(fit(model, request.inputs, request.labels, fine_tune_config(hp), seed, subset=request.retain))
