"""Benchmark: the default run's unlearn jobs, the whole bank's training loops at once (the
lockstep, :mod:`unlearnflow.core.lockstep`) against one model after the other.

Every ``unlearn`` job of a finished run of the default config (its exact command, from
``snakemake --dry-run --forcerun unlearn --printshellcmds``) runs twice, as the workflow runs it
(a process with one torch thread, reading and writing its artifacts), once as it is and once with
``--models-per-pass 1`` (one model after the other), alternating which goes first; outputs go to a temporary folder. Both outputs
must hold the same numbers (the benchmark fails otherwise). The table gives job-seconds per
method summed over the forget sets, and the total; the fixed cost of a job (starting Python,
importing torch and the runner, reading the bank, writing the artifact) is in both columns; the
import part is measured apart.

    python bench/bench_unlearn.py [--workdir .]

Needs the default run's results (``snakemake --cores 2`` first). Writes bench/RESULTS.md
(section "unlearn").
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import h5py
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.results import machine_note, publish  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def unlearn_commands(workdir: Path) -> list[str]:
    """The shell command of every unlearn job of the finished run in `workdir`."""
    result = subprocess.run([sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--directory",
                             str(workdir), "--cores", "2", "--dry-run", "--forcerun", "unlearn", "--printshellcmds"],
                            capture_output=True, text=True, check=True)
    shell = (line.strip().removeprefix("Shell command: ") for line in result.stdout.splitlines())
    commands = [line.split(" > ")[0] for line in shell if line.startswith("python -m unlearnflow unlearn ")]
    if not commands:
        sys.exit(f"bench_unlearn: no unlearn job planned in {workdir}; run the default workflow there first")
    return commands


def run(command: str, out: Path, sequential: bool, workdir: Path) -> float:
    """Run one job's command with its output redirected to `out`; its wall seconds."""
    words = shlex.split(command)
    words[words.index("--out") + 1] = str(out)
    if sequential:
        words += ["--models-per-pass", "1"]
    start = time.perf_counter()
    subprocess.run([sys.executable, *words[1:]], cwd=workdir, check=True, capture_output=True,
                   env={**os.environ, "PYTHONPATH": str(REPO / "src")})
    return time.perf_counter() - start


def run_import() -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import torch, unlearnflow.runner"], check=True,
                   env={**os.environ, "PYTHONPATH": str(REPO / "src")})
    return time.perf_counter() - start


def same_numbers(first: Path, second: Path) -> bool:
    """Every weight and logit of two unlearned artifacts equal (certificates hold timings)."""
    def arrays(path: Path) -> dict[str, np.ndarray]:
        found = {}
        with h5py.File(path) as handle:
            handle.visititems(lambda name, item: found.__setitem__(name, item[()])
                              if isinstance(item, h5py.Dataset) and "/certificates" not in name else None)
        return found
    a, b = arrays(first), arrays(second)
    return a.keys() == b.keys() and all(np.array_equal(a[name], b[name]) for name in a)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=Path("."))
    args = parser.parse_args()
    workdir = args.workdir.resolve()
    commands = unlearn_commands(workdir)
    load = os.getloadavg()[0]
    seconds: dict[str, dict[bool, float]] = defaultdict(lambda: {True: 0.0, False: 0.0})
    differing = []
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as scratch:
        for index, command in enumerate(commands):
            method = re.search(r"--method (\S+)", command).group(1)
            outs = {sequential: Path(scratch) / f"{index}_{sequential}.h5" for sequential in (False, True)}
            for sequential in ((False, True) if index % 2 else (True, False)):
                seconds[method][sequential] += run(command, outs[sequential], sequential, workdir)
            if not same_numbers(outs[False], outs[True]):
                differing.append(command)
            print(f"{index + 1}/{len(commands)} {method}: {seconds[method][True]:.1f} s sequential, "
                  f"{seconds[method][False]:.1f} s at once", file=sys.stderr)
    total = {sequential: sum(row[sequential] for row in seconds.values()) for sequential in (False, True)}
    imports = min(run_import() for _ in range(3))
    startup = imports * len(commands)
    jobs = defaultdict(int)
    for command in commands:
        jobs[re.search(r"--method (\S+)", command).group(1)] += 1
    rows = ["| method | jobs | one model after the other (job-s) | whole bank at once (job-s) | ratio |",
            "|---|---:|---:|---:|---:|"]
    for method, row in sorted(seconds.items(), key=lambda item: -item[1][True]):
        rows.append(f"| {method} | {jobs[method]} | {row[True]:.1f} | {row[False]:.1f} | "
                    f"{row[True] / row[False]:.2f}x |")
    rows.append(f"| **all** | {len(commands)} | {total[True]:.1f} | {total[False]:.1f} | "
                f"{total[True] / total[False]:.2f}x |")
    verdict = ("every job's weights and logits are bitwise equal both ways" if not differing else
               f"{len(differing)} jobs differ between the two ways: {differing[:3]}")
    section = ("## Unlearn stage: the default run's unlearn jobs, bank at once vs one model after the other\n\n"
               + "\n".join(rows) + "\n\n"
               f"{len(commands)} jobs of the default config (50 digits MLPs per bank, every configuration of each "
               f"method's grid), each run as the workflow runs it (its own process, 1 torch thread, artifacts read and "
               f"written) both ways, order alternating; {verdict}. Starting Python and importing torch and the runner "
               f"alone takes {imports:.2f} s per job ({imports * len(commands):.0f} job-s of the total both ways; "
               f"without it the ratio is {(total[True] - startup) / (total[False] - startup):.2f}x). "
               f"Target (issue 20): the stage's job-seconds fall "
               f">= 4x. Whole benchmark {time.perf_counter() - started:.0f} s. "
               f"{machine_note((load, os.getloadavg()[0]))}; `python bench/bench_unlearn.py` to rerun (needs the "
               "default run's results).")
    publish("unlearn", section, mismatch=bool(differing))


if __name__ == "__main__":
    main()
