"""Read-outs: accuracy, group accuracies, prediction entropy, class exclusion."""

from __future__ import annotations

import math

import numpy as np
import pytest

from unlearnflow.errors import UserError
from unlearnflow.metrics.readouts import (
    accuracy,
    check_logits,
    exclude_classes,
    group_accuracies,
    group_indices,
    prediction_entropy,
    remove_class_rows,
)


def one_hot_logits(predictions: np.ndarray, classes: int = 3) -> np.ndarray:
    return np.eye(classes)[predictions] * 5.0


def test_accuracy_per_model_and_mean():
    labels = np.array([0, 1, 2, 1])
    logits = one_hot_logits(np.array([[0, 1, 2, 1], [0, 0, 0, 0]]))
    result = accuracy(logits, labels)
    np.testing.assert_allclose(result.per_model, [1.0, 0.25])
    assert result.mean == pytest.approx(0.625)
    assert accuracy(logits[0], labels).per_model.shape == ()


def test_group_accuracies_with_indices_and_masks():
    labels = np.array([0, 1, 2, 1])
    logits = one_hot_logits(np.array([[0, 1, 0, 0], [0, 0, 2, 1]]))
    groups = {"forget": np.array([0, 1]), "retain": np.array([False, False, True, True])}
    result = group_accuracies(logits, labels, groups)
    np.testing.assert_allclose(result["forget"].per_model, [1.0, 0.5])
    np.testing.assert_allclose(result["retain"].per_model, [0.0, 1.0])


def test_prediction_entropy_is_stable():
    logits = np.array([[0.0, 0.0, 0.0, 0.0], [1e4, 0.0, 0.0, -1e4], [1.0, 2.0, 3.0, 4.0]])
    entropy = prediction_entropy(logits)
    p = np.exp([1.0, 2.0, 3.0, 4.0]) / np.exp([1.0, 2.0, 3.0, 4.0]).sum()
    np.testing.assert_allclose(entropy, [math.log(4), 0.0, -np.sum(p * np.log(p))], atol=1e-12)
    assert prediction_entropy(np.zeros((2, 5, 3))).shape == (2, 5)
    assert np.isfinite(prediction_entropy(np.array([[0.0, -np.inf, 1.0]]))).all()


def test_exclude_classes():
    labels = np.array([0, 3, 1, 3, 2])
    np.testing.assert_array_equal(exclude_classes(labels, [3, 1]), [True, False, False, False, True])
    np.testing.assert_array_equal(exclude_classes(labels, []), np.ones(5, dtype=bool))
    with pytest.raises(UserError):
        exclude_classes(labels.astype(float), [1])


def test_remove_class_rows_is_the_last_layer_without_those_rows():
    """Removing rows of W and b from the last layer = dropping those logits: the argmax over the
    remaining classes, with the class ids kept."""
    rng = np.random.default_rng(0)
    features, weight, bias = rng.normal(size=(2, 30, 4)), rng.normal(size=(5, 4)), rng.normal(size=5)
    logits = features @ weight.T + bias
    kept = np.array([0, 2, 4])
    removed = remove_class_rows(logits, [3, 1])
    np.testing.assert_array_equal(removed.argmax(-1), kept[(features @ weight[kept].T + bias[kept]).argmax(-1)])
    np.testing.assert_array_equal(removed[..., kept], logits[..., kept])
    assert np.isneginf(removed[..., [1, 3]]).all() and not np.isinf(logits).any()  # input untouched
    np.testing.assert_array_equal(remove_class_rows(logits, []), logits)
    with pytest.raises(UserError, match="not all among the 5 outputs"):
        remove_class_rows(logits, [5])


def test_bad_inputs_are_user_errors():
    with pytest.raises(UserError, match="labels must have shape"):
        check_logits(np.zeros((2, 4, 3)), np.zeros(5, dtype=int))
    with pytest.raises(UserError, match=r"\[0, 3\)"):
        check_logits(np.zeros((2, 4, 3)), np.array([0, 1, 2, 3]))
    with pytest.raises(UserError, match="integers"):
        check_logits(np.zeros((2, 4, 3)), np.zeros(4))
    with pytest.raises(UserError, match="empty"):
        group_indices({"forget": np.zeros(4, dtype=bool)}, 4)
