"""The NeurIPS 2023 Machine Unlearning Challenge score (unlearnflow.metrics.challenge) on
confidence distributions whose answer is known."""

import math

import numpy as np
import pytest

from unlearnflow.metrics.challenge import (
    EPSILON_CAP,
    bucket_points,
    challenge_score,
    example_epsilon,
    forgetting_quality,
)
from unlearnflow.metrics.margins import margins


def test_the_confidence_is_the_log_odds_of_the_label_which_is_the_margin():
    rng = np.random.default_rng(0)
    logits, labels = rng.normal(size=(3, 5, 4)), rng.integers(0, 4, 5)
    probability = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    label_probability = np.take_along_axis(probability, labels[None, :, None], -1)[..., 0]
    assert np.allclose(margins(logits, labels), np.log(label_probability) - np.log1p(-label_probability))


def test_identical_samples_score_best_and_disjoint_ones_worst():
    rng = np.random.default_rng(1)
    sample = rng.normal(size=(32, 20))
    assert [example_epsilon(sample[:, i], sample[:, i]) for i in range(20)] == [0.0] * 20
    assert forgetting_quality(sample, sample) == 1.0
    assert challenge_score(1.0, (0.9, 0.9), (0.8, 0.8)) == 1.0
    assert example_epsilon(sample[:, 0], sample[:, 0] + 100) == EPSILON_CAP
    assert forgetting_quality(sample, sample + 100) == 0.0
    # a sample whose range is under 1% of the other's counts as separated, wherever it lies
    assert example_epsilon(sample[:, 0] / 200, sample[:, 0]) == EPSILON_CAP


def test_a_shifted_pair_against_a_hand_computation():
    """Unlearned confidences 0..3, retrained 2..5 (4 models each): the best attack is the single
    threshold at 3 (retrained above it: FNR 1/4, FPR 1/4), epsilon log((0.75 - delta) / 0.25);
    with 4 models the buckets end by ceil(ln 3) = 2, so the example scores 2^-2 in bucket 2."""
    unlearned, retrained = np.array([0.0, 1, 2, 3]), np.array([2.0, 3, 4, 5])
    epsilon = example_epsilon(unlearned, retrained)
    assert epsilon == pytest.approx(math.log((0.75 - 1e-5) / 0.25), abs=1e-12)
    assert bucket_points(np.array([epsilon]), 4).tolist() == [0.25]
    assert forgetting_quality(unlearned[:, None], retrained[:, None]) == 0.25
    assert challenge_score(0.25, (0.9, 1.0), (0.8, 1.0)) == pytest.approx(0.25 * 0.9 * 0.8)


def test_buckets_halve_every_half_unit_up_to_what_n_models_can_show():
    # 64 models: ceil(ln 63) = 5, ten buckets of 0.5
    assert bucket_points(np.array([0.0, 0.49, 0.5, 1.2, 4.99, 5.0, EPSILON_CAP]), 64).tolist() == [
        1.0, 1.0, 0.5, 0.25, 2.0 ** -9, 0.0, 0.0]
    assert bucket_points(np.array([0.0]), 2).tolist() == [0.0]  # two models show nothing


def test_two_samples_of_one_distribution_score_far_below_one_at_small_n_and_shifts_score_lower():
    """The floor the issue quotes: about 0.16 at 64 models per side; the score falls as the
    samples' distributions move apart."""
    rng = np.random.default_rng(2)
    floor = forgetting_quality(rng.normal(size=(64, 200)), rng.normal(size=(64, 200)))
    assert 0.12 < floor < 0.21
    shifted = [forgetting_quality(rng.normal(size=(64, 200)), rng.normal(shift, 1, size=(64, 200)))
               for shift in (0.5, 1.0, 2.0)]
    assert floor > shifted[0] > shifted[1] > shifted[2]


def test_confidences_are_capped_as_the_challenges_so_exploded_models_score_worst_at_once():
    """The challenge's 1e-45 caps a confidence at about 103.6: logits of 1e12 neither blow up the
    threshold grid nor score better than a separated sample does."""
    rng = np.random.default_rng(3)
    exploded = 1e12 + rng.normal(0, 5, size=(16, 4))
    assert forgetting_quality(exploded, rng.normal(0, 5, size=(16, 4))) == 0.0
    assert math.isnan(challenge_score(1.0, (0.9, 0.0), (0.8, 0.8)))
