"""Membership inference: the loss-based simple MIA and the PGU XGBoost attack."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.special import log_softmax
from sklearn.linear_model import LogisticRegression

from unlearnflow.errors import UserError
from unlearnflow.metrics.mia import (
    fit_one_feature_logistic,
    per_example_loss,
    pgu_features,
    pgu_mia,
    simple_mia,
    split_models,
)

CLASSES, POINTS = 10, 150


class Population:
    """Synthetic logits: the correct class gets a per-point difficulty plus a boost.

    A model that memorised a point (a member) boosts its correct class more than a model that
    never saw it, so members have low loss and confident softmax outputs.
    """

    def __init__(self, seed: int):
        self.rng = np.random.default_rng(seed)
        self.labels = self.rng.integers(0, CLASSES, POINTS)
        self.difficulty = self.rng.normal(size=POINTS)

    def logits(self, models: int, boost: float) -> np.ndarray:
        logits = self.rng.normal(size=(models, POINTS, CLASSES))
        logits[:, np.arange(POINTS), self.labels] += boost + self.difficulty
        return logits


MEMBER, NON_MEMBER = 4.0, 1.5


def test_per_example_loss_is_cross_entropy():
    rng = np.random.default_rng(0)
    logits, labels = rng.normal(size=(3, 5, 4)) * 10, rng.integers(0, 4, 5)
    expected = -np.take_along_axis(log_softmax(logits, axis=-1), labels[None, :, None], axis=-1)[..., 0]
    np.testing.assert_allclose(per_example_loss(logits, labels), expected, rtol=1e-12)


def test_simple_mia_detects_memorisation():
    population = Population(1)
    forget = per_example_loss(population.logits(1, MEMBER)[0], population.labels)
    test = per_example_loss(population.logits(1, NON_MEMBER)[0], population.labels)
    assert simple_mia(forget, test, np.random.default_rng(0)) > 0.7


def test_simple_mia_is_at_chance_for_a_model_that_never_saw_the_points():
    population = Population(2)
    unlearned = per_example_loss(population.logits(8, NON_MEMBER), population.labels).ravel()
    test = per_example_loss(population.logits(6, NON_MEMBER), population.labels).ravel()
    assert abs(simple_mia(unlearned, test, np.random.default_rng(0)) - 0.5) < 0.1


@pytest.mark.parametrize("seed", range(6))
def test_the_attacks_logistic_fit_is_scikit_learns_default_logistic_regression(seed):
    """The closed-loop Newton fit reaches the optimum scikit-learn's lbfgs approaches (to its
    tolerance), so the two classifiers agree on the held-out points of real-looking losses."""
    rng = np.random.default_rng(seed)
    members = np.r_[np.ones(40, dtype=int), np.zeros(40, dtype=int)]
    losses = np.r_[rng.exponential(0.01, 40), rng.exponential(0.1, 40)] * rng.lognormal(0, 1, 80)
    z = (losses - losses.mean()) / losses.std()
    reference = LogisticRegression(tol=1e-10, max_iter=10_000).fit(z[:, None], members)
    weight, intercept = fit_one_feature_logistic(z, members)
    np.testing.assert_allclose([weight, intercept], [reference.coef_[0, 0], reference.intercept_[0]], rtol=1e-5)
    held_out = np.linspace(-3, 3, 101)
    np.testing.assert_array_equal(weight * held_out + intercept > 0, reference.predict(held_out[:, None]) == 1)


def test_simple_mia_needs_enough_losses():
    with pytest.raises(UserError, match="at least 5"):
        simple_mia(np.zeros(3), np.zeros(10), np.random.default_rng(0))


def test_pgu_features_are_softmax_and_one_hot():
    labels = np.array([2, 0])
    features = pgu_features(np.zeros((3, 2, 4)), labels)
    assert features.shape == (6, 8)
    np.testing.assert_allclose(features[1], [0.25] * 4 + [1, 0, 0, 0])


def test_split_models_is_80_10_10_and_disjoint():
    train, val, test = split_models(50, np.random.default_rng(0))
    assert (len(train), len(val), len(test)) == (40, 5, 5)
    assert sorted(np.concatenate([train, val, test])) == list(range(50))
    assert [len(part) for part in split_models(3, np.random.default_rng(0))] == [1, 1, 1]
    with pytest.raises(UserError, match="at least 3"):
        split_models(2, np.random.default_rng(0))


def test_pgu_mia_detects_members_and_not_retrained_like_models():
    population = Population(3)
    original, retrained = population.logits(30, MEMBER), population.logits(30, NON_MEMBER)
    result = pgu_mia(original, retrained, population.logits(10, NON_MEMBER), population.labels, np.random.default_rng(0), n_jobs=1)
    assert result.attack_auc > 0.75
    assert abs(result.unlearned_auc - 0.5) < 0.1
    assert abs(result.mean_membership_unlearned - result.mean_membership_retrained) < 0.1
    assert result.fpr[0] == result.tpr[0] == 0 and result.fpr[-1] == result.tpr[-1] == 1
    assert np.all(np.diff(result.fpr) >= 0) and np.all(np.diff(result.tpr) >= 0)
    assert 1 <= result.n_trees <= 200


def test_pgu_mia_flags_unlearned_models_that_still_remember():
    population = Population(4)
    original, retrained = population.logits(30, MEMBER), population.logits(30, NON_MEMBER)
    result = pgu_mia(original, retrained, population.logits(10, MEMBER), population.labels, np.random.default_rng(0), n_jobs=1)
    assert result.unlearned_auc > 0.75
    assert result.mean_membership_unlearned > result.mean_membership_retrained + 0.3


def test_pgu_mia_rejects_mismatched_logits():
    population = Population(5)
    logits = population.logits(5, MEMBER)
    with pytest.raises(UserError, match="disagree"):
        pgu_mia(logits, logits, np.concatenate([logits, logits[..., :1]], axis=-1), population.labels, np.random.default_rng(0))
    with pytest.raises(UserError, match="labels"):
        pgu_mia(logits, logits, logits, population.labels[:-1], np.random.default_rng(0))
