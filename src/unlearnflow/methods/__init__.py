"""Unlearning methods: each edits a trained model in place and returns what it cost.

- ``gradient_ascent``: GA, DMM paper Appendix D.4 (II), ascend CE on the forget set;
- ``gradient_descent``: GD, Appendix D.4 (III), descend CE on the retain set;
- ``neggrad_plus``: NegGrad+ (Kurmanji et al. 2023), ``beta CE(retain) - (1 - beta) CE(forget)``;
- ``random_labels``: fine-tune on the forget set relabelled at random (and optionally the retain set);
- ``scrub``: SCRUB (Kurmanji et al. 2023), Appendix D.4 (IV), max/min KL to a frozen teacher;
- ``partial_retrain``: Appendix D.4 (I), train from scratch on the retain set for fewer epochs;
- ``oracle_matching``: OM, Algorithm C.1 (the loop of DMM, Algorithm C.3, given datamodel targets).

Every method trains through :func:`unlearnflow.training.fit`; fine-tuning keeps BatchNorm
statistics frozen. ``METHODS[name](model, request, hyperparameters, seed)`` returns a
:class:`~unlearnflow.training.FitStats` counting every example pushed through a network.
:func:`hyperparameters` fills in a method's defaults; ``GRIDS[name]`` is the sweep of the
paper's Appendix D.4 (or the public code's ranges) for the workflow to search.
"""

from __future__ import annotations

from typing import Any, Mapping

from ..errors import UserError
from . import (gradient_ascent, gradient_descent, neggrad_plus, oracle_matching, partial_retrain, random_labels,
               scrub)
from .common import Method, UnlearningRequest, resolve

__all__ = ["GRIDS", "METHODS", "Method", "UnlearningRequest", "hyperparameters"]

_MODULES = {
    "gradient_ascent": gradient_ascent,
    "gradient_descent": gradient_descent,
    "neggrad_plus": neggrad_plus,
    "random_labels": random_labels,
    "scrub": scrub,
    "partial_retrain": partial_retrain,
    "oracle_matching": oracle_matching,
}

#: method name -> function(model, request, hyper-parameters, seed) -> FitStats
METHODS: dict[str, Method] = {name: module.unlearn for name, module in _MODULES.items()}

#: method name -> {hyper-parameter: values to sweep}
GRIDS: dict[str, dict[str, list[Any]]] = {name: module.GRID for name, module in _MODULES.items()}


def hyperparameters(method: str, given: Mapping[str, Any]) -> dict[str, Any]:
    """The full hyper-parameters of `method`: `given` over its defaults (UserError if unknown)."""
    if method not in _MODULES:
        raise UserError(f"unknown unlearning method {method!r} (known: {', '.join(_MODULES)})")
    return resolve(method, _MODULES[method].DEFAULTS, given)
