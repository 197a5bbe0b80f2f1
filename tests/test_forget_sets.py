"""Tests for unlearnflow.core.forget_sets: every kind on synthetic blobs and on sklearn digits."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.datasets import load_digits

from unlearnflow.core.forget_sets import KINDS, ForgetSet, build_forget_set, validate_indices
from unlearnflow.errors import UserError

N_CLASSES = 5
BLOBS_PER_CLASS = 3
PER_BLOB = 40


@pytest.fixture(scope="module")
def blobs() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """5 classes x 3 well-separated Gaussian blobs of 40 points in 10-D: inputs, labels, blob ids."""
    rng = np.random.default_rng(0)
    n_blobs = N_CLASSES * BLOBS_PER_CLASS
    centers = rng.normal(scale=10.0, size=(n_blobs, 10))
    blob = rng.permutation(np.repeat(np.arange(n_blobs), PER_BLOB))
    x = centers[blob] + rng.normal(size=(blob.size, 10))
    return x, blob % N_CLASSES, blob


@pytest.fixture(scope="module")
def digits() -> tuple[np.ndarray, np.ndarray]:
    data = load_digits()
    return data.images, data.target


def build(name, spec, data, seed=0):
    return build_forget_set(name, spec, data[0], data[1], seed)


SPECS = {
    "random": {"kind": "random", "size": 30},
    "class": {"kind": "class", "classes": [1, 3]},
    "class_sample": {"kind": "class_sample", "class": 2, "size": 25},
    "cluster": {"kind": "cluster", "size": 20},
    "incremental": {"kind": "incremental", "requests": 3, "size": 10},
    "poison": {"kind": "poison", "pairs": [[0, 1]], "budget": 10},
    "indices": {"kind": "indices", "indices": [4, 0, 17, 9]},
}


def test_specs_cover_every_kind():
    assert set(SPECS) == set(KINDS)


# --- shared properties -----------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("dataset", ["blobs", "digits"])
def test_every_kind_builds_a_valid_deterministic_set(kind, dataset, request):
    data = request.getfixturevalue(dataset)
    fs = build("fs", SPECS[kind], data, seed=3)
    assert fs.name == "fs" and fs.kind == kind
    assert len(fs.requests) == (3 if kind == "incremental" else 1)
    for r in fs.requests:
        assert r.dtype == np.int64 and np.all(np.diff(r) > 0) and not r.flags.writeable
    assert fs.train_labels.dtype == np.int64 and fs.train_labels.shape == data[1].shape
    np.testing.assert_array_equal(fs.indices, np.unique(np.concatenate(fs.requests)))
    mask = fs.retain_mask(len(data[1]))
    assert mask.dtype == bool and mask.sum() == len(data[1]) - fs.indices.size
    assert not mask[fs.indices].any()

    again = build("fs", SPECS[kind], data, seed=3)
    for r1, r2 in zip(fs.requests, again.requests):
        np.testing.assert_array_equal(r1, r2)
    np.testing.assert_array_equal(fs.train_labels, again.train_labels)


@pytest.mark.parametrize("kind", ["random", "class_sample", "incremental", "poison"])
def test_name_and_seed_change_random_draws(kind, digits):
    base = build("a", SPECS[kind], digits, seed=0).indices
    assert not np.array_equal(base, build("b", SPECS[kind], digits, seed=0).indices)
    assert not np.array_equal(base, build("a", SPECS[kind], digits, seed=1).indices)


def test_build_does_not_touch_inputs(digits):
    x, y = digits[0].copy(), digits[1].copy()
    build("p", SPECS["poison"], (x, y))
    np.testing.assert_array_equal(y, digits[1])
    np.testing.assert_array_equal(x, digits[0])


# --- per kind --------------------------------------------------------------------------------


def test_random_size(blobs):
    fs = build("r", {"kind": "random", "size": 17}, blobs)
    assert fs.indices.size == 17
    np.testing.assert_array_equal(fs.train_labels, blobs[1])


def test_class_is_exactly_the_listed_classes(digits):
    y = digits[1]
    fs = build("c", {"kind": "class", "classes": [0, 7]}, digits)
    np.testing.assert_array_equal(fs.indices, np.flatnonzero((y == 0) | (y == 7)))


def test_class_sample_draws_only_from_that_class(blobs):
    fs = build("cs", {"kind": "class_sample", "class": 4, "size": 50}, blobs)
    assert fs.indices.size == 50
    assert np.all(blobs[1][fs.indices] == 4)


def test_cluster_is_a_coherent_group_in_input_space(blobs):
    x, _, blob = blobs
    fs = build("cl", {"kind": "cluster", "size": 30, "n_clusters": 15}, blobs)
    assert fs.indices.size == 30
    # All 30 points (fewer than a blob's 40) come from one blob ...
    assert np.bincount(blob[fs.indices]).max() == 30
    # ... and sit much closer to their own mean than the other points do.
    center = x[fs.indices].mean(axis=0)
    dist = np.linalg.norm(x - center, axis=1)
    assert dist[fs.indices].mean() < 0.2 * np.delete(dist, fs.indices).mean()


def test_cluster_ranking_and_choice_of_cluster(blobs):
    _, _, blob = blobs
    first = build("cl", {"kind": "cluster", "size": 20, "n_clusters": 15, "cluster": 0}, blobs)
    second = build("cl", {"kind": "cluster", "size": 20, "n_clusters": 15, "cluster": 1}, blobs)
    assert np.bincount(blob[second.indices]).max() == 20
    assert np.intersect1d(first.indices, second.indices).size == 0


def test_cluster_in_pca_space_on_digits(digits):
    x, y = digits
    fs = build("cl", {"kind": "cluster", "size": 40, "space": "pca", "components": 10}, digits)
    assert fs.indices.size == 40
    # A subpopulation, not a random set: dominated by one digit.
    assert np.bincount(y[fs.indices]).max() >= 30
    flat = x.reshape(len(x), -1)
    center = flat[fs.indices].mean(axis=0)
    dist = np.linalg.norm(flat - center, axis=1)
    assert dist[fs.indices].mean() < np.delete(dist, fs.indices).mean()


def test_cluster_pca_default_components_fit_small_inputs():
    rng = np.random.default_rng(1)
    x = np.concatenate([rng.normal(size=(30, 2)), rng.normal(loc=20, size=(60, 2))])
    y = np.repeat([0, 1], 45)
    fs = build_forget_set("cl", {"kind": "cluster", "size": 10, "n_clusters": 2, "space": "pca"}, x, y, 0)
    assert np.all(fs.indices >= 30)  # nearest the centroid of the larger cluster


@pytest.mark.parametrize("size", [10, 12, 3])
def test_incremental_requests_are_disjoint_and_balanced(blobs, size):
    y = blobs[1]
    fs = build("inc", {"kind": "incremental", "requests": 4, "size": size}, blobs)
    assert len(fs.requests) == 4
    assert fs.indices.size == 4 * size  # disjoint
    for r in fs.requests:
        counts = np.bincount(y[r], minlength=N_CLASSES)
        assert counts.sum() == size
        assert counts.max() - counts.min() <= 1
    for upto in range(4):
        mask = fs.retain_mask(y.size, upto_request=upto)
        forgotten = np.concatenate(fs.requests[: upto + 1])
        assert (~mask).sum() == forgotten.size
        assert not mask[forgotten].any()
    np.testing.assert_array_equal(fs.retain_mask(y.size, upto_request=3), fs.retain_mask(y.size))


def test_incremental_on_digits_balanced_over_ten_classes(digits):
    y = digits[1]
    fs = build("inc", {"kind": "incremental", "requests": 5, "size": 100}, digits)
    for r in fs.requests:
        np.testing.assert_array_equal(np.bincount(y[r], minlength=10), np.full(10, 10))


def test_incremental_errors_when_a_class_runs_out(blobs):
    # 120 points per class: 13 requests of 10 per class need 130.
    with pytest.raises(UserError, match=r"forget set 'inc': cannot draw 10 points from class \d for request 12"):
        build("inc", {"kind": "incremental", "requests": 13, "size": 50}, blobs)


@pytest.mark.parametrize("budget", [10, 11])
def test_poison_flips_exactly_budget_labels_within_pairs(digits, budget):
    y = digits[1]
    fs = build("p", {"kind": "poison", "pairs": [[3, 8], [1, 7]], "budget": budget}, digits)
    changed = np.flatnonzero(fs.train_labels != y)
    np.testing.assert_array_equal(fs.indices, changed)
    assert changed.size == 2 * budget
    swaps = {(3, 8): 0, (8, 3): 0, (1, 7): 0, (7, 1): 0}
    for i in changed:
        swaps[(int(y[i]), int(fs.train_labels[i]))] += 1  # KeyError if a flip leaves the pairs
    for a, b in [(3, 8), (1, 7)]:
        assert swaps[(a, b)] + swaps[(b, a)] == budget
        assert abs(swaps[(a, b)] - swaps[(b, a)]) <= 1


def test_poison_fractional_budget(blobs):
    y = blobs[1]
    fs = build("p", {"kind": "poison", "pairs": [[0, 2]], "budget": 0.25}, blobs)
    assert fs.indices.size == 60  # a quarter of the 240 points of classes 0 and 2
    assert np.count_nonzero(fs.train_labels != y) == 60


# --- ForgetSet -------------------------------------------------------------------------------


def test_forget_set_validates_its_requests():
    labels = np.arange(10) % 2
    with pytest.raises(UserError, match=r"forget set 'x' \(all requests together\): index 2 appears 2 times"):
        ForgetSet("x", "incremental", (np.array([1, 2]), np.array([2, 3])), labels)
    with pytest.raises(UserError, match="kind 'random' needs exactly one request, got 2"):
        ForgetSet("x", "random", (np.array([1]), np.array([2])), labels)
    with pytest.raises(UserError, match="forget set 'x', request 1: index 10 is out of range"):
        ForgetSet("x", "incremental", (np.array([1]), np.array([10])), labels)


def test_retain_mask_rejects_bad_arguments():
    fs = ForgetSet("x", "incremental", (np.array([1]), np.array([2])), np.zeros(5, dtype=int))
    with pytest.raises(UserError, match="built for 5 training points, not 6"):
        fs.retain_mask(6)
    with pytest.raises(UserError, match=r"has requests 0..1, not 2"):
        fs.retain_mask(5, upto_request=2)
    np.testing.assert_array_equal(fs.retain_mask(5, upto_request=0), [True, False, True, True, True])


# --- validate_indices ------------------------------------------------------------------------


def test_validate_indices_sorts_and_converts():
    out = validate_indices([5, 0, 3], 10)
    assert out.dtype == np.int64
    np.testing.assert_array_equal(out, [0, 3, 5])
    np.testing.assert_array_equal(validate_indices(np.array([2, 1], dtype=np.uint8), 3), [1, 2])


@pytest.mark.parametrize(
    ("indices", "message"),
    [
        ([1, 2, 2], "forget set: index 2 appears 2 times; indices must be unique"),
        ([1, 10], r"forget set: index 10 is out of range \(the training set has 10 points, indices 0..9\)"),
        ([-1, 3], "forget set: index -1 is negative"),
        ([], "forget set: contains no indices"),
        (list(range(10)), "forget set: contains all 10 training points, so nothing would be retained"),
        ([1.5, 2.0], r"forget set: indices must be integers, got 1.5 \(float64\)"),
        ([True, False], "forget set: indices must be integers"),
        (["a"], "forget set: indices must be integers"),
        ([[1, 2]], r"forget set: expected a flat list of indices, got an array of shape \(1, 2\)"),
    ],
)
def test_validate_indices_errors(indices, message):
    with pytest.raises(UserError, match=message):
        validate_indices(indices, 10)


def test_validate_indices_names_what():
    with pytest.raises(UserError, match="^my set: contains no indices$"):
        validate_indices([], 10, what="my set")


# --- spec errors -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"size": 3}, "forget set 'f': missing 'kind'"),
        ({"kind": "randm", "size": 3}, r"forget set 'f': unknown kind 'randm' \(kinds are random, class, "),
        ({"kind": "random", "sise": 3}, r"unknown key 'sise' for kind 'random' \(allowed: size; did you mean 'size'\?\)"),
        ({"kind": "random"}, "forget set 'f': missing required key 'size'"),
        ({"kind": "random", "size": 0}, "'size' must be an integer >= 1, got 0"),
        ({"kind": "random", "size": 2.5}, "'size' must be an integer >= 1, got 2.5"),
        ({"kind": "random", "size": True}, "'size' must be an integer >= 1, got True"),
        ({"kind": "random", "size": 1000}, "cannot draw 1000 points from the training set: only 600 are available"),
        ({"kind": "random", "size": 600}, "forget set 'f': contains all 600 training points"),
        ({"kind": "class", "classes": [12]}, r"forget set 'f': class 12 does not exist \(classes are 0..4\)"),
        ({"kind": "class", "classes": [-1]}, r"class -1 does not exist"),
        ({"kind": "class", "classes": 2}, "'classes' must be a non-empty list of class ids, got 2"),
        ({"kind": "class", "classes": [1, 1]}, "'classes' lists a class more than once"),
        ({"kind": "class", "classes": [0, 1, 2, 3, 4]}, "contains all 600 training points"),
        ({"kind": "class_sample", "class": 5, "size": 3}, r"class 5 does not exist \(classes are 0..4\)"),
        ({"kind": "class_sample", "class": 1, "size": 121}, "cannot draw 121 points from class 1: only 120 are available"),
        ({"kind": "cluster", "size": 5, "cluster": 10}, r"'cluster' must be below n_clusters \(10\), got 10"),
        ({"kind": "cluster", "size": 5, "space": "tsne"}, "'space' must be one of 'input', 'pca', got 'tsne'"),
        ({"kind": "cluster", "size": 5, "components": 3}, "'components' only applies to space 'pca'"),
        ({"kind": "cluster", "size": 5, "space": "pca", "components": 11}, r"'components' is 11 but inputs of shape \(600, 10\) allow at most 10"),
        ({"kind": "cluster", "size": 700}, "cannot draw 700 points from the training set: only 600 are available"),
        ({"kind": "incremental", "requests": 0, "size": 5}, "'requests' must be an integer >= 1, got 0"),
        ({"kind": "incremental", "requests": 2, "size": 0}, "'size' must be an integer >= 1, got 0"),
        ({"kind": "poison", "pairs": [[0, 9]], "budget": 4}, r"class 9 does not exist \(classes are 0..4\)"),
        ({"kind": "poison", "pairs": [[0, 0]], "budget": 4}, "'pairs' uses a class more than once"),
        ({"kind": "poison", "pairs": [[0, 1], [1, 2]], "budget": 4}, "each class may appear in one pair only"),
        ({"kind": "poison", "pairs": [0, 1], "budget": 4}, r"'pairs' must be a non-empty list of \[a, b\] class pairs"),
        ({"kind": "poison", "pairs": [[0, 1]], "budget": 1.5}, r"'budget' must be a number of points \(integer >= 1\) or a fraction in \(0, 1\), got 1.5"),
        ({"kind": "poison", "pairs": [[0, 1]], "budget": 0.001}, r"'budget' 0.001 of the 240 points of pair \[0, 1\] flips no point"),
        ({"kind": "poison", "pairs": [[0, 1]], "budget": 250}, r"cannot draw 125 points from class [01] for pair \[0, 1\]: only 120 are available"),
    ],
)
def test_spec_errors(blobs, spec, message):
    with pytest.raises(UserError, match=message) as info:
        build("f", spec, blobs)
    assert "\n" not in str(info.value)
    assert str(info.value).startswith("forget set 'f': ")


def test_spec_must_be_a_mapping_and_seed_non_negative(blobs):
    with pytest.raises(UserError, match="forget set 'f': expected a mapping with a 'kind' key"):
        build("f", ["random", 3], blobs)
    with pytest.raises(UserError, match="the seed must be a non-negative integer, got -1"):
        build("f", SPECS["random"], blobs, seed=-1)


def test_data_errors(blobs):
    x, y, _ = blobs
    with pytest.raises(UserError, match=r"600 training labels but inputs of shape \(599, 10\)"):
        build_forget_set("f", SPECS["random"], x[:-1], y, 0)
    with pytest.raises(UserError, match="training labels must be a non-empty 1-D array of non-negative integer"):
        build_forget_set("f", SPECS["random"], x, y.astype(float), 0)
