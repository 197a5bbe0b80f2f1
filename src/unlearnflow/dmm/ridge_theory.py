"""Oracle matching for linear models: the ridge-regression experiments of the DMM paper.

Reproduces Section 5 ("Oracle matching for linear models") and Appendix E of the datamodel
matching / KLOM paper (``/work/shared/papers/datamodel-matching-klom.txt``):

* data (Appendix E.4): ``n`` points ``x_i ~ N(0, Σ)`` in ``d`` dimensions with ``Σ = I``
  (Figure 5) or ``Σ = diag(1, 1/2, ..., 1/d)`` (Figure E.2), labels ``y_i = θᵀx_i + ε_i`` with
  ``θ ~ N(0, I)`` and ``ε_i ~ N(0, 1/4)``, and a forget set of ``|S_F|`` points drawn uniformly;
* the ridge algorithm ``A(S) = argmin_θ Σ_S (θᵀx_i − y_i)² + λ‖θ‖²`` (eq. 5), the model
  ``θ_full = A(S)`` to unlearn from and the oracle ``θ* = A(S_R)`` to recover;
* the iterative unlearning algorithms of Section 5 / Appendix E.3, full-batch or with
  minibatches: ridge gradient descent on the retain set (GD), descent on the retain set with
  ascent on the forget set (GDA, "GD+GA"), oracle matching ``‖Xθ − Xθ*‖²`` on the full data
  (OM) and oracle matching on the retain set only (OM retain);
* Theorem 1's closed forms for the full-batch GD and OM iterates;
* :func:`run_experiment` (learning rate searched over ``{10, 10/2, ..., 10/2²⁰}`` and the GDA
  weight over ``{0.01, 0.1, 1, 10}``, as Appendix E.3 says) and :func:`plot_experiment`, which
  draw one panel of Figure 5 or Figure E.2: the relative distance
  ``R(θ_t) = ‖θ* − θ_t‖ / ‖θ* − θ_full‖`` against the iteration ``t``.

Every algorithm is gradient descent on an objective ``Σ_i w_i (x_iᵀθ − z_i)² + r‖θ‖²`` over some
rows of the data (:class:`Objective`). A stochastic step draws ``batch_size`` of these rows
uniformly without replacement and scales their term by ``rows / batch_size``, so that its
expectation is the full-batch gradient; the regularizer is applied in full at every step
(Theorem 2's ``f_i``). GDA's rows are the whole data set, so that a minibatch has an ascent term
only when it holds forget points, as Appendix E.3 describes.

Not stated by the paper and chosen here: Figure 5's labels are drawn as in Appendix E.4 (its
features are isotropic: Appendix E.4 calls Figure E.2 "a different covariance structure",
and Section 5.1's "24% of the mass of the forget set points lies in the span of the retain
set" is 95/400, see :func:`retain_span_fraction`); the learning rate (and GDA weight) of each
curve is the one of lowest mean ``log R(θ_t)`` over the run (:attr:`Curve.score`); the number
of iterations is :attr:`Setting.steps`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import cached_property
from itertools import repeat
from pathlib import Path
from typing import Literal

import numpy as np

from unlearnflow.errors import UserError

Covariance = Literal["isotropic", "harmonic"]

LEARNING_RATES = tuple(10.0 / 2.0**k for k in range(21))
"""Appendix E.3's learning-rate grid ``{10, 10/2, ..., 10/2²⁰}``."""

GDA_ALPHAS = (0.01, 0.1, 1.0, 10.0)
"""Appendix E.3's grid for the weight ``α`` of GDA's ascent term."""


@dataclass(frozen=True)
class Setting:
    """One panel: the data (Appendix E.4), ``λ`` of eq. (5) and the optimization budget.

    ``covariance`` is ``"isotropic"`` (``Σ = I``, Figure 5) or ``"harmonic"``
    (``Σ = diag(1, 1/2, ..., 1/d)``, Figure E.2); ``batch_size`` is ``None`` for full-batch
    updates and the minibatch size otherwise (5 in Appendix E.3).
    """

    lam: float
    covariance: Covariance = "isotropic"
    batch_size: int | None = None
    steps: int = 1000
    d: int = 400
    n: int = 100
    n_forget: int = 5
    noise_var: float = 0.25
    seed: int = 0

    def title(self) -> str:
        """A one-line description for plot titles."""
        cov = "Σ = I" if self.covariance == "isotropic" else "Σ = diag(1, 1/2, ..., 1/d)"
        mode = "full-batch" if self.batch_size is None else f"minibatch {self.batch_size}"
        return f"{cov}, d={self.d}, n={self.n}, |S_F|={self.n_forget}, λ={self.lam:g}, {mode}"


PAPER_SETTINGS = {
    "fig5a": Setting(lam=4.0),
    "fig5b": Setting(lam=400.0, steps=300),
    "fig5c": Setting(lam=4.0, batch_size=5, steps=2000),
    "fig5d": Setting(lam=400.0, batch_size=5, steps=2000),
    "figE2_full_small": Setting(lam=0.25, covariance="harmonic"),
    "figE2_full_large": Setting(lam=5.0, covariance="harmonic"),
    "figE2_sgd_small": Setting(lam=0.25, covariance="harmonic", batch_size=5, steps=2000),
    "figE2_sgd_large": Setting(lam=5.0, covariance="harmonic", batch_size=5, steps=2000),
}
"""The panels of Figure 5 (a-d) and Figure E.2 (small ``λ = 1/4`` and large ``λ = 5``)."""


@dataclass(frozen=True)
class RidgeProblem:
    """A data set ``(X, y)``, its forget set (a boolean mask over rows) and ``λ``."""

    x: np.ndarray
    y: np.ndarray
    forget: np.ndarray
    lam: float

    @property
    def retain(self) -> np.ndarray:
        """Boolean mask of the retain set ``S_R = S \\ S_F``."""
        return ~self.forget

    @cached_property
    def theta_full(self) -> np.ndarray:
        """``θ_full = A(S)``, the model to unlearn from."""
        return ridge_solution(self.x, self.y, self.lam)

    @cached_property
    def theta_star(self) -> np.ndarray:
        """The oracle ``θ* = A(S_R)``, the unlearning target."""
        return ridge_solution(self.x[self.retain], self.y[self.retain], self.lam)


def covariance_diagonal(d: int, covariance: Covariance) -> np.ndarray:
    """Diagonal of ``Σ``: all ones, or ``(1, 1/2, ..., 1/d)`` (Appendix E.4)."""
    if covariance == "isotropic":
        return np.ones(d)
    if covariance == "harmonic":
        return 1.0 / np.arange(1, d + 1)
    raise UserError(f"unknown covariance {covariance!r}; expected 'isotropic' or 'harmonic'")


def make_problem(setting: Setting) -> RidgeProblem:
    """Draw the data of Appendix E.4: ``x_i ~ N(0, Σ)``, ``y_i = θᵀx_i + ε_i``, a random forget set."""
    if not 0 < setting.n_forget < setting.n:
        raise UserError(f"n_forget must be in (0, n={setting.n}), got {setting.n_forget}")
    rng = np.random.default_rng(setting.seed)
    x = rng.standard_normal((setting.n, setting.d)) * np.sqrt(covariance_diagonal(setting.d, setting.covariance))
    y = x @ rng.standard_normal(setting.d) + rng.normal(0.0, np.sqrt(setting.noise_var), setting.n)
    forget = np.zeros(setting.n, dtype=bool)
    forget[rng.choice(setting.n, setting.n_forget, replace=False)] = True
    return RidgeProblem(x=x, y=y, forget=forget, lam=setting.lam)


def ridge_objective(theta: np.ndarray, x: np.ndarray, y: np.ndarray, lam: float) -> float:
    """Eq. (5): ``Σ_i (θᵀx_i − y_i)² + λ‖θ‖²``."""
    return float(np.sum((x @ theta - y) ** 2) + lam * theta @ theta)


def ridge_solution(x: np.ndarray, y: np.ndarray, lam: float) -> np.ndarray:
    """``A(S)`` of eq. (5): the solution of its stationarity condition ``(XᵀX + λI)θ = Xᵀy``."""
    return np.linalg.solve(x.T @ x + lam * np.eye(x.shape[1]), x.T @ y)


def relative_distance(iterates: np.ndarray, problem: RidgeProblem) -> np.ndarray:
    """Figure 5's ``R(θ_t) = ‖θ* − θ_t‖ / ‖θ* − θ_full‖`` for each row ``θ_t`` of `iterates`."""
    theta_star = problem.theta_star
    with np.errstate(over="ignore"):
        return np.linalg.norm(iterates - theta_star, axis=1) / np.linalg.norm(problem.theta_full - theta_star)


def retain_span_fraction(problem: RidgeProblem, vectors: np.ndarray) -> float:
    """Fraction of the squared norm of `vectors` (rows) lying in the span of the retain inputs (Section 5.1)."""
    basis, _ = np.linalg.qr(problem.x[problem.retain].T)
    vectors = np.atleast_2d(vectors)
    return float(np.sum((vectors @ basis) ** 2) / np.sum(vectors**2))


@dataclass(frozen=True)
class Objective:
    """``Σ_i w_i (x_iᵀθ − z_i)² + reg ‖θ‖²`` over the rows ``x_i`` of `x`: every unlearning loss of Section 5."""

    x: np.ndarray
    targets: np.ndarray
    weights: np.ndarray
    reg: float

    def gradient(self, theta: np.ndarray, rows: np.ndarray | None = None) -> np.ndarray:
        """The gradient, with the data term summed over `rows` (all if ``None``) and scaled by ``n / |rows|``."""
        if rows is None:
            x, targets, weights = self.x, self.targets, self.weights
        else:
            x, targets, weights = self.x[rows], self.targets[rows], self.weights[rows]
        scale = len(self.x) / len(x)
        return 2.0 * scale * ((weights * (x @ theta - targets)) @ x) + 2.0 * self.reg * theta


def gd_objective(problem: RidgeProblem) -> Objective:
    """GD: the ridge objective (5) on the retain set, ``‖X_Rθ − y_R‖² + λ‖θ‖²``."""
    retain = problem.retain
    return Objective(problem.x[retain], problem.y[retain], np.ones(retain.sum()), problem.lam)


def gda_objective(problem: RidgeProblem, alpha: float) -> Objective:
    """GDA (Appendix E.3): gradient ``grad_retain − α grad_forget`` over the whole data set."""
    return Objective(problem.x, problem.y, np.where(problem.forget, -alpha, 1.0), problem.lam)


def om_objective(problem: RidgeProblem) -> Objective:
    """OM: ``‖Xθ − Xθ*‖²`` on the full data set, i.e. eq. (10) (Appendix E.3, item 3)."""
    return Objective(problem.x, problem.x @ problem.theta_star, np.ones(len(problem.x)), 0.0)


def om_retain_objective(problem: RidgeProblem) -> Objective:
    """OM on the retain set only: ``‖X_Rθ − X_Rθ*‖²`` (Appendix E.3, item 4)."""
    x_retain = problem.x[problem.retain]
    return Objective(x_retain, x_retain @ problem.theta_star, np.ones(len(x_retain)), 0.0)


Candidates = list[tuple[dict[str, float], Objective]]

ALGORITHMS: dict[str, Callable[[RidgeProblem], Candidates]] = {
    "GD": lambda problem: [({}, gd_objective(problem))],
    "GDA": lambda problem: [({"α": alpha}, gda_objective(problem, alpha)) for alpha in GDA_ALPHAS],
    "OM": lambda problem: [({}, om_objective(problem))],
    "OM retain": lambda problem: [({}, om_retain_objective(problem))],
}
"""Each algorithm of Figure 5 and its candidate objectives with their hyperparameters (GDA: ``α``)."""


def minibatches(n: int, batch_size: int | None, steps: int, seed: int) -> Iterable[np.ndarray | None]:
    """Rows used at each of `steps` steps: all (``None``), or `batch_size` of the `n` rows drawn uniformly without
    replacement."""
    if batch_size is None:
        return repeat(None, steps)
    if not 0 < batch_size <= n:
        raise UserError(f"batch_size must be in (0, {n}], got {batch_size}")
    return np.argsort(np.random.default_rng(seed).random((steps, n)), axis=1)[:, :batch_size]


def descend(
    problem: RidgeProblem, objective: Objective, lr: float, steps: int, batch_size: int | None = None, seed: int = 0
) -> np.ndarray:
    """Rows ``θ_0 = θ_full, ..., θ_steps`` of gradient descent ``θ_t = θ_{t−1} − η ∇L(θ_{t−1})`` (eq. 12).

    Once an iterate overflows, it and the rest are ``NaN`` (a diverged run).
    """
    iterates = np.full((steps + 1, problem.x.shape[1]), np.nan)
    iterates[0] = theta = problem.theta_full
    for t, rows in enumerate(minibatches(len(objective.x), batch_size, steps, seed), start=1):
        with np.errstate(over="ignore", invalid="ignore"):
            theta = theta - lr * objective.gradient(theta, rows)
        if not np.all(np.isfinite(theta)):
            break
        iterates[t] = theta
    return iterates


def unlearning_curve(
    problem: RidgeProblem, objective: Objective, lr: float, steps: int, batch_size: int | None = None, seed: int = 0
) -> np.ndarray:
    """``R(θ_t)`` for ``t = 0..steps`` of :func:`descend`'s iterates."""
    return relative_distance(descend(problem, objective, lr, steps, batch_size, seed), problem)


def gd_closed_form(problem: RidgeProblem, lr: float, t: int) -> np.ndarray:
    """Theorem 1, GD: ``θ_t = θ* + (1 − 2ηλ)^t (I − 2η/(1 − 2ηλ) X_RᵀX_R)^t (θ_full − θ*)``."""
    shrink = 1.0 - 2.0 * lr * problem.lam
    if shrink == 0.0:
        raise UserError("Theorem 1's GD form needs 2ηλ ≠ 1")
    x_retain = problem.x[problem.retain]
    step = np.eye(x_retain.shape[1]) - 2.0 * lr / shrink * x_retain.T @ x_retain
    theta_star = problem.theta_star
    return theta_star + shrink**t * np.linalg.matrix_power(step, t) @ (problem.theta_full - theta_star)


def om_closed_form(problem: RidgeProblem, lr: float, t: int) -> np.ndarray:
    """Theorem 1, OM: ``θ_t = θ* + (I − 2ηXᵀX)^t (θ_full − θ*)``."""
    step = np.eye(problem.x.shape[1]) - 2.0 * lr * problem.x.T @ problem.x
    theta_star = problem.theta_star
    return theta_star + np.linalg.matrix_power(step, t) @ (problem.theta_full - theta_star)


@dataclass(frozen=True)
class Curve:
    """One algorithm's ``R(θ_t)`` for ``t = 0..steps`` and its selected hyperparameters (``η``, GDA's ``α``)."""

    distance: np.ndarray
    params: dict[str, float] = field(default_factory=dict)

    @property
    def score(self) -> float:
        """Mean of ``log R(θ_t)`` over the run (the area under the curve on Figure 5's log axis), ``inf`` if it
        diverged."""
        return float(np.nan_to_num(np.mean(np.log(self.distance)), nan=np.inf))


def best_curve(problem: RidgeProblem, candidates: Candidates, setting: Setting) -> Curve:
    """Search :data:`LEARNING_RATES` × `candidates`; keep the curve of lowest :attr:`Curve.score`."""
    curves = (
        Curve(unlearning_curve(problem, objective, lr, setting.steps, setting.batch_size, setting.seed),
              {"η": lr, **params})
        for params, objective in candidates
        for lr in LEARNING_RATES
    )
    return min(curves, key=lambda curve: curve.score)


def run_experiment(setting: Setting) -> dict[str, Curve]:
    """One panel of Figure 5 / Figure E.2: the tuned curve of each algorithm in :data:`ALGORITHMS`."""
    problem = make_problem(setting)
    return {name: best_curve(problem, candidates(problem), setting) for name, candidates in ALGORITHMS.items()}


def plot_experiment(curves: dict[str, Curve], path: str | Path, setting: Setting) -> None:
    """Draw `curves` as Figure 5 does (``R(θ_t)`` on a log axis against ``t``) into the PNG `path`."""
    from matplotlib.figure import Figure  # here: the workflow imports this module to parse its rules

    fig = Figure(figsize=(6.4, 4.4))
    ax = fig.subplots()
    for name, curve in curves.items():
        params = ", ".join(f"{key}={value:.3g}" for key, value in curve.params.items())
        ax.plot(curve.distance, label=f"{name} ({params})")
    ax.set_yscale("log")
    ax.set_ylim(top=10.0)
    ax.set_xlabel("iteration t")
    ax.set_ylabel("‖θ* − θ_t‖ / ‖θ* − θ_full‖")
    ax.set_title(setting.title(), fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, format="png", dpi=100)
