"""The one schema of an evaluation's results: the CSV row :mod:`unlearnflow.evaluation.evaluate`
writes per (method, configuration, forget set) and the report reads back, and the evaluation
artifact behind the report's figures.

- A CSV file with a header and one or more rows, columns :data:`ROW_COLUMNS` (``NaN`` or an
  empty cell for a metric that was not computed; ``klom_score`` is the equal-weight mean of the
  groups' KLOM-95 and ``klom_ci_*`` its bootstrap interval, ``selection_score`` the equal-weight mean
  of the groups' mean W1 of margins (``w1_*_mean``, :mod:`unlearnflow.metrics.wasserstein`), which
  chooses configurations; older files are read by :func:`upgrade_legacy`); ``status`` is :data:`OK`, or :data:`DIVERGED`
  for a configuration whose models output NaN or infinite logits (every quality metric NaN,
  never selected; older files without the column read as ok); a reader requires :data:`REQUIRED_COLUMNS`,
  parses :data:`INT_COLUMNS`, :data:`FLOAT_COLUMNS` and :data:`OPTIONAL_FLOAT_COLUMNS` and keeps
  other columns as text.
- An ``evaluation`` artifact per (method, forget set), with the attributes ``method``,
  ``forget_set``, ``configs`` (the evaluated configurations, in order) and ``seed`` (of the
  evaluation's random streams), the arrays :data:`SHARED_ARRAYS` (the original and oracle
  models' forget-point entropies, the oracles' margins and the point groups behind KLOM) and,
  per configuration, :data:`CONFIG_ARRAYS` under ``configs/{index}/`` (:func:`config_array`):
  its forget-point entropies and the PGU attack's ROC curve, and for a configuration that did
  not diverge its per-point KLOM of each group and its margins (float32, models x points). The
  report reads the arrays of the configuration it shows (:func:`read_evaluation`) and, for the
  selection score's bootstrap interval, the margins (:func:`read_interval_inputs`).
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

from unlearnflow.core.stage_table import STAGE_VERSIONS
from unlearnflow.core.store import read_artifact
from unlearnflow.errors import UserError

STATISTICS = ("mean", "p50", "p95", "p99")
#: ``status`` of an evaluated configuration: its metrics are valid, or its models diverged
#: (:func:`unlearnflow.evaluation.evaluate.divergence`).
OK, DIVERGED = "ok", "diverged"
GROUPS = ("forget", "retain", "validation")
#: ``selection_metric`` of a row: what its ``selection_score`` is (:data:`W1`, the W1 of margins over
#: the oracles' spread; :data:`KLOM` in evaluations written before issue 23, read by :func:`parse_row`)
W1, KLOM = "w1", "klom"
TEXT_COLUMNS = ("method", "config", "forget_set", "forget_kind", "selection_metric")
INT_COLUMNS = ("n_forget", "n_oracles", "n_unlearned")
FLOAT_COLUMNS = (
    *(f"klom_{group}_{stat}" for group in GROUPS for stat in STATISTICS),
    "klom_score", "klom_ci_low", "klom_ci_high",
    *(f"floor_{group}_p95" for group in GROUPS), "floor_klom_score",
    "selection_score", "floor_selection_score",
    "acc_forget", "acc_retain", "acc_val", "acc_test", "acc_test_oracle", "entropy_forget",
    "mia_simple", "mia_pgu_auc", "mia_attack_auc", "ulira_accuracy",
    "unlearn_seconds", "retrain_seconds", "compute_fraction",
)
REQUIRED_COLUMNS = TEXT_COLUMNS + INT_COLUMNS + FLOAT_COLUMNS
#: Numeric columns that older evaluations may lack (NaN then).
#: Linear models' certificates beside the truth (:mod:`unlearnflow.evaluation.certificates`):
#: ``cert_certified`` the share of models certified, ``cert_epsilon`` / ``cert_delta`` the worst
#: (epsilon, delta) of ``newton_certified``; each claimed bound (mean over models) beside the true
#: quantity it bounds (``true_*``, mean) and the share of models whose claim is below the truth
#: (``*_violated``): the certified retain-gradient bound, and the source-free paper's Lemma 1 and
#: Theorem 1 expressions (``paper_*``: claims, not certificates); ``hessian_identified`` the share of
#: source-free fits with enough perturbations to identify the Hessian block (issue 23).
CERTIFICATE_COLUMNS = ("cert_certified", "cert_epsilon", "cert_delta", "cert_residual_bound",
                       "true_retain_gradient_norm", "cert_residual_bound_violated", "paper_lemma1_claim",
                       "true_hessian_error", "paper_lemma1_violated", "paper_theorem1_claim", "paper_theorem1_violated",
                       "hessian_identified")
#: The NeurIPS 2023 Machine Unlearning Challenge's forgetting quality F and final score against the
#: oracles (:mod:`unlearnflow.metrics.challenge`).
CHALLENGE_COLUMNS = ("challenge_forgetting", "challenge_score")
#: The oracles' mean retain accuracy (the denominator of the challenge score's retain ratio).
ORACLE_RETAIN_ACCURACY = "acc_retain_oracle"
OPTIONAL_FLOAT_COLUMNS = (*(f"w1_{group}_mean" for group in GROUPS), "shift_corr_forget", "margin_mae_forget",
                          "precompute_seconds", "weight_distance", *CERTIFICATE_COLUMNS, *CHALLENGE_COLUMNS,
                          ORACLE_RETAIN_ACCURACY)
#: Columns of evaluations written before issue 23 and their names now: their selection score was KLOM's.
LEGACY_COLUMNS = {"selection_score": "klom_score", "klom_ci_low": "klom_ci_low",
                  "klom_ci_high": "klom_ci_high", "floor_selection_score": "floor_klom_score"}
#: Arrays of an evaluation artifact shared by its configurations.
SHARED_ARRAYS = ("entropy/original", "entropy/oracle", "oracle_margins", *(f"groups/{group}" for group in GROUPS))
#: Arrays of each configuration (:func:`config_array`); a diverged one has only the first three.
CONFIG_ARRAYS = ("entropy/unlearned", "mia/fpr", "mia/tpr", *(f"klom/{group}" for group in GROUPS), "margins")

#: Every column an evaluation writes, in order.
ROW_COLUMNS = (
    ["method", "config", "forget_set", "forget_kind", "n_forget", "n_oracles", "n_unlearned"]
    + [f"klom_{g}_{s}" for g in GROUPS for s in STATISTICS]
    + ["klom_score", "klom_ci_low", "klom_ci_high"]
    + [f"floor_{g}_p95" for g in GROUPS] + ["floor_klom_score"]
    + [f"w1_{g}_mean" for g in GROUPS] + ["selection_metric", "selection_score", "floor_selection_score"]
    + ["acc_forget", "acc_retain", "acc_val", "acc_test", "acc_test_oracle", "acc_test_original", ORACLE_RETAIN_ACCURACY,
       "shift_corr_forget", "margin_mae_forget",
       "entropy_forget", "mia_simple", "mia_pgu_auc", "mia_attack_auc", "ulira_accuracy", "ulira_config",
       *CHALLENGE_COLUMNS, "unlearn_seconds", "retrain_seconds", "compute_fraction", "precompute_seconds",
       "weight_distance", *CERTIFICATE_COLUMNS, "status"]
)
#: Forget set names as the config schema allows them, ``@R`` for a sequence's first R requests;
#: they appear in file names.
FORGET_SET_NAME = re.compile(r"[A-Za-z0-9_.-]+(@[0-9]+)?")

Row = dict[str, Any]


@dataclass(frozen=True)
class EvaluationFile:
    """One evaluation artifact, by its attributes: which method and forget set it holds, its
    configurations in order and the seed of its random streams (its arrays stay on disk)."""

    path: Path
    method: str
    forget_set: str
    configs: tuple[str, ...]
    seed: int


@dataclass(frozen=True)
class EvaluationArrays:
    """One configuration's arrays of an evaluation artifact: forget-point entropies (original,
    oracle and unlearned models) and the PGU attack's ROC curve."""

    path: Path
    method: str
    config: str
    forget_set: str
    entropy: dict[str, np.ndarray]
    fpr: np.ndarray
    tpr: np.ndarray


def config_array(index: int, name: str) -> str:
    """The artifact name of array `name` of the configuration at `index` (:data:`CONFIG_ARRAYS`)."""
    return f"configs/{index}/{name}"


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
        legacy = "selection_metric" not in (reader.fieldnames or ())
        header = [*(reader.fieldnames or ()), *(LEGACY_COLUMNS.values() if legacy else ()), "selection_metric"]
        missing = [column for column in REQUIRED_COLUMNS if column not in header]
        if missing:
            raise UserError(f"{path}: evaluation CSV lacks column(s) {', '.join(missing)}")
        rows = [parse_row(path, upgrade_legacy(raw) if legacy else raw) for raw in reader]
    if not rows:
        raise UserError(f"{path}: evaluation CSV has a header but no data row")
    return rows


def chosen_by_w1(rows: Iterable[Row]) -> bool:
    """Whether the rows' configurations were chosen by the W1 of margins (else by KLOM: evaluations
    made before issue 23); a mix is a UserError."""
    metrics = {row["selection_metric"] for row in rows}
    if len(metrics) > 1:
        raise UserError(f"rows chosen by different selection metrics ({', '.join(sorted(metrics))}) cannot share "
                        "a table; render them apart or rerun the older evaluations")
    return metrics == {W1}


def upgrade_legacy(raw: Mapping[str, str | None]) -> dict[str, str | None]:
    """A row of an evaluation written before issue 23 in today's columns: its selection score, interval
    and floor were KLOM's (:data:`LEGACY_COLUMNS`), and KLOM chose its configurations, so its
    ``selection_score`` stays the KLOM score with ``selection_metric`` :data:`KLOM`."""
    row = dict(raw)
    row.update({new: raw.get(old) for old, new in LEGACY_COLUMNS.items()})
    row.update(selection_metric=KLOM, selection_score=raw.get("selection_score"),
               floor_selection_score=raw.get("floor_selection_score"))
    return row


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


def read_evaluations(paths: Iterable[str | os.PathLike], rows: Sequence[Row]) -> dict[tuple[str, str], EvaluationFile]:
    """(forget set, method) -> its evaluation artifact; each configuration of one must have a CSV
    row, and a (forget set, method) may have only one artifact."""
    known = {(row["forget_set"], row["method"], row["config"]) for row in rows}
    evaluations: dict[tuple[str, str], EvaluationFile] = {}
    for path in paths:
        evaluation = read_evaluation_file(path)
        key = (evaluation.forget_set, evaluation.method)
        for config in evaluation.configs:
            if (*key, config) not in known:
                raise UserError(f"{path}: evaluation of forget set '{key[0]}', method '{key[1]}', config "
                                f"'{config}' has no row in the evaluation CSV files")
        if key in evaluations:
            raise UserError(f"{path}: the same evaluation as {evaluations[key].path}")
        evaluations[key] = evaluation
    return evaluations


def read_evaluation_file(path: str | os.PathLike) -> EvaluationFile:
    """The identifying attributes of one evaluation artifact (no arrays are read)."""
    artifact = read_artifact(path, "evaluation", names=(), version=STAGE_VERSIONS["evaluation"])
    missing = [name for name in ("method", "forget_set", "configs", "seed") if name not in artifact.attrs]
    if missing:
        raise UserError(f"{path}: evaluation artifact lacks attribute(s) {', '.join(missing)}")
    return EvaluationFile(path=Path(path), method=str(artifact.attrs["method"]),
                          forget_set=str(artifact.attrs["forget_set"]),
                          configs=tuple(map(str, artifact.attrs["configs"])), seed=int(artifact.attrs["seed"]))


def config_index(evaluation: EvaluationFile, config: str) -> int:
    """The position of `config` in an evaluation artifact (a UserError when it has none)."""
    if config not in evaluation.configs:
        raise UserError(f"{evaluation.path}: evaluation of method '{evaluation.method}' on forget set "
                        f"'{evaluation.forget_set}' has no config '{config}' (its CSV row does); rerun the evaluation")
    return evaluation.configs.index(config)


def read_evaluation(evaluation: EvaluationFile, config: str) -> EvaluationArrays:
    """The entropies and ROC curve of one configuration of an evaluation artifact."""
    names = {f"entropy/{name}": f"entropy/{name}" for name in ("original", "oracle")}
    names.update({name: config_array(config_index(evaluation, config), name)
                  for name in ("entropy/unlearned", "mia/fpr", "mia/tpr")})
    artifact = read_artifact(evaluation.path, "evaluation", names=names.values(), version=STAGE_VERSIONS["evaluation"])
    arrays = {name: artifact[stored] for name, stored in names.items()}
    return EvaluationArrays(
        path=evaluation.path, method=evaluation.method, config=config, forget_set=evaluation.forget_set,
        entropy={name: arrays[f"entropy/{name}"] for name in ("original", "oracle", "unlearned")},
        fpr=arrays["mia/fpr"], tpr=arrays["mia/tpr"])


def read_interval_inputs(evaluation: EvaluationFile,
                         config: str) -> tuple[np.ndarray, dict[str, np.ndarray], np.ndarray]:
    """(oracle margins, point groups, the configuration's margins) of an evaluation artifact: what
    the KLOM score's bootstrap interval (:func:`unlearnflow.evaluation.evaluate.klom_interval`)
    resamples. A diverged configuration has no margins (a UserError)."""
    margins = config_array(config_index(evaluation, config), "margins")
    groups = {group: f"groups/{group}" for group in GROUPS}
    artifact = read_artifact(evaluation.path, "evaluation", names=["oracle_margins", margins, *groups.values()],
                             version=STAGE_VERSIONS["evaluation"])
    return (artifact["oracle_margins"], {group: artifact[name] for group, name in groups.items()},
            artifact[margins])
