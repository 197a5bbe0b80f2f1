"""The PGU paper's tables from finished reports (``results/{experiment}/report/summary.csv``).

Tables 1-3 of the PGU paper (Hoang et al., WACV 2024, Sections 4.2-4.4) give, per method, the
error on the forget, retain and test sets, the membership-inference attack's result and the time
against retraining; Table 4 (Section 4.5) gives the test accuracy of the poisoned models, of models
trained without the poisoned samples ("clean") and after de-poisoning, per poisoning budget.

:func:`removal_table` renders Tables 1-3 for one forget set (one prefix ``NAME@r`` of a sequence
is a forget set of its own, with its own oracles, so Table 3 is one table per prefix), with
the KLOM score beside the paper's read-outs. :func:`depoison_table` renders Table 4 over
the poison forget sets of several experiments, one line per budget. Every method appears with the
configuration the report selected without the forget set's own oracles (``selected``; see
:mod:`unlearnflow.evaluation.selection`), and Tables 1-3 give its in-sample best's score beside
it (the lowest selection score on the set itself). :func:`class_sample_checks`
states issue 10's acceptance criteria for a class-sample forget set, measured against the
``retrain`` and ``do_nothing`` references of the same report.

Errors are percentages (100 - accuracy). The attack columns: ``MIA AUC`` is the XGBoost attack of
:func:`unlearnflow.metrics.mia.pgu_mia` telling the method's models from held-out retrained ones
(0.5 ideal; ``do_nothing`` shows the original models' value), ``attack power`` the same attack
telling original from retrained models on held-out models (how much there is to detect at all).
Time: the method's seconds per model and their ratio to one model's retraining (the oracles' bank
time per model, trained vectorised in chunks, as recorded by the workflow).
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from unlearnflow.errors import UserError
from unlearnflow.evaluation.rows import Row, parse_number, read_csv
from unlearnflow.evaluation.selection import headline_rows
from unlearnflow.report.summary import DO_NOTHING, RETRAIN, fmt, group_by, markdown_line, method_key

REMOVAL_HEADER = ("method", "config", "forget err %", "retain err %", "test err %", "MIA AUC", "attack power",
                  "KLOM score", "in-sample best (selection score)", "s / model", "x retrain")
#: summary.csv's selection columns (unlearnflow.evaluation.selection) parsed as flags and numbers
SUMMARY_FLAGS = ("selected", "insample_best")
SUMMARY_SCORES = ("heldout_selection_score", "insample_selection_score", "default_selection_score")


def read_summaries(paths: Sequence[str | os.PathLike], command: str = "pgu-table") -> list[Row]:
    """The rows of one or more ``summary.csv`` files (every configuration), with the flags
    ``selected`` and ``insample_best`` as bools and the selection scores as numbers; `command`
    names the caller in the error messages."""
    if not paths:
        raise UserError(f"{command}: no summary.csv given")
    rows = []
    for path in map(Path, paths):
        for row in read_csv(path):
            if any(row.get(flag, "") not in ("True", "False") for flag in SUMMARY_FLAGS):
                raise UserError(f"{path}: not a report summary of this version (no 'selected' and 'insample_best' "
                                "columns); give results/X/report/summary.csv, rerun the report if it is older")
            row.update({flag: row[flag] == "True" for flag in SUMMARY_FLAGS})
            row.update({column: parse_number(path, column, row.get(column, ""), integer=False)
                        for column in SUMMARY_SCORES})
            # a column the row reader keeps as text (older summaries lack it)
            row["acc_test_original"] = float(row.get("acc_test_original") or math.nan)
            rows.append(row)
    return rows


def selected_rows(rows: Iterable[Row]) -> dict[str, list[Row]]:
    """Forget set -> the selected configuration of each method, ``do_nothing`` first, ``retrain`` last."""
    out = {}
    for (forget_set,), set_rows in group_by(rows, "forget_set").items():
        chosen = headline_rows(set_rows)
        methods = [row["method"] for row in chosen]
        repeated = sorted({method for method in methods if methods.count(method) > 1})
        if repeated:
            raise UserError(f"pgu-table: forget set '{forget_set}' appears in several summaries (method "
                            f"{repeated[0]} twice); give summaries of experiments with distinct forget sets")
        out[forget_set] = sorted(chosen, key=lambda row: method_key(row["method"]))
    return out


def error(accuracy: float) -> float:
    """Error in percent of an accuracy in [0, 1]."""
    return 100.0 * (1.0 - accuracy)


def _reference(rows: Sequence[Row], method: str, forget_set: str) -> Row:
    row = next((row for row in rows if row["method"] == method), None)
    if row is None:
        raise UserError(f"pgu-table: forget set '{forget_set}' has no '{method}' row")
    return row


def insample_cell(row: Row) -> str:
    """The in-sample best configuration's selection score (KLOM's in reports made before issue 23, the
    W1 of margins' since), and its name where it is not the selected one."""
    score = fmt(row["insample_selection_score"], ".3f")
    return score if row["insample_config"] == row["config"] else f"{score} ({row['insample_config']})"


def removal_table(forget_set: str, rows: Sequence[Row]) -> list[str]:
    """Tables 1-3 for one forget set: a heading, one line per method (selected configuration)."""
    first = rows[0]
    lines = [f"### `{forget_set}` ({first['forget_kind']}, {first['n_forget']} points, "
             f"{first['n_oracles']} oracles, {first['n_unlearned']} models per method)", "",
             markdown_line(REMOVAL_HEADER), markdown_line(["---"] * len(REMOVAL_HEADER))]
    for row in rows:
        ratio = row["unlearn_seconds"] / row["retrain_seconds"] if row["retrain_seconds"] > 0 else math.nan
        lines.append(markdown_line((
            row["method"], row["config"], fmt(error(row["acc_forget"]), ".2f"), fmt(error(row["acc_retain"]), ".2f"),
            fmt(error(row["acc_test"]), ".2f"), fmt(row["mia_pgu_auc"], ".3f"), fmt(row["mia_attack_auc"], ".3f"),
            fmt(row["klom_score"], ".3f"), insample_cell(row), fmt(row["unlearn_seconds"], ".3g"),
            fmt(ratio, ".3f"))))
    return [*lines, ""]


@dataclass(frozen=True)
class Recovery:
    """Table 4, one budget: test accuracies (%) of the poisoned models, the clean ones (trained
    without the poisoned samples) and each de-poisoning method, and the share of the accuracy
    lost to poisoning that each method won back ((method - poisoned) / (clean - poisoned))."""

    forget_set: str
    n_poisoned: int
    poisoned: float
    clean: float
    methods: dict[str, float]

    def recovered(self, method: str) -> float:
        lost = self.clean - self.poisoned
        return (self.methods[method] - self.poisoned) / lost if lost > 0 else math.nan


def recoveries(rows: Iterable[Row]) -> list[Recovery]:
    """One :class:`Recovery` per poison forget set, in order of size (the budget)."""
    out = []
    for forget_set, chosen in selected_rows(rows).items():
        if chosen[0]["forget_kind"] != "poison":
            continue
        poisoned = _reference(chosen, DO_NOTHING, forget_set)
        methods = {row["method"]: 100 * row["acc_test"] for row in chosen if row["method"] not in (DO_NOTHING, RETRAIN)}
        out.append(Recovery(forget_set, poisoned["n_forget"], 100 * poisoned["acc_test"],
                            100 * poisoned["acc_test_oracle"], methods))
    return sorted(out, key=lambda recovery: recovery.n_poisoned)


def _share(recovered: float) -> str:
    """A recovered share as a table cell (NaN: the poisoned models lost no accuracy)."""
    return "poisoning cost nothing" if math.isnan(recovered) else f"{100 * recovered:.0f}%"


def depoison_table(rows: Iterable[Row]) -> list[str]:
    """Table 4: per budget, poisoned / clean / each method's test accuracy (share recovered)."""
    found = recoveries(rows)
    if not found:
        return []
    methods = list(dict.fromkeys(method for recovery in found for method in recovery.methods))
    header = ("forget set", "poisoned points", "poisoned acc %", "clean acc %", *(f"{m} acc % (recovered)" for m in methods))
    lines = [markdown_line(header), markdown_line(["---"] * len(header))]
    for recovery in found:
        cells = [f"{recovery.methods[m]:.2f} ({_share(recovery.recovered(m))})" if m in recovery.methods else "–"
                 for m in methods]
        lines.append(markdown_line((recovery.forget_set, str(recovery.n_poisoned), f"{recovery.poisoned:.2f}",
                                    f"{recovery.clean:.2f}", *cells)))
    return [*lines, ""]


def depoison_configurations_table(rows: Iterable[Row]) -> list[str]:
    """Table 4 for every configuration of each de-poisoning method (not only the headline): per
    budget its test accuracy % (the share recovered) and its validation accuracy %, the clean
    accuracy the methods stop on."""
    rows = list(rows)
    found = {recovery.forget_set: recovery for recovery in recoveries(rows)}
    cells: dict[tuple[str, str], dict[str, str]] = {}
    for row in rows:
        recovery = found.get(row["forget_set"])
        if recovery is None or row["method"] in (DO_NOTHING, RETRAIN):
            continue
        accuracy = 100 * row["acc_test"]
        share = replace(recovery, methods={row["method"]: accuracy}).recovered(row["method"])
        cells.setdefault((row["method"], row["config"]), {})[row["forget_set"]] = (
            f"{accuracy:.2f} ({_share(share)}), {100 * row['acc_val']:.2f}")
    if not cells:
        return []
    header = ("method", "config", *(f"{name}: test acc % (recovered), val acc %" for name in found))
    lines = [markdown_line(header), markdown_line(["---"] * len(header))]
    for (method, config), by_set in sorted(cells.items(), key=lambda item: (method_key(item[0][0]), item[0][1])):
        lines.append(markdown_line((method, config, *(by_set.get(name, "–") for name in found))))
    return [*lines, ""]


@dataclass(frozen=True)
class Check:
    """One acceptance criterion: what it asks, the measured value, the bound and whether it holds
    (``None``: it does not apply, e.g. the attack has no power on this forget set)."""

    criterion: str
    measured: float
    bound: str
    passed: bool | None


def class_sample_checks(rows: Sequence[Row], method: str) -> list[Check]:
    """Issue 10's acceptance on a class-sample forget set for `method`'s selected configuration:
    forget error within 1.5 points of ``retrain``'s and at least 1 point above the original
    models' (``do_nothing``), retain error <= 0.5, test error within 0.5 of the originals'; where
    the attack has power (AUC > 0.8 original vs retrained) the attack's AUC on the method's models
    at least 0.03 below its AUC on the original models."""
    forget_set = rows[0]["forget_set"]
    original, retrained, row = (_reference(rows, name, forget_set) for name in (DO_NOTHING, RETRAIN, method))
    forget, forget_original, forget_retrained = (error(r["acc_forget"]) for r in (row, original, retrained))
    test_gap = error(row["acc_test"]) - error(row["acc_test_original"])
    power = original["mia_attack_auc"]
    auc_drop = original["mia_pgu_auc"] - row["mia_pgu_auc"]
    return [
        Check("forget error - retrained's (points)", forget - forget_retrained, "|x| <= 1.5",
              abs(forget - forget_retrained) <= 1.5),
        Check("forget error - original's (points)", forget - forget_original, ">= 1", forget - forget_original >= 1),
        Check("retain error (%)", error(row["acc_retain"]), "<= 0.5", error(row["acc_retain"]) <= 0.5),
        Check("test error - original's (points)", test_gap, "|x| <= 0.5", abs(test_gap) <= 0.5),
        Check("attack AUC, original's - method's", auc_drop, f">= 0.03 where power > 0.8 (power {power:.3f})",
              auc_drop >= 0.03 if power > 0.8 else None),
    ]


def checks_table(checks: Sequence[Check]) -> list[str]:
    """The checks as a markdown table."""
    verdict = {True: "met", False: "missed", None: "n/a"}
    return [markdown_line(("criterion", "measured", "bound", "")), markdown_line(["---"] * 4),
            *(markdown_line((c.criterion, fmt(c.measured, ".3f"), c.bound, verdict[c.passed])) for c in checks), ""]


def pgu_tables(rows: Sequence[Row], acceptance: str | None = None, configurations: bool = False) -> str:
    """Markdown: Tables 1-3 per non-poison forget set, Table 4 over the poison sets (with
    `configurations`, also for every configuration) and, with `acceptance` (a method), the
    class-sample checks for that method."""
    lines: list[str] = []
    for forget_set, chosen in selected_rows(rows).items():
        if chosen[0]["forget_kind"] == "poison":
            continue
        lines += removal_table(forget_set, chosen)
        if acceptance and chosen[0]["forget_kind"] == "class_sample":
            lines += [f"Acceptance (issue 10) for `{acceptance}`:", "", *checks_table(class_sample_checks(chosen, acceptance))]
    lines += depoison_table(rows)
    if configurations:
        lines += ["Every configuration:", "", *depoison_configurations_table(rows)]
    return "\n".join(lines)
