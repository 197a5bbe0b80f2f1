"""KLOM (DMM paper, Definition 3 / Algorithm F.1), its summaries, noise floor and bootstrap."""

from __future__ import annotations

import math

import numpy as np
import pytest

from unlearnflow.errors import UserError
from unlearnflow.metrics.klom import (
    bootstrap_ci,
    group_score,
    klom,
    klom_cap,
    matched_klom,
    noise_floor,
    summarise,
)


def klom_loop(oracle, unlearned, bins=20, clip=100.0, floor=1e-5):
    """KL(oracle || unlearned) one point at a time with np.histogram and explicit edges."""
    out = []
    for j in range(oracle.shape[1]):
        a, b = np.clip(oracle[:, j], -clip, clip), np.clip(unlearned[:, j], -clip, clip)
        lo, hi = min(a.min(), b.min()), max(a.max(), b.max())
        if lo == hi:
            out.append(0.0)
            continue
        edges = np.linspace(lo, hi, bins + 1)
        p = np.histogram(a, edges)[0] / len(a)
        q = np.histogram(b, edges)[0] / len(b)
        p, q = np.where(p > 0, p, floor), np.where(q > 0, q, floor)
        out.append(float(np.sum(p * np.log(p / q))))
    return np.array(out)


def awkward_margins(rng, n_oracle=30, n_unlearned=25, points=400):
    """Random margins plus columns whose values sit exactly on bin edges or beyond the clip."""
    oracle = rng.normal(size=(n_oracle, points)) * rng.exponential(5.0, size=points)
    unlearned = rng.normal(size=(n_unlearned, points)) * rng.exponential(5.0, size=points) + 1.0
    # multiples of 10 in [-150, 150]: clipped to [-100, 100], edges every 10
    oracle[:, :100] = rng.integers(-15, 16, size=(n_oracle, 100)) * 10.0
    unlearned[:, :100] = rng.integers(-10, 11, size=(n_unlearned, 100)) * 10.0
    # multiples of 0.1: edges that are not exactly representable
    oracle[:, 100:200] = rng.integers(0, 21, size=(n_oracle, 100)) * 0.1
    unlearned[:, 100:200] = rng.integers(0, 21, size=(n_unlearned, 100)) * 0.1
    oracle[:, 200] = unlearned[:, 200] = 3.0  # degenerate point
    oracle[:, 201], unlearned[:, 201] = 1e6, -1e6  # both sides beyond the clip
    return oracle, unlearned


def test_identical_samples_give_exactly_zero():
    rng = np.random.default_rng(0)
    margins = rng.normal(size=(50, 300)) * 10
    assert np.array_equal(klom(margins, margins), np.zeros(300))
    assert np.array_equal(klom(margins, margins[rng.permutation(50)]), np.zeros(300))


def test_disjoint_samples_hit_the_cap():
    cap = (1 - 1e-5) * math.log(1e5)
    assert klom_cap() == pytest.approx(cap, rel=1e-12)
    assert cap == pytest.approx(11.5128, abs=1e-4)
    oracle, unlearned = np.zeros((100, 3)), np.ones((100, 3))
    np.testing.assert_allclose(klom(oracle, unlearned), cap, rtol=1e-12)
    np.testing.assert_allclose(klom(oracle, unlearned, floor=1e-3), klom_cap(1e-3), rtol=1e-12)
    rng = np.random.default_rng(1)
    values = klom(rng.normal(size=(100, 200)), rng.normal(size=(100, 200)) * 5 + 3)
    assert values.max() <= cap


@pytest.mark.parametrize("direction", ["oracle_unlearned", "unlearned_oracle"])
def test_matches_a_per_point_histogram_loop(direction):
    oracle, unlearned = awkward_margins(np.random.default_rng(2))
    expected = klom_loop(oracle, unlearned) if direction == "oracle_unlearned" else klom_loop(unlearned, oracle)
    np.testing.assert_allclose(klom(oracle, unlearned, direction=direction), expected, rtol=1e-12, atol=1e-12)


def test_matches_the_loop_with_other_options():
    oracle, unlearned = awkward_margins(np.random.default_rng(3))
    np.testing.assert_allclose(
        klom(oracle, unlearned, bins=7, clip=50.0, floor=1e-3), klom_loop(oracle, unlearned, bins=7, clip=50.0, floor=1e-3), atol=1e-12
    )


def test_a_value_on_the_top_edge_is_counted():
    oracle = np.ones((3, 1))  # all on the top edge of the combined range [0, 1]
    unlearned = np.array([[0.0], [0.5], [1.0]])
    floor = 1e-5
    # oracle: mass 1 in the last bin; unlearned: 1/3 in bins 0, 10 and 19
    expected = math.log(3) + 2 * floor * math.log(floor * 3)
    assert klom(oracle, unlearned)[0] == pytest.approx(expected, rel=1e-12)


def test_direction_matters():
    rng = np.random.default_rng(4)
    spread = rng.uniform(0, 10, size=(100, 1))
    narrow = np.full((100, 1), 5.0)
    forward = klom(spread, narrow, direction="oracle_unlearned")[0]
    backward = klom(spread, narrow, direction="unlearned_oracle")[0]
    assert forward > 6.0  # most oracle mass falls where the unlearned histogram is floored
    assert backward < 3.5  # ln(1 / oracle mass of the narrow bin)
    assert forward - backward > 3.0


def test_shapes_and_inputs():
    rng = np.random.default_rng(5)
    assert klom(rng.normal(size=(10, 7)), rng.normal(size=(4, 7))).shape == (7,)
    assert klom(rng.normal(size=(10, 1)), rng.normal(size=(10, 1))).shape == (1,)
    assert klom(np.zeros((5, 0)), np.zeros((5, 0))).shape == (0,)
    with pytest.raises(UserError, match="different numbers of points"):
        klom(np.zeros((5, 3)), np.zeros((5, 4)))
    with pytest.raises(UserError, match="models, points"):
        klom(np.zeros(5), np.zeros(5))
    with pytest.raises(UserError, match="NaN"):
        klom(np.full((5, 2), np.nan), np.zeros((5, 2)))
    with pytest.raises(UserError, match="direction"):
        klom(np.zeros((5, 2)), np.zeros((5, 2)), direction="sideways")
    with pytest.raises(UserError, match="floor"):
        klom(np.zeros((5, 2)), np.zeros((5, 2)), floor=1.0)


def test_blocks_of_points_agree_with_one_point_at_a_time():
    rng = np.random.default_rng(6)
    oracle, unlearned = rng.normal(size=(3, 50_000)), rng.normal(size=(2, 50_000))
    whole = klom(oracle, unlearned)
    picked = rng.choice(50_000, 20, replace=False)
    np.testing.assert_array_equal(whole[picked], [klom(oracle[:, [j]], unlearned[:, [j]])[0] for j in picked])


def test_summarise_and_group_score():
    values = np.arange(100, dtype=float)
    mask = np.zeros(100, dtype=bool)
    mask[50:] = True
    summary = summarise(values, {"forget": np.arange(10), "retain": mask})
    assert summary["forget"] == pytest.approx({"mean": 4.5, "p50": 4.5, "p95": 8.55, "p99": 8.91, "n": 10})
    assert summary["retain"]["p95"] == pytest.approx(np.percentile(values[50:], 95))
    assert summary["weighted"]["p95"] == pytest.approx((8.55 + summary["retain"]["p95"]) / 2)
    assert summary["weighted"]["n"] == 60
    assert group_score(summary) == pytest.approx(summary["weighted"]["p95"])
    weighted = group_score(summary, {"forget": 3, "retain": 1})
    assert weighted == pytest.approx(0.75 * 8.55 + 0.25 * summary["retain"]["p95"])


def test_summarise_rejects_bad_groups():
    values = np.zeros(10)
    with pytest.raises(UserError, match="empty"):
        summarise(values, {"forget": np.array([], dtype=int)})
    with pytest.raises(UserError, match="indices"):
        summarise(values, {"forget": np.array([3, 10])})
    with pytest.raises(UserError, match="mask"):
        summarise(values, {"forget": np.ones(9, dtype=bool)})
    with pytest.raises(UserError, match="reserved"):
        summarise(values, {"weighted": np.arange(3)})
    with pytest.raises(UserError, match="p95"):
        group_score(summarise(values, {"forget": np.arange(3)}, percentiles=(50,)))
    with pytest.raises(UserError, match="weights missing"):
        group_score(summarise(values, {"forget": np.arange(3)}), {"retain": 1.0})


def test_noise_floor_is_small_and_shrinks_with_more_models():
    rng = np.random.default_rng(7)
    points = 500
    centre, scale = rng.normal(0, 5, size=points), rng.uniform(0.5, 3, size=points)
    p95 = {}
    for n in (40, 100, 400):
        oracle = centre + scale * rng.normal(size=(n, points))
        floor = noise_floor(oracle, rng, splits=2)
        assert floor.shape == (2, points)
        p95[n] = np.percentile(floor, 95)
    assert p95[100] < 2.0 < klom_cap() / 5  # 50 models per side
    assert p95[40] > p95[100] > 3 * p95[400]


def test_matched_klom_uses_the_floor_model_count():
    rng = np.random.default_rng(8)
    oracle = rng.normal(size=(40, 300))
    same = matched_klom(oracle, rng.normal(size=(60, 300)), rng)
    shifted = matched_klom(oracle, rng.normal(size=(60, 300)) + 2, rng)
    floor = noise_floor(oracle, rng)[0]
    assert same.shape == (300,)
    assert abs(np.median(same) - np.median(floor)) < 0.15
    assert np.median(shifted) > np.median(floor) + 1.0
    with pytest.raises(UserError, match="n_models"):
        matched_klom(oracle, oracle[:5], rng, n_models=10)


@pytest.mark.parametrize("stat", ["p95", "mean"])
def test_bootstrap_interval_contains_the_estimate(stat):
    rng = np.random.default_rng(9)
    centre = rng.normal(size=400)
    oracle = centre + rng.normal(size=(60, 400))
    unlearned = centre + 0.3 + 1.2 * rng.normal(size=(60, 400))
    groups = {"forget": np.arange(100), "retain": np.arange(100, 400)}
    intervals = bootstrap_ci(oracle, unlearned, groups, rng, stat=stat, n_boot=100)
    values = klom(oracle, unlearned)
    for name, index in groups.items():
        estimate = np.percentile(values[index], 95) if stat == "p95" else values[index].mean()
        low, high = intervals[name]
        assert low < estimate < high
        assert high - low < estimate


def test_a_few_far_off_unlearned_models_lower_klom_below_the_noise_floor():
    """The bins span the combined oracle + unlearned range (Algorithm F.1), and KL(oracle ||
    unlearned) charges unlearned mass outside the oracles' bins only through the floor: 3 of 50
    unlearned models sent far away (damaged models) widen every point's bins so much that the
    oracles and the 47 others share one or two bins, and KLOM falls far below that of a second
    sample of the oracles' own distribution. This is what made the PGU incremental preset's
    selection score pick damaged models (README, Table 3); the metric is the paper's."""
    rng = np.random.default_rng(0)
    oracle, same = rng.normal(size=(50, 2000)), rng.normal(size=(50, 2000))
    damaged = same.copy()
    damaged[:3] = -60.0
    honest = np.percentile(klom(oracle, same), 95)
    assert 1.4 < honest < 2.1  # the noise floor with 50 models per side (module docstring: about 1.7)
    assert np.percentile(klom(oracle, damaged), 95) < 0.25 * honest
    # the reverse direction charges the damaged models' mass, but still less than the noise floor
    assert np.percentile(klom(oracle, damaged, direction="unlearned_oracle"), 95) < honest
