"""Read-out functions on model outputs: accuracy, prediction entropy, point groups.

These are the read-outs of the PGU paper (Section 4.1: error on the test, forget and retain
sets; entropy of the outputs on the forget set) and the per-group bookkeeping that KLOM
(DMM paper, Section 3: forget, retain and validation points) shares with them.

Shapes: `logits` is (models, points, classes) (any leading shape works), `labels` is
(points,) with integer classes.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import NamedTuple

import numpy as np
from scipy.special import log_softmax

from unlearnflow.errors import UserError


class Accuracy(NamedTuple):
    """Top-1 accuracy of each model (shape `logits.shape[:-2]`) and their mean."""

    per_model: np.ndarray
    mean: float


def check_logits(logits: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Return `logits` as float64 (..., points, classes) and `labels` as int64 (points,).

    Raises :class:`UserError` when the shapes disagree or a label is not a valid class.
    """
    logits = np.asarray(logits, dtype=np.float64)
    labels = np.asarray(labels)
    if logits.ndim < 2:
        raise UserError(f"logits must have shape (..., points, classes), got {logits.shape}")
    if labels.ndim != 1 or labels.shape[0] != logits.shape[-2]:
        raise UserError(f"labels must have shape ({logits.shape[-2]},) to match logits {logits.shape}, got {labels.shape}")
    if not np.issubdtype(labels.dtype, np.integer):
        raise UserError(f"labels must be integers, got dtype {labels.dtype}")
    if labels.size and (labels.min() < 0 or labels.max() >= logits.shape[-1]):
        raise UserError(f"labels must lie in [0, {logits.shape[-1]}), got [{labels.min()}, {labels.max()}]")
    return logits, labels.astype(np.int64)


def group_indices(groups: Mapping[str, np.ndarray], n_points: int) -> dict[str, np.ndarray]:
    """Turn each group (integer indices or a boolean mask over `n_points`) into sorted indices.

    Raises :class:`UserError` for a mask of the wrong length, an out-of-range index, a
    non-integer index array or an empty group.
    """
    out = {}
    for name, group in groups.items():
        group = np.asarray(group)
        if group.dtype == bool:
            if group.shape != (n_points,):
                raise UserError(f"group {name!r}: boolean mask has shape {group.shape}, expected ({n_points},)")
            index = np.flatnonzero(group)
        elif np.issubdtype(group.dtype, np.integer) and group.ndim == 1:
            if group.size and (group.min() < 0 or group.max() >= n_points):
                raise UserError(f"group {name!r}: indices must lie in [0, {n_points})")
            index = np.sort(group.astype(np.int64))
        else:
            raise UserError(f"group {name!r}: expected a 1-D integer index array or boolean mask, got {group.dtype} {group.shape}")
        if index.size == 0:
            raise UserError(f"group {name!r} is empty")
        out[name] = index
    return out


def accuracy(logits: np.ndarray, labels: np.ndarray) -> Accuracy:
    """Top-1 accuracy per model over all points, and the mean over models."""
    logits, labels = check_logits(logits, labels)
    if labels.size == 0:
        raise UserError("accuracy of zero points is undefined")
    per_model = (logits.argmax(axis=-1) == labels).mean(axis=-1)
    return Accuracy(per_model, float(np.mean(per_model)))


def group_accuracies(logits: np.ndarray, labels: np.ndarray, groups: Mapping[str, np.ndarray]) -> dict[str, Accuracy]:
    """:func:`accuracy` restricted to each group of points (indices or boolean masks)."""
    logits, labels = check_logits(logits, labels)
    return {name: accuracy(logits[..., index, :], labels[index]) for name, index in group_indices(groups, labels.size).items()}


def prediction_entropy(logits: np.ndarray) -> np.ndarray:
    """Entropy (nats) of the softmax of `logits` over the last axis; shape `logits.shape[:-1]`.

    Computed from log-softmax, so saturated logits give 0 rather than NaN.
    """
    logits = np.asarray(logits, dtype=np.float64)
    if logits.ndim < 1 or logits.shape[-1] == 0:
        raise UserError(f"logits must have a non-empty class axis, got shape {logits.shape}")
    log_p = log_softmax(logits, axis=-1)
    return -np.sum(np.exp(log_p) * np.nan_to_num(log_p, neginf=0.0), axis=-1)  # 0 log 0 = 0


def remove_class_rows(logits: np.ndarray, classes: Iterable[int]) -> np.ndarray:
    """`logits` (..., classes) as if the rows of `classes` were removed from the last linear layer.

    For class removal the PGU paper removes "the rows corresponding to forgetting classes in the
    last linear layer" of a model before evaluating it (Section 4.3): those classes can no longer
    be predicted. Their logits become -inf (the columns stay, so class ids keep their meaning).
    """
    classes = np.asarray(list(classes), dtype=np.int64)
    logits = np.array(logits, dtype=np.float64)
    if classes.size and (classes.min() < 0 or classes.max() >= logits.shape[-1]):
        raise UserError(f"classes {classes.tolist()} are not all among the {logits.shape[-1]} outputs")
    logits[..., classes] = -np.inf
    return logits


def exclude_classes(labels: np.ndarray, classes: Iterable[int]) -> np.ndarray:
    """Boolean mask of the points whose label is not in `classes`.

    For class removal (PGU paper, Section 4.3) the retain-test set is the test set without the
    forgotten classes: ``test_logits[:, exclude_classes(test_labels, forgotten)]``.
    """
    labels = np.asarray(labels)
    classes = np.asarray(list(classes))
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise UserError(f"labels must be a 1-D integer array, got {labels.dtype} {labels.shape}")
    if classes.size and not np.issubdtype(classes.dtype, np.integer):
        raise UserError(f"classes must be integers, got {classes.dtype}")
    return ~np.isin(labels, classes)
