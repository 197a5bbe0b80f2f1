"""The report: one summary table and a set of figures over every method's evaluation.

Inputs are what the evaluation step writes for each (method, configuration, forget set):

a CSV file of metric rows and an ``evaluation`` artifact, in the one schema of
:mod:`unlearnflow.evaluation.rows`.

:func:`write_report` writes into its output directory:

``summary.csv``
    Every row, sorted by forget set, then method (``do_nothing`` first, ``retrain`` last,
    the others alphabetically), then config, with a ``best`` column: ``True`` for the
    configuration of lowest ``selection_score`` of each (method, forget set); a configuration
    whose status is ``diverged`` is never the best, and the markdown table names it.
``summary.md``
    One markdown table per forget set: the best configuration of each method, the
    ``do_nothing`` and ``retrain`` references, and the noise floor of the oracles, with lines
    under the table saying what is ideal.
``klom_vs_compute.png``
    The DMM paper's Figure 1, one row of panels per forget set: KLOM 95th percentile (y)
    against the fraction of retraining compute (x, log scale; zero compute, ``do_nothing``,
    sits one decade left of the smallest positive fraction, behind an axis break, with the
    tick label "0"), one panel for the selection score and one per group (forget, retain,
    validation), a line per method through its configurations in order of compute, and the
    noise floor dashed.
``entropy_{forget set}.png``
    Histograms of the forget points' prediction entropies of the original, oracle and
    unlearned models, one panel per method.
``mia_roc_{forget set}.png``
    ROC curves of the PGU attack on each method's unlearned models, with the chance diagonal.

Forget set names must be of letters, digits, ``_``, ``.`` and ``-`` (as the config schema
requires), with ``@R`` for the first R requests of a sequence, since they name files. The entropy and ROC figures show, for each method, the
evaluated configuration of lowest selection score; a forget set without evaluation artifacts
still gets both figures, saying so. Figures use the Agg backend and never need a display.
"""

from __future__ import annotations

import csv
import math
import os
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (the backend must be chosen first)
import numpy as np  # noqa: E402
from matplotlib.ticker import FixedLocator, NullLocator  # noqa: E402

from unlearnflow.evaluation.rows import (  # noqa: E402
    DIVERGED,
    GROUPS,
    REQUIRED_COLUMNS,
    EvaluationArrays,
    Row,
    read_evaluations,
    read_rows,
)

DO_NOTHING, RETRAIN = "do_nothing", "retrain"
DPI = 120
#: Panels of the KLOM-vs-compute figure: (column, noise-floor column, title).
KLOM_PANELS = (("selection_score", "floor_selection_score", "Selection score (mean of groups)"),
               *((f"klom_{group}_p95", f"floor_{group}_p95", f"{group.capitalize()} points") for group in GROUPS))

#: Fixed styles for the two references; other methods cycle through the palette and markers.
_REFERENCE_STYLES = {DO_NOTHING: ("tab:gray", "X"), RETRAIN: ("black", "*")}
_PALETTE = ("tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown",
            "tab:pink", "tab:olive", "tab:cyan")
_MARKERS = ("o", "s", "^", "D", "v", "P", "h")
_MISSING = "–"

def write_report(csv_paths: Sequence[str | os.PathLike], evaluation_paths: Sequence[str | os.PathLike],
                 out_dir: str | os.PathLike, datamodels: Mapping[str, Any] | None = None,
                 one_time: Mapping[str, Mapping[str, Any]] | None = None) -> list[Path]:
    """Write the summary table and every figure into `out_dir`; return the written paths.

    `datamodels` (the attributes of a datamodels artifact, with ``scales`` from its
    calibration if any) adds a section on their quality and one-time cost to ``summary.md``.
    `one_time` (side artifact name -> ``description``, ``precompute_seconds`` and optionally
    ``seconds_per_model``) adds one line per cached side artifact's one-time cost.

    No CSV file, a CSV file without the required columns or rows, a duplicated (method,
    config, forget set) or an evaluation artifact without a CSV row is a UserError.
    """
    rows = sort_rows(flag_best(read_rows(csv_paths)))
    evaluations = read_evaluations(evaluation_paths, rows)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    styles = method_styles(row["method"] for row in rows)
    written = [write_summary_csv(rows, out_dir / "summary.csv"),
               write_summary_md(rows, out_dir / "summary.md", datamodels, one_time),
               plot_klom_vs_compute(rows, styles, out_dir / "klom_vs_compute.png")]
    for (forget_set,), set_rows in group_by(rows, "forget_set").items():
        chosen = choose_evaluations(evaluations, set_rows)
        written += [plot_entropy(chosen, forget_set, styles, out_dir / f"entropy_{forget_set}.png"),
                    plot_mia_roc(chosen, forget_set, styles, out_dir / f"mia_roc_{forget_set}.png")]
    return written


# --- ordering and selection ----------------------------------------------------------------

def method_key(method: str) -> tuple[int, str]:
    """Sort key of a method: ``do_nothing`` first, ``retrain`` last, the others by name."""
    return ({DO_NOTHING: 0, RETRAIN: 2}.get(method, 1), method)


def is_diverged(row: Row) -> bool:
    """Whether the row's configuration diverged (non-finite outputs; never the best)."""
    return row.get("status") == DIVERGED


def score_key(row: Row) -> tuple[bool, float, str]:
    """Sort key by selection score, lowest first, NaN and diverged last, ties broken by config."""
    score = row["selection_score"]
    unusable = math.isnan(score) or is_diverged(row)
    return (unusable, 0.0 if unusable else score, row["config"])


def sort_rows(rows: Iterable[Row]) -> list[Row]:
    """Rows sorted by forget set, method (see :func:`method_key`) and config."""
    return sorted(rows, key=lambda row: (row["forget_set"], method_key(row["method"]), row["config"]))


def group_by(rows: Iterable[Row], *columns: str) -> dict[tuple, list[Row]]:
    """Rows grouped by the values of `columns`, groups and rows in their order of appearance."""
    groups: dict[tuple, list[Row]] = defaultdict(list)
    for row in rows:
        groups[tuple(row[column] for column in columns)].append(row)
    return dict(groups)


def flag_best(rows: list[Row]) -> list[Row]:
    """Set ``row["best"]`` on every row: the lowest selection score of its (method, forget set)."""
    for group in group_by(rows, "forget_set", "method").values():
        best = min(group, key=score_key)
        for row in group:
            row["best"] = row is best
    return rows


def choose_evaluations(evaluations: Sequence[EvaluationArrays],
                       rows: Sequence[Row]) -> list[tuple[EvaluationArrays, Row]]:
    """Per method of `rows` (one forget set), its evaluated config of lowest selection score."""
    by_key = {(row["method"], row["config"]): row for row in rows}
    pairs = [(evaluation, by_key[evaluation.method, evaluation.config]) for evaluation in evaluations
             if evaluation.forget_set == rows[0]["forget_set"]]
    chosen: dict[str, tuple[EvaluationArrays, Row]] = {}
    for evaluation, row in sorted(pairs, key=lambda pair: score_key(pair[1])):
        chosen.setdefault(row["method"], (evaluation, row))
    return [chosen[method] for method in sorted(chosen, key=method_key)]


def nan_median(values: Iterable[float]) -> float:
    """Median of the finite values, NaN if there are none (the floor is shared by all rows)."""
    finite = [value for value in values if math.isfinite(value)]
    return float(np.median(finite)) if finite else math.nan


# --- tables --------------------------------------------------------------------------------

def write_summary_csv(rows: Sequence[Row], path: Path) -> Path:
    """All rows with the required columns first, extra columns next and ``best`` last."""
    extra = [column for row in rows for column in row if column not in REQUIRED_COLUMNS and column != "best"]
    columns = [*REQUIRED_COLUMNS, *dict.fromkeys(extra), "best"]
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns, restval="")
        writer.writeheader()
        writer.writerows(rows)
    return path


def write_summary_md(rows: Sequence[Row], path: Path, datamodels: Mapping[str, Any] | None = None,
                     one_time: Mapping[str, Mapping[str, Any]] | None = None) -> Path:
    """The markdown summary: a title, a one-line guide, a section per forget set and, when
    datamodel methods ran, one on the datamodels; one line per other cached side artifact's cost."""
    lines = ["# Unlearning report", "",
             "Per forget set, the best configuration of each method (lowest selection score), the "
             "`do_nothing` and `retrain` references and the oracles' noise floor; every "
             "configuration is in `summary.csv`.", ""]
    for (forget_set,), set_rows in group_by(rows, "forget_set").items():
        lines += forget_set_section(forget_set, set_rows)
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
    source = (f"from {attrs['options']['checkpoints']} original models" if attrs["estimator"] == "trak"
              else f"fitted on {attrs['fitted_models']} subset models")
    return ["## Datamodels", "",
            f"Estimator `{attrs['estimator']}`: {source}, scored on "
            f"{attrs['heldout_models']} held-out ones (LDS: Spearman correlation of predicted and actual outputs "
            "across held-out models, mean over points; 1 is perfect).", "", *table, "",
            f"One-time cost, not counted in `compute` above (as in the DMM paper): "
            f"{attrs['subset_train_seconds']:.0f} s training subset models "
            f"({'they only score TRAK' if attrs['estimator'] == 'trak' else 'the regression data'}) and "
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


_TABLE_HEADER = ("method", "config", "KLOM-95 forget", "KLOM-95 retain", "KLOM-95 validation",
                 "selection score [CI]", "test acc", "forget margin MAE", "shift corr", "MIA AUC (PGU)",
                 "U-LiRA acc", "compute")


def forget_set_section(forget_set: str, rows: Sequence[Row]) -> list[str]:
    """Heading, table (references, best configs by score, noise floor) and what is ideal."""
    first = rows[0]
    groups = group_by(rows, "method")
    best = sorted((next(row for row in group if row["best"]) for group in groups.values()),
                  key=lambda row: (method_key(row["method"])[0], score_key(row)))
    table = [table_row(row, groups[(row["method"],)]) for row in best] + [floor_row(rows)]
    return [f"## Forget set `{forget_set}`", "",
            f"{first['forget_kind']}, {first['n_forget']} points; KLOM against {first['n_oracles']} oracles.", "",
            markdown_line(_TABLE_HEADER), markdown_line(["---"] * len(_TABLE_HEADER)),
            *map(markdown_line, table), "", *explanation(rows), "", *linear_section(rows)]


#: the columns of the linear-model table: the weight distance and the certificates' bounds
_LINEAR_COLUMNS = (("weight_distance", "weight distance"), ("cert_residual_gradient_norm", "residual grad"),
                   ("cert_data_dependent_bound", "data-dep. bound"), ("cert_theorem1_bound", "Thm 1 bound"),
                   ("cert_lemma1_bound", "Lemma 1 bound"))


def linear_section(rows: Sequence[Row]) -> list[str]:
    """Banks of linear models: every configuration's weight distance to the retrained models
    (``||w_u - w_retrain|| / ||w_0 - w_retrain||``, 0 = exact removal, 1 = untouched) and the mean
    of the bounds its certificates state (source-free unlearning, Lemma 1 and Theorem 1; Guo et
    al.'s data-dependent bound; the retain gradient residual where computable). Nothing otherwise."""
    shown = [row for row in sort_rows(rows) if any(math.isfinite(row.get(column, math.nan))
                                                   for column, _ in _LINEAR_COLUMNS)]
    if not shown:
        return []
    header = ["method", "config", "test acc", *(title for _, title in _LINEAR_COLUMNS)]
    lines = ["Linear models: distance to the retrained weights (mean over models; w_retrain is the "
             "oracle with the same model id and objective noise) and the certificates' bounds "
             "(means over models; empty: not reported or vacuous).", "",
             markdown_line(header), markdown_line(["---"] * len(header))]
    for row in shown:
        lines.append(markdown_line([row["method"], row["config"], accuracy_cell(row),
                                    *(fmt(row.get(column, math.nan), ".3g") for column, _ in _LINEAR_COLUMNS)]))
    return lines + [""]


def table_row(row: Row, configs: Sequence[Row]) -> list[str]:
    """One method's cells; the config says of how many it is the best and, to show how much
    tuning mattered, the selection score of the method's default configuration."""
    config = row["config"]
    if len(configs) > 1:
        default = next((other for other in configs if other["config"] == "default"), None)
        note = f"; default {fmt(default['selection_score'], '.3f')}" if default and default is not row else ""
        if accuracy_loss(row) > ACCURACY_TOLERANCE:
            kept = [other for other in configs if accuracy_loss(other) <= ACCURACY_TOLERANCE and not is_diverged(other)]
            guarded = min(kept, key=score_key) if kept else None
            note += (f"; best within 0.5 pt of the oracles' test acc: {guarded['config']} "
                     f"{fmt(guarded['selection_score'], '.3f')}" if guarded else "; none within 0.5 pt of test acc")
        diverged = [other["config"] for other in configs if is_diverged(other)]
        note += f"; diverged: {', '.join(diverged)}" if diverged else ""
        config += f" (best of {len(configs)}{note})"
    if is_diverged(row):
        config += " (diverged: non-finite outputs)"
    score = fmt(row["selection_score"], ".3f")
    if math.isfinite(row["selection_ci_low"]) and math.isfinite(row["selection_ci_high"]):
        score += f" [{row['selection_ci_low']:.3f}, {row['selection_ci_high']:.3f}]"
    return [row["method"], config, *(fmt(row[f"klom_{group}_p95"], ".3f") for group in GROUPS), score,
            accuracy_cell(row), fmt(row["margin_mae_forget"], ".3f"), fmt(row["shift_corr_forget"], ".3f"),
            fmt(row["mia_pgu_auc"], ".3f"), fmt(row["ulira_accuracy"], ".3f"), fmt(row["compute_fraction"], ".3g")]


#: Test-accuracy loss against the oracles that the table flags (half a point).
ACCURACY_TOLERANCE = 0.005


def accuracy_loss(row: Row) -> float:
    """How far the unlearned models' test accuracy falls below the oracles' (NaN-safe: 0)."""
    loss = row["acc_test_oracle"] - row["acc_test"]
    return loss if math.isfinite(loss) else 0.0


def accuracy_cell(row: Row) -> str:
    """The unlearned models' test accuracy, flagged when it is more than half a point below the oracles'."""
    cell = fmt(row["acc_test"], ".3f")
    loss = accuracy_loss(row)
    return cell + (f" (-{100 * loss:.1f} pt)" if loss > ACCURACY_TOLERANCE else "")


def floor_row(rows: Sequence[Row]) -> list[str]:
    """The oracles' row: KLOM noise floor (oracle halves) and the oracles' test accuracy."""
    floors = [fmt(nan_median(row[f"floor_{group}_p95"] for row in rows), ".3f") for group in GROUPS]
    per_side = int(nan_median(row["n_oracles"] for row in rows)) // 2
    return [f"*noise floor ({per_side} vs {per_side} oracles)*", _MISSING, *floors,
            fmt(nan_median(row["floor_selection_score"] for row in rows), ".3f"),
            fmt(nan_median(row["acc_test_oracle"] for row in rows), ".3f"), *[_MISSING] * 5]


def explanation(rows: Sequence[Row]) -> list[str]:
    """Lines under a table saying what each column measures and what is ideal."""
    attack = nan_median(row["mia_attack_auc"] for row in rows)
    return [
        "- KLOM-95: 95th percentile over the group's points of the KL divergence between oracle "
        "and unlearned margins; 0 is perfect. The noise floor row compares two halves of the "
        "oracles, so it is the floor at *half* the models per side (KLOM's floor falls with the "
        "number of models); `retrain` (fresh models against all oracles) is the floor at full "
        "size, the level of exact unlearning. `do_nothing` bounds it from above.",
        "- Selection score: mean KLOM-95 of the three groups, lower is better; it picks each "
        "method's best configuration. [CI]: its confidence interval.",
        "- Test acc: mean test accuracy of the unlearned models; ideal is the oracles' (noise floor row); "
        "(-x pt) flags a loss of more than half a point against them, and the config cell then names the "
        "method's best configuration that stays within half a point.",
        "- Forget margin MAE: mean over forget points of |mean unlearned margin - mean oracle margin|, 0 is "
        "ideal (`do_nothing` shows the size of the effect to undo). Shift corr: correlation over forget points of "
        "the margin shift the method made with the oracles' shift (ideal 1; undefined for `do_nothing`).",
        f"- MIA AUC (PGU): how well the attack tells unlearned from retrained models, ideal 0.5 "
        f"(the attack separates original from retrained models with AUC {fmt(attack, '.3f')}). "
        "U-LiRA acc: ideal 0.5.",
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
