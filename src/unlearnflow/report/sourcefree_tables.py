"""The source-free unlearning paper's tables from finished reports of linear experiments.

Ahmed et al.'s Tables 1-3 and 5 compare, per forget set, the removal methods' test accuracy with
the retrained models'. On easy data the untouched model is as accurate as the retrained one, so
each line here adds the weight distance ``||W_u - W_oracle|| / ||W_0 - W_oracle||`` (mean over
models; 0 is exact removal, 1 is ``do_nothing``), the KLOM score (and, for reports that chose
configurations by it, the W1 selection score, issue 23), the seconds per model
and request, the true retain-gradient norm of the unlearned weights and what the certificates say
beside the truth (:mod:`unlearnflow.evaluation.certificates`): ``newton_certified``'s (epsilon,
delta), the source-free paper's Theorem 1 and Lemma 1 expressions with the share of models they
are violated for. Every evaluated configuration is a line (Table 2's m and Table 3's variants are
grid configurations); ``*`` marks the one selected per method without the forget set's oracles
(the report's headline), ``(in-sample best)`` the one of lowest selection score on the set itself.
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
from unlearnflow.evaluation.rows import Row, chosen_by_w1
from unlearnflow.report.pgu_tables import read_summaries
from unlearnflow.report.summary import (
    claim_cell,
    fmt,
    group_by,
    guarantee_cell,
    identification_note,
    markdown_line,
    method_key,
)

HEADER = ("method", "config", "weight distance", "test acc", "gap to oracles (points)", "KLOM score", "s / model",
          "retain grad (true)", "certificate")
#: after "KLOM score" where the report chose configurations by the W1 of margins (issue 23)
W1_COLUMN = "W1 selection"


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
    by_w1 = chosen_by_w1(rows)
    header = (*HEADER[:6], W1_COLUMN, *HEADER[6:]) if by_w1 else HEADER
    lines = [f"#### `{experiment}`, `{forget_set}` ({first['n_forget']} points, {first['n_oracles']} oracles, "
             f"{first['n_unlearned']} models; oracles' test acc {fmt(oracle, '.3f')})", "",
             markdown_line(header), markdown_line(["---"] * len(header))]
    for row in sorted(rows, key=lambda row: (method_key(row["method"]), natural(row["config"]))):
        config = row["config"] + (" *" if row["selected"] else "") + identification_note(row)
        config += " (in-sample best)" if row["insample_best"] else ""
        lines.append(markdown_line((
            row["method"], config, fmt(row["weight_distance"], ".3g"),
            fmt(row["acc_test"], ".3f"), fmt(100 * (row["acc_test"] - row["acc_test_oracle"]), "+.1f"),
            fmt(row["klom_score"], ".3f"), *([fmt(row["selection_score"], ".3f")] if by_w1 else []),
            fmt(row["unlearn_seconds"], ".3g"), fmt(row.get("true_retain_gradient_norm", math.nan), ".3g"),
            certificate_cell(row))))
    return [*lines, ""]


def certificate_cell(row: Row) -> str:
    """What a configuration's certificates say: certified removal's (epsilon, delta), or for the
    source-free step "none" and the paper's Theorem 1 and Lemma 1 expressions beside the truth."""
    if math.isfinite(row.get("paper_lemma1_claim", math.nan)):
        return (f"none; paper's Thm 1 {claim_cell(row, 'paper_theorem1_claim', 'paper_theorem1_violated')}, "
                f"Lemma 1 {claim_cell(row, 'paper_lemma1_claim', 'paper_lemma1_violated')} vs true "
                f"{fmt(row.get('true_hessian_error', math.nan), '.3g')}")
    return guarantee_cell(row)


def experiment_tables(path: str | os.PathLike, experiment: str, cost: tuple[int, float, float] | None) -> list[str]:
    """The tables of one experiment's ``summary.csv`` at `path` and, with a `cost` (see
    :func:`experiment_cost`), its cost line; a committed snapshot gives both from its metadata."""
    rows = read_summaries([path], "sourcefree-table")
    if all(math.isnan(row["weight_distance"]) for row in rows):
        raise UserError(f"sourcefree-table: {path} has no weight_distance; give the summary of a linear experiment")
    lines: list[str] = []
    for (forget_set,), set_rows in group_by(rows, "forget_set").items():
        lines += forget_set_table(experiment, forget_set, set_rows)
    if cost:
        lines += [f"Cost of `{experiment}`: {cost[0]} jobs, {cost[1]:.0f} job-seconds wall, "
                  f"{cost[2]:.0f} CPU seconds (its `benchmarks/`).", ""]
    return lines


def sourcefree_tables(summaries: Sequence[str | os.PathLike]) -> str:
    """Markdown: one table per (experiment, forget set) of the given ``summary.csv`` files."""
    return "\n".join(line for path in summaries
                     for line in experiment_tables(path, experiment_of(path), experiment_cost(path)))
