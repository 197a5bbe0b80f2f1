"""Efficient U-LiRA (DMM paper, Algorithms F.3 and F.4) and the toy example of Appendix F.3."""

from __future__ import annotations

import numpy as np
import pytest

from unlearnflow.errors import UserError
from unlearnflow.metrics.klom import klom
from unlearnflow.metrics.ulira import fit_gaussians, ulira_accuracy

POINTS, SHADOWS, TARGETS = 300, 64, 16


class Setting:
    """Oracle margins of point i ~ N(mu_i, sigma_i); models train on random halves of the
    points and unlearn a random 40% of what they trained on (the efficient U-LiRA setup)."""

    def __init__(self, seed: int):
        self.rng = np.random.default_rng(seed)
        self.mu = self.rng.normal(0, 3, POINTS)
        self.sigma = self.rng.uniform(0.5, 2.0, POINTS)

    def oracle(self, models: int) -> np.ndarray:
        return self.mu + self.sigma * self.rng.normal(size=(models, POINTS))

    def roles(self, models: int) -> tuple[np.ndarray, np.ndarray]:
        trained = self.rng.random((models, POINTS)) < 0.5
        return trained & (self.rng.random((models, POINTS)) < 0.4), ~trained

    def accuracy(self, unlearned_margins, never_seen_margins) -> float:
        """U-LiRA accuracy when unlearned models output `unlearned_margins(models)` on the points
        they unlearned and `never_seen_margins(models)` on the points they never trained on."""
        shadow_u, shadow_o = self.roles(SHADOWS)
        target_u, target_o = self.roles(TARGETS)
        return ulira_accuracy(
            np.where(shadow_u, unlearned_margins(SHADOWS), np.nan),
            np.where(shadow_o, self.oracle(SHADOWS), np.nan),
            np.where(target_u, unlearned_margins(TARGETS), np.nan),
            np.where(target_o, never_seen_margins(TARGETS), np.nan),
        )


def test_perfect_unlearning_is_at_chance():
    setting = Setting(0)
    assert abs(setting.accuracy(setting.oracle, setting.oracle) - 0.5) < 0.04


def test_unlearning_that_leaves_a_trace_is_detected():
    setting = Setting(1)
    assert setting.accuracy(lambda n: setting.oracle(n) + 3 * setting.sigma, setting.oracle) > 0.85


def test_toy_example_constant_margin_passes_ulira_but_fails_klom():
    """Appendix F.3: a method whose models output a constant margin (here the oracle mean of
    each point) on every point looks perfect to U-LiRA (100% on forget points, 0% on unseen
    points) while its margin distribution is far from the oracles', which KLOM sees."""
    setting = Setting(2)
    constant = lambda n: np.broadcast_to(setting.mu, (n, POINTS))  # noqa: E731
    assert setting.accuracy(constant, constant) == pytest.approx(0.5, abs=0.02)
    values = klom(setting.oracle(100), constant(100))
    assert np.median(values) > 5.0
    assert np.median(klom(setting.oracle(100), setting.oracle(100))) < 1.0


def test_fit_gaussians_matches_nan_statistics():
    rng = np.random.default_rng(3)
    margins = rng.normal(size=(20, 6))
    margins[rng.random((20, 6)) < 0.3] = np.nan
    margins[:, 5] = np.nan
    margins[:, 4] = 2.0
    fit = fit_gaussians(margins)
    np.testing.assert_allclose(fit.mean[:5], np.nanmean(margins[:, :5], axis=0))
    np.testing.assert_allclose(fit.std[:4], np.nanstd(margins[:, :4], axis=0))
    assert fit.std[4] == 1e-3 and np.isnan(fit.mean[5]) and fit.count[5] == 0
    masked = fit_gaussians(np.nan_to_num(margins), mask=~np.isnan(margins))
    np.testing.assert_allclose(masked.mean[:5], fit.mean[:5])


def test_points_without_enough_shadows_are_skipped():
    setting = Setting(4)
    shadow_u, shadow_o = setting.roles(SHADOWS)
    target_u, target_o = setting.roles(TARGETS)
    shadow_u[:, :10] = False  # the first 10 points were never unlearned by a shadow model
    target_u[:], target_u[:, :10] = False, True  # targets unlearned only those points
    args = (np.where(shadow_u, setting.oracle(SHADOWS), np.nan), np.where(shadow_o, setting.oracle(SHADOWS), np.nan))
    with pytest.raises(UserError, match="no target model"):
        ulira_accuracy(*args, np.where(target_u, 0.0, np.nan), np.where(target_o & ~target_u, 0.0, np.nan))


def test_bad_inputs():
    margins = np.zeros((4, 3))
    with pytest.raises(UserError, match="both"):
        ulira_accuracy(margins, margins, margins, margins)
    with pytest.raises(UserError, match="same points"):
        ulira_accuracy(margins, np.zeros((4, 2)), margins, np.full((4, 3), np.nan))
    with pytest.raises(UserError, match="mask"):
        fit_gaussians(margins, mask=np.ones((4, 2), dtype=bool))
