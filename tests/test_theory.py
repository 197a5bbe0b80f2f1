"""Tests for unlearnflow.dmm.ridge_theory: the ridge-regression experiments of the DMM paper (Section 5, Appendix E)."""

from __future__ import annotations

import dataclasses

import matplotlib.image
import numpy as np
import pytest

from unlearnflow.dmm import ridge_theory as theory
from unlearnflow.errors import UserError

FIG5A = theory.PAPER_SETTINGS["fig5a"]


def _stable_lr(objective: theory.Objective) -> float:
    """Half the largest stable step of full-batch descent on `objective`: ``1 / (2 (γ_max + reg))``."""
    gamma_max = np.linalg.eigvalsh(objective.x.T @ objective.x).max()
    return 0.5 / (gamma_max + objective.reg)


def _assert_deviation_close(iterate: np.ndarray, closed: np.ndarray, theta_star: np.ndarray) -> None:
    """``θ_t − θ*`` of the iterate equals the closed form's to 1e-8, relative to its norm."""
    expected = closed - theta_star
    assert np.linalg.norm((iterate - theta_star) - expected) <= 1e-8 * np.linalg.norm(expected)


@pytest.fixture(scope="module", params=[(4.0, "isotropic"), (400.0, "isotropic"), (0.25, "harmonic"), (5.0, "harmonic")],
                ids=lambda p: f"{p[1]}-lam{p[0]:g}")
def problem(request) -> theory.RidgeProblem:
    lam, covariance = request.param
    return theory.make_problem(theory.Setting(lam=lam, covariance=covariance))


def test_make_problem_follows_appendix_e4():
    setting = theory.Setting(lam=0.25, covariance="harmonic", n=2000, d=8, n_forget=7, seed=3)
    problem = theory.make_problem(setting)
    assert problem.x.shape == (2000, 8) and problem.y.shape == (2000,)
    assert problem.forget.sum() == 7 and problem.retain.sum() == 1993
    # Σ = diag(1, 1/2, ..., 1/d): the sample variances are close to 1/k
    np.testing.assert_allclose(problem.x.var(axis=0), 1.0 / np.arange(1, 9), rtol=0.1)
    # same seed, same data; another seed, other data
    again = theory.make_problem(setting)
    np.testing.assert_array_equal(again.x, problem.x)
    np.testing.assert_array_equal(again.forget, problem.forget)
    assert not np.allclose(theory.make_problem(dataclasses.replace(setting, seed=4)).x, problem.x)


def test_label_noise_has_variance_one_quarter():
    # d small and n large: the least-squares residual variance estimates Var(ε) = 1/4
    problem = theory.make_problem(theory.Setting(lam=1e-9, n=20000, d=5, n_forget=1))
    residual = problem.y - problem.x @ theory.ridge_solution(problem.x, problem.y, 1e-9)
    assert residual.var() == pytest.approx(0.25, rel=0.05)


def test_oracle_is_the_closed_form_retain_ridge_solution():
    problem = theory.make_problem(FIG5A)
    x_r, y_r, lam = problem.x[problem.retain], problem.y[problem.retain], problem.lam
    # the kernel (dual) form of the ridge solution, valid for d > n
    dual = x_r.T @ np.linalg.solve(x_r @ x_r.T + lam * np.eye(len(x_r)), y_r)
    np.testing.assert_allclose(problem.theta_star, dual, rtol=1e-9, atol=1e-12)
    # stationarity of eq. (5): 2 X_Rᵀ(X_Rθ − y_R) + 2λθ = 0
    gradient = theory.gd_objective(problem).gradient(problem.theta_star)
    assert np.linalg.norm(gradient) < 1e-9 * np.linalg.norm(x_r.T @ y_r)
    # a minimum: any perturbation increases the objective by exactly δᵀ(X_RᵀX_R + λI)δ (eq. 8)
    delta = np.random.default_rng(0).standard_normal(problem.x.shape[1]) * 1e-2
    base = theory.ridge_objective(problem.theta_star, x_r, y_r, lam)
    moved = theory.ridge_objective(problem.theta_star + delta, x_r, y_r, lam)
    assert moved - base == pytest.approx(np.sum((x_r @ delta) ** 2) + lam * delta @ delta, rel=1e-6)
    # θ_full is the same solution on all the data, and differs from θ*
    full_dual = problem.x.T @ np.linalg.solve(problem.x @ problem.x.T + lam * np.eye(FIG5A.n), problem.y)
    np.testing.assert_allclose(problem.theta_full, full_dual, rtol=1e-9, atol=1e-12)
    assert np.linalg.norm(problem.theta_full - problem.theta_star) > 1e-3 * np.linalg.norm(problem.theta_star)


def test_section_5_1_span_masses():
    # "24% of the mass of the forget set points lies in the span of the retain set, [which] captures less than
    # 0.01% of the mass of the ground-truth update θ* − θ_full" (λ = 4, Σ = I)
    problem = theory.make_problem(FIG5A)
    assert 0.2 < theory.retain_span_fraction(problem, problem.x[problem.forget]) < 0.28
    assert theory.retain_span_fraction(problem, problem.theta_star - problem.theta_full) < 1e-4
    assert theory.retain_span_fraction(problem, problem.x[problem.retain]) == pytest.approx(1.0)


def test_gd_iterates_match_theorem_1(problem):
    objective = theory.gd_objective(problem)
    lr = _stable_lr(objective)
    iterates = theory.descend(problem, objective, lr, steps=40)
    for t in (0, 1, 7, 40):
        _assert_deviation_close(iterates[t], theory.gd_closed_form(problem, lr, t), problem.theta_star)
    # the closed form is exact for any step size, not only stable ones
    big = 0.9 / (2.0 * problem.lam)
    _assert_deviation_close(theory.descend(problem, objective, big, steps=3)[3],
                            theory.gd_closed_form(problem, big, 3), problem.theta_star)


def test_om_iterates_match_theorem_1(problem):
    objective = theory.om_objective(problem)
    lr = _stable_lr(objective)
    iterates = theory.descend(problem, objective, lr, steps=40)
    for t in (0, 1, 7, 40):
        _assert_deviation_close(iterates[t], theory.om_closed_form(problem, lr, t), problem.theta_star)


def test_gd_closed_form_rejects_the_singular_step():
    problem = theory.make_problem(theory.Setting(lam=4.0, d=20, n=10, n_forget=2))
    with pytest.raises(UserError, match="2ηλ"):
        theory.gd_closed_form(problem, 1.0 / 8.0, 3)


def test_minibatches_are_distinct_rows_and_seeded():
    batches = theory.minibatches(12, 5, steps=50, seed=1)
    assert batches.shape == (50, 5)
    assert all(len(set(batch)) == 5 for batch in batches) and batches.min() >= 0 and batches.max() < 12
    np.testing.assert_array_equal(batches, theory.minibatches(12, 5, steps=50, seed=1))
    assert list(theory.minibatches(12, None, steps=3, seed=1)) == [None, None, None]
    with pytest.raises(UserError, match="batch_size"):
        theory.minibatches(12, 13, steps=3, seed=1)


def test_minibatch_gradients():
    problem = theory.make_problem(theory.Setting(lam=4.0, d=60, n=20, n_forget=3))
    rng = np.random.default_rng(0)
    theta = rng.standard_normal(60)
    for objective in (theory.gd_objective(problem), theory.gda_objective(problem, 0.1), theory.om_objective(problem)):
        n = len(objective.x)
        # the scaled minibatch gradient averages to the full gradient over all batches of one row
        mean = np.mean([objective.gradient(theta, np.array([i])) for i in range(n)], axis=0)
        np.testing.assert_allclose(mean, objective.gradient(theta), rtol=1e-10, atol=1e-10)
    # Theorem 2's proof: every OM minibatch gradient vanishes at θ*; ridge GD's do not
    om, gd = theory.om_objective(problem), theory.gd_objective(problem)
    rows = np.array([0, 5, 9])
    assert np.linalg.norm(om.gradient(problem.theta_star, rows)) < 1e-10
    assert np.linalg.norm(gd.gradient(problem.theta_star, rows)) > 1e-2


def test_gda_ascends_on_the_forget_set():
    problem = theory.make_problem(theory.Setting(lam=4.0, d=60, n=20, n_forget=3))
    theta = np.random.default_rng(1).standard_normal(60)
    alpha = 0.1
    x_f, y_f = problem.x[problem.forget], problem.y[problem.forget]
    expected = theory.gd_objective(problem).gradient(theta) - alpha * 2.0 * x_f.T @ (x_f @ theta - y_f)
    np.testing.assert_allclose(theory.gda_objective(problem, alpha).gradient(theta), expected, rtol=1e-10)


def test_diverged_run_is_nan_after_overflow():
    problem = theory.make_problem(theory.Setting(lam=4.0, d=40, n=10, n_forget=2))
    distance = theory.unlearning_curve(problem, theory.om_objective(problem), lr=10.0, steps=2000)
    assert distance[0] == pytest.approx(1.0)
    assert np.isnan(distance[-1])
    assert theory.Curve(distance).score == np.inf


# --- the paper's qualitative claims, on shortened runs of every panel of Figure 5 and Figure E.2 ---------------


@pytest.fixture(scope="module", params=sorted(theory.PAPER_SETTINGS))
def panel(request) -> tuple[theory.Setting, dict[str, theory.Curve]]:
    setting = theory.PAPER_SETTINGS[request.param]
    setting = dataclasses.replace(setting, steps=min(setting.steps, 500 if setting.batch_size is None else 600))
    return setting, theory.run_experiment(setting)


def _hitting_time(curve: theory.Curve, level: float) -> float:
    below = np.flatnonzero(curve.distance <= level)
    return below[0] if len(below) else np.inf


def test_curves_start_at_one_and_have_the_setting_length(panel):
    setting, curves = panel
    assert list(curves) == ["GD", "GDA", "OM", "OM retain"]
    for curve in curves.values():
        assert curve.distance.shape == (setting.steps + 1,)
        assert curve.distance[0] == pytest.approx(1.0)
        assert curve.params["η"] in theory.LEARNING_RATES
    assert curves["GDA"].params["α"] in theory.GDA_ALPHAS


def test_who_converges_faster_is_as_the_paper_says(panel):
    setting, curves = panel
    gd, om = curves["GD"], curves["OM"]
    small_lam = setting.lam in (4.0, 0.25)
    if setting.batch_size is not None or small_lam:
        # Figure 5a (small λ, full batch) and 5c-d (stochastic, any λ): OM converges much faster than GD
        assert om.distance[-1] < 0.1 * gd.distance[-1]
    else:
        # Figure 5b (large λ, full batch): GD converges faster than OM
        assert _hitting_time(gd, 1e-6) < _hitting_time(om, 1e-6)
        assert np.isfinite(_hitting_time(gd, 1e-6))


def test_om_on_retain_and_gda_do_not_converge(panel):
    _, curves = panel
    # "OMRS makes negligible progress"; GDA never gets close to θ*
    assert curves["OM retain"].distance[-1] > 0.5
    assert np.nanmin(curves["GDA"].distance) > 1e-3


def test_plot_writes_a_png(tmp_path):
    setting = theory.Setting(lam=4.0, d=40, n=10, n_forget=2, steps=30, batch_size=2)
    path = tmp_path / "panel.png"
    theory.plot_experiment(theory.run_experiment(setting), path, setting)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    image = matplotlib.image.imread(path)
    assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100
    assert image.std() > 0.01  # not blank


def test_user_errors():
    with pytest.raises(UserError, match="covariance"):
        theory.covariance_diagonal(5, "spiked")
    with pytest.raises(UserError, match="n_forget"):
        theory.make_problem(theory.Setting(lam=1.0, n=5, n_forget=5))
