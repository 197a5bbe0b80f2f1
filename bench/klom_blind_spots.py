"""Which distance between oracle and unlearned margins cannot be fooled (issue 23): the measurement
behind the choice of the selection score, written into docs/klom-blind-spots.md.

`python bench/klom_blind_spots.py` (a few seconds; seeded, so the same numbers every run;
tests/test_wasserstein.py checks that the committed section is what this computes).

Synthetic margins: per point a Gaussian of its own location and scale (2,000 points); 50 oracle
models and 50 "unlearned" models per case, drawn from the oracles' distribution changed as the
case says. Each candidate scores every point, and the table gives two statistics over points, the
95th percentile (the DMM paper's, KLOM's in the report) and the mean, each as a multiple of an
exact sample's (1.00: the unlearned models are another draw of the oracles' distribution). A case
that scores at or below the exact sample is *fooled* (marked). Candidates:

- ``KLOM``: as the DMM paper defines it (20 bins on the combined range), :func:`unlearnflow.metrics.klom.klom`;
- ``KLOM, oracle bins``: KLOM with 10 bins at the oracles' deciles plus the two open tails;
- ``KS``: the two-sample Kolmogorov-Smirnov statistic (largest CDF gap);
- ``W1 / oracle sd``: :func:`unlearnflow.metrics.wasserstein.w1_margins`, the choice.

The second table: each candidate's power, the mean shift of the per-point score over the exact
sample's, in units of the exact sample's spread over points (larger separates better), and the
floor (mean score of an exact sample) at 25, 50, 100 and 200 models per side.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.results import write_section  # noqa: E402
from unlearnflow.metrics.klom import klom  # noqa: E402
from unlearnflow.metrics.wasserstein import w1_margins  # noqa: E402

DOC = Path(__file__).resolve().parents[1] / "docs" / "klom-blind-spots.md"
SECTION = "klom-synthetic"
MODELS, POINTS, SEED = 50, 2_000, 0


def ks_statistic(oracle: np.ndarray, unlearned: np.ndarray) -> np.ndarray:
    """Largest gap between the two empirical CDFs, per point (ties handled: gaps read at the last
    of equal values)."""
    values = np.concatenate([oracle, unlearned])
    steps = np.concatenate([np.full(oracle.shape, 1 / len(oracle)), np.full(unlearned.shape, -1 / len(unlearned))])
    order = np.argsort(values, axis=0, kind="stable")
    values, gap = np.take_along_axis(values, order, 0), np.cumsum(np.take_along_axis(steps, order, 0), 0)
    last = np.ones(values.shape, bool)
    last[:-1] = values[1:] != values[:-1]
    return np.max(np.where(last, np.abs(gap), 0), axis=0)


def klom_oracle_bins(oracle: np.ndarray, unlearned: np.ndarray, bins: int = 10, floor: float = 1e-5) -> np.ndarray:
    """KL(oracle || unlearned) of histograms on the oracles' deciles (open outer bins), floor for empty bins."""
    edges = np.quantile(oracle, np.linspace(0, 1, bins + 1)[1:-1], axis=0)

    def histogram(margins: np.ndarray) -> np.ndarray:
        ids = (margins[None] >= edges[:, None]).sum(0)
        counts = np.stack([(ids == b).mean(0) for b in range(bins)])
        return np.where(counts > 0, counts, floor)

    p, q = histogram(oracle), histogram(unlearned)
    return np.sum(p * np.log(p / q), axis=0)


CANDIDATES = {"KLOM": klom, "KLOM, oracle bins": klom_oracle_bins, "KS": ks_statistic, "W1 / oracle sd": w1_margins}
#: the group statistic over points: the DMM paper's 95th percentile, and the mean
STATISTICS = {"p95": lambda values: np.percentile(values, 95), "mean": np.mean}


def cases(rng: np.random.Generator, models: int = MODELS, points: int = POINTS) -> tuple[np.ndarray, dict]:
    """The oracles' margins and, per case, the unlearned margins (the exact sample first)."""
    mu, sd = rng.normal(0, 3, points), np.exp(rng.normal(0, 0.5, points))

    def draw(shift=0.0, scale=1.0):
        return mu + shift * sd + scale * sd * rng.normal(size=(models, points))

    oracles = draw()
    found = {"exact (another draw)": draw()}
    found.update({f"shift {shift} sd": draw(shift=shift) for shift in (0.25, 0.5, 1.0)})
    found.update({f"spread {scale}x": draw(scale=scale) for scale in (1.1, 1.3, 2.0)})
    found.update({f"collapse {scale}x": draw(scale=scale) for scale in (0.7, 0.3)})
    found["collapse to a point"] = np.repeat(mu[None], models, axis=0)
    far = draw()
    far[:3] *= 50
    found["3 of 50 models 50x off"] = far
    wide = draw(shift=3, scale=20)
    wide[:10] = draw()[:10]
    found["10 exact, 40 spread 20x"] = wide
    return oracles, found


def measure() -> str:
    """Both tables of the module docstring, as markdown."""
    oracles, found = cases(np.random.default_rng(SEED))
    scores = {case: {name: distance(oracles, unlearned) for name, distance in CANDIDATES.items()}
              for case, unlearned in found.items()}
    exact = scores["exact (another draw)"]
    columns = [(name, statistic) for name in CANDIDATES for statistic in STATISTICS]
    header = ["case", *(f"{name}: {statistic}" for name, statistic in columns)]
    lines = ["| " + " | ".join(header) + " |", "|---|" + "---:|" * len(columns)]
    fooled = dict.fromkeys(columns, 0)
    for case, by_name in scores.items():
        cells = []
        for name, statistic in columns:
            ratio = STATISTICS[statistic](by_name[name]) / STATISTICS[statistic](exact[name])
            mark = case != "exact (another draw)" and ratio <= 1
            fooled[name, statistic] += mark
            cells.append(f"{ratio:.2f}" + (" (fooled)" if mark else ""))
        lines.append(f"| {case} | " + " | ".join(cells) + " |")
    lines.append("| **cases fooled** | " + " | ".join(f"**{count}**" for count in fooled.values()) + " |")
    lines += ["", "| case | " + " | ".join(f"{name} power" for name in CANDIDATES) + " |",
              "|---|" + "---:|" * len(CANDIDATES)]
    for case in ("shift 0.25 sd", "shift 0.5 sd", "spread 1.1x", "spread 1.3x", "collapse 0.7x"):
        cells = [f"{(scores[case][name].mean() - exact[name].mean()) / exact[name].std():+.2f}" for name in CANDIDATES]
        lines.append(f"| {case} | " + " | ".join(cells) + " |")
    lines += ["", "| models per side | " + " | ".join(f"{name} floor (mean)" for name in CANDIDATES) + " |",
              "|---:|" + "---:|" * len(CANDIDATES)]
    for models in (25, 50, 100, 200):
        rng = np.random.default_rng(SEED)
        oracles_n, found_n = cases(rng, models=models, points=500)
        cells = [f"{distance(oracles_n, found_n['exact (another draw)']).mean():.3f}"
                 for distance in CANDIDATES.values()]
        lines.append(f"| {models} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    write_section(SECTION, measure(), DOC)
    print(f"wrote section '{SECTION}' of {DOC}")
