"""The report: one summary table and a set of figures over every method's evaluation.

Inputs are what the evaluation step writes for each (method, forget set): a CSV file of metric
rows, one per configuration, and an ``evaluation`` artifact, in the one schema of
:mod:`unlearnflow.evaluation.rows`.

Each method's *headline* configuration on a forget set is chosen without that set's oracles
(:mod:`unlearnflow.evaluation.selection`: leave one forget set out, or a selection set, within
an accuracy guard); the in-sample best (lowest W1 selection score on the set itself, the DMM
paper's practice) and the default configuration are reported beside it.

:func:`write_report` writes into its output directory:

``summary.csv``
    Every row, sorted by forget set, then method (``do_nothing`` first, ``retrain`` last,
    the others alphabetically), then config, with the columns of
    :data:`~unlearnflow.evaluation.selection.SELECTION_COLUMNS` last: ``selection_rule``,
    ``heldout_config``, ``heldout_selection_score``, ``insample_config``,
    ``insample_selection_score``, ``default_selection_score`` (per method and forget set) and
    the flags ``selected`` (the headline row) and ``insample_best``. A configuration whose status
    is ``diverged`` is never chosen, and the markdown table names it. The KLOM score's
    interval is filled for the in-sample best (by the evaluation job) and the headline; the
    column ``suspicious`` (:func:`flag_suspicious`) says where a score beats retraining.
``summary.md``
    One markdown table per forget set: the headline configuration of each method with the rule
    that chose it, its in-sample best and default scores, the ``do_nothing`` and ``retrain``
    references, and the noise floor of the oracles, with lines under the table saying what is
    ideal.
``klom_vs_compute.png``
    The DMM paper's Figure 1, one row of panels per forget set: KLOM 95th percentile (y)
    against the fraction of retraining compute (x, log scale; zero compute, ``do_nothing``,
    sits one decade left of the smallest positive fraction, behind an axis break, with the
    tick label "0"), one panel for the KLOM score and one per group (forget, retain,
    validation), a line per method through its configurations in order of compute, and the
    noise floor dashed.
``entropy_{forget set}.png``
    Histograms of the forget points' prediction entropies of the original, oracle and
    unlearned models, one panel per method.
``mia_roc_{forget set}.png``
    ROC curves of the PGU attack on each method's unlearned models, with the chance diagonal.

Forget set names must be of letters, digits, ``_``, ``.`` and ``-`` (as the config schema
requires), with ``@R`` for the first R requests of a sequence, since they name files. The
entropy and ROC figures show, for each method, its headline configuration; a forget set without
evaluation artifacts still gets both figures, saying so. Figures use the Agg backend and never
need a display.
"""

from __future__ import annotations

import csv
import math
import os
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (the backend must be chosen first)
import numpy as np  # noqa: E402
from matplotlib.ticker import FixedLocator, NullLocator  # noqa: E402

from unlearnflow.dmm.estimators import estimator_of  # noqa: E402
from unlearnflow.evaluation.rows import (  # noqa: E402
    DIVERGED,
    GROUPS,
    REQUIRED_COLUMNS,
    EvaluationArrays,
    EvaluationFile,
    Row,
    read_evaluation,
    read_evaluations,
    read_interval_inputs,
    read_rows,
)
from unlearnflow.evaluation.selection import (  # noqa: E402
    DEFAULT_ACCURACY_GUARD,
    SELECTION_COLUMNS,
    accuracy_loss,
    describe_rule,
    headline_rows,
    score_key,
    select_configurations,
    within_guard,
)

DO_NOTHING, RETRAIN = "do_nothing", "retrain"
DPI = 120
#: Panels of the KLOM-vs-compute figure: (column, noise-floor column, title).
KLOM_PANELS = (("klom_score", "floor_klom_score", "KLOM score (mean of groups)"),
               *((f"klom_{group}_p95", f"floor_{group}_p95", f"{group.capitalize()} points") for group in GROUPS))

#: Weight distance to the oracles below which a linear bank is exact removal (flag_suspicious).
EXACT_WEIGHT_DISTANCE = 1e-3
#: Fixed styles for the two references; other methods cycle through the palette and markers.
_REFERENCE_STYLES = {DO_NOTHING: ("tab:gray", "X"), RETRAIN: ("black", "*")}
_PALETTE = ("tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown",
            "tab:pink", "tab:olive", "tab:cyan")
_MARKERS = ("o", "s", "^", "D", "v", "P", "h")
_MISSING = "–"

def write_report(csv_paths: Sequence[str | os.PathLike], evaluation_paths: Sequence[str | os.PathLike],
                 out_dir: str | os.PathLike, datamodels: Mapping[str, Any] | None = None,
                 one_time: Mapping[str, Mapping[str, Any]] | None = None,
                 accuracy_guard: float = DEFAULT_ACCURACY_GUARD, selection_set: str | None = None,
                 threads: int = 1) -> list[Path]:
    """Write the summary table and every figure into `out_dir`; return the written paths.

    The headline configurations are chosen by
    :func:`~unlearnflow.evaluation.selection.select_configurations` with `accuracy_guard` and
    `selection_set`, and get their KLOM score's interval (:func:`fill_headline_intervals`,
    `threads` at a time).

    `datamodels` (the attributes of a datamodels artifact, with ``scales`` from its
    calibration if any) adds a section on their quality and one-time cost to ``summary.md``.
    `one_time` (side artifact name -> ``description``, ``precompute_seconds`` and optionally
    ``seconds_per_model``) adds one line per cached side artifact's one-time cost.

    No CSV file, a CSV file without the required columns or rows, a duplicated (method,
    config, forget set) or an evaluation artifact without a CSV row is a UserError.
    """
    rows = sort_rows(select_configurations(read_rows(csv_paths), accuracy_guard, selection_set))
    evaluations = read_evaluations(evaluation_paths, rows)
    fill_headline_intervals(rows, evaluations, threads)
    flag_suspicious(rows)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    styles = method_styles(row["method"] for row in rows)
    written = [write_summary_csv(rows, out_dir / "summary.csv"),
               write_summary_md(rows, out_dir / "summary.md", datamodels, one_time, accuracy_guard, selection_set),
               plot_klom_vs_compute(rows, styles, out_dir / "klom_vs_compute.png")]
    for (forget_set,), set_rows in group_by(rows, "forget_set").items():
        chosen = headline_evaluations(evaluations, set_rows)
        written += [plot_entropy(chosen, forget_set, styles, out_dir / f"entropy_{forget_set}.png"),
                    plot_mia_roc(chosen, forget_set, styles, out_dir / f"mia_roc_{forget_set}.png")]
    return written


# --- ordering and selection ----------------------------------------------------------------

def method_key(method: str) -> tuple[int, str]:
    """Sort key of a method: ``do_nothing`` first, ``retrain`` last, the others by name."""
    return ({DO_NOTHING: 0, RETRAIN: 2}.get(method, 1), method)


def is_diverged(row: Row) -> bool:
    """Whether the row's configuration diverged (non-finite, exploded or collapsed outputs:
    :func:`unlearnflow.evaluation.evaluate.divergence`; never chosen)."""
    return row.get("status") == DIVERGED


def sort_rows(rows: Iterable[Row]) -> list[Row]:
    """Rows sorted by forget set, method (see :func:`method_key`) and config."""
    return sorted(rows, key=lambda row: (row["forget_set"], method_key(row["method"]), row["config"]))


def group_by(rows: Iterable[Row], *columns: str) -> dict[tuple, list[Row]]:
    """Rows grouped by the values of `columns`, groups and rows in their order of appearance."""
    groups: dict[tuple, list[Row]] = defaultdict(list)
    for row in rows:
        groups[tuple(row[column] for column in columns)].append(row)
    return dict(groups)


def fill_headline_intervals(rows: Sequence[Row], evaluations: Mapping[tuple[str, str], EvaluationFile],
                            threads: int = 1) -> None:
    """Set the KLOM score's bootstrap interval of every headline row that lacks one (the
    evaluation job computes it for the in-sample best only, from float64 margins) and did not
    diverge: :func:`~unlearnflow.evaluation.evaluate.klom_interval` of the float32 margins its
    evaluation artifact stores, with the evaluation's seed, hence the job's random stream (on the
    default run, intervals from the stored margins are within 1.1e-4 of the float64 ones, 40 of 50
    identical). About a second per interval, computed `threads` at a time (each draws from its own
    seeded stream, so the result does not depend on `threads`); a row without an artifact keeps NaN."""
    from unlearnflow.evaluation.evaluate import klom_interval  # imports the attack's libraries
    missing = [(row, evaluations[row["forget_set"], row["method"]]) for row in headline_rows(rows)
               if (row["forget_set"], row["method"]) in evaluations and not is_diverged(row)
               and not math.isfinite(row["klom_ci_low"])]

    def interval(pair: tuple[Row, EvaluationFile]) -> dict[str, float]:
        row, evaluation = pair
        return klom_interval(*read_interval_inputs(evaluation, row["config"]), evaluation.seed)

    with ThreadPoolExecutor(max(1, threads)) as pool:
        for (row, _), found in zip(missing, pool.map(interval, missing)):
            row.update(found)


def flag_suspicious(rows: Sequence[Row]) -> None:
    """Set ``suspicious`` on every row: why its scores cannot be taken at face value, or "".

    Retraining is exact unlearning, so a configuration that scores better than ``retrain`` on the
    same forget set by more than the sampling noise is a sign that the score is fooled (added
    spread or collapse, ``docs/klom-blind-spots.md``), not a success: flagged where the upper end
    of its KLOM score's bootstrap interval lies below retraining's KLOM score. Not flagged: linear
    models whose weights are measured to equal the oracles' (weight distance below
    :data:`EXACT_WEIGHT_DISTANCE`; the oracles share each original's objective noise, which the
    ``retrain`` reference draws anew, so exact removal legitimately beats it). The interval exists
    for the headline and the in-sample best configurations; other rows get "" (not checked)."""
    retrain = {row["forget_set"]: row for row in rows if row["method"] == RETRAIN}
    for row in rows:
        reference = retrain.get(row["forget_set"])
        row["suspicious"] = ""
        if reference is None or row is reference or not math.isfinite(row["klom_ci_high"]):
            continue
        if row.get("weight_distance", math.nan) < EXACT_WEIGHT_DISTANCE:
            continue
        if row["klom_ci_high"] < reference["klom_score"]:
            row["suspicious"] = (f"KLOM score {row['klom_score']:.3f} [CI high {row['klom_ci_high']:.3f}] below "
                                 f"retraining's {reference['klom_score']:.3f}")


def headline_evaluations(evaluations: Mapping[tuple[str, str], EvaluationFile],
                         rows: Sequence[Row]) -> list[tuple[EvaluationArrays, Row]]:
    """Per method of `rows` (one forget set) with an evaluation artifact, the arrays of its
    headline configuration, in the report's method order."""
    shown = sorted(headline_rows(rows), key=lambda row: method_key(row["method"]))
    return [(read_evaluation(evaluations[row["forget_set"], row["method"]], row["config"]), row) for row in shown
            if (row["forget_set"], row["method"]) in evaluations]


def nan_median(values: Iterable[float]) -> float:
    """Median of the finite values, NaN if there are none (the floor is shared by all rows)."""
    finite = [value for value in values if math.isfinite(value)]
    return float(np.median(finite)) if finite else math.nan


# --- tables --------------------------------------------------------------------------------

def write_summary_csv(rows: Sequence[Row], path: Path) -> Path:
    """All rows with the required columns first, extra columns next and the selection columns last."""
    extra = [column for row in rows for column in row if column not in REQUIRED_COLUMNS + SELECTION_COLUMNS]
    columns = [*REQUIRED_COLUMNS, *dict.fromkeys(extra), *SELECTION_COLUMNS]
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns, restval="")
        writer.writeheader()
        writer.writerows(rows)
    return path


def write_summary_md(rows: Sequence[Row], path: Path, datamodels: Mapping[str, Any] | None = None,
                     one_time: Mapping[str, Mapping[str, Any]] | None = None,
                     accuracy_guard: float = DEFAULT_ACCURACY_GUARD, selection_set: str | None = None) -> Path:
    """The markdown summary: a title, a guide with the selection rule, a section per forget set
    and, when datamodel methods ran, one on the datamodels; one line per other cached side
    artifact's cost."""
    lines = ["# Unlearning report", "",
             "Per forget set, the headline configuration of each method, chosen without that set's oracles, "
             "beside its in-sample best (the lowest selection score on the set itself, the DMM paper's practice: "
             "optimistic, the more so the larger the grid) and its default configuration; the `do_nothing` and "
             "`retrain` references and the oracles' noise floor. Every configuration is in `summary.csv`.", "",
             selection_rule_line(accuracy_guard, selection_set), ""]
    for (forget_set,), set_rows in group_by(rows, "forget_set").items():
        lines += forget_set_section(forget_set, set_rows, accuracy_guard)
    if datamodels:
        lines += datamodels_section(datamodels)
    if one_time:
        lines += one_time_section(one_time)
    path.write_text("\n".join(lines))
    return path


def datamodels_section(attrs: Mapping[str, Any]) -> list[str]:
    """Quality (held-out LDS and R^2 per output) and one-time cost of the datamodels."""
    table = [markdown_line(("output", "held-out LDS", "held-out R^2", "fit seconds")),
             markdown_line(["---"] * 4)]
    for output in attrs["outputs"]:
        table.append(markdown_line((output, fmt(attrs[f"{output}_lds"], ".3f"), fmt(attrs[f"{output}_r2"], ".3f"),
                                    fmt(attrs[f"{output}_fit_seconds"], ".1f"))))
    scales = attrs.get("scales")
    calibration = (", ".join(f"{name} {value:.3f}" for name, value in scales.items()) if scales
                   else "none (no datamodels.calibration_set)")
    regression = estimator_of(attrs["estimator"]).regression
    source = (f"fitted on {attrs['fitted_models']} subset models" if regression
              else f"from {attrs['options']['checkpoints']} original models")
    return ["## Datamodels", "",
            f"Estimator `{attrs['estimator']}`: {source}, scored on "
            f"{attrs['heldout_models']} held-out ones (LDS: Spearman correlation of predicted and actual outputs "
            "across held-out models, mean over points; 1 is perfect).", "", *table, "",
            f"One-time cost, not counted in `compute` above (as in the DMM paper): "
            f"{attrs['subset_train_seconds']:.0f} s training subset models "
            f"({'the regression data' if regression else 'they only score the estimate'}) and "
            f"{sum(attrs[f'{output}_fit_seconds'] for output in attrs['outputs']):.0f} s "
            f"fitting. Calibrated scales of the predicted shifts (held-out forget set): {calibration}.", ""]


def one_time_section(costs: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """One line per cached side artifact: its one-time cost, apart from the per-request ``compute``
    (as the PGU paper states its SVD time apart from the unlearning time, Section 4.2)."""
    lines = ["## One-time costs", "",
             "Cached side artifacts, computed once per original bank and amortised over requests; not "
             "counted in `compute` above.", ""]
    for name, cost in costs.items():
        per_model = cost.get("seconds_per_model")
        detail = f" ({fmt(float(np.mean(per_model)), '.2f')} s per model)" if per_model is not None and len(
            per_model) else ""
        lines.append(f"- `{name}` ({cost['description']}): {fmt(cost['precompute_seconds'], '.2f')} s{detail}")
    return [*lines, ""]


def points(accuracy: float) -> str:
    """An accuracy difference in percentage points (0.005 -> "0.5 pt")."""
    return f"{100 * accuracy:g} pt"


def selection_rule_line(accuracy_guard: float, selection_set: str | None) -> str:
    """How the headline configurations were chosen, in one paragraph."""
    guard = (f"among the configurations that did not diverge and keep test accuracy within "
             f"{points(accuracy_guard)} of the oracles'")
    if selection_set is not None:
        return (f"Selection: the configuration of best selection score on forget set `{selection_set}`, {guard} "
                f"there, is the headline on every forget set; on `{selection_set}` itself that choice is in-sample. "
                "When none qualifies, the default configuration.")
    return (f"Selection: leave one forget set out. On each forget set, the configuration of best mean selection "
            f"score over the other forget sets, {guard} on each of them (the prefixes of a sequence count as one "
            "forget set, never held out for each other); ties go to the default configuration. When none "
            "qualifies, or there is no other forget set, the default configuration.")


_TABLE_HEADER = ("method", "config (headline)", "chosen by", "KLOM-95 forget", "KLOM-95 retain", "KLOM-95 validation",
                 "KLOM score [CI]", "W1 selection score", "in-sample best (W1)", "default (W1)", "test acc",
                 "forget margin MAE", "shift corr", "MIA AUC (PGU)", "U-LiRA acc", "challenge score", "compute",
                 "suspicious")


def forget_set_section(forget_set: str, rows: Sequence[Row], accuracy_guard: float = DEFAULT_ACCURACY_GUARD
                       ) -> list[str]:
    """Heading, table (references, headline configs by score, noise floor) and what is ideal."""
    first = rows[0]
    groups = group_by(rows, "method")
    shown = sorted(headline_rows(rows), key=lambda row: (method_key(row["method"])[0], score_key(row)))
    table = [table_row(row, groups[(row["method"],)], accuracy_guard) for row in shown] + [floor_row(rows)]
    return [f"## Forget set `{forget_set}`", "",
            f"{first['forget_kind']}, {first['n_forget']} points; KLOM against {first['n_oracles']} oracles.", "",
            markdown_line(_TABLE_HEADER), markdown_line(["---"] * len(_TABLE_HEADER)),
            *map(markdown_line, table), "", *explanation(rows, accuracy_guard), "", *linear_section(rows)]


#: the columns of the linear-model table (:func:`linear_cells`): each claimed bound beside the truth it bounds
LINEAR_COLUMNS = ("weight distance", "retain grad (true)", "certified bound", "certified (ε at δ)",
                  "Thm 1 (paper)", "Hessian error (true)", "Lemma 1 (paper)")


def linear_section(rows: Sequence[Row]) -> list[str]:
    """Banks of linear models: every configuration's weight distance to the retrained models
    (``||w_u - w_retrain|| / ||w_0 - w_retrain||``, 0 = exact removal, 1 = untouched), the true
    retain-gradient norm of its weights, and each bound its certificates claim beside the truth
    with the share of models that violate it (:mod:`unlearnflow.evaluation.certificates`):
    ``newton_certified``'s bound and its (epsilon, delta), the source-free paper's Theorem 1 and
    Lemma 1 expressions against the true retain gradient and Hessian error. Nothing otherwise."""
    shown = [row for row in sort_rows(rows) if any(math.isfinite(row.get(column, math.nan))
                                                   for column in ("weight_distance", "true_retain_gradient_norm"))]
    if not shown:
        return []
    header = ["method", "config", "test acc", *LINEAR_COLUMNS]
    lines = ["Linear models: distance to the retrained weights (w_retrain is the oracle with the same model id and "
             "objective noise), the true retain-gradient norm ||grad L(w_u; D_r)|| of the unlearned weights, and "
             "each bound a certificate claims beside the truth it bounds (means over models; \"violated\": the "
             "share of models whose claim is below the truth; –: nothing claimed, or a vacuous expression). "
             "ε at δ: Guo et al.'s (ε, δ)-certified removal, the worst over models. Thm 1 and Lemma 1 (paper): "
             "the source-free paper's expressions for the retain gradient and for ||H^ - H_r||_F per block, "
             "which certify nothing. \"Hessian not identified\": fewer perturbations m than the p(p+1)/2 unknowns "
             "of a p x p Hessian block, so the fit and its Newton step are arbitrary.", "",
             markdown_line(header), markdown_line(["---"] * len(header))]
    lines += [markdown_line([row["method"], row["config"] + identification_note(row), accuracy_cell(row),
                             *linear_cells(row)]) for row in shown]
    return lines + [""]


def identification_note(row: Row) -> str:
    """A mark on a source-free configuration whose m perturbations could not identify the Hessian
    block (m < p(p+1)/2, :mod:`unlearnflow.sourcefree.identifiability`) for some of its models."""
    share = row.get("hessian_identified", math.nan)
    return "" if not share < 1 else f" (Hessian not identified: m < p(p+1)/2 for {1 - share:.0%} of models)"


def linear_cells(row: Row) -> list[str]:
    """The cells of :data:`LINEAR_COLUMNS` for one row."""
    return [fmt(row.get("weight_distance", math.nan), ".3g"),
            fmt(row.get("true_retain_gradient_norm", math.nan), ".3g"),
            claim_cell(row, "cert_residual_bound", "cert_residual_bound_violated"), guarantee_cell(row),
            claim_cell(row, "paper_theorem1_claim", "paper_theorem1_violated"),
            fmt(row.get("true_hessian_error", math.nan), ".3g"),
            claim_cell(row, "paper_lemma1_claim", "paper_lemma1_violated")]


def claim_cell(row: Row, claim: str, violated: str) -> str:
    """A claimed bound (mean over models) and, when some models' claim is below the truth, their share."""
    share = row.get(violated, math.nan)
    return fmt(row.get(claim, math.nan), ".3g") + (f" (violated {share:.0%})" if share > 0 else "")


def guarantee_cell(row: Row) -> str:
    """``ε E at δ D`` (the worst over models) for certified removal, ``no`` when nothing is certified,
    prefixed by the share certified when only some models are."""
    share = row.get("cert_certified", math.nan)
    if not share > 0:
        return "no" if share == 0 else _MISSING
    guarantee = f"ε {row['cert_epsilon']:.3g} at δ {row['cert_delta']:g}"
    return guarantee if share == 1 else f"{share:.0%}: {guarantee}"


def table_row(row: Row, configs: Sequence[Row], accuracy_guard: float = DEFAULT_ACCURACY_GUARD) -> list[str]:
    """One method's cells: its headline configuration (`row`), among how many, the rule that chose
    it, its scores, and, among its `configs` on this forget set, the in-sample best and the
    default's selection score (dashes for a method with one configuration)."""
    config = row["config"]
    insample = default = _MISSING
    if len(configs) > 1:
        diverged = [other["config"] for other in configs if is_diverged(other)]
        config += f" ({len(configs)} configs" + (f"; diverged: {', '.join(diverged)}" if diverged else "") + ")"
        insample, default = insample_cell(configs, accuracy_guard), fmt(row["default_selection_score"], ".3f")
    if is_diverged(row):
        config += " (diverged: non-finite, exploded or collapsed outputs; never chosen)"
    klom_score = fmt(row["klom_score"], ".3f")
    if math.isfinite(row["klom_ci_low"]) and math.isfinite(row["klom_ci_high"]):
        klom_score += f" [{row['klom_ci_low']:.3f}, {row['klom_ci_high']:.3f}]"
    return [row["method"], config, describe_rule(row["selection_rule"]),
            *(fmt(row[f"klom_{group}_p95"], ".3f") for group in GROUPS), klom_score, fmt(row["selection_score"], ".3f"),
            insample, default, accuracy_cell(row, accuracy_guard), fmt(row["margin_mae_forget"], ".3f"),
            fmt(row["shift_corr_forget"], ".3f"), fmt(row["mia_pgu_auc"], ".3f"), ulira_cell(row, configs),
            fmt(row.get("challenge_score", math.nan), ".3f"), fmt(row["compute_fraction"], ".3g"),
            row.get("suspicious", "")]


def ulira_cell(row: Row, configs: Sequence[Row]) -> str:
    """U-LiRA's attacker accuracy where the row's configuration is the one the shadows ran; else a
    dash and the measured configuration's value, named."""
    measured = row.get("ulira_config", "")
    if not measured or measured == row["config"]:
        return fmt(row["ulira_accuracy"], ".3f")
    other = next((config for config in configs if config["config"] == measured), None)
    return f"{_MISSING} ({measured}: {fmt(other['ulira_accuracy'], '.3f')})" if other else _MISSING


def insample_cell(configs: Sequence[Row], accuracy_guard: float) -> str:
    """The in-sample best configuration and its score; where it loses more than the accuracy
    guard on this forget set, also the best one (in-sample) within the guard."""
    best = next(row for row in configs if row["insample_best"])
    cell = f"{best['config']} {fmt(best['selection_score'], '.3f')}"
    if within_guard(best, accuracy_guard) or is_diverged(best):
        return cell
    kept = [row for row in configs if within_guard(row, accuracy_guard)]
    guarded = min(kept, key=score_key) if kept else None
    return cell + (f"; within {points(accuracy_guard)}: {guarded['config']} {fmt(guarded['selection_score'], '.3f')}"
                   if guarded else f"; none within {points(accuracy_guard)}")


def accuracy_cell(row: Row, accuracy_guard: float = DEFAULT_ACCURACY_GUARD) -> str:
    """The unlearned models' test accuracy, flagged when it is more than the accuracy guard
    (half a point by default) below the oracles'."""
    cell = fmt(row["acc_test"], ".3f")
    loss = accuracy_loss(row)
    return cell + (f" (-{100 * loss:.1f} pt)" if loss > accuracy_guard else "")


def floor_row(rows: Sequence[Row]) -> list[str]:
    """The oracles' row: KLOM noise floor (oracle halves) and the oracles' test accuracy."""
    floors = [fmt(nan_median(row[f"floor_{group}_p95"] for row in rows), ".3f") for group in GROUPS]
    per_side = int(nan_median(row["n_oracles"] for row in rows)) // 2
    return [f"*noise floor ({per_side} vs {per_side} oracles)*", _MISSING, _MISSING, *floors,
            fmt(nan_median(row["floor_klom_score"] for row in rows), ".3f"),
            fmt(nan_median(row["floor_selection_score"] for row in rows), ".3f"), _MISSING, _MISSING,
            fmt(nan_median(row["acc_test_oracle"] for row in rows), ".3f"), *[_MISSING] * 7]


def explanation(rows: Sequence[Row], accuracy_guard: float = DEFAULT_ACCURACY_GUARD) -> list[str]:
    """Lines under a table saying what each column measures and what is ideal."""
    attack = nan_median(row["mia_attack_auc"] for row in rows)
    per_side = int(nan_median(row["n_unlearned"] for row in rows))
    guard = points(accuracy_guard)
    return [
        "- KLOM-95: 95th percentile over the group's points of the KL divergence between oracle "
        "and unlearned margins; 0 is perfect. The noise floor row compares two halves of the "
        "oracles, so it is the floor at *half* the models per side (KLOM's floor falls with the "
        "number of models); `retrain` (fresh models against all oracles) is the floor at full "
        "size, the level of exact unlearning. `do_nothing` bounds it from above.",
        "- KLOM score: mean KLOM-95 of the three groups (the DMM paper's Figure 1), lower is better; [CI]: its "
        "bootstrap confidence interval over models. KLOM bins margins on the oracles' and the unlearned models' "
        "combined range, so added spread and collapse can lower it (docs/klom-blind-spots.md): it does not "
        "choose configurations.",
        "- W1 selection score: the mean over the three groups of the mean over their points of the 1-Wasserstein "
        "distance between a point's oracle and unlearned margins, in oracle standard deviations (0 is perfect; "
        "the noise floor row is its level at half the models per side); it chooses each method's configuration, "
        "and neither added spread nor collapse lowers it.",
        "- Suspicious: the KLOM score's interval lies below retraining's KLOM score, better than exact "
        "unlearning: read it as a fooled score, not a success.",
        "- Config (headline): chosen without this forget set's oracles (chosen by: the rule above the tables). "
        "In-sample best: the configuration of lowest W1 selection score on this forget set itself, and its score "
        "(the DMM paper's practice; its score is optimistic, the more so the larger the grid). Default: the "
        "W1 selection score of the method's default configuration.",
        f"- Test acc: mean test accuracy of the unlearned models; ideal is the oracles' (noise floor row); "
        f"(-x pt) flags a loss of more than {guard} (the accuracy guard) against them; where the in-sample best "
        f"loses more, its cell also names the best configuration on this forget set within {guard}.",
        "- Forget margin MAE: mean over forget points of |mean unlearned margin - mean oracle margin|, 0 is "
        "ideal (`do_nothing` shows the size of the effect to undo). Shift corr: correlation over forget points of "
        "the margin shift the method made with the oracles' shift (ideal 1; undefined for `do_nothing`).",
        f"- MIA AUC (PGU): how well the attack tells unlearned from retrained models, ideal 0.5 "
        f"(the attack separates original from retrained models with AUC {fmt(attack, '.3f')}). "
        "U-LiRA acc: the attacker's accuracy against the configuration its shadows ran, ideal 0.5; where that "
        "is not the headline, a dash and the measured configuration's value, named.",
        f"- Challenge score: the NeurIPS 2023 Machine Unlearning Challenge's score against the oracles, ideal 1: "
        f"forgetting quality (per forget point, the best threshold attack's epsilon on the logit-scaled "
        f"confidences, bucketed) times the retain and test accuracy ratios; at {per_side} models per side "
        "two samples of one distribution score far below 1: the `retrain` row is its floor (the challenge used "
        "512 models per side).",
        "- Compute: unlearning compute as a fraction of retraining (`do_nothing` 0, `retrain` 1).",
    ]


def markdown_line(cells: Iterable[str]) -> str:
    """A markdown table line, with ``|`` inside cells escaped."""
    return "| " + " | ".join(str(cell).replace("|", r"\|") for cell in cells) + " |"


def fmt(value: float, spec: str) -> str:
    """`value` formatted with `spec`, or a dash for NaN."""
    return format(value, spec) if math.isfinite(value) else _MISSING


# --- figures -------------------------------------------------------------------------------

def method_styles(methods: Iterable[str]) -> dict[str, tuple[str, str]]:
    """(colour, marker) per method, the same in every figure; references in grey and black."""
    others = sorted({method for method in methods if method not in _REFERENCE_STYLES})
    styles = {method: (_PALETTE[i % len(_PALETTE)], _MARKERS[i % len(_MARKERS)])
              for i, method in enumerate(others)}
    return {**_REFERENCE_STYLES, **styles}


def save(fig: plt.Figure, path: Path) -> Path:
    """Lay out, save at :data:`DPI` (growing the canvas to fit outside legends) and close."""
    fig.tight_layout()
    fig.savefig(path, dpi=DPI, bbox_inches="tight")
    plt.close(fig)
    return path


def zero_position(fractions: Sequence[float]) -> float:
    """Where zero compute sits on the log axis: one decade below the smallest positive fraction."""
    positive = [value for value in fractions if value > 0]
    return 10.0 ** (math.floor(math.log10(min(positive, default=1.0))) - 1)


def plot_klom_vs_compute(rows: Sequence[Row], styles: Mapping[str, tuple[str, str]], path: Path) -> Path:
    """Figure 1 of the DMM paper: KLOM-95 against the fraction of compute, a row per forget set."""
    forget_sets = group_by(rows, "forget_set")
    fractions = [row["compute_fraction"] for row in rows if math.isfinite(row["compute_fraction"])]
    zero = zero_position(fractions)
    fig, axes = plt.subplots(len(forget_sets), len(KLOM_PANELS), squeeze=False, sharex=True,
                             figsize=(4.0 * len(KLOM_PANELS), 3.4 * len(forget_sets)))
    for axes_row, ((forget_set,), set_rows) in zip(axes, forget_sets.items()):
        for ax, panel in zip(axes_row, KLOM_PANELS):
            klom_panel(ax, set_rows, panel, styles, zero)
            ax.set_title(f"{forget_set}: {panel[2]}")
            format_compute_axis(ax, fractions, zero)
        axes_row[0].set_ylabel("KLOM, 95th percentile")
    for ax in axes[-1]:
        ax.set_xlabel("Fraction of retrain compute")
    legend = {label: handle for ax in axes.flat for handle, label in zip(*ax.get_legend_handles_labels())}
    fig.suptitle("KLOM vs compute (lower is better; ideal: at the noise floor with little compute)")
    fig.legend(legend.values(), legend.keys(), loc="upper center", bbox_to_anchor=(0.5, 0.0),
               ncol=min(len(legend), 6), frameon=False)
    return save(fig, path)


def klom_panel(ax: plt.Axes, rows: Sequence[Row], panel: tuple[str, str, str],
               styles: Mapping[str, tuple[str, str]], zero: float) -> None:
    """One forget set's panel: a line per method and the noise floor dashed."""
    column, floor_column, _ = panel
    for (method,), method_rows in group_by(rows, "method").items():
        plot_method_line(ax, method_rows, column, zero, styles[method])
    floor = nan_median(row[floor_column] for row in rows)
    if math.isfinite(floor):
        ax.axhline(floor, linestyle="--", color="0.35", linewidth=1.2, label="noise floor (oracle halves, N/2 per side)")
    ax.set_xscale("log")
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)


def plot_method_line(ax: plt.Axes, rows: Sequence[Row], column: str, zero: float,
                     style: tuple[str, str]) -> None:
    """One method's configurations as markers joined in order of compute (zero at `zero`)."""
    points = sorted((row["compute_fraction"] or zero, row[column]) for row in rows
                    if math.isfinite(row["compute_fraction"]) and math.isfinite(row[column]))
    if points:
        color, marker = style
        ax.plot(*zip(*points), color=color, marker=marker, markersize=7, linewidth=1.5,
                label=rows[0]["method"])


def format_compute_axis(ax: plt.Axes, fractions: Sequence[float], zero: float) -> None:
    """Decade ticks on the compute axis, and a "0" tick behind an axis break if zero is plotted."""
    top = math.ceil(math.log10(max(fractions, default=1.0) or 1.0))
    decades = [10.0 ** k for k in range(round(math.log10(zero)) + 1, max(top, 0) + 1)]
    has_zero = any(value == 0 for value in fractions)
    ticks = [zero] * has_zero + decades
    ax.xaxis.set_major_locator(FixedLocator(ticks))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set_xticklabels(["0"] * has_zero + [f"{tick:g}" for tick in decades])
    ax.set_xlim(zero / 2, ticks[-1] * 2)
    if has_zero:
        gap = zero * math.sqrt(10)
        ax.plot([gap / 1.12, gap * 1.12], [0, 0], transform=ax.get_xaxis_transform(), marker=[(-1, -2), (1, 2)],
                markersize=9, linestyle="none", color="black", clip_on=False)


def plot_entropy(chosen: Sequence[tuple[EvaluationArrays, Row]], forget_set: str,
                 styles: Mapping[str, tuple[str, str]], path: Path) -> Path:
    """Forget-point entropy histograms (original, oracle, unlearned), one panel per method."""
    if not chosen:
        return save(message_figure(f"No evaluation artifacts for forget set '{forget_set}'"), path)
    ncols = min(3, len(chosen))
    nrows = math.ceil(len(chosen) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.2 * ncols, 3.2 * nrows), squeeze=False)
    bins = entropy_bins([evaluation for evaluation, _ in chosen])
    for ax, (evaluation, _) in zip(axes.flat, chosen):
        entropy_panel(ax, evaluation, bins, styles[evaluation.method][0])
    for ax in axes.flat[len(chosen):]:
        ax.set_visible(False)
    fig.suptitle(f"Prediction entropy on forget set '{forget_set}' (ideal: unlearned overlaps oracle)")
    return save(fig, path)


def entropy_bins(evaluations: Sequence[EvaluationArrays], count: int = 30) -> np.ndarray:
    """Shared histogram edges from 0 to the largest finite entropy of any model."""
    values = np.concatenate([array.ravel() for evaluation in evaluations for array in evaluation.entropy.values()])
    values = values[np.isfinite(values)]
    top = float(values.max()) if values.size and values.max() > 0 else 1.0
    return np.linspace(0.0, top, count + 1)


def entropy_panel(ax: plt.Axes, evaluation: EvaluationArrays, bins: np.ndarray, color: str) -> None:
    """One method's panel: original filled grey, oracle black outline, unlearned in its colour."""
    def finite(name: str) -> np.ndarray:
        values = evaluation.entropy[name].ravel()
        return values[np.isfinite(values)]

    ax.hist(finite("original"), bins=bins, density=True, color="0.8", label="original")
    ax.hist(finite("oracle"), bins=bins, density=True, histtype="step", linewidth=2, color="black",
            label="oracle (retrained)")
    ax.hist(finite("unlearned"), bins=bins, density=True, histtype="step", linewidth=2, color=color,
            linestyle="--", label="unlearned")
    ax.set(title=f"{evaluation.method} ({evaluation.config})", xlabel="Prediction entropy", ylabel="Density")
    ax.legend(fontsize="small")


def plot_mia_roc(chosen: Sequence[tuple[EvaluationArrays, Row]], forget_set: str,
                 styles: Mapping[str, tuple[str, str]], path: Path) -> Path:
    """ROC curves of the PGU attack (unlearned vs retrained) per method, with the diagonal."""
    if not chosen:
        return save(message_figure(f"No evaluation artifacts for forget set '{forget_set}'"), path)
    fig, ax = plt.subplots(figsize=(9.0, 5.0))
    ax.plot([0, 1], [0, 1], linestyle="--", color="0.5", label="chance (ideal, AUC 0.5)")
    for evaluation, row in chosen:
        ax.plot(evaluation.fpr, evaluation.tpr, color=styles[evaluation.method][0], linewidth=1.8,
                label=f"{evaluation.method} ({evaluation.config}), AUC {fmt(row['mia_pgu_auc'], '.3f')}")
    ax.set(xlim=(0, 1), ylim=(0, 1), aspect="equal", xlabel="False positive rate", ylabel="True positive rate",
           title=f"PGU attack, unlearned vs retrained\nforget set '{forget_set}'")
    ax.grid(alpha=0.3)
    ax.legend(loc="center left", bbox_to_anchor=(1.03, 0.5), fontsize="small", frameon=False)
    return save(fig, path)


def message_figure(message: str) -> plt.Figure:
    """A small figure holding only `message`, for a forget set with nothing to plot."""
    fig = plt.figure(figsize=(6, 1.5))
    fig.text(0.5, 0.5, message, ha="center", va="center")
    return fig
