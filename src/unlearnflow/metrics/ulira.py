"""Efficient U-LiRA (Hayes et al., 2024), as given in the DMM paper, Algorithms F.3 and F.4.

The attack asks, point by point, whether a target model's margin on x looks like the margin of
a model that *unlearned* x or of a model that *never trained* on x:

1. Shadow models (unlearned models built from random 50% training subsets, each with random
   forget sets) give, for every point x, two samples of margins: from the shadow models that
   unlearned x, and from the shadow models whose training subset never contained x.
2. A Gaussian is fitted to each sample (:func:`fit_gaussians`).
3. For each target model, every point it unlearned (D_f) and every point it never saw (D_v)
   is classified "unlearned" when the unlearned Gaussian gives the target's margin the higher
   likelihood (Algorithm F.3: p_member > 1/2, i.e. a positive log-likelihood ratio).
4. A target's accuracy is the mean of its accuracy on D_f (correct: "unlearned") and on D_v
   (correct: "never seen"); Algorithm F.4 takes equally many points of each, where this is
   c / 2m. The result is the mean over target models: 0.5 means the attacker cannot tell.

The workflow builds the arrays: all are (models, points) margins holding NaN wherever the
model is not in that role for that point.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from unlearnflow.errors import UserError


class Gaussians(NamedTuple):
    """Per-point Gaussian fits: mean, standard deviation (floored) and sample count, (points,).

    Points with no observation have mean NaN.
    """

    mean: np.ndarray
    std: np.ndarray
    count: np.ndarray


def _check_role(margins: np.ndarray, name: str) -> np.ndarray:
    margins = np.asarray(margins, dtype=np.float64)
    if margins.ndim != 2:
        raise UserError(f"{name} must have shape (models, points), got {margins.shape}")
    if np.isinf(margins).any():
        raise UserError(f"{name} contains infinite margins")
    return margins


def fit_gaussians(margins: np.ndarray, mask: np.ndarray | None = None, min_std: float = 1e-3) -> Gaussians:
    """Fit one Gaussian per point to the entries of `margins` (models, points) selected by `mask`.

    `mask` (bool, same shape) marks the entries in the role being fitted; by default the
    non-NaN entries. The standard deviation is the maximum-likelihood one (ddof 0, as in
    LiRA), floored at `min_std` so that a sample of identical margins still has a density.
    """
    margins = _check_role(margins, "margins")
    mask = ~np.isnan(margins) if mask is None else np.asarray(mask)
    if mask.shape != margins.shape or mask.dtype != bool:
        raise UserError(f"mask must be a boolean array of shape {margins.shape}, got {mask.dtype} {mask.shape}")
    if np.isnan(margins[mask]).any():
        raise UserError("margins selected by mask contain NaN")
    if not min_std > 0:
        raise UserError(f"min_std must be positive, got {min_std}")
    count = mask.sum(axis=0)
    values = np.where(mask, margins, 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = values.sum(axis=0) / count
        var = np.where(mask, (margins - mean) ** 2, 0.0).sum(axis=0) / count
    return Gaussians(mean, np.maximum(np.sqrt(var), min_std), count)


def _log_density(x: np.ndarray, fit: Gaussians) -> np.ndarray:
    """Gaussian log-density up to the shared constant -ln(2 pi) / 2."""
    return -0.5 * ((x - fit.mean) / fit.std) ** 2 - np.log(fit.std)


def _says_unlearned(margins: np.ndarray, unlearned_fit: Gaussians, oracle_fit: Gaussians) -> np.ndarray:
    """Membership prediction (Algorithm F.3): the unlearned Gaussian is the likelier one."""
    return _log_density(margins, unlearned_fit) > _log_density(margins, oracle_fit)


def ulira_accuracy(
    shadow_unlearned: np.ndarray,
    shadow_oracle: np.ndarray,
    target_unlearned: np.ndarray,
    target_oracle: np.ndarray,
    min_std: float = 1e-3,
    min_count: int = 2,
) -> float:
    """Attacker accuracy of efficient U-LiRA (Algorithm F.4); 0.5 is ideal unlearning.

    shadow_unlearned: (shadow models, points), margin of each shadow model on the points it
        unlearned, NaN elsewhere.
    shadow_oracle: (shadow models', points), margin of each shadow model on the points its
        training subset never contained, NaN elsewhere (the two shadow arrays may come from
        the same models and need not have the same number of rows).
    target_unlearned: (targets, points), margin of each target model on the points it
        unlearned (its D_f), NaN elsewhere.
    target_oracle: (targets, points), margin of each target model on points it never trained
        on (its D_v), NaN elsewhere; a (target, point) entry may not be in both.

    Only points with at least `min_count` shadow margins in each role can be judged; target
    entries on other points are ignored, and a target without a judged point in D_f or in D_v
    is left out of the mean. Each target's accuracy is the balanced accuracy over its D_f and
    D_v (equal to Algorithm F.4's c / 2m when both hold m points).
    """
    unlearned_fit = fit_gaussians(shadow_unlearned, min_std=min_std)
    oracle_fit = fit_gaussians(shadow_oracle, min_std=min_std)
    target_f = _check_role(target_unlearned, "target_unlearned")
    target_v = _check_role(target_oracle, "target_oracle")
    n_points = unlearned_fit.mean.size
    if oracle_fit.mean.size != n_points or target_f.shape[1] != n_points or target_f.shape != target_v.shape:
        raise UserError(
            "shapes disagree: shadow_unlearned, shadow_oracle, target_unlearned and target_oracle must cover the same points, "
            f"targets the same shape; got {np.shape(shadow_unlearned)}, {np.shape(shadow_oracle)}, {target_f.shape}, {target_v.shape}"
        )
    if (~np.isnan(target_f) & ~np.isnan(target_v)).any():
        raise UserError("a target model cannot both have unlearned a point and never have trained on it")
    judged = (unlearned_fit.count >= min_count) & (oracle_fit.count >= min_count)
    in_f, in_v = ~np.isnan(target_f) & judged, ~np.isnan(target_v) & judged
    correct_f = (_says_unlearned(target_f, unlearned_fit, oracle_fit) & in_f).sum(axis=1)
    correct_v = (~_says_unlearned(target_v, unlearned_fit, oracle_fit) & in_v).sum(axis=1)
    n_f, n_v = in_f.sum(axis=1), in_v.sum(axis=1)
    usable = (n_f > 0) & (n_v > 0)
    if not usable.any():
        raise UserError("no target model has a judged point both among its unlearned and its never-seen points")
    per_target = 0.5 * (correct_f[usable] / n_f[usable] + correct_v[usable] / n_v[usable])
    return float(per_target.mean())
