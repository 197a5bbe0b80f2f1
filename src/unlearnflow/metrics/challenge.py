"""The NeurIPS 2023 Machine Unlearning Challenge score (Triantafillou et al., "Are we making
progress in unlearning?", arXiv 2406.09073, Sec. 3; the challenge's evaluation code).

Per forget example, the *logit-scaled confidence* of its label, ``log p_y - log(1 - p_y)``, which
is the DMM paper's margin (:func:`unlearnflow.metrics.margins.margins`, clipped to ±45 ln 10 ~ ±103.6
as the challenge's code does by adding 1e-45 to both probabilities), is drawn N times from unlearned models and N times from retrained ones. The best attack of two
families tells the two samples apart: one threshold (the sample of larger median above it) and
two thresholds (the sample of smaller range between them). Each attack's false positive and
false negative rates give a privacy epsilon at ``delta = 1e-5``,
``max(log(1 - delta - FPR) - log FNR, log(1 - delta - FNR) - log FPR)``; an attack with FPR = FNR
= 0 separates the samples (epsilon infinite), one with exactly one of them 0 is discarded as a
small-sample artefact, and a sample whose range is under 1% of the other's counts as separated.
The example's epsilon is the best attack's, capped at 50. Examples score ``2^-b`` in bucket
``b = floor(epsilon / 0.5)`` for the buckets that end by ``ceil(ln(N - 1))`` (0 beyond), the
*forgetting quality* F is their mean, and the final score is
``F x (retain accuracy unlearned / retrained) x (test accuracy unlearned / retrained)``.

The thresholds are the challenge's: a grid of 100 per unit over both samples; for two
thresholds, the right one from the narrower sample's minimum plus its range, less 2, to its
maximum plus 2, and the left one within 2 of the right one less that range. (Every threshold at
the observed values, with any width, would be a stronger attack: at 64 models per side two
samples of one distribution would score about half as much.) Two samples of one distribution
score well below 1 at small N (the best of many attacks finds a gap by chance): the retrain row of
a report, retrained models against the oracles, is the score's floor at the run's N; the
challenge used N = 512.
"""

from __future__ import annotations

import math

import numpy as np

DELTA = 1e-5
EPSILON_CAP = 50.0
BUCKET_WIDTH = 0.5
THRESHOLDS_PER_UNIT = 100
#: how far the two-threshold attack's thresholds range beyond the narrower sample
BUFFER = 2.0
#: a sample whose range is below this fraction of the other's counts as separated from it
PEAKY_RATIO = 0.01
#: the largest |confidence| (log(1 / 1e-45)): the challenge's code adds 1e-45 to both probabilities
CONFIDENCE_CAP = 45 * math.log(10)


def _single_threshold_errors(positive: np.ndarray, negative: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(false negatives, false positives) of "positive when the confidence is >= t", t on a grid
    of THRESHOLDS_PER_UNIT per unit over both samples."""
    low, high = min(positive.min(), negative.min()), max(positive.max(), negative.max())
    thresholds = np.linspace(low, high, int(np.ceil((high - low) * THRESHOLDS_PER_UNIT)))
    return (np.searchsorted(np.sort(positive), thresholds, side="left"),
            len(negative) - np.searchsorted(np.sort(negative), thresholds, side="left"))


def _double_threshold_errors(inner: np.ndarray, outer: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(false negatives, false positives) of "`inner` when left <= confidence <= right" on the
    challenge's grids (module docstring)."""
    width = np.ptp(inner)
    low, high = inner.min() + width - BUFFER, inner.max() + BUFFER
    right = np.linspace(low, high, int(np.ceil((high - low) * THRESHOLDS_PER_UNIT)))
    offsets = np.linspace(-width - BUFFER, -width + BUFFER, int(np.ceil(2 * BUFFER * THRESHOLDS_PER_UNIT)))
    left = right[:, None] + offsets[None, :]

    def inside(sample: np.ndarray) -> np.ndarray:
        ordered = np.sort(sample)
        return np.maximum(np.searchsorted(ordered, right, side="right")[:, None]
                          - np.searchsorted(ordered, left, side="left"), 0).ravel()
    return len(inner) - inside(inner), inside(outer)


def _best_epsilon(false_negatives: np.ndarray, false_positives: np.ndarray, positives: int, negatives: int,
                  delta: float) -> float:
    """The largest epsilon of a family of attacks with these error counts: infinite when one
    makes no error, from ``max(log(1 - delta - FPR) - log FNR, log(1 - delta - FNR) - log FPR)``
    (at least 0) over those with both error rates above 0, the others discarded."""
    occurs = np.zeros((positives + 1, negatives + 1), bool)  # the distinct (FN, FP) pairs
    occurs[false_negatives, false_positives] = True
    fn, fp = np.nonzero(occurs)
    if np.any((fn == 0) & (fp == 0)):
        return math.inf
    fnr, fpr = fn / positives, fp / negatives
    usable = (fnr > 0) & (fpr > 0)
    with np.errstate(invalid="ignore", divide="ignore"):  # a rate of 1 leaves no epsilon in that form
        epsilons = np.fmax(np.log(1 - delta - fpr[usable]) - np.log(fnr[usable]),
                           np.log(1 - delta - fnr[usable]) - np.log(fpr[usable]))
    return float(np.clip(np.nanmax(epsilons, initial=0.0), 0.0, None))


def example_epsilon(unlearned: np.ndarray, retrained: np.ndarray, delta: float = DELTA) -> float:
    """The epsilon of the best attack telling the unlearned models' confidences on one example
    from the retrained ones' (module docstring), in [0, EPSILON_CAP]: the sample of larger median
    is the single threshold's positive one, the one of smaller range (ties: the other) the double
    thresholds'."""
    ranges = sorted([np.ptp(unlearned), np.ptp(retrained)])
    if ranges[0] < PEAKY_RATIO * ranges[1]:
        return EPSILON_CAP
    positive, negative = (retrained, unlearned) if np.median(retrained) > np.median(unlearned) else (unlearned, retrained)
    inner, outer = (negative, positive) if np.ptp(positive) >= np.ptp(negative) else (positive, negative)
    epsilon = max(_best_epsilon(*_single_threshold_errors(positive, negative), len(positive), len(negative), delta),
                  _best_epsilon(*_double_threshold_errors(inner, outer), len(inner), len(outer), delta))
    return min(epsilon, EPSILON_CAP)


def bucket_points(epsilons: np.ndarray, models: int) -> np.ndarray:
    """Each example's points: ``2^-b`` in bucket ``b = floor(epsilon / 0.5)`` when the bucket ends
    by ``ceil(ln(models - 1))``, the largest epsilon `models` per side can show; 0 otherwise."""
    buckets = int(math.ceil(math.log(models - 1)) / BUCKET_WIDTH) if models > 2 else 0
    index = np.floor(np.asarray(epsilons) / BUCKET_WIDTH)
    return np.where(index < buckets, 0.5 ** np.minimum(index, buckets), 0.0)


def forgetting_quality(unlearned: np.ndarray, retrained: np.ndarray) -> float:
    """F: the mean points of the forget examples, from the confidences (models, examples) of the
    unlearned and the retrained models (clipped to ±CONFIDENCE_CAP); N, which sets the buckets,
    is the unlearned models' count (the challenge had as many of each)."""
    unlearned, retrained = (np.clip(sample, -CONFIDENCE_CAP, CONFIDENCE_CAP) for sample in (unlearned, retrained))
    epsilons = [example_epsilon(unlearned[:, i], retrained[:, i]) for i in range(unlearned.shape[1])]
    return float(bucket_points(np.array(epsilons), len(unlearned)).mean())


def challenge_score(forgetting: float, retain_accuracy: tuple[float, float], test_accuracy: tuple[float, float]) -> float:
    """The final score: F times the (unlearned, retrained) ratios of mean retain and test accuracy
    (NaN when a retrained accuracy is 0)."""
    if not retain_accuracy[1] > 0 or not test_accuracy[1] > 0:
        return math.nan
    return forgetting * (retain_accuracy[0] / retain_accuracy[1]) * (test_accuracy[0] / test_accuracy[1])
