"""KL divergence of margins (KLOM): DMM paper, Definition 3 and Algorithm F.1.

For every evaluated point x, KLOM compares the distribution of the margin f_x over N oracle
models (trained without the forget set, the reference distribution safe(S_F)) with its
distribution over N unlearned models, through binned histograms:

- margins are clipped to ``[-clip, clip]`` (default 100, Appendix F.1);
- ``bins`` (20) equal-width bins span the combined oracle + unlearned range of that point;
  bin ``i`` is ``[e_i, e_{i+1})`` and the last bin is closed, so a margin equal to the top
  edge is counted (the public code drops it, a bug not copied);
- probabilities are counts / N for each side; every empty bin of either histogram is set to
  ``floor`` (1e-5, Appendix F.1: "the bin with no support is set to epsilon") and the
  histograms are **not renormalised**, as in the reference code: the added mass is at most
  ``bins * floor`` and renormalising would move scores by a few thousandths at most. A bin
  empty on both sides contributes exactly 0;
- ``direction="oracle_unlearned"`` (default) is KL(oracle || unlearned), the order of
  Definition 3 ``D_KL(safe(S_F), f_x(U(A(S), S_F)))``; ``"unlearned_oracle"`` is the reverse.
  The authors' public code (RoyRin/data-unlearning-bench) has one helper,
  ``kl_from_margins(all_unlearned_margins, all_oracle_margins)``, that computes
  KL(first || second): the benchmark pipeline calls it with the oracles first, i.e. in the paper's
  direction, while other scripts of the repository call it with the unlearned margins first, i.e.
  KL(unlearned || oracle);

Consequences: identical samples give exactly 0, so does a point where every margin is equal;
two samples in disjoint bins reach the cap ``(1 - floor) * ln(1 / floor)`` (11.513 for
1e-5, the paper's "capped at around 12"), see :func:`klom_cap`.

KLOM refuses fewer than :data:`MIN_MODELS` models per side: with one model a histogram is a
single bin, and KLOM can only be 0 or the cap. With few models KLOM is far from 0 even for a
perfect unlearner (20 bins, Gaussian margins: p95 about 1.7 with 50 models per side, 0.7 with
100); :func:`noise_floor` measures that level for the oracles at hand.

Shapes: margins are (models, points); results are (points,).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Literal

import numpy as np

from unlearnflow.errors import UserError
from unlearnflow.metrics.declarations import MIN_MODELS
from unlearnflow.metrics.margins import oracle_halves
from unlearnflow.metrics.readouts import group_indices

Direction = Literal["oracle_unlearned", "unlearned_oracle"]
DIRECTIONS = ("oracle_unlearned", "unlearned_oracle")
WEIGHTED = "weighted"
_BLOCK_ELEMENTS = 65_536  # margins per block of points in klom (fits in cache)
_BOOT_BATCH_ELEMENTS = 4_000_000  # resampled margins per bootstrap batch (32 MB of float64)


def klom_cap(floor: float = 1e-5) -> float:
    """Largest KLOM value: oracle margins in one bin, unlearned margins in another.

    Then KL = 1 * ln(1 / floor) + floor * ln(floor / 1) = (1 - floor) * ln(1 / floor).
    """
    return float((1.0 - floor) * np.log(1.0 / floor))


def _check_margins(margins: np.ndarray, name: str) -> np.ndarray:
    margins = np.asarray(margins, dtype=np.float64)
    if margins.ndim != 2 or margins.shape[0] == 0:
        raise UserError(f"{name} must have shape (models, points) with at least one model, got {margins.shape}")
    if np.isnan(margins).any():
        raise UserError(f"{name} contains NaN")
    return margins


def _check_pair(oracle: np.ndarray, unlearned: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    oracle = _check_margins(oracle, "oracle_margins")
    unlearned = _check_margins(unlearned, "unlearned_margins")
    if oracle.shape[1] != unlearned.shape[1]:
        raise UserError(f"oracle and unlearned margins cover different numbers of points: "
                        f"{oracle.shape[1]} vs {unlearned.shape[1]}")
    for name, margins in (("oracle", oracle), ("unlearned", unlearned)):
        if len(margins) < MIN_MODELS:
            raise UserError(f"KLOM needs at least {MIN_MODELS} {name} models to compare histograms, got "
                            f"{len(margins)} (with one model KLOM is only ever 0 or the cap)")
    return oracle, unlearned


def _check_options(bins: int, clip: float, floor: float, direction: str) -> None:
    if not (isinstance(bins, (int, np.integer)) and bins >= 1):
        raise UserError(f"bins must be a positive integer, got {bins!r}")
    if not clip > 0:
        raise UserError(f"clip must be positive, got {clip!r}")
    if not 0 < floor < 1:
        raise UserError(f"floor must lie in (0, 1), got {floor!r}")
    if direction not in DIRECTIONS:
        raise UserError(f"direction must be one of {DIRECTIONS}, got {direction!r}")


def _bin_ids(values: np.ndarray, bins: int) -> np.ndarray:
    """Bin of every entry of `values` (models, points) on per-point edges.

    The edges are exactly ``np.linspace(lo, hi, bins + 1)`` of each point's column, and the
    assignment is that of ``np.histogram`` with those edges: a first guess from the bin width,
    then a one-step correction against the edges for values that rounding put next door.
    """
    lo, hi = values.min(axis=0), values.max(axis=0)
    width = (hi - lo) / bins
    edges = np.arange(bins + 1)[:, None] * width + lo
    edges[-1] = hi
    guess = values - lo
    guess /= np.where(width > 0, width, 1.0)  # degenerate point: every value in bin 0
    np.floor(guess, out=guess)
    np.clip(guess, 0, bins - 1, out=guess)
    ids = guess.astype(np.intp)
    ids -= values < np.take_along_axis(edges, ids, axis=0)
    ids += (values >= np.take_along_axis(edges, ids + 1, axis=0)) & (ids < bins - 1)
    return ids


def _probabilities(ids: np.ndarray, bins: int, floor: float) -> np.ndarray:
    """Histogram (bins, points) of bin ids (models, points) as counts / models, empty bins floored."""
    n_models, n_points = ids.shape
    flat = (ids * n_points + np.arange(n_points)).ravel()
    counts = np.bincount(flat, minlength=bins * n_points).reshape(bins, n_points)
    return np.where(counts > 0, counts / n_models, floor)


def _klom_block(oracle: np.ndarray, unlearned: np.ndarray, bins: int, clip: float, floor: float, direction: str) -> np.ndarray:
    values = np.concatenate([oracle, unlearned])
    np.clip(values, -clip, clip, out=values)
    ids = _bin_ids(values, bins)
    p = _probabilities(ids[: len(oracle)], bins, floor)
    q = _probabilities(ids[len(oracle) :], bins, floor)
    if direction == "unlearned_oracle":
        p, q = q, p
    return np.sum(p * np.log(p / q), axis=0)


def klom(
    oracle_margins: np.ndarray,
    unlearned_margins: np.ndarray,
    bins: int = 20,
    clip: float = 100.0,
    floor: float = 1e-5,
    direction: Direction = "oracle_unlearned",
) -> np.ndarray:
    """KLOM of every point (Definition 3, Algorithm F.1), vectorised over points.

    `oracle_margins` is (N_oracle, points), `unlearned_margins` (N_unlearned, points); the two
    model counts may differ. Returns (points,). Binning, flooring and direction are described
    in the module docstring. Points are processed in blocks of about ``_BLOCK_ELEMENTS``
    margins so that the several passes over each block stay in cache (4x faster at 60,000
    points than one pass over everything).
    """
    _check_options(bins, clip, floor, direction)
    oracle, unlearned = _check_pair(oracle_margins, unlearned_margins)
    step = max(1, _BLOCK_ELEMENTS // (len(oracle) + len(unlearned)))
    out = np.empty(oracle.shape[1])
    for start in range(0, oracle.shape[1], step):
        block = slice(start, start + step)
        out[block] = _klom_block(oracle[:, block], unlearned[:, block], bins, clip, floor, direction)
    return out


def _parse_stat(stat: str) -> float | None:
    """None for ``"mean"``, the percentile q for ``"p<q>"`` (e.g. ``"p95"``)."""
    if stat == "mean":
        return None
    try:
        q = float(stat[1:]) if stat.startswith("p") else -1.0
    except ValueError:
        q = -1.0
    if not 0 <= q <= 100:
        raise UserError(f"stat must be 'mean' or 'p<percentile>' such as 'p95', got {stat!r}")
    return q


def _statistic(values: np.ndarray, stat: str, axis: int = -1) -> np.ndarray:
    """``"mean"`` or a percentile ``"p<q>"`` of `values` along `axis`."""
    q = _parse_stat(stat)
    return np.mean(values, axis=axis) if q is None else np.percentile(values, q, axis=axis)


def _weights(names: Sequence[str], weights: Mapping[str, float] | None) -> np.ndarray:
    if weights is None:
        return np.full(len(names), 1.0 / len(names))
    missing = set(names) - set(weights)
    if missing:
        raise UserError(f"weights missing for groups {sorted(missing)}")
    w = np.array([float(weights[name]) for name in names])
    if (w < 0).any() or w.sum() <= 0:
        raise UserError(f"weights must be non-negative with a positive sum, got {dict(weights)}")
    return w / w.sum()


def _group_summaries(summary: Mapping[str, Mapping[str, float]]) -> dict[str, Mapping[str, float]]:
    groups = {name: stats for name, stats in summary.items() if name != WEIGHTED}
    if not groups:
        raise UserError("summary has no groups")
    return groups


def summarise(
    values: np.ndarray,
    groups: Mapping[str, np.ndarray],
    percentiles: Sequence[float] = (50, 95, 99),
    weights: Mapping[str, float] | None = None,
) -> dict[str, dict[str, float]]:
    """Per-group statistics of per-point KLOM `values` (points,).

    `groups` maps a name (e.g. forget, retain, validation) to indices or a boolean mask. Each
    group gets ``{"mean", "p50", "p95", "p99", "n"}`` (one ``p<q>`` per requested percentile);
    the extra entry ``"weighted"`` holds the weighted average of each statistic across the
    groups (weights as in :func:`group_score`, default equal) and ``n`` the total size.
    """
    values = np.asarray(values, dtype=np.float64)
    if values.ndim != 1:
        raise UserError(f"values must have shape (points,), got {values.shape}")
    if WEIGHTED in groups:
        raise UserError(f"group name {WEIGHTED!r} is reserved")
    keys = ["mean", *(f"p{q:g}" for q in percentiles)]
    summary: dict[str, dict[str, float]] = {}
    for name, index in group_indices(groups, values.size).items():
        summary[name] = {key: float(_statistic(values[index], key)) for key in keys} | {"n": int(index.size)}
    w = _weights(list(summary), weights)
    total = sum(stats["n"] for stats in summary.values())
    summary[WEIGHTED] = {key: float(w @ [stats[key] for stats in summary.values()]) for key in keys} | {"n": total}
    return summary


def group_score(summary: Mapping[str, Mapping[str, float]], weights: Mapping[str, float] | None = None,
                statistic: str = "p95") -> float:
    """Weighted average over groups of a `statistic` (``"p95"``, ``"mean"``, ...) of a per-point
    score (lower is better): of KLOM's 95th percentile, the report's ``klom_score``; of the mean W1
    of margins, its ``selection_score``.

    For KLOM this is the first column of the DMM paper's Figures 1 and 3: the 95th percentile of each of
    the forget, retain and validation groups, averaged. Figure 3 calls it "the average across
    groups" and Figure 1 a "weighted average" without giving weights, so the default is equal
    weights per group (a group's size does not matter: the small forget set counts as much as
    the large retain set). Pass `weights` (name -> weight, normalised here) to change that.
    """
    groups = _group_summaries(summary)
    if any(statistic not in stats for stats in groups.values()):
        raise UserError(f"summary has no {statistic!r}: call summarise with it among the statistics")
    w = _weights(list(groups), weights)
    return float(w @ [stats[statistic] for stats in groups.values()])


def noise_floor(
    oracle_margins: np.ndarray,
    rng: np.random.Generator,
    splits: int = 1,
    bins: int = 20,
    clip: float = 100.0,
    floor: float = 1e-5,
    direction: Direction = "oracle_unlearned",
) -> np.ndarray:
    """KLOM between two random halves of the oracles: what a perfect unlearner scores.

    Each of `splits` random permutations of the N oracle models is cut into two halves of
    ``N // 2`` models (:func:`~unlearnflow.metrics.margins.oracle_halves`), compared with
    :func:`klom`. The floor therefore holds for **N/2 models per side**; it shrinks as N grows, so compare it with a method's KLOM at the same model
    count (:func:`matched_klom`), not with its KLOM at N. Returns (splits, points).
    """
    oracle = _check_margins(oracle_margins, "oracle_margins")
    if splits < 1:
        raise UserError(f"splits must be at least 1, got {splits}")
    out = np.empty((splits, oracle.shape[1]))
    for split in range(splits):
        out[split] = klom(*oracle_halves(oracle, rng), bins, clip, floor, direction)
    return out


def matched_klom(
    oracle_margins: np.ndarray,
    unlearned_margins: np.ndarray,
    rng: np.random.Generator,
    n_models: int | None = None,
    bins: int = 20,
    clip: float = 100.0,
    floor: float = 1e-5,
    direction: Direction = "oracle_unlearned",
) -> np.ndarray:
    """KLOM with `n_models` models drawn without replacement from each side.

    The default ``N_oracle // 2`` puts a method on the same footing as :func:`noise_floor`.
    Returns (points,).
    """
    oracle, unlearned = _check_pair(oracle_margins, unlearned_margins)
    n = len(oracle) // 2 if n_models is None else n_models
    if not MIN_MODELS <= n <= min(len(oracle), len(unlearned)):
        raise UserError(f"n_models must lie in [{MIN_MODELS}, {min(len(oracle), len(unlearned))}], got {n}")
    pick_o = rng.choice(len(oracle), n, replace=False)
    pick_u = rng.choice(len(unlearned), n, replace=False)
    return klom(oracle[pick_o], unlearned[pick_u], bins, clip, floor, direction)


def _resample(margins: np.ndarray, batch: int, rng: np.random.Generator) -> np.ndarray:
    """`batch` bootstrap resamples of the models, laid side by side: (models, batch * points)."""
    draws = rng.integers(0, len(margins), size=(batch, len(margins)))
    return margins[draws].transpose(1, 0, 2).reshape(len(margins), -1)


def bootstrap_ci(
    oracle_margins: np.ndarray,
    unlearned_margins: np.ndarray,
    groups: Mapping[str, np.ndarray],
    rng: np.random.Generator,
    stat: str = "p95",
    n_boot: int = 200,
    level: float = 0.95,
    bins: int = 20,
    clip: float = 100.0,
    floor: float = 1e-5,
    direction: Direction = "oracle_unlearned",
) -> dict[str, tuple[float, float]]:
    """Bias-corrected bootstrap interval of a group statistic of KLOM, resampling models.

    Each replicate redraws the oracle models and the unlearned models with replacement (each
    side keeps its size), recomputes KLOM on the grouped points and the statistic `stat`
    (``"mean"`` or ``"p<q>"``) of each group. Returns ``{group: (low, high)}``.

    Repeated models make a resampled histogram lumpier, which adds a second layer of sampling
    noise: the replicates sit well above the estimate (with 100 + 100 models and a p95 of
    0.7, around 1.4), so the plain percentile interval would not even contain it. The
    interval is therefore the ``(1 - level) / 2`` and ``(1 + level) / 2`` quantiles of the
    replicates shifted down by the bootstrap bias estimate ``mean(replicates) - estimate``,
    with the lower end clipped at 0. Its width comes from the same inflated replicates and
    is conservative (several times the spread over truly independent sets of models in
    synthetic checks): read it as an upper bound on the uncertainty due to the finite
    number of models.

    Replicates are batched: a batch of resamples is laid side by side as extra points and
    scored by one :func:`klom` call.
    """
    _check_options(bins, clip, floor, direction)
    _parse_stat(stat)
    if n_boot < 2 or not 0 < level < 1:
        raise UserError(f"need n_boot >= 2 and 0 < level < 1, got n_boot={n_boot}, level={level}")
    oracle, unlearned = _check_pair(oracle_margins, unlearned_margins)
    index = group_indices(groups, oracle.shape[1])
    used = np.unique(np.concatenate(list(index.values())))
    local = {name: np.searchsorted(used, idx) for name, idx in index.items()}
    oracle, unlearned = oracle[:, used], unlearned[:, used]
    values = klom(oracle, unlearned, bins, clip, floor, direction)
    estimate = {name: float(_statistic(values[idx], stat)) for name, idx in local.items()}
    batch = max(1, _BOOT_BATCH_ELEMENTS // (used.size * (len(oracle) + len(unlearned))))
    replicates: dict[str, list[np.ndarray]] = {name: [] for name in index}
    for start in range(0, n_boot, batch):
        size = min(batch, n_boot - start)
        values = klom(_resample(oracle, size, rng), _resample(unlearned, size, rng), bins, clip, floor, direction)
        values = values.reshape(size, used.size)
        for name, idx in local.items():
            replicates[name].append(_statistic(values[:, idx], stat, axis=1))
    intervals = {}
    for name, parts in replicates.items():
        reps = np.concatenate(parts)
        bias = reps.mean() - estimate[name]
        low, high = np.quantile(reps, [(1 - level) / 2, (1 + level) / 2]) - bias
        intervals[name] = (max(0.0, float(low)), float(high))
    return intervals
