"""The source-free estimate of the retain Hessian (source-free unlearning, Sec. 4, Eq. (3)).

The model owner perturbs the optimum, ``W_i = W* + delta_i`` with ``delta_i = sigma u_i``,
``u_i ~ N(0, I)``, measures the *forget* set's loss differences ``dL_F(W_i) = L_F(W_i) - L_F(W*)``
and fits a PSD matrix X to them by least squares (Eq. 3)::

    minimise  1/m sum_i ( 1/2 u_i^T X u_i - c_i )^2   subject to  X >= lower

with ``c_i`` the loss difference plus or minus its gradient term, divided by sigma^2 (the fit is in
units of u, so X is in the units of the objective's Hessian whatever sigma is; the printed
objective is this one times sigma^4, with the same minimiser). ``lower`` is 0 (Eq. 3) or the
forget Hessian H_F (the notebook variant).

Variants (``variant``): the paper is ambiguous in three places (the sign of the gradient term,
what the fit recovers from forget-set data, the perturbations' scale); each variant is one
reading, and every run reports them side by side.

- ``paper``: Eq. 3 exactly as printed, ``f~_i = 1/2 dw_i^T X dw_i - grad_f^T dw_i - dL_f(w_i)``,
  i.e. ``c_i = (dL_F(W_i) + grad_F^T delta_i) / sigma^2``, and ``H_r ~= X``, with the
  perturbations ``dw ~ N(0, I)`` that Lemma 1 states (sigma 1; Sec. 4 only says "small
  perturbations"). The sign comes from substituting ``grad_r = -grad_F`` into the retain-side
  Taylor expansion and then swapping dL_r for dL_F: for forget-set data the first-order term is
  ``+grad_F^T delta``, so the fit sees an odd part ``2 grad_F^T u / sigma`` that no quadratic form
  can explain; it acts as noise of that size.
- ``paper_taylor``: the reading this library ran as ``paper`` before (issue 18): the forget
  objective's own first-order term is subtracted, ``c_i = (dL_F(W_i) - grad_F^T delta_i) / sigma^2``,
  so that for a quadratic loss the data are exactly ``1/2 u^T H_F u``; ``H_r ~= X``; sigma 0.01 as
  in the authors' notebook. X then recovers H_F, the Hessian of ``L_F`` (exactly, for the squared
  loss, once m >= p(p+1)/2), not H_r. For a random forget set ``H_F ~= (n_F / n_r) H_r``, and at
  the optimum ``grad_r = -grad_F``, so the Newton step is about n_r / n_F times too long and
  overshoots. Accuracy cannot see this on easy data; the weight distance to the retrained model can.
- ``corrected``: as ``paper_taylor``, then ``H_r ~= (n_r / n_F) X``: the rescaling that the
  identity ``H_F ~= (n_F/n_r) H_r`` calls for; n_r = n - n_F is known to the model owner (who
  knows the training-set size n).
- ``notebook`` (the authors' public notebook): as ``paper_taylor`` but fit X >= H_F (and X >= 0),
  then ``H_r = X - H_F``. Where the fit recovers H_F the difference is ~0 and only the ridge is left.

:data:`VARIANT_SIGMA` holds each variant's own perturbation scale (Lemma 1's 1 for ``paper``, the
notebook's 0.01 for the others); a caller may set another.

Which perturbations: the Hessian of a linear model is block diagonal (see
:class:`~unlearnflow.sourcefree.linear.BlockHessian`). For the squared loss every row of W has the
same block, so every row is perturbed by the same u (as in the notebook) and X / K is the block;
for one-vs-rest logistic each row has its own block and its own m perturbations; for the
multinomial loss the one block is Kd x Kd (needs m >= Kd(Kd+1)/2 to be identifiable).

Solvers (``solver``): ``clarabel`` or ``scs`` through cvxpy (settings ``max_iters``, ``tol`` and any
cvxpy/solver keyword in ``options``), and ``scalable``: accelerated projected gradient (FISTA with
gradient restart) on X, one eigendecomposition per iteration for the projection onto
``{X >= lower}``, started from the best multiple of the identity (the worst-conditioned
direction of the least-squares operator); it runs its BLAS calls on one thread (on a shared
machine OpenBLAS threads make these small products ~50x slower). Its convergence is linear in
the conditioning of the empirical design: fast for m >= 2 p(p+1)/2, slow just above p(p+1)/2,
where the design is nearly square. Every fit reports the objective value it reached.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np
from threadpoolctl import threadpool_limits

from unlearnflow.errors import UserError
from unlearnflow.sourcefree.declarations import SOLVERS, VARIANT_SIGMA, VARIANTS
from unlearnflow.sourcefree.linear import BlockHessian, LinearObjective


@dataclass(frozen=True)
class PsdFit:
    """One solved instance of Eq. (3): X, the objective value Psi~(X) it reached, how."""

    X: np.ndarray
    objective: float
    solver: str
    iterations: int
    seconds: float
    status: str
    max_residual: float


def psd_objective(X: np.ndarray, U: np.ndarray, c: np.ndarray) -> float:
    """``Psi~(X) = 1/m sum_i (1/2 u_i^T X u_i - c_i)^2`` (Eq. 3's objective)."""
    return float(np.mean(_residuals(X, U, c) ** 2))


def fit_psd(U: np.ndarray, c: np.ndarray, lower: np.ndarray | None = None, solver: str = "scalable",
            max_iters: int = 5000, tol: float = 1e-9, options: Mapping[str, Any] | None = None) -> PsdFit:
    """Solve ``min 1/m sum (1/2 u_i^T X u_i - c_i)^2  s.t.  X - lower is PSD`` (Eq. 3; lower = 0 by default).

    `U` (m, p) holds the perturbation directions u_i, `c` (m,) the targets. `solver` is
    ``scalable`` (:func:`_fit_apg`) or a cvxpy conic solver (``clarabel``, ``scs``).
    """
    if solver not in SOLVERS:
        raise UserError(f"source-free Hessian: unknown solver {solver!r} (known: {', '.join(SOLVERS)})")
    U, c = np.asarray(U, np.float64), np.asarray(c, np.float64)
    lower = np.zeros((U.shape[1], U.shape[1])) if lower is None else np.asarray(lower, np.float64)
    start = time.perf_counter()
    if solver == "scalable":
        with threadpool_limits(limits=1, user_api="blas"):   # small dense products: threads only contend
            X, iterations, status = _fit_apg(U, c, lower, max_iters, tol)
    else:
        X, iterations, status = _fit_cvxpy(U, c, lower, solver, max_iters, tol, dict(options or {}))
    seconds = time.perf_counter() - start
    return PsdFit(X, psd_objective(X, U, c), solver, iterations, seconds, status,
                  float(np.abs(_residuals(X, U, c)).max()))


def _residuals(X: np.ndarray, U: np.ndarray, c: np.ndarray) -> np.ndarray:
    return 0.5 * np.einsum("mi,mi->m", U @ X, U) - c


def _project(Y: np.ndarray, lower: np.ndarray) -> np.ndarray:
    """The nearest (Frobenius) X with X - lower PSD: one symmetric eigendecomposition."""
    values, vectors = np.linalg.eigh(0.5 * (Y + Y.T) - lower)
    return lower + (vectors * np.maximum(values, 0.0)) @ vectors.T


def _fit_apg(U: np.ndarray, c: np.ndarray, lower: np.ndarray, max_iters: int,
             tol: float) -> tuple[np.ndarray, int, str]:
    """FISTA with gradient restart on Psi~. grad Psi~(X) = 1/m U^T diag(r) U with r the
    residuals; its Lipschitz constant is the top eigenvalue of ``V -> 1/(2m) sum (u^T V u) u u^T``
    (power iteration from I)."""
    m, p = U.shape

    def operator(V: np.ndarray) -> np.ndarray:
        a = np.einsum("mi,mi->m", U @ V, U)
        return (U.T * a) @ U / (2 * m)

    V = np.eye(p) / np.sqrt(p)
    lipschitz = 1.0
    for _ in range(50):
        W = operator(V)
        new = float(np.linalg.norm(W))
        V = W / new
        if abs(new - lipschitz) <= 1e-6 * new:
            break
        lipschitz = new
    step = 1.0 / (1.01 * new)
    quad_identity = 0.5 * np.einsum("mi,mi->m", U, U)
    alpha = float(quad_identity @ (c - 0.5 * np.einsum("mi,mi->m", U @ lower, U)) / (quad_identity @ quad_identity))
    X = _project(lower + alpha * np.eye(p), lower)
    Y, t = X.copy(), 1.0
    for iteration in range(1, max_iters + 1):
        r = _residuals(Y, U, c)
        gradient = (U.T * r) @ U / m
        X_next = _project(Y - step * gradient, lower)
        change = float(np.linalg.norm(X_next - X))
        if float(np.sum((Y - X_next) * (X_next - X))) > 0:
            t = 1.0                                    # gradient restart (O'Donoghue & Candes 2015)
        t_next = 0.5 * (1 + np.sqrt(1 + 4 * t * t))
        Y = X_next + ((t - 1) / t_next) * (X_next - X)
        X, t = X_next, t_next
        if change <= tol * max(1.0, float(np.linalg.norm(X))):
            return X, iteration, "converged"
    return X, max_iters, "max_iters"


def _fit_cvxpy(U: np.ndarray, c: np.ndarray, lower: np.ndarray, solver: str, max_iters: int, tol: float,
               options: dict[str, Any]) -> tuple[np.ndarray, int, str]:
    """Eq. (3) as a conic program. u^T X u is linear in (diag X, strict upper triangle of X), so the
    data enter as one (m, p(p+1)/2) matrix; the PSD constraint is X - lower >> 0."""
    import cvxpy as cp

    m, p = U.shape
    rows, cols = np.triu_indices(p, 1)
    design = 0.5 * np.hstack([U * U, 2 * U[:, rows] * U[:, cols]])
    X = cp.Variable((p, p), symmetric=True)
    predicted = design[:, :p] @ cp.diag(X) + design[:, p:] @ cp.reshape(cp.upper_tri(X), (len(rows),), order="C")
    problem = cp.Problem(cp.Minimize(cp.sum_squares(predicted - c) / m), [X - lower >> 0])
    settings = ({"max_iter": max_iters, "tol_gap_abs": tol, "tol_gap_rel": tol, "tol_feas": tol}
                if solver == "clarabel" else {"max_iters": max_iters, "eps": tol})
    try:
        problem.solve(solver=solver.upper(), **{**settings, **options})
    except cp.error.SolverError as error:
        raise UserError(f"source-free Hessian: {solver} failed: {error}") from None
    if X.value is None:
        raise UserError(f"source-free Hessian: {solver} returned no solution (status {problem.status})")
    stats = problem.solver_stats
    return 0.5 * (X.value + X.value.T), int(stats.num_iters or 0), str(problem.status)


@dataclass(frozen=True)
class HessianEstimate:
    """The estimated retain Hessian and how it was obtained (for the certificate)."""

    hessian: BlockHessian
    fits: list[PsdFit]
    variant: str
    m: int
    sigma: float
    #: max_i |residual| of the fits in loss units: what the forget-set data cannot explain. Not
    #: Lemma 1's epsilon, ``max_i |dL_r(w_i) - dL_f(w_i)|``, which needs the retain losses
    fit_residual: float
    seconds: float


def forget_parts(objective: LinearObjective, W: np.ndarray, x_forget: np.ndarray,
                 y_forget: np.ndarray) -> tuple[np.ndarray, BlockHessian]:
    """``grad_F`` and ``H_F`` of the forget set's part of the objective,
    ``L_F(W) = sum_F l_i(W) + lam n_F / 2 ||W||^2`` (Guo et al.'s Delta summed over F)."""
    n_forget = len(x_forget)
    return (objective.gradient(W, x_forget, y_forget, n=n_forget),
            objective.hessian(W, x_forget, y_forget, n=n_forget))


def estimate_retain_hessian(objective: LinearObjective, W: np.ndarray, x_forget: np.ndarray, y_forget: np.ndarray,
                            n_train: int, m: int, sigma: float | None = None, variant: str = "paper",
                            solver: str = "scalable", seed: int = 0, max_iters: int = 5000, tol: float = 1e-9,
                            options: Mapping[str, Any] | None = None) -> HessianEstimate:
    """The source-free retain Hessian at the optimum W (module docstring): m perturbations of
    scale `sigma` (None: the variant's own, :data:`VARIANT_SIGMA`) per block, forget-set loss
    differences, the PSD fit of Eq. (3) with the `variant`'s gradient term, then its mapping to H_r.

    Uses only W, the forget samples and n_train (the training-set size the owner knows).
    """
    if variant not in VARIANTS:
        raise UserError(f"source-free Hessian: unknown variant {variant!r} (known: {', '.join(VARIANTS)})")
    sigma = VARIANT_SIGMA[variant] if sigma is None else sigma
    n_forget = len(x_forget)
    if not 0 < n_forget < n_train:
        raise UserError(f"source-free Hessian: n_train ({n_train}) must exceed the forget set's size ({n_forget})")
    if m < 1 or not sigma > 0:
        raise UserError(f"source-free Hessian: need m >= 1 perturbations and sigma > 0 (got m={m}, sigma={sigma})")
    start = time.perf_counter()
    K, d = W.shape
    grad_f, hess_f = forget_parts(objective, W, x_forget, y_forget)
    base = objective.value(W, x_forget, y_forget, n=n_forget)
    sign = 1.0 if variant == "paper" else -1.0     # the printed f~_i, or the Taylor reading
    rng = np.random.default_rng([int(seed), 7_002])
    shared = objective.loss == "squared"
    groups = [None] if shared or hess_f.structure == "full" else list(range(K))
    fits, blocks = [], []
    for row in groups:
        size = K * d if hess_f.structure == "full" else d
        U = rng.standard_normal((m, size))
        deltas = _placed(sigma * U, K, d, row, hess_f.structure)
        losses = objective.data_loss(W + deltas, x_forget, y_forget) + 0.5 * objective.lam * n_forget * (
            (W + deltas) ** 2).sum(axis=(1, 2))
        c = (losses - base + sign * np.einsum("mkd,kd->m", deltas, grad_f)) / sigma ** 2
        copies = K if shared else 1
        lower = None
        if variant == "notebook":
            lower = copies * (hess_f.blocks[0] if row is None else hess_f.blocks[row])
        fit = fit_psd(U, c, lower, solver, max_iters, tol, options)
        fits.append(fit)
        block = fit.X / copies
        if variant == "notebook":
            block = block - (hess_f.blocks[0] if row is None else hess_f.blocks[row])
        elif variant == "corrected":
            block = block * (n_train - n_forget) / n_forget
        blocks.append(block)
    stacked = np.broadcast_to(blocks[0], (K, d, d)).copy() if shared else np.stack(blocks)
    fit_residual = max(fit.max_residual for fit in fits) * sigma ** 2
    return HessianEstimate(BlockHessian(stacked, hess_f.structure), fits, variant, m, sigma, fit_residual,
                           time.perf_counter() - start)


def _placed(deltas: np.ndarray, K: int, d: int, row: int | None, structure: str) -> np.ndarray:
    """Perturbations (m, size) as perturbations of W (m, K, d): every row (row None), one row,
    or all of W (full structure)."""
    m = len(deltas)
    if structure == "full":
        return deltas.reshape(m, K, d)
    if row is None:
        return np.broadcast_to(deltas[:, None, :], (m, K, d))
    placed = np.zeros((m, K, d))
    placed[:, row] = deltas
    return placed
