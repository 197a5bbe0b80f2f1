"""Benchmark: the default run from empty ``results/``, this commit against a baseline commit.

Both commits are checked out as temporary git worktrees and run ``snakemake --cores 2`` with the
default config.yaml, one after the other (baseline first), each from empty ``results/``. The table
gives each run's wall time and its job-seconds per stage (the rules' ``benchmarks/``, summed over
both experiments); below it, every non-timing cell of the two runs' ``summary.csv`` files is
compared (keyed by forget set, method and configuration; the timing columns ``unlearn_seconds``,
``retrain_seconds`` and ``precompute_seconds`` excluded): a refactor or a speed-up must move none.

    python bench/bench_default_run.py [--baseline 0a0138e] [--keep DIR]

Writes bench/RESULTS.md (section "default_run"); exits with status 1 when a cell moved.

``--at-4000`` runs the default config with ``data:`` changed to a 4,000-point 10-class image
set (Fashion-MNIST from Debian's ``dataset-fashion-mnist``: 2,800 training points, 600
validation, 600 test), this commit alone (the issue's before took over an hour), and writes section "default_4000": wall time, job-seconds per
stage, the slowest jobs and the fit jobs' peak memory (the rules' benchmark files), against
issue 22's 20 minutes.
"""

from __future__ import annotations

import argparse
import csv
import os
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.results import machine_note, publish  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
TIMING = {"unlearn_seconds", "retrain_seconds", "precompute_seconds"}
TARGET_SECONDS = 360
#: issue 22: the default plan at 4,000 points in 20 minutes, a fit job's peak RSS <= 3 GB
TARGET_4000_SECONDS, TARGET_FIT_RSS_MB = 1200, 3000
FASHION_4000 = {"loader": "idx", "path": "/usr/share/datasets/fashion-mnist", "validation_fraction": 0.5,
                "max_train": 2800, "max_test": 1200, "seed": 0}


def git(*args: str) -> str:
    return subprocess.run(["git", "-C", str(REPO), *args], capture_output=True, text=True, check=True).stdout.strip()


def default_run(commit: str, where: Path, data: dict | None = None) -> float:
    """Run the default workflow of `commit` in a worktree at `where` (its config's ``data:``
    replaced by `data` if given); its wall seconds."""
    subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", str(where), commit], check=True,
                   capture_output=True)
    if data is not None:
        import yaml
        config = yaml.safe_load((where / "config.yaml").read_text())
        (where / "config.yaml").write_text(yaml.safe_dump({**config, "data": data}, sort_keys=False))
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "snakemake", "--cores", "2"], cwd=where, check=True, capture_output=True,
                   env={**os.environ, "PYTHONPATH": str(where / "src")})
    return time.perf_counter() - start


def job_benchmarks(results: Path) -> list[tuple[str, str, float, float]]:
    """(stage, job, seconds, peak RSS in MB) of every job: the rules' benchmark files (the stage is
    the first folder or file name under each experiment's benchmarks/)."""
    jobs = []
    for tsv in results.glob("*/benchmarks/**/*.tsv"):
        with open(tsv) as handle:
            header, values = list(csv.reader(handle, delimiter="\t"))[:2]
        row = dict(zip(header, values))
        rss = float(row["max_rss"]) if row.get("max_rss", "NA") != "NA" else float("nan")
        job = str(tsv.relative_to(results)).removesuffix(".tsv")
        jobs.append((tsv.relative_to(results).parts[2].removesuffix(".tsv"), job, float(row["s"]), rss))
    return jobs


def stage_seconds(results: Path) -> dict[str, float]:
    """Job-seconds per stage."""
    stages: dict[str, float] = defaultdict(float)
    for stage, _, seconds, _ in job_benchmarks(results):
        stages[stage] += seconds
    return stages


def moved_cells(first: Path, second: Path) -> tuple[int, list[str]]:
    """(cells compared, descriptions of the cells that differ) over every experiment's summary.csv."""
    compared, moved = 0, []
    for path in sorted(first.glob("*/report/summary.csv")):
        def rows(where: Path) -> dict[tuple, dict]:
            with open(where) as handle:
                return {(r["forget_set"], r["method"], r["config"]): r for r in csv.DictReader(handle)}
        a, b = rows(path), rows(second / path.relative_to(first))
        if a.keys() != b.keys():
            moved.append(f"{path.parts[-3]}: rows differ")
        for key in sorted(a.keys() & b.keys()):
            for column, value in a[key].items():
                if column not in TIMING:
                    compared += 1
                    if value != b[key].get(column):
                        moved.append(f"{path.parts[-3]} {key} {column}: {value} -> {b[key].get(column)}")
    return compared, moved


def at_4000(args: argparse.Namespace, head: str) -> None:
    """Section "default_4000": this commit's default plan on the 4,000-point set (module docstring)."""
    load = os.getloadavg()[0]
    scratch = args.keep or Path(tempfile.mkdtemp(prefix="bench_default_4000_"))
    try:
        wall = default_run(head, scratch / "this", FASHION_4000)
        jobs = job_benchmarks(scratch / "this" / "results")
    finally:
        if not args.keep:
            subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(scratch / "this")],
                           capture_output=True)
    stages: dict[str, float] = defaultdict(float)
    for stage, _, seconds, _ in jobs:
        stages[stage] += seconds
    rows = ["| stage | job-s | share | slowest job (s) |", "|---|---:|---:|---:|"]
    total = sum(stages.values())
    for name in sorted(stages, key=lambda name: -stages[name])[:8]:
        slowest = max(seconds for stage, _, seconds, _ in jobs if stage == name)
        rows.append(f"| {name} | {stages[name]:.0f} | {stages[name] / total:.0%} | {slowest:.0f} |")
    rows.append(f"| **all stages** | {total:.0f} | | |")
    fit_rss = max(rss for stage, _, _, rss in jobs if stage == "fit_datamodels")
    section = (
        "## The default plan at 4,000 points (issue 22)\n\n"
        f"Wall time from empty results/: **{wall / 60:.1f} min** (target {TARGET_4000_SECONDS // 60} min: "
        f"{'met' if wall <= TARGET_4000_SECONDS else 'missed'}); {total:.0f} job-seconds on 2 cores. "
        f"Peak RSS of a datamodel fit job: **{fit_rss / 1000:.2f} GB** (target {TARGET_FIT_RSS_MB / 1000:.0f} GB: "
        f"{'met' if fit_rss <= TARGET_FIT_RSS_MB else 'missed'}). The eight largest stages:\n\n" + "\n".join(rows) + "\n\n"
        f"The default config.yaml at {head} with only `data:` changed, to Fashion-MNIST (2,800 training, 600 "
        "validation, 600 test points: 4,000 points, 10 classes; IDX files of Debian's dataset-fashion-mnist), "
        f"`snakemake --cores 2` in a worktree. {machine_note((load, os.getloadavg()[0]))}; "
        "`python bench/bench_default_run.py --at-4000` to rerun.")
    publish("default_4000", section)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", default="0a0138e", help="the commit to compare with")
    parser.add_argument("--keep", type=Path, help="keep the two worktrees under this folder")
    parser.add_argument("--at-4000", action="store_true", help="this commit's default plan on 4,000 points")
    args = parser.parse_args()
    head = git("rev-parse", "--short", "HEAD")
    if args.at_4000:
        at_4000(args, head)
        return
    baseline = git("rev-parse", "--short", args.baseline)
    load = os.getloadavg()[0]
    scratch = args.keep or Path(tempfile.mkdtemp(prefix="bench_default_run_"))
    walls, stages = {}, {}
    try:
        for label, commit in (("baseline", baseline), ("this", head)):
            where = scratch / label
            walls[label] = default_run(commit, where)
            stages[label] = stage_seconds(where / "results")
            print(f"{label} ({commit}): {walls[label]:.0f} s", file=sys.stderr)
        compared, moved = moved_cells(scratch / "baseline" / "results", scratch / "this" / "results")
    finally:
        if not args.keep:
            for label in ("baseline", "this"):
                subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(scratch / label)],
                               capture_output=True)
    names = sorted(set(stages["baseline"]) | set(stages["this"]), key=lambda name: -stages["baseline"].get(name, 0))
    rows = [f"| | baseline {baseline} | this commit {head} | ratio |", "|---|---:|---:|---:|",
            f"| wall time, empty results/ | {walls['baseline']:.0f} s | {walls['this']:.0f} s | "
            f"{walls['baseline'] / walls['this']:.2f}x |"]
    for name in names:
        before, after = stages["baseline"].get(name, 0.0), stages["this"].get(name, 0.0)
        rows.append(f"| {name} (job-s) | {before:.1f} | {after:.1f} | "
                    f"{before / after:.2f}x |" if after else f"| {name} (job-s) | {before:.1f} | {after:.1f} | |")
    total = {label: sum(stages[label].values()) for label in stages}
    rows.append(f"| **all stages (job-s)** | {total['baseline']:.1f} | {total['this']:.1f} | "
                f"{total['baseline'] / total['this']:.2f}x |")
    cells = (f"all {compared:,} non-timing cells of both experiments' summary.csv are equal" if not moved else
             f"{len(moved)} of {compared:,} non-timing cells moved, e.g. {moved[:3]}")
    section = (f"## Default run: this commit against {baseline}, from empty results/\n\n" + "\n".join(rows) + "\n\n"
               f"`snakemake --cores 2` with the default config.yaml, each commit in its own worktree, baseline "
               f"first; {cells}. Target (issue 20): <= {TARGET_SECONDS // 60} minutes, "
               f"{'met' if walls['this'] <= TARGET_SECONDS else 'missed'} ({walls['this'] / 60:.1f} min). "
               f"{machine_note((load, os.getloadavg()[0]))}; `python bench/bench_default_run.py` to rerun.")
    publish("default_run", section, mismatch=bool(moved))


if __name__ == "__main__":
    main()
