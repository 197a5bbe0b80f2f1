"""Margins of logits, the quantity KLOM and U-LiRA compare (DMM paper, Section 3)."""

from __future__ import annotations

import numpy as np
from scipy.special import logsumexp


def margins(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Correct-class margin ``logit_y - logsumexp(logits of the other classes)``.

    `logits` has shape (..., points, classes) and `labels` shape (points,); the result has shape
    (..., points). Computed in float64 so that saturated logits do not lose the margin's sign.
    """
    logits = np.asarray(logits, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.int64)
    correct = np.take_along_axis(logits, np.broadcast_to(labels[:, None], logits.shape[:-1] + (1,)), axis=-1)[..., 0]
    others = logits.copy()
    np.put_along_axis(others, np.broadcast_to(labels[:, None], logits.shape[:-1] + (1,)), -np.inf, axis=-1)
    return correct - logsumexp(others, axis=-1)
