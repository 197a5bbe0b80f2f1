"""Datamodel Matching (DMM), DMM paper Algorithm C.3: Oracle Matching (Algorithm C.1) towards the
outputs that DM-DIRECT (Algorithm C.2) predicts for a model retrained without the forget set.

The fine-tuning loop is :mod:`.oracle_matching`'s; the hyper-parameters are its own plus
DM-DIRECT's (``construction``, ``diagonal_only``, ``scale``), which say how the targets in
``request.side["targets"]`` were built from the model's own logits (:func:`.dm_direct.predict`; the
workflow's bank loop builds them per configuration before calling :func:`unlearn`).
"""

from __future__ import annotations

from typing import Any, Mapping

from torch import nn

from unlearnflow.dmm import oracle_matching
from unlearnflow.dmm.declarations import DMM_DEFAULTS, ORACLE_MATCHING_DEFAULTS
from unlearnflow.methods.declarations import resolve
from unlearnflow.methods.request import MethodResult, UnlearningRequest


def unlearn(model: nn.Module, request: UnlearningRequest, hp: Mapping[str, Any], seed: int) -> MethodResult:
    """Oracle Matching towards ``request.side["targets"]`` (the DM-DIRECT predictions for this model)."""
    hp = resolve("dmm", DMM_DEFAULTS, hp)
    fine_tuning = {key: value for key, value in hp.items() if key in ORACLE_MATCHING_DEFAULTS}
    return oracle_matching.unlearn(model, request, fine_tuning, seed)
