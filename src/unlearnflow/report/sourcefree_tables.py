"""The source-free unlearning paper's tables from finished reports of linear experiments.

Ahmed et al.'s Tables 1-3 and 5 compare, per forget set, the removal methods' test accuracy with
the retrained models'. On easy data the untouched model is as accurate as the retrained one, so
each line here adds the weight distance ``||W_u - W_oracle|| / ||W_0 - W_oracle||`` (mean over
models; 0 is exact removal, 1 is ``do_nothing``), KLOM's selection score and the seconds per model
and request. Every evaluated configuration is a line (Table 2's m and Table 3's variants are grid
configurations); ``*`` marks the one the report selected per method (lowest selection score).
One table per (experiment, forget set); the experiment is the directory above ``report/``. Where
the experiment's ``benchmarks/`` directory is there (Snakemake's per-job benchmark files), a line
gives its cost: jobs, their wall seconds and CPU seconds summed.
"""

from __future__ import annotations

import csv
import math
import os
import re
from collections.abc import Sequence
from pathlib import Path

from unlearnflow.errors import UserError
from unlearnflow.evaluation.rows import Row
from unlearnflow.report.pgu_tables import read_summaries
from unlearnflow.report.summary import fmt, group_by, markdown_line, method_key

HEADER = ("method", "config", "weight distance", "test acc", "gap to oracles (points)", "KLOM selection", "s / model")


def natural(config: str) -> list:
    """Sort key of a configuration name with its numbers compared as numbers (m=250 before m=1000)."""
    return [(0, float(part), "") if re.fullmatch(r"\d+(\.\d+)?", part) else (1, 0.0, part)
            for part in re.split(r"(\d+(?:\.\d+)?)", config) if part]


def experiment_of(path: str | os.PathLike) -> str:
    """``results/X/report/summary.csv`` -> ``X`` (else the file's directory name)."""
    parent = Path(path).resolve().parent
    return parent.parent.name if parent.name == "report" else parent.name


def experiment_cost(path: str | os.PathLike) -> tuple[int, float, float] | None:
    """(jobs, wall seconds, CPU seconds) summed over the Snakemake benchmark files under the
    experiment's ``benchmarks/`` (next to ``report/``), or None without that directory."""
    directory = Path(path).resolve().parent.parent / "benchmarks"
    if not directory.is_dir():
        return None
    jobs, wall, cpu = 0, 0.0, 0.0
    for tsv in sorted(directory.rglob("*.tsv")):
        with open(tsv, newline="") as handle:
            for record in csv.DictReader(handle, delimiter="\t"):
                jobs, wall, cpu = jobs + 1, wall + _seconds(record.get("s")), cpu + _seconds(record.get("cpu_time"))
    return jobs, wall, cpu


def _seconds(value: str | None) -> float:
    """A benchmark file's seconds; Snakemake writes NA for what it could not sample (a job that
    ended before its first sample), counted as 0."""
    try:
        return float(value)
    except (TypeError, ValueError):
        return 0.0


def forget_set_table(experiment: str, forget_set: str, rows: Sequence[Row]) -> list[str]:
    """A heading and one line per evaluated configuration, methods in report order."""
    first = rows[0]
    oracle = first["acc_test_oracle"]
    lines = [f"#### `{experiment}`, `{forget_set}` ({first['n_forget']} points, {first['n_oracles']} oracles, "
             f"{first['n_unlearned']} models; oracles' test acc {fmt(oracle, '.3f')})", "",
             markdown_line(HEADER), markdown_line(["---"] * len(HEADER))]
    for row in sorted(rows, key=lambda row: (method_key(row["method"]), natural(row["config"]))):
        lines.append(markdown_line((
            row["method"], row["config"] + (" *" if row["best"] else ""), fmt(row["weight_distance"], ".3g"),
            fmt(row["acc_test"], ".3f"), fmt(100 * (row["acc_test"] - row["acc_test_oracle"]), "+.1f"),
            fmt(row["selection_score"], ".3f"), fmt(row["unlearn_seconds"], ".3g"))))
    return [*lines, ""]


def sourcefree_tables(summaries: Sequence[str | os.PathLike]) -> str:
    """Markdown: one table per (experiment, forget set) of the given ``summary.csv`` files."""
    lines: list[str] = []
    for path in summaries:
        rows = read_summaries([path], "sourcefree-table")
        if all(math.isnan(row["weight_distance"]) for row in rows):
            raise UserError(f"sourcefree-table: {path} has no weight_distance; give the summary of a linear experiment")
        for (forget_set,), set_rows in group_by(rows, "forget_set").items():
            lines += forget_set_table(experiment_of(path), forget_set, set_rows)
        cost = experiment_cost(path)
        if cost:
            lines += [f"Cost of `{experiment_of(path)}`: {cost[0]} jobs, {cost[1]:.0f} job-seconds wall, "
                      f"{cost[2]:.0f} CPU seconds (its `benchmarks/`).", ""]
    return "\n".join(lines)
