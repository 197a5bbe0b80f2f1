"""Linear datamodels fitted from subset-trained models (DMM paper, Sections 2.2 and 4.3).

A datamodel predicts a model output on an evaluation point x (one target: a logit of one class,
or a margin) from the indicator vector of the model's training subset S:
``f_x(S) ~ bias_x + sum_{i in S} beta_i(x)`` (Ilyas et al. 2022). The DMM paper fits them on
models trained on random 50% subsets with the sparse regression of Ilyas et al. (Appendix
D.3) and uses them in DM-DIRECT (Appendix C.2) as ``f_x(theta_0) - sum_{i in F} beta_i(x)``;
this module only fits and scores them.

Inputs everywhere: ``masks`` (models x train points, bool; row k is model k's subset) and
``outputs`` (models x targets; column t is one target over all models).

* :func:`fit_lasso`: per target, ``1/(2m) ||y - X b - c||^2 + lambda ||b||_1`` (scikit-learn's
  convention, X the 0/1 masks, intercept c unpenalised, nothing standardised: the columns of
  50% masks have nearly equal variance). The lambda path of each target decays geometrically
  from ``lambda_max = max_j |X_c^T y_c| / m`` (the smallest lambda with b = 0); lambda is chosen
  per target by validation MSE on held-out models, then refitted on all models, as in the
  public reference code (see ``notes/reference-implementations.md``).
* :func:`fit_ridge`: ``1/(2m) ||y - X b - c||^2 + alpha/2 ||b||^2``, the same selection.
* :func:`fit_diagonal`: the diagonal-only ablation of Appendix G.2 (memorisation scores only).
* :func:`lasso_reference`: the same lasso with a scikit-learn loop over targets (slow; tests and
  the benchmark compare against it).
* :func:`linear_datamodeling_score` (LDS, Park et al. 2023, used in Figure G.6) and
  :func:`heldout_r2` score datamodels on held-out models.

The fast lasso solver (:func:`_lasso_cd`) works on the Gram matrix ``G = X_c^T X_c / m``,
which all targets share, and runs cyclic coordinate descent on every target at once: coordinate
j is soft-thresholded for all T targets in one vector operation. Speed levers:

* each target is rescaled by its own lambda, so the threshold is 1 for every target;
* coordinates go in blocks of 64 features: inside a block, a coordinate's current correlation
  is its value at the block start minus a small matrix-vector product with the block's earlier
  changes; after the block, one float32 matrix product ``H[:, block] @ delta`` (n x 64 x T)
  brings the correlations of all features up to date, so the arithmetic runs in GEMMs;
* targets go in panels of 2,048 so that a panel's (n x 2,048) state stays in cache;
* each sweep visits only the features nonzero for some target of the panel or violating the
  optimality condition for some target (a working set; the duality gap catches the rest);
* per-target duality gaps, computed from the sweep's own state, stop each target on its own
  (scikit-learn's criterion); converged targets leave the sweeps;
* warm starts along the lambda path and for the refit; a target's path stops once its
  validation error has stopped improving (`patience`).

One sweep costs about ``2 n^2`` flops per target (a Gram sweep; scikit-learn's costs ``2 m n``
in vector operations); ``bench/bench_lasso.py`` measures the whole fit against a scikit-learn
loop. On a CPU shared with other jobs, one torch thread (``torch.set_num_threads(1)``) is much
faster than two: the many small operations per sweep stall on a descheduled thread.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F

from unlearnflow.errors import UserError

DEFAULT_RIDGE_ALPHAS = (1e-3, 3e-3, 1e-2, 3e-2, 0.1, 0.3, 1.0, 3.0, 10.0)


@dataclass
class Datamodels:
    """Linear datamodels ``f_t(S) = bias[t] + sum_{i in S} weights[i, t]`` for T targets."""

    weights: np.ndarray  # (n_train, T) float32 coefficients beta[i, t]
    bias: np.ndarray  # (T,) float32
    alphas: np.ndarray  # (T,) selected regularisation per target (0 for "diagonal")
    method: str  # "lasso" | "ridge" | "diagonal" | "trak" (unlearnflow.dmm.trak)

    def predict(self, masks: np.ndarray) -> np.ndarray:
        """Predicted outputs (models x T) of models trained on the subsets in `masks`."""
        masks = _check_masks(masks)
        if masks.shape[1] != self.weights.shape[0]:
            raise UserError(f"masks have {masks.shape[1]} training points; the datamodels have {self.weights.shape[0]}")
        return masks.astype(np.float32) @ self.weights + self.bias


# ----------------------------------------------------------------------------------------------
# input checks, model split, moments


def _check_masks(masks: np.ndarray) -> np.ndarray:
    masks = np.asarray(masks)
    if masks.dtype != np.bool_ or masks.ndim != 2:
        raise UserError(f"masks must be a 2-D bool array (models x training points), got {masks.dtype} {masks.shape}")
    return masks


def _check_inputs(masks: np.ndarray, outputs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Validate `masks` (models x n, bool) and `outputs` (models x T, finite)."""
    masks = _check_masks(masks)
    outputs = np.asarray(outputs)
    if outputs.ndim != 2 or outputs.shape[0] != masks.shape[0]:
        raise UserError(f"outputs must be (models x targets) with {masks.shape[0]} rows like masks, got {outputs.shape}")
    if not np.issubdtype(outputs.dtype, np.number) or not np.all(np.isfinite(outputs)):
        raise UserError("outputs must be finite numbers")
    return masks, outputs


def split_models(n_models: int, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Random (train, validation) split of model indices; validation gets ``round(val_fraction * n)``."""
    if not 0.0 < val_fraction < 1.0:
        raise UserError(f"val_fraction must lie in (0, 1), got {val_fraction}")
    n_val = int(round(val_fraction * n_models))
    if n_val < 2 or n_models - n_val < 2:
        raise UserError(f"{n_models} models are too few for a validation split of {val_fraction} (need 2 on each side)")
    order = np.random.default_rng(seed).permutation(n_models)
    return np.sort(order[n_val:]), np.sort(order[:n_val])


@dataclass
class _Moments:
    """Means and centred cross-products of X (0/1 masks) and Y over a set of models."""

    count: int
    xbar: torch.Tensor  # (n,)
    ybar: torch.Tensor  # (T,)
    sxx: torch.Tensor  # (n, n)
    sxy: torch.Tensor  # (n, T)
    syy: torch.Tensor  # (T,)

    @property
    def gram(self) -> torch.Tensor:
        return self.sxx / self.count

    @property
    def corr(self) -> torch.Tensor:
        return self.sxy / self.count

    @property
    def yy(self) -> torch.Tensor:
        return self.syy / self.count

    def combine(self, other: _Moments) -> _Moments:
        """Moments of the union of two disjoint model sets (Chan et al.'s pairwise update)."""
        n = self.count + other.count
        w = self.count * other.count / n
        dx, dy = other.xbar - self.xbar, other.ybar - self.ybar
        return _Moments(
            n,
            self.xbar + dx * (other.count / n),
            self.ybar + dy * (other.count / n),
            self.sxx + other.sxx + w * torch.outer(dx, dx),
            self.sxy + other.sxy + w * torch.outer(dx, dy),
            self.syy + other.syy + w * dy * dy,
        )


def _mask_moments(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and centred cross-product of float32 masks `x`; the Gram is accumulated in float64."""
    xbar = x.mean(0)
    xc64 = (x - xbar).double()
    return xbar, (xc64.T @ xc64).float()


def _moments(x: torch.Tensor, y: torch.Tensor,
             mask_moments: tuple[torch.Tensor, torch.Tensor] | None = None) -> _Moments:
    """Moments of float32 masks `x` and outputs `y` (`mask_moments`: those of `x`, if known)."""
    xbar, sxx = _mask_moments(x) if mask_moments is None else mask_moments
    ybar = y.mean(0)
    xc, yc = x - xbar, y - ybar
    return _Moments(len(x), xbar, ybar, sxx, xc.T @ yc, (yc * yc).sum(0))


def _torch_device(device: str) -> torch.device:
    try:
        dev = torch.device(device)
    except RuntimeError as err:
        raise UserError(f"unknown device {device!r}") from err
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"device {device!r} requested but CUDA is not available")
    return dev


def _to_torch(masks: np.ndarray, outputs: np.ndarray, device: str) -> tuple[torch.Tensor, torch.Tensor]:
    dev = _torch_device(device)
    x = torch.from_numpy(masks).to(dev, torch.float32)
    return x, torch.as_tensor(outputs, dtype=torch.float32).to(dev)


# ----------------------------------------------------------------------------------------------
# the batched lasso solver


def _duality_gap(z: torch.Tensor, beta: torch.Tensor, cs: torch.Tensor, dinv: torch.Tensor, yys: torch.Tensor) -> torch.Tensor:
    """Per-target duality gap of the lambda-scaled lasso, from the sweep's state.

    Scaled problem (lambda = 1): ``min_b 1/2 b'Gb - c'b + |b|_1 + yy/2``; ``beta = diag(G) b``,
    ``z = c - G b + beta``, so ``q = z - beta = X_c^T r / m``. With ``s = min(1, 1/max|q|)``
    the dual point ``s r`` gives ``gap = (1-s)^2/2 r'y - (1+s^2)/2 q'b + |b|_1`` where
    ``r'y = yy - c'b`` (all per m).
    """
    b = beta * dinv[:, None]
    q = z - beta
    s = torch.clamp(1.0 / q.abs().amax(0).clamp_min(1e-30), max=1.0)
    ry = yys - (cs * b).sum(0)
    qb = (q * b).sum(0)
    return 0.5 * (1 - s) ** 2 * ry - 0.5 * (1 + s * s) * qb + b.abs().sum(0)


def _sweep(
    z: torch.Tensor,
    beta: torch.Tensor,
    h_t: torch.Tensor,
    cs: torch.Tensor,
    dinv: torch.Tensor,
    yys: torch.Tensor,
    panel: int = 2048,
) -> torch.Tensor:
    """One cyclic coordinate-descent sweep for all columns (targets) at once, in place; returns the gaps.

    ``z`` (n x T) holds ``c - H beta`` with ``H = G_offdiag diag(G)^-1`` and ``h_t = H^T``;
    coordinate j becomes ``beta_j = softshrink(z_j, 1)``. Columns go in panels of `panel`
    targets so that a panel's state stays in cache across the blocks and for its duality gap
    (measured 1.6x at 18,000 targets); each panel sweeps its own working set.
    """
    gaps = []
    for start in range(0, z.shape[1], panel):
        cols = slice(start, start + panel)
        _sweep_panel(z[:, cols], beta[:, cols], h_t)
        gaps.append(_duality_gap(z[:, cols], beta[:, cols], cs[:, cols], dinv, yys[cols]))
    return torch.cat(gaps)


def _sweep_panel(z: torch.Tensor, beta: torch.Tensor, h_t: torch.Tensor, block: int = 64) -> None:
    """:func:`_sweep` on one panel, over the features nonzero or violating ``|z| <= 1`` somewhere.

    Each target updates only its own working set (features nonzero or violating for it at the
    sweep's start; the others' changes are masked to zero), so that a target's iterates do not
    depend on which targets share its panel: a fit scattered over chunks of targets equals the
    single fit up to rounding. Inside a block, coordinate p sees the block's earlier changes
    through ``z_p - H[p, :p] delta[:p]`` (rows of `delta` after p are still zero, so the product
    runs over the whole block); after it, one matrix product updates `z` for every feature.
    """
    active = (beta != 0) | (z > 1) | (z < -1)
    work = torch.nonzero(active.any(1)).squeeze(1)
    h_work = h_t.index_select(0, work)  # row j: column j of H
    mask_work = active.index_select(0, work).to(z.dtype)
    for start in range(0, len(work), block):
        idx, h_rows = work[start : start + block], h_work[start : start + block]
        h_low = h_rows.index_select(1, idx).T.tril(-1)
        z_block, beta_block = z.index_select(0, idx), beta.index_select(0, idx)
        delta = torch.zeros_like(beta_block)
        earlier = delta.T
        for z_p, h_p, delta_p, beta_p, mask_p in zip(z_block.unbind(0), h_low.unbind(0), delta.unbind(0),
                                                     beta_block.unbind(0), mask_work[start : start + block].unbind(0)):
            torch.sub(F.softshrink(torch.addmv(z_p, earlier, h_p, alpha=-1), 1.0), beta_p, out=delta_p)
            delta_p.mul_(mask_p)
        z.addmm_(h_rows.T, delta, alpha=-1)
        beta.index_copy_(0, idx, beta_block.add_(delta))


def _lasso_cd(
    gram: torch.Tensor,
    corr: torch.Tensor,
    yy: torch.Tensor,
    lam: torch.Tensor,
    start: torch.Tensor,
    tol: float,
    max_iter: int,
    residual: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Lasso coefficients (n x T) for per-target penalties `lam` (T,), warm-started from `start`,
    and their residual correlations ``c - (G - diag G) b`` (n x T).

    Minimises ``1/2 b'Gb - c_t'b + lam_t |b|_1`` (the 1/(2m) least-squares lasso up to a
    constant; ``c = corr[:, t]``, ``yy = ||y_t - mean||^2 / m``) for every column by batched
    coordinate descent (module docstring). Target t stops when its duality gap is at most
    ``tol * yy_t``, scikit-learn's criterion: its coefficients are those of that sweep (converged
    targets leave the sweeps in batches; later sweeps never change what was kept, so a target's
    result does not depend on the other targets). Warns about targets still above it after
    `max_iter` sweeps. `residual`, the residual correlations of `start` (what a previous call on
    the same moments returned), saves the (n x n x T) product that computes them.
    """
    d = gram.diagonal()
    dinv = torch.where(d > 0, 1.0 / d.clamp_min(1e-30), torch.zeros_like(d))
    h = (gram - torch.diag(d)) * dinv[None, :]
    h_t = h.T.contiguous()
    cs, yys = corr / lam, yy / lam**2
    beta = start * d[:, None] / lam
    z = cs - h @ beta if residual is None else residual / lam
    # the live (not yet converged) targets: their columns of z, beta, c and yy
    live = torch.arange(len(lam), device=lam.device)
    z_kept = torch.empty_like(z)
    beta_live, cs_live, yys_live = beta.clone(), cs, yys
    finished = torch.zeros(len(live), dtype=torch.bool, device=lam.device)
    for _ in range(max_iter):
        done = _sweep(z, beta_live, h_t, cs_live, dinv, yys_live) <= tol * yys_live
        newly = done & ~finished
        if newly.any():  # keep each target's coefficients of the sweep it converged in
            beta[:, live[newly]] = beta_live[:, newly]
            z_kept[:, live[newly]] = z[:, newly]
            finished |= newly
        if finished.all() or finished.sum() > len(live) // 4:  # drop converged targets in batches
            keep = ~finished
            live, z, beta_live, cs_live, yys_live = live[keep], z[:, keep], beta_live[:, keep], cs_live[:, keep], yys_live[keep]
            finished = finished[keep]
            if not len(live):
                break
    else:
        late = ~finished
        beta[:, live[late]] = beta_live[:, late]
        z_kept[:, live[late]] = z[:, late]
        if late.any():
            warnings.warn(f"lasso: {int(late.sum())} targets not converged after {max_iter} sweeps", RuntimeWarning,
                          stacklevel=3)
    # z = (c - (G - diag G) b) / lam
    return beta * dinv[:, None] * lam, z_kept * lam


def _grid(corr: torch.Tensor, n_alphas: int, alpha_min_ratio: float) -> torch.Tensor:
    """(n_alphas, T) geometric lambda path from each target's ``lambda_max = max_j |corr_jt|``."""
    if n_alphas < 1 or not 0.0 < alpha_min_ratio <= 1.0:
        raise UserError(f"need n_alphas >= 1 and alpha_min_ratio in (0, 1], got {n_alphas} and {alpha_min_ratio}")
    lam_max = corr.abs().amax(0).clamp_min(1e-12)  # a constant target: any lambda gives b = 0
    factors = torch.logspace(0.0, float(np.log10(alpha_min_ratio)), n_alphas, dtype=torch.float64)
    return factors.to(corr)[:, None] * lam_max[None, :]


def lambda_path(masks: np.ndarray, outputs: np.ndarray, n_alphas: int = 20, alpha_min_ratio: float = 0.01) -> np.ndarray:
    """The per-target lambda grid (n_alphas x T) that :func:`fit_lasso` uses on these models.

    ``lambda_max = max_j |X_c^T y_c| / m`` decaying geometrically to ``alpha_min_ratio *
    lambda_max`` (reference notes, "Datamodels"). Pass ``masks[train], outputs[train]`` with
    ``train`` from :func:`split_models` to get :func:`fit_lasso`'s grid.
    """
    masks, outputs = _check_inputs(masks, outputs)
    x, y = _to_torch(masks, outputs, "cpu")
    return _grid(_moments(x, y).corr, n_alphas, alpha_min_ratio).numpy()


def _check_solver(tol: float, max_iter: int) -> None:
    if not tol > 0 or max_iter < 1:
        raise UserError(f"need tol > 0 and max_iter >= 1, got {tol} and {max_iter}")


def _result(moments: _Moments, weights: torch.Tensor, alphas: np.ndarray, method: str) -> Datamodels:
    """Datamodels with the intercept ``mean y - mean x . beta`` of the fitted models."""
    bias = moments.ybar - moments.xbar @ weights
    return Datamodels(weights.cpu().numpy(), bias.cpu().numpy(), np.asarray(alphas, dtype=np.float64), method)


def solve_lasso(
    masks: np.ndarray,
    outputs: np.ndarray,
    alpha: float | np.ndarray,
    device: str = "cpu",
    tol: float = 1e-4,
    max_iter: int = 1000,
) -> Datamodels:
    """Lasso datamodels on all given models at a fixed `alpha` (scalar or one per target), no selection."""
    masks, outputs = _check_inputs(masks, outputs)
    _check_solver(tol, max_iter)
    alphas = np.broadcast_to(np.asarray(alpha, dtype=np.float64), (outputs.shape[1],)).copy()
    if not np.all(alphas > 0) or not np.all(np.isfinite(alphas)):
        raise UserError("alpha must be positive and finite (one value, or one per target)")
    x, y = _to_torch(masks, outputs, device)
    mom = _moments(x, y)
    lam = torch.as_tensor(alphas, dtype=torch.float32, device=x.device)
    weights, _ = _lasso_cd(mom.gram, mom.corr, mom.yy, lam, torch.zeros_like(mom.corr), tol, max_iter, mom.corr)
    return _result(mom, weights, alphas, "lasso")


def fit_lasso(
    masks: np.ndarray,
    outputs: np.ndarray,
    n_alphas: int = 20,
    alpha_min_ratio: float = 0.01,
    val_fraction: float = 0.2,
    seed: int = 0,
    device: str = "cpu",
    tol: float = 1e-4,
    max_iter: int = 1000,
    patience: int = 2,
    path_tol: float = 3e-3,
    block: int = 4096,
) -> Datamodels:
    """Lasso datamodels with lambda chosen per target on held-out models, refitted on all models.

    The models are split by :func:`split_models`; each target's path (:func:`lambda_path` of the
    training models) is solved from ``lambda_max`` downwards with warm starts, and the lambda with
    the smallest validation MSE is kept. A target's path stops once its validation MSE has not
    improved for `patience` consecutive lambdas (the overfitted end of the path is the expensive
    one); :func:`lasso_reference` applies the same rule. The chosen lambda is then refitted on
    train + validation models to `tol`, warm-started from the training solution.

    The path is solved to `path_tol`: it only ranks the lambdas by validation MSE, and its
    solutions are only warm starts. The defaults (path_tol 3e-3, patience 2; before: the path
    at `tol` and patience 3) were chosen on 2,040 random per-logit targets of a 4,000-point
    Fashion-MNIST set (held-out LDS 0.2959 against 0.2954, 2.6x faster) and are judged on
    other targets by ``bench/bench_lasso.py --at-4000``.

    Targets are fitted `block` at a time (each is its own regression; the masks' Gram is
    shared), so the solver's memory is set by `block`, not by the number of targets: about 12
    (n_train x block) float32 arrays by count (0.55 GB at 2,800 training points), beside the
    masks' (n_train x n_train) Gram and its copies, which grow with the training set.
    """
    masks, outputs = _check_inputs(masks, outputs)
    _check_solver(tol, max_iter)
    _check_solver(path_tol, max_iter)
    if patience < 1 or block < 1:
        raise UserError(f"patience and block must be at least 1, got {patience} and {block}")
    train, val = split_models(len(masks), val_fraction, seed)
    dev = _torch_device(device)
    x = torch.from_numpy(masks).to(dev, torch.float32)
    x_fit, x_val = x[train], x[val]
    fit_masks, held_masks = _mask_moments(x_fit), _mask_moments(x_val)
    parts = []
    for start in range(0, outputs.shape[1], block):
        y = torch.as_tensor(outputs[:, start : start + block], dtype=torch.float32).to(dev)
        fit, held = _moments(x_fit, y[train], fit_masks), _moments(x_val, y[val], held_masks)
        grid = _grid(fit.corr, n_alphas, alpha_min_ratio)
        best, best_k = _select_on_path(fit, x_val - fit.xbar, y[val] - fit.ybar, grid, path_tol, max_iter, patience)
        lam = grid[best_k, torch.arange(y.shape[1], device=dev)]
        both = fit.combine(held)
        weights, _ = _lasso_cd(both.gram, both.corr, both.yy, lam, best, tol, max_iter)
        parts.append(_result(both, weights, lam.cpu().numpy(), "lasso"))
    return Datamodels(np.concatenate([part.weights for part in parts], axis=1),
                      np.concatenate([part.bias for part in parts]),
                      np.concatenate([part.alphas for part in parts]), "lasso")


def _select_on_path(
    fit: _Moments, x_val: torch.Tensor, y_val: torch.Tensor, grid: torch.Tensor, tol: float, max_iter: int, patience: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Walk the lambda path on the training moments; per target, the coefficients and grid index
    of least validation MSE (`x_val`, `y_val`: held-out models centred by the training means).
    Each lambda starts from the previous one's coefficients and residual correlations."""
    n_targets = grid.shape[1]
    coef, best, residual = torch.zeros_like(fit.corr), torch.zeros_like(fit.corr), fit.corr.clone()
    best_mse = torch.full((n_targets,), float("inf"), device=grid.device)
    best_k = torch.zeros(n_targets, dtype=torch.long, device=grid.device)
    stale = torch.zeros(n_targets, dtype=torch.long, device=grid.device)
    cols = torch.arange(n_targets, device=grid.device)  # targets still walking their path
    for k in range(len(grid)):
        coef[:, cols], residual[:, cols] = _lasso_cd(fit.gram, fit.corr[:, cols], fit.yy[cols], grid[k, cols],
                                                     coef[:, cols], tol, max_iter, residual[:, cols])
        mse = ((x_val @ coef[:, cols] - y_val[:, cols]) ** 2).mean(0)
        better = mse < best_mse[cols]
        improved = cols[better]
        best_mse[improved], best_k[improved] = mse[better], k
        best[:, improved] = coef[:, improved]
        stale[cols] = torch.where(better, 0, stale[cols] + 1)
        cols = cols[stale[cols] < patience]
        if not len(cols):
            break
    return best, best_k


def lasso_reference(
    masks: np.ndarray,
    outputs: np.ndarray,
    alphas: np.ndarray,
    val_fraction: float = 0.2,
    seed: int = 0,
    tol: float = 1e-4,
    max_iter: int = 1000,
    patience: int = 2,
    estimator: Callable[[float, float], Any] | None = None,
    path_tol: float = 3e-3,
) -> Datamodels:
    """:func:`fit_lasso` with a scikit-learn ``Lasso`` loop over targets (the slow reference).

    `alphas` is the (n_alphas x T) grid, e.g. :func:`lambda_path` of the training models. Each
    target walks its grid with a warm-started ``Lasso`` on the training models to `path_tol`,
    keeps the alpha of least validation MSE (same early stop after `patience` non-improving
    alphas) and refits it on all models to `tol`. `estimator(alpha, tol)` builds another
    warm-started lasso with scikit-learn's interface and objective (e.g. skglm's ``Lasso``,
    which the benchmark compares).
    """
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import Lasso

    if estimator is None:
        def estimator(alpha: float, tol: float) -> Lasso:
            return Lasso(alpha=alpha, tol=tol, max_iter=max_iter, warm_start=True)

    masks, outputs = _check_inputs(masks, outputs)
    alphas = np.asarray(alphas, dtype=np.float64)
    if alphas.ndim != 2 or alphas.shape[1] != outputs.shape[1] or not np.all(alphas > 0):
        raise UserError(f"alphas must be a positive (n_alphas x {outputs.shape[1]}) grid, got shape {alphas.shape}")
    train, val = split_models(len(masks), val_fraction, seed)
    x = masks.astype(np.float64)
    weights = np.zeros((masks.shape[1], outputs.shape[1]), dtype=np.float64)
    bias, chosen = np.zeros(outputs.shape[1]), np.zeros(outputs.shape[1])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        for t in range(outputs.shape[1]):
            y = outputs[:, t].astype(np.float64)
            model = estimator(alphas[0, t], path_tol)
            best_mse, best_alpha, best_coef, stale = np.inf, alphas[0, t], None, 0
            for alpha in alphas[:, t]:
                model.set_params(alpha=alpha).fit(x[train], y[train])
                mse = np.mean((model.predict(x[val]) - y[val]) ** 2)
                if mse < best_mse:
                    best_mse, best_alpha, best_coef, stale = mse, alpha, model.coef_.copy(), 0
                else:
                    stale += 1
                    if stale >= patience:
                        break
            model.set_params(alpha=best_alpha, tol=tol)
            model.coef_ = best_coef
            model.fit(x, y)
            weights[:, t], bias[t], chosen[t] = model.coef_, model.intercept_, best_alpha
    return Datamodels(weights.astype(np.float32), bias.astype(np.float32), chosen, "lasso")


# ----------------------------------------------------------------------------------------------
# ridge and the diagonal ablation


def _eigh(gram: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Eigendecomposition of the Gram in float64 (returned as float32)."""
    evals, evecs = torch.linalg.eigh(gram.double())
    return evals.clamp_min(0.0).float(), evecs.float()


def fit_ridge(
    masks: np.ndarray,
    outputs: np.ndarray,
    alphas: tuple[float, ...] = DEFAULT_RIDGE_ALPHAS,
    val_fraction: float = 0.2,
    seed: int = 0,
    device: str = "cpu",
) -> Datamodels:
    """Ridge datamodels ``1/(2m) ||y - X b - c||^2 + alpha/2 ||b||^2``, alpha chosen per target.

    Closed form through one eigendecomposition ``G = V diag(e) V^T`` of the training models'
    Gram: ``b(alpha) = V diag(1/(e + alpha)) V^T c`` for every alpha and target at once; the
    alpha of least validation MSE is refitted on all models (one more eigendecomposition).
    scikit-learn's ``Ridge(alpha=m * alpha)`` is the same estimator.
    """
    masks, outputs = _check_inputs(masks, outputs)
    grid = np.asarray(alphas, dtype=np.float64)
    if grid.ndim != 1 or not len(grid) or not np.all(grid > 0) or not np.all(np.isfinite(grid)):
        raise UserError(f"alphas must be a non-empty list of positive numbers, got {alphas}")
    train, val = split_models(len(masks), val_fraction, seed)
    x, y = _to_torch(masks, outputs, device)
    fit, held = _moments(x[train], y[train]), _moments(x[val], y[val])
    evals, evecs = _eigh(fit.gram)
    rotated = evecs.T @ fit.corr
    x_val, y_val = (x[val] - fit.xbar) @ evecs, y[val] - fit.ybar
    mse = torch.stack([((x_val @ (rotated / (evals[:, None] + a)) - y_val) ** 2).mean(0) for a in grid.tolist()])
    chosen = torch.as_tensor(grid, dtype=torch.float32, device=x.device)[mse.argmin(0)]
    both = fit.combine(held)
    evals, evecs = _eigh(both.gram)
    weights = evecs @ ((evecs.T @ both.corr) / (evals[:, None] + chosen[None, :]))
    return _result(both, weights, chosen.cpu().numpy(), "ridge")


def fit_diagonal(masks: np.ndarray, outputs: np.ndarray, point_of_target: np.ndarray) -> Datamodels:
    """The diagonal-only ablation (DMM paper, Appendix G.2): memorisation scores, nothing else.

    Target t on the eval point that is training point ``i = point_of_target[t]`` gets the single
    coefficient ``beta_i = mean(y_t | i in S) - mean(y_t | i not in S)`` and the bias
    ``mean(y_t | i not in S)``; targets with ``point_of_target[t] == -1`` (not a training point)
    get zero weights and the bias ``mean(y_t)``.
    """
    masks, outputs = _check_inputs(masks, outputs)
    points = np.asarray(point_of_target)
    n_models, n_train = masks.shape
    if points.shape != (outputs.shape[1],) or not np.issubdtype(points.dtype, np.integer):
        raise UserError(f"point_of_target must be {outputs.shape[1]} integers (one per target), got {points.dtype} {points.shape}")
    if np.any(points < -1) or np.any(points >= n_train):
        raise UserError(f"point_of_target must lie in [-1, {n_train - 1}]")
    on_point = points >= 0
    inside = masks[:, np.where(on_point, points, 0)]
    count_in = inside.sum(0)
    if np.any(on_point & ((count_in == 0) | (count_in == n_models))):
        raise UserError("some training point is in every model or in none: its memorisation score is undefined")
    y = outputs.astype(np.float64)
    sum_in = (inside * y).sum(0)
    mean_in = sum_in / np.maximum(count_in, 1)
    mean_out = (y.sum(0) - sum_in) / np.maximum(n_models - count_in, 1)
    weights = np.zeros((n_train, outputs.shape[1]), dtype=np.float32)
    targets = np.flatnonzero(on_point)
    weights[points[targets], targets] = (mean_in - mean_out)[targets]
    bias = np.where(on_point, mean_out, y.mean(0)).astype(np.float32)
    return Datamodels(weights, bias, np.zeros(outputs.shape[1]), "diagonal")


# ----------------------------------------------------------------------------------------------
# scores on held-out models


def _predicted(datamodels: Datamodels, masks: np.ndarray, outputs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    masks, outputs = _check_inputs(masks, outputs)
    if outputs.shape[1] != datamodels.weights.shape[1]:
        raise UserError(f"outputs have {outputs.shape[1]} targets; the datamodels have {datamodels.weights.shape[1]}")
    if len(masks) < 3:
        raise UserError(f"scoring needs at least 3 held-out models, got {len(masks)}")
    return datamodels.predict(masks).astype(np.float64), outputs.astype(np.float64)


def _pearson_columns(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pearson correlation of matching columns; NaN where a column is constant."""
    a, b = a - a.mean(0), b - b.mean(0)
    norm = np.sqrt((a * a).sum(0) * (b * b).sum(0))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(norm > 0, (a * b).sum(0) / norm, np.nan)


def linear_datamodeling_score(datamodels: Datamodels, masks: np.ndarray, outputs: np.ndarray) -> np.ndarray:
    """LDS per target (Park et al. 2023; DMM paper Figure G.6): Spearman correlation, across
    held-out models, between predicted and actual outputs. NaN for constant targets; the LDS of
    a set of datamodels is the ``np.nanmean`` of this array."""
    from scipy.stats import rankdata  # here, not at the top: scipy.stats adds ~1 s to every workflow parse

    predicted, actual = _predicted(datamodels, masks, outputs)
    return _pearson_columns(rankdata(predicted, axis=0), rankdata(actual, axis=0))


def heldout_r2(datamodels: Datamodels, masks: np.ndarray, outputs: np.ndarray) -> np.ndarray:
    """Coefficient of determination per target on held-out models (NaN for constant targets)."""
    predicted, actual = _predicted(datamodels, masks, outputs)
    total = ((actual - actual.mean(0)) ** 2).sum(0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, 1.0 - ((actual - predicted) ** 2).sum(0) / total, np.nan)
