"""Running the workflow from a test: `snakemake` on the repository's Snakefile in a work directory."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def snakemake(workdir: Path, *args: str, check: bool = True, timeout: int = 900) -> subprocess.CompletedProcess:
    """``snakemake --cores 2 ARGS`` in `workdir`; with `check`, a failure raises with its output."""
    command = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--directory", str(workdir),
               "--cores", "2", *args]
    result = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    if check and result.returncode != 0:
        raise AssertionError(f"snakemake {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
    return result


def dry_run_jobs(workdir: Path, *args: str) -> list[dict]:
    """Every job a dry run plans: its rule, inputs, outputs, wildcards, resources and priority, from the printed plan."""
    output = snakemake(workdir, "--dry-run", *args).stdout
    jobs = []
    for block in re.split(r"^(?:localrule|rule) ", output, flags=re.M)[1:]:
        rule, _, body = block.partition(":\n")
        fields = dict(re.findall(r"^    (\w+): (.*)$", body, re.M))
        jobs.append({"rule": rule.strip(), "input": [p for p in fields.get("input", "").split(", ") if p],
                     "output": [p for p in fields.get("output", "").split(", ") if p],
                     "wildcards": dict(pair.split("=", 1) for pair in fields.get("wildcards", "").split(", ") if pair),
                     "resources": fields.get("resources", ""), "priority": int(fields.get("priority", 0))})
    return jobs
