"""Gradient Ascent (GA), DMM paper Appendix D.4 (II): fine-tune on the forget set with the
negated cross-entropy, so each step increases the forget-set loss. Nothing holds the retain set
in place, and nothing stops the ascent at the oracle's loss (the "missing targets" problem of
Sec. 3), which is why the paper tunes lr and epochs per forget set.
"""

from __future__ import annotations

from typing import Any, Mapping

from torch import nn

from unlearnflow.core.training import cross_entropy_loss, fit
from unlearnflow.methods.common import fine_tune_config, negated
from unlearnflow.methods.declarations import GRADIENT_ASCENT_DEFAULTS, resolve
from unlearnflow.methods.request import ForgetRequest, MethodResult


def unlearn(model: nn.Module, request: ForgetRequest, hp: Mapping[str, Any], seed: int) -> MethodResult:
    """Minimise -CE on the forget samples for ``epochs`` epochs (BatchNorm frozen); source-free."""
    hp = resolve("gradient_ascent", GRADIENT_ASCENT_DEFAULTS, hp)
    return MethodResult(fit(model, request.forget_inputs, request.forget_labels, fine_tune_config(hp), seed,
                            loss=negated(cross_entropy_loss())))
