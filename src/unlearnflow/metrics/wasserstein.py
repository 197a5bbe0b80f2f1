"""W1 of margins: the selection score's distance between oracle and unlearned margins (issue 23).

KLOM (:mod:`unlearnflow.metrics.klom`) bins each point's margins on the *combined* range of the
oracle and unlearned models. That makes it blind in two directions, measured in
``docs/klom-blind-spots.md`` and pinned by ``tests/test_wasserstein.py``:

- **added spread** widens the bins, so a histogram of coarser bins looks closer to the oracles':
  unlearned margins 1.3x as spread as the oracles' score *below* an exact sample, and three of
  50 models thrown 50x off score 10x below it;
- **collapse**: oracles concentrated in one bin next to unlearned models spread far away score
  ``ln(N / k)``, k the unlearned models sharing the oracles' bin, whatever the distance of the
  others (80% of the models far away: 1.6, within an exact sample's range at 50 models).

The companion distance has no bins. For every point x it is the 1-Wasserstein distance between
the empirical distributions of the oracle margins ``o`` and the unlearned margins ``u`` at x,
divided by the oracles' standard deviation at x::

    W1(x) = integral |F_o(t) - F_u(t)| dt / sd(o)

(``F`` the empirical CDFs; the integral is exact, a sum over the sorted pooled margins). Being a
metric on distributions it is 0 only for equal samples and grows with any difference: a shift by
``k`` oracle standard deviations adds about ``k``; spreading or collapsing the unlearned margins
by a factor ``s`` adds about ``|s - 1| E|Z|``; models thrown far off add their distance times
their share. Dividing by the oracles' spread (never by the unlearned models', which a method
controls) makes points of different scale comparable. Margins are clipped to ``[-clip, clip]`` as
for KLOM (Appendix F.1 of the DMM paper), and the spread is floored at ``spread_floor`` so that a
point where all oracles agree exactly stays finite.

With N models per side, two samples of one distribution score about ``1.8 / sqrt(N)`` (a mean of
0.25 at N = 50, 0.18 at 100): :func:`noise_floor` measures that level on the oracles at hand, as
KLOM's does. The report's selection score averages it over each group's points (the mean, not
KLOM's 95th percentile: a collapsed sample fluctuates less, which lowers the tail of the distance
while raising its mean, so the 95th percentile is fooled by a mild collapse where the mean is not;
measured in ``docs/klom-blind-spots.md``). Shapes: margins are (models, points); results are (points,).
"""

from __future__ import annotations

import numpy as np

from unlearnflow.errors import UserError
from unlearnflow.metrics.margins import oracle_halves

#: margins are clipped to [-CLIP, CLIP] as for KLOM
CLIP = 100.0
#: smallest oracle standard deviation a distance is divided by
SPREAD_FLOOR = 1e-6
_BLOCK_ELEMENTS = 262_144  # margins per block of points


def _check(margins: np.ndarray, name: str) -> np.ndarray:
    margins = np.asarray(margins, dtype=np.float64)
    if margins.ndim != 2 or len(margins) < 2:
        raise UserError(f"{name} must have shape (models, points) with at least 2 models, got {margins.shape}")
    if np.isnan(margins).any():
        raise UserError(f"{name} contains NaN")
    return margins


def _w1_block(oracle: np.ndarray, unlearned: np.ndarray, clip: float) -> np.ndarray:
    """Unnormalised W1 per point: sort the pooled margins, accumulate the CDF difference
    (+1/N_o per oracle margin, -1/N_u per unlearned one) and integrate it over the gaps."""
    values = np.clip(np.concatenate([oracle, unlearned]), -clip, clip)
    steps = np.concatenate([np.full(oracle.shape, 1.0 / len(oracle)), np.full(unlearned.shape, -1.0 / len(unlearned))])
    order = np.argsort(values, axis=0, kind="stable")
    values = np.take_along_axis(values, order, axis=0)
    cdf_gap = np.cumsum(np.take_along_axis(steps, order, axis=0), axis=0)
    return np.sum(np.abs(cdf_gap[:-1]) * np.diff(values, axis=0), axis=0)


def w1_margins(oracle_margins: np.ndarray, unlearned_margins: np.ndarray, clip: float = CLIP,
               spread_floor: float = SPREAD_FLOOR) -> np.ndarray:
    """W1 of margins over the oracles' spread (module docstring) of every point, shape (points,).

    `oracle_margins` is (N_oracle, points), `unlearned_margins` (N_unlearned, points); the
    counts may differ (each needs 2)."""
    oracle = _check(oracle_margins, "oracle_margins")
    unlearned = _check(unlearned_margins, "unlearned_margins")
    if oracle.shape[1] != unlearned.shape[1]:
        raise UserError(f"oracle and unlearned margins cover different numbers of points: "
                        f"{oracle.shape[1]} vs {unlearned.shape[1]}")
    if not clip > 0 or not spread_floor > 0:
        raise UserError(f"clip and spread_floor must be positive, got {clip!r} and {spread_floor!r}")
    step = max(1, _BLOCK_ELEMENTS // (len(oracle) + len(unlearned)))
    distance = np.empty(oracle.shape[1])
    for start in range(0, oracle.shape[1], step):
        block = slice(start, start + step)
        distance[block] = _w1_block(oracle[:, block], unlearned[:, block], clip)
    spread = np.maximum(np.clip(oracle, -clip, clip).std(axis=0), spread_floor)
    return distance / spread


def noise_floor(oracle_margins: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """:func:`w1_margins` between two random halves of the oracles (the split of
    :func:`~unlearnflow.metrics.margins.oracle_halves`, so the same as KLOM's floor for the same
    stream): what a perfect unlearner scores with N/2 models per side. Returns (points,)."""
    first, second = oracle_halves(_check(oracle_margins, "oracle_margins"), rng)
    return w1_margins(first, second)
