"""Benchmark: how close `unlearnflow estimate` predicts the job wall time of a run twice the size
of a measured one (target: within 30%), on this machine.

Runs two small workflows (the references only, an MLP of 0.08 M multiply-adds per forward, one
forget set): 6 models on 600 digits training points, then 12 models on 1,200; predicts the second
from the first's benchmarks and compares with what the second measured (the jobs' summed wall
seconds). The prediction is only as steady as the machine: run it idle. Writes bench/RESULTS.md
(section "estimate").

    python bench/bench_estimate.py [--workdir DIR]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from bench.results import machine_note, write_section  # noqa: E402
from unlearnflow.ops.estimate import estimate  # noqa: E402
from unlearnflow.report.sourcefree_tables import experiment_cost  # noqa: E402


def run_config(name: str, models: int, max_train: int, epochs: int = 30) -> dict:
    """A small run whose training stands out of the jobs' start-up (~2-3 s each when idle)."""
    return {"experiment": name, "progress": False, "device": "cpu",
            "data": {"loader": "digits", "max_train": max_train},
            "model": {"arch": "mlp", "options": {"hidden": [256, 256]}},
            "training": {"epochs": epochs, "batch_size": 128, "lr": 0.05},
            "originals": {"models": models, "chunk_size": models},
            "oracles": {"models": models, "chunk_size": models},
            "forget_sets": {"r10": {"kind": "random", "size": 10}},
            "evaluation": {"ulira": {"base_models": 8, "forget_sets_per_model": 2, "forget_size": 2,
                                     "pool_size": 12}}}


def main(workdir: Path) -> None:
    loads = [os.getloadavg()[0]]
    for config in (run_config("small", 6, 600), run_config("large", 12, 1200)):
        path = workdir / f"{config['experiment']}.yaml"
        path.write_text(yaml.safe_dump(config))
        subprocess.run(["snakemake", "--snakefile", str(REPO / "Snakefile"), "--directory", str(workdir), "--cores",
                        "2", "--configfile", str(path), "--quiet"], check=True, cwd=workdir)
    loads.append(os.getloadavg()[0])
    stages, _ = estimate(workdir / "small.yaml", workdir / "large.yaml", directory=workdir)
    predicted = sum(stage.wall_hours for stage in stages) * 3600
    measured, small = (experiment_cost(workdir / "results" / name / "report" / "summary.csv")[1]
                       for name in ("large", "small"))
    error = predicted / measured - 1
    table = "\n".join([
        "## `unlearnflow estimate`: a run twice the size of a measured one", "",
        "| measured run s | predicted s | measured s | error | target |", "|---:|---:|---:|---:|---|",
        f"| {small:.1f} | {predicted:.1f} | {measured:.1f} | {error:+.1%} | within 30%: "
        f"{'met' if abs(error) < 0.30 else '**missed**'} |", "",
        "Job wall seconds summed over the rules' benchmark files; the small run has 6 MLPs (256-256) on 600 "
        "digits points, the large 12 on 1,200. " + machine_note(loads) + "; `python bench/bench_estimate.py` to rerun."])
    write_section("estimate", table)
    print(table)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()
    if args.workdir:
        args.workdir.mkdir(parents=True, exist_ok=True)
        main(args.workdir)
    else:
        with tempfile.TemporaryDirectory() as directory:
            main(Path(directory))
