"""The one schema of an evaluation's results: the CSV row :mod:`unlearnflow.evaluation.evaluate`
writes per (method, configuration, forget set) and the report reads back, and the evaluation
artifact behind the report's figures.

- A CSV file with a header and one or more rows, columns :data:`ROW_COLUMNS` (``NaN`` or an
  empty cell for a metric that was not computed); ``status`` is :data:`OK`, or :data:`DIVERGED`
  for a configuration whose models output NaN or infinite logits (every quality metric NaN,
  never selected; older files without the column read as ok); a reader requires :data:`REQUIRED_COLUMNS`,
  parses :data:`INT_COLUMNS`, :data:`FLOAT_COLUMNS` and :data:`OPTIONAL_FLOAT_COLUMNS` and keeps
  other columns as text.
- An ``evaluation`` artifact with the arrays :data:`EVALUATION_ARRAYS` (forget-point entropies,
  the PGU attack's ROC curve) and the attributes ``method``, ``config`` and ``forget_set``.
"""

from __future__ import annotations

import csv
import math
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from unlearnflow.core.store import STAGE_VERSIONS, read_artifact
from unlearnflow.errors import UserError

STATISTICS = ("mean", "p50", "p95", "p99")
#: ``status`` of an evaluated configuration: its metrics are valid, or its models diverged.
OK, DIVERGED = "ok", "diverged"
GROUPS = ("forget", "retain", "validation")
TEXT_COLUMNS = ("method", "config", "forget_set", "forget_kind")
INT_COLUMNS = ("n_forget", "n_oracles", "n_unlearned")
FLOAT_COLUMNS = (
    *(f"klom_{group}_{stat}" for group in GROUPS for stat in STATISTICS),
    "selection_score", "selection_ci_low", "selection_ci_high",
    *(f"floor_{group}_p95" for group in GROUPS), "floor_selection_score",
    "acc_forget", "acc_retain", "acc_val", "acc_test", "acc_test_oracle", "entropy_forget",
    "mia_simple", "mia_pgu_auc", "mia_attack_auc", "ulira_accuracy",
    "unlearn_seconds", "retrain_seconds", "compute_fraction",
)
REQUIRED_COLUMNS = TEXT_COLUMNS + INT_COLUMNS + FLOAT_COLUMNS
#: Numeric columns that older evaluations may lack (NaN then).
OPTIONAL_FLOAT_COLUMNS = ("shift_corr_forget", "margin_mae_forget", "precompute_seconds", "weight_distance",
                          "cert_lemma1_bound", "cert_theorem1_bound", "cert_data_dependent_bound",
                          "cert_residual_gradient_norm")
EVALUATION_ARRAYS = ("entropy/original", "entropy/oracle", "entropy/unlearned", "mia/fpr", "mia/tpr")

#: Every column an evaluation writes, in order.
ROW_COLUMNS = (
    ["method", "config", "forget_set", "forget_kind", "n_forget", "n_oracles", "n_unlearned"]
    + [f"klom_{g}_{s}" for g in GROUPS for s in STATISTICS]
    + ["selection_score", "selection_ci_low", "selection_ci_high"]
    + [f"floor_{g}_p95" for g in GROUPS] + ["floor_selection_score"]
    + ["acc_forget", "acc_retain", "acc_val", "acc_test", "acc_test_oracle", "acc_test_original",
       "shift_corr_forget", "margin_mae_forget",
       "entropy_forget", "mia_simple", "mia_pgu_auc", "mia_attack_auc", "ulira_accuracy",
       "unlearn_seconds", "retrain_seconds", "compute_fraction", "precompute_seconds",
       "weight_distance", "cert_lemma1_bound", "cert_theorem1_bound", "cert_data_dependent_bound",
       "cert_residual_gradient_norm", "status"]
)
#: Forget set names as the config schema allows them, ``@R`` for a sequence's first R requests;
#: they appear in file names.
FORGET_SET_NAME = re.compile(r"[A-Za-z0-9_.-]+(@[0-9]+)?")

Row = dict[str, Any]


@dataclass(frozen=True)
class EvaluationArrays:
    """One evaluation artifact: forget-point entropies and the PGU attack's ROC curve."""

    path: Path
    method: str
    config: str
    forget_set: str
    entropy: dict[str, np.ndarray]
    fpr: np.ndarray
    tpr: np.ndarray


def read_rows(csv_paths: Sequence[str | os.PathLike]) -> list[Row]:
    """Read and parse every metrics CSV; duplicated (forget set, method, config) is an error."""
    if not csv_paths:
        raise UserError("report: no evaluation CSV files given; run the evaluation step first")
    rows: list[Row] = []
    seen: dict[tuple[str, str, str], Path] = {}
    for path in map(Path, csv_paths):
        for row in read_csv(path):
            key = (row["forget_set"], row["method"], row["config"])
            if key in seen:
                raise UserError(f"{path}: forget set '{key[0]}', method '{key[1]}', config '{key[2]}' "
                                f"is also in {seen[key]}")
            seen[key] = path
            rows.append(row)
    return rows


def read_csv(path: Path) -> list[Row]:
    """Parse one metrics CSV file: a header with :data:`REQUIRED_COLUMNS` and at least one row."""
    if not path.is_file():
        raise UserError(f"{path}: no such evaluation CSV file")
    with open(path, newline="") as handle:
        reader = csv.DictReader(handle)
        missing = [column for column in REQUIRED_COLUMNS if column not in (reader.fieldnames or ())]
        if missing:
            raise UserError(f"{path}: evaluation CSV lacks column(s) {', '.join(missing)}")
        rows = [parse_row(path, raw) for raw in reader]
    if not rows:
        raise UserError(f"{path}: evaluation CSV has a header but no data row")
    return rows


def parse_row(path: Path, raw: Mapping[str, str | None]) -> Row:
    """Convert one CSV row: text, int and float columns; extra columns stay text."""
    row: Row = {column: (value or "") for column, value in raw.items() if column is not None}
    if not FORGET_SET_NAME.fullmatch(row["forget_set"]):
        raise UserError(f"{path}: forget set name '{row['forget_set']}' is not of letters, digits, '_', '.' "
                        "and '-' (it names the report's files)")
    for column in INT_COLUMNS + FLOAT_COLUMNS + OPTIONAL_FLOAT_COLUMNS:
        row[column] = parse_number(path, column, row.get(column, ""), integer=column in INT_COLUMNS)
    row["status"] = row.get("status") or OK
    if row["status"] not in (OK, DIVERGED):
        raise UserError(f"{path}: column 'status' should be {OK} or {DIVERGED}, found '{row['status']}'")
    return row


def parse_number(path: Path, column: str, text: str, integer: bool) -> float | int:
    """A float (an empty cell is NaN) or, for `integer`, a whole number; else a UserError."""
    text = text.strip()
    try:
        value = float(text) if text or integer else math.nan
    except ValueError:
        value = None
    if value is None or (integer and not value.is_integer()):
        kind = "an integer" if integer else "a number"
        raise UserError(f"{path}: column '{column}' should be {kind}, found '{text}'")
    return int(value) if integer else value


def read_evaluations(paths: Iterable[str | os.PathLike], rows: Sequence[Row]) -> list[EvaluationArrays]:
    """Read every evaluation artifact; each must match a CSV row and appear only once."""
    known = {(row["forget_set"], row["method"], row["config"]) for row in rows}
    evaluations: dict[tuple[str, str, str], EvaluationArrays] = {}
    for path in paths:
        evaluation = read_evaluation(path)
        key = (evaluation.forget_set, evaluation.method, evaluation.config)
        if key not in known:
            raise UserError(f"{path}: evaluation of forget set '{key[0]}', method '{key[1]}', config "
                            f"'{key[2]}' has no row in the evaluation CSV files")
        if key in evaluations:
            raise UserError(f"{path}: the same evaluation as {evaluations[key].path}")
        evaluations[key] = evaluation
    return list(evaluations.values())


def read_evaluation(path: str | os.PathLike) -> EvaluationArrays:
    """Read one evaluation artifact's entropies, ROC curve and identifying attributes."""
    artifact = read_artifact(path, "evaluation", names=EVALUATION_ARRAYS, version=STAGE_VERSIONS["evaluation"])
    missing = [name for name in ("method", "config", "forget_set") if name not in artifact.attrs]
    if missing:
        raise UserError(f"{path}: evaluation artifact lacks attribute(s) {', '.join(missing)}")
    return EvaluationArrays(
        path=Path(path), method=str(artifact.attrs["method"]), config=str(artifact.attrs["config"]),
        forget_set=str(artifact.attrs["forget_set"]),
        entropy={name: artifact[f"entropy/{name}"] for name in ("original", "oracle", "unlearned")},
        fpr=artifact["mia/fpr"], tpr=artifact["mia/tpr"])
