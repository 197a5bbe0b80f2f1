"""Unlearning methods: each edits a trained model in place and returns what it cost.

- ``gradient_ascent``: GA, DMM paper Appendix D.4 (II), ascend CE on the forget set;
- ``gradient_descent``: GD, Appendix D.4 (III), descend CE on the retain set;
- ``neggrad_plus``: NegGrad+ (Kurmanji et al. 2023), ``beta CE(retain) - (1 - beta) CE(forget)``;
- ``random_labels``: fine-tune on the forget set relabelled at random (and optionally the retain set);
- ``scrub``: SCRUB (Kurmanji et al. 2023), Appendix D.4 (IV), max/min KL to a frozen teacher;
- ``partial_retrain``: Appendix D.4 (I), train from scratch on the retain set for fewer epochs;
- ``oracle_matching``: OM, Algorithm C.1, towards given target logits (true oracle outputs);
- ``dmm``: Datamodel Matching, Algorithm C.3, OM towards DM-DIRECT's predicted oracle outputs;
- ``dm_direct``: DM-DIRECT, Algorithm C.2, predicts the oracle outputs from datamodels and
  edits no model (:data:`PREDICTORS`; its "unlearned models" are the predictions).

Every method trains through :func:`unlearnflow.training.fit`; fine-tuning keeps BatchNorm
statistics frozen. ``METHODS[name](model, request, hyperparameters, seed)`` returns a
:class:`~unlearnflow.training.FitStats` counting every example pushed through a network.
:func:`hyperparameters` fills in a method's defaults; ``GRIDS[name]`` is the sweep of the
paper's Appendix D.4 (or the public code's ranges) for the workflow to search.
"""

from __future__ import annotations

from typing import Any, Mapping

from ..errors import UserError
from . import (dm_direct, dmm, gradient_ascent, gradient_descent, neggrad_plus, oracle_matching, partial_retrain,
               random_labels, scrub)
from .common import Method, UnlearningRequest, resolve

__all__ = ["DATAMODEL_METHODS", "GRIDS", "METHODS", "PREDICTORS", "Method", "UnlearningRequest", "hyperparameters"]

_MODULES = {
    "gradient_ascent": gradient_ascent,
    "gradient_descent": gradient_descent,
    "neggrad_plus": neggrad_plus,
    "random_labels": random_labels,
    "scrub": scrub,
    "partial_retrain": partial_retrain,
    "oracle_matching": oracle_matching,
    "dmm": dmm,
    "dm_direct": dm_direct,
}

#: method name -> function(model, request, hyper-parameters, seed) -> FitStats
METHODS: dict[str, Method] = {name: module.unlearn for name, module in _MODULES.items() if hasattr(module, "unlearn")}

#: Methods that predict unlearned outputs instead of editing models.
PREDICTORS = frozenset(_MODULES) - frozenset(METHODS)

#: Methods whose targets come from datamodels (the workflow gives them a datamodels artifact).
DATAMODEL_METHODS = frozenset({"dm_direct", "dmm"})

#: method name -> {hyper-parameter: values to sweep}
GRIDS: dict[str, dict[str, list[Any]]] = {name: module.GRID for name, module in _MODULES.items()}


def hyperparameters(method: str, given: Mapping[str, Any]) -> dict[str, Any]:
    """The full hyper-parameters of `method`: `given` over its defaults (UserError if unknown)."""
    if method not in _MODULES:
        raise UserError(f"unknown unlearning method {method!r} (known: {', '.join(_MODULES)})")
    resolved = resolve(method, _MODULES[method].DEFAULTS, given)
    if method in DATAMODEL_METHODS:
        dm_direct.hyperparameters(dm_direct.prediction_hyperparameters(resolved))  # checks the construction
    return resolved
