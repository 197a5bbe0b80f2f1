"""Random Labels: fine-tune on the forget set relabelled with uniformly random *wrong* classes
(the "random labeling" baseline of Graves et al. 2021, Amnesiac ML, as used by Kurmanji et al.
2023), optionally together with the retain set under its true labels. Not one of the DMM
paper's Appendix D.4 baselines; it is swept over the same lr x epochs grid as GA and GD.

The wrong labels are drawn once per seed (``label + U{1..C-1} mod C``), independently of the
batch order, and stay fixed for all epochs.
"""

from __future__ import annotations

from typing import Any, Mapping

import torch
from torch import nn

from unlearnflow.core.training import fit
from unlearnflow.errors import UserError
from unlearnflow.methods.common import (
    EPOCH_GRID,
    FINE_TUNING,
    LR_GRID,
    fine_tune_config,
    resolve,
    rng,
)
from unlearnflow.methods.request import MethodResult, UnlearningRequest

DEFAULTS = {**FINE_TUNING, "with_retain": False}

#: lr x epochs as GA/GD (Appendix D.4), with and without the retain set.
GRID = {"lr": LR_GRID, "epochs": EPOCH_GRID, "with_retain": [False, True]}


def random_wrong_labels(request: UnlearningRequest, seed: int) -> torch.Tensor:
    """All labels, with each forget label replaced by a uniformly random different class."""
    if request.num_classes < 2:
        raise UserError("random_labels: needs at least 2 classes")
    shifts = rng(seed, "random_labels").integers(1, request.num_classes, len(request.forget))
    labels = request.labels.clone()
    forget_labels = labels[request.forget] + torch.from_numpy(shifts).to(labels.device)
    labels[request.forget] = forget_labels % request.num_classes
    return labels


def unlearn(model: nn.Module, request: UnlearningRequest, hp: Mapping[str, Any], seed: int) -> MethodResult:
    """Minimise CE against the relabelled forget set (and the retain set if ``with_retain``)."""
    hp = resolve("random_labels", DEFAULTS, hp)
    subset = request.trained_on if hp["with_retain"] else request.forget
    return MethodResult(fit(model, request.inputs, random_wrong_labels(request, seed), fine_tune_config(hp), seed,
               subset=subset))
