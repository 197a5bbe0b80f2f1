"""Margins of logits, the quantity KLOM and U-LiRA compare (DMM paper, Section 3), and the oracle
halves a noise floor compares."""

from __future__ import annotations

import numpy as np
from scipy.special import logsumexp

from unlearnflow.errors import UserError


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


def oracle_halves(oracle_margins: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Two disjoint random halves of ``N // 2`` oracle models each (one permutation of `rng`):
    the two sides of a noise floor, which therefore holds for N/2 models per side."""
    half = len(oracle_margins) // 2
    if half < 2:
        raise UserError(f"the noise floor needs at least 4 oracle models, got {len(oracle_margins)}")
    order = rng.permutation(len(oracle_margins))
    return oracle_margins[order[:half]], oracle_margins[order[half : 2 * half]]
