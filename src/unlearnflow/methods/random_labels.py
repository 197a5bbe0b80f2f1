"""Random Labels: fine-tune on the forget set relabelled with uniformly random *wrong* classes
(the "random labeling" baseline of Graves et al. 2021, Amnesiac ML, as used by Kurmanji et al.
2023), in two registered forms:

- ``random_labels`` (:func:`unlearn`): optionally together with the retain set under its true
  labels (``with_retain``), so it takes the training set; not source-free. Not one of the DMM
  paper's Appendix D.4 baselines; it is swept over the same lr x epochs grid as GA and GD.
- ``random_labels_forget`` (:func:`unlearn_forget_only`): the forget samples alone, a
  :class:`~unlearnflow.methods.request.ForgetRequest`; source-free. This is the "Random Labels"
  baseline of Table 5 of the source-free unlearning paper ("randomly reassigns labels (excluding
  the actual class) to forget samples and fine-tunes the model with this modified data").

The wrong labels are drawn once per seed (``label + U{1..C-1} mod C``, :func:`random_wrong_labels`),
independently of the batch order, and stay fixed for all epochs. Both forms draw the same labels
and run the same fit, so ``random_labels_forget`` gives exactly the model of ``random_labels``
with ``with_retain: false``.
"""

from __future__ import annotations

from typing import Any, Mapping

import torch
from torch import nn

from unlearnflow.core.training import FitStats, fit
from unlearnflow.errors import UserError
from unlearnflow.methods.common import fine_tune_config, rng
from unlearnflow.methods.declarations import RANDOM_LABELS_DEFAULTS, RANDOM_LABELS_FORGET_DEFAULTS, resolve
from unlearnflow.methods.request import ForgetRequest, MethodResult, UnlearningRequest


def random_wrong_labels(labels: torch.Tensor, num_classes: int, seed: int) -> torch.Tensor:
    """Each of `labels` replaced by a uniformly random different class, drawn once per seed."""
    if num_classes < 2:
        raise UserError("random_labels: needs at least 2 classes")
    shifts = rng(seed, "random_labels").integers(1, num_classes, len(labels))
    return (labels + torch.from_numpy(shifts).to(labels.device)) % num_classes


def fit_relabelled_forget_samples(model: nn.Module, request: ForgetRequest, hp: Mapping[str, Any],
                                  seed: int) -> FitStats:
    """Minimise CE against the forget samples under their random wrong labels (BatchNorm frozen)."""
    wrong = random_wrong_labels(request.forget_labels, request.num_classes, seed)
    return fit(model, request.forget_inputs, wrong, fine_tune_config(hp), seed)


def unlearn(model: nn.Module, request: UnlearningRequest, hp: Mapping[str, Any], seed: int) -> MethodResult:
    """Minimise CE against the relabelled forget set, and the retain set if ``with_retain``."""
    hp = resolve("random_labels", RANDOM_LABELS_DEFAULTS, hp)
    if not hp["with_retain"]:
        return MethodResult(fit_relabelled_forget_samples(model, request, hp, seed))
    labels = request.labels.clone()
    labels[request.forget] = random_wrong_labels(request.forget_labels, request.num_classes, seed)
    return MethodResult(fit(model, request.inputs, labels, fine_tune_config(hp), seed, subset=request.trained_on))


def unlearn_forget_only(model: nn.Module, request: ForgetRequest, hp: Mapping[str, Any], seed: int) -> MethodResult:
    """Minimise CE against the relabelled forget samples alone; source-free."""
    hp = resolve("random_labels_forget", RANDOM_LABELS_FORGET_DEFAULTS, hp)
    return MethodResult(fit_relabelled_forget_samples(model, request, hp, seed))
