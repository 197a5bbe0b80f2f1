"""Benchmark: what parsing the workflow costs (issue 24, targets: a no-op ``snakemake -n`` after a
finished default run <= 2.0 s, ``python -m unlearnflow --help`` <= 0.5 s, medians of 5 on an idle
2-core machine), against a baseline checkout measured in the same run.

Every Snakemake job (each SLURM job too) parses the Snakefile, and every rule's command starts
with the CLI, so both are paid once per job. Both are timed as whole processes: the candidate is
this checkout, the baseline another checkout (``--baseline``, e.g. a ``git worktree`` of the
commit before), each with its own ``src`` on PYTHONPATH and its own Snakefile, on the same
finished run (``--run-dir``, where ``snakemake --cores N`` has run the default config to the end;
both dry runs must find nothing to do). Writes bench/RESULTS.md (section "parse").

    python bench/bench_parse.py --run-dir DIR --baseline DIR [--repeats 5]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from bench.results import machine_note, write_section  # noqa: E402

TARGETS = {"no-op snakemake -n": 2.0, "python -m unlearnflow --help": 0.5}


def timed(command: list[str], checkout: Path, cwd: Path) -> tuple[float, str]:
    """Wall seconds of one run of `command` with `checkout`'s library, and its output."""
    env = {**os.environ, "PYTHONPATH": str(checkout / "src")}
    start = time.perf_counter()
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed in {cwd}:\n{result.stderr[-2000:]}")
    return seconds, result.stdout + result.stderr


def snakemake_floor(repeats: int) -> float:
    """Median seconds of a no-op ``snakemake -n`` of a one-rule workflow: Snakemake's start-up alone."""
    with tempfile.TemporaryDirectory() as directory:
        Path(directory, "Snakefile").write_text('rule a:\n    output: "a.txt"\n    shell: "touch {output}"\n')
        Path(directory, "a.txt").touch()
        runs = [timed([sys.executable, "-m", "snakemake", "-n", "--cores", "1"], REPO, Path(directory))[0]
                for _ in range(repeats)]
    return statistics.median(runs)


def commands(checkout: Path) -> dict[str, list[str]]:
    return {"no-op snakemake -n": [sys.executable, "-m", "snakemake", "-n", "--cores", "1",
                                   "-s", str(checkout / "Snakefile")],
            "python -m unlearnflow --help": [sys.executable, "-m", "unlearnflow", "--help"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run-dir", type=Path, required=True, help="a finished default run")
    parser.add_argument("--baseline", type=Path, required=True, help="the checkout to compare with")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    loads = [os.getloadavg()[0]]
    medians: dict[tuple[str, str], float] = {}
    for side, checkout in (("baseline", args.baseline.resolve()), ("this checkout", REPO)):
        for name, command in commands(checkout).items():
            runs = []
            for _ in range(args.repeats):
                seconds, output = timed(command, checkout, args.run_dir)
                runs.append(seconds)
                if name.startswith("no-op") and "Nothing to be done" not in output:
                    raise SystemExit(f"{side}: the dry run in {args.run_dir} is not a no-op:\n{output[-1500:]}")
            medians[side, name] = statistics.median(runs)
    loads.append(os.getloadavg()[0])
    floor = snakemake_floor(args.repeats)
    rows = [f"| {name} | {medians['baseline', name]:.2f} | {medians['this checkout', name]:.2f} | "
            f"{medians['baseline', name] / medians['this checkout', name]:.1f}x | <= {target} | "
            f"{'met' if medians['this checkout', name] <= target else 'missed'} |" for name, target in TARGETS.items()]
    baseline = subprocess.run(["git", "-C", str(args.baseline), "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True).stdout.strip()
    markdown = "\n".join([
        "## Parsing the workflow: no-op dry run and the CLI's start-up (issue 24)", "",
        "| command | baseline s | this checkout s | ratio | target s | |", "|---|---:|---:|---:|---:|---|", *rows, "",
        f"Medians of {args.repeats} whole-process runs each, on a finished default run (both dry runs find nothing "
        f"to do); baseline: commit {baseline or args.baseline}, which imported torch, scipy and scikit-learn while "
        f"parsing. Snakemake's own floor, a no-op `snakemake -n` of a one-rule workflow on this machine: "
        f"{floor:.2f} s (median of {args.repeats}), so the no-op dry run's part that is this workflow's is "
        f"{medians['baseline', 'no-op snakemake -n'] - floor:.2f} s before and "
        f"{medians['this checkout', 'no-op snakemake -n'] - floor:.2f} s now. {machine_note(loads)}; "
        "`python bench/bench_parse.py --run-dir DIR --baseline DIR` to rerun.",
    ])
    write_section("parse", markdown)
    print(markdown)


if __name__ == "__main__":
    main()
