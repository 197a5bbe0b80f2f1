"""The report: summary tables, figures and clear errors, on small synthetic evaluations."""

import csv
import math

import numpy as np
import pytest

from unlearnflow.core.stage_table import STAGE_VERSIONS
from unlearnflow.core.store import read_artifact, write_artifact
from unlearnflow.errors import UserError
from unlearnflow.evaluation.evaluate import klom_interval
from unlearnflow.evaluation.rows import FLOAT_COLUMNS, REQUIRED_COLUMNS, config_array, read_evaluations, read_rows
from unlearnflow.evaluation.selection import SELECTION_COLUMNS, select_configurations
from unlearnflow.report.summary import fill_headline_intervals, sort_rows, write_report, write_summary_md

FORGET_SETS = {"random_10": ("random", 10), "cluster_5": ("cluster", 5)}
#: method -> config -> (selection score on random_10, on cluster_5, compute fraction); ga's default
#: is the better configuration on cluster_5, lr=1e-2 on random_10, so that on each set the
#: held-out choice (made on the other set) is not the in-sample best
RUNS = {"do_nothing": {"default": (6.0, 6.0, 0.0)}, "retrain": {"default": (0.8, 0.8, 1.0)},
        "ga": {"default": (3.0, 3.0, 0.05), "lr=1e-2,epochs=1": (2.0, 3.5, 0.02)}}
#: the in-sample best configuration of ga on each set (the evaluation job computes its interval)
INSAMPLE = {"random_10": "lr=1e-2,epochs=1", "cluster_5": "default"}
#: the seed of the evaluation artifacts' random streams
SEED = 7
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def metrics_row(forget_set, method, config, score, compute):
    """A complete CSV row: KLOM values around `score`, a noise floor of 0.7, plausible rest."""
    kind, size = FORGET_SETS[forget_set]
    row = {column: 0.5 for column in FLOAT_COLUMNS}
    row.update(method=method, config=config, forget_set=forget_set, forget_kind=kind, n_forget=size,
               n_oracles=20, n_unlearned=20)
    for index, group in enumerate(("forget", "retain", "validation")):
        row.update({f"klom_{group}_{stat}": score * (1 + 0.1 * index) for stat in ("mean", "p50", "p95", "p99")})
        row[f"floor_{group}_p95"] = 0.7
    row.update(klom_score=score, klom_ci_low=score - 0.1, klom_ci_high=score + 0.1, floor_klom_score=0.7,
               selection_metric="w1", selection_score=score, floor_selection_score=0.7, acc_test=0.9, acc_test_oracle=0.91, mia_pgu_auc=0.5 + score / 20,
               mia_attack_auc=0.8, compute_fraction=compute, unlearn_seconds=compute, retrain_seconds=1.0)
    return row


def write_csv(path, rows, columns=REQUIRED_COLUMNS):
    """Write `rows` with a header of `columns`, as the evaluation step does."""
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(columns), extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    return path


def write_evaluation(path, forget_set, method, configs, seed):
    """An evaluation artifact of `configs` (layout: unlearnflow.evaluation.rows): entropies of 6
    models on the forget points, an ROC curve, KLOM per group and the margins of the oracles and
    of each configuration on 30 more points (20 retain, 10 validation)."""
    rng = np.random.default_rng(seed)
    size = FORGET_SETS[forget_set][1]
    groups = {"forget": np.arange(size), "retain": size + np.arange(20), "validation": size + 20 + np.arange(10)}
    fpr = np.linspace(0, 1, 11)
    arrays = {"entropy/original": rng.uniform(0, 0.5, (6, size)), "entropy/oracle": rng.uniform(0.5, 2, (6, size)),
              "oracle_margins": rng.normal(2, 1, (6, size + 30)).astype(np.float32),
              **{f"groups/{group}": points for group, points in groups.items()}}
    for index, config in enumerate(configs):
        arrays.update({config_array(index, "entropy/unlearned"): rng.uniform(0, 2, (6, size)),
                       config_array(index, "mia/fpr"): fpr, config_array(index, "mia/tpr"): fpr ** (0.3 + 0.2 * seed),
                       config_array(index, "margins"): rng.normal(2.5, 1, (6, size + 30)).astype(np.float32),
                       **{config_array(index, f"klom/{group}"): rng.uniform(0, 3, len(points))
                          for group, points in groups.items()}})
    return write_artifact(path, "evaluation", arrays,
                          attrs={"method": method, "forget_set": forget_set, "configs": list(configs), "seed": SEED})


def method_rows(forget_set, method):
    """The rows the evaluation job writes for `method` on `forget_set`: test accuracy 0.2 points
    below the oracles', the selection score's interval on the in-sample best only."""
    rows = []
    for config, (*scores, compute) in RUNS[method].items():
        row = metrics_row(forget_set, method, config, scores[list(FORGET_SETS).index(forget_set)], compute)
        row["acc_test"] = 0.908
        if len(RUNS[method]) > 1 and config != INSAMPLE[forget_set]:
            row.update(klom_ci_low=math.nan, klom_ci_high=math.nan)
        rows.append(row)
    return rows


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """CSV and evaluation files for 2 forget sets x 3 methods, ga with 2 configs."""
    root = tmp_path_factory.mktemp("evaluation")
    csv_paths, evaluation_paths = [], []
    for forget_set in FORGET_SETS:
        for index, method in enumerate(RUNS):
            name = f"{forget_set}-{method}"
            csv_paths.append(write_csv(root / f"{name}.csv", method_rows(forget_set, method)))
            evaluation_paths.append(write_evaluation(root / f"{name}.h5", forget_set, method, RUNS[method], index))
    return csv_paths, evaluation_paths


@pytest.fixture(scope="module")
def report(inputs, tmp_path_factory):
    """The report written once for the module's tests: (output directory, returned paths)."""
    out_dir = tmp_path_factory.mktemp("report")
    return out_dir, write_report(*inputs, out_dir)


def read_summary(out_dir):
    """summary.csv as a list of dicts."""
    with open(out_dir / "summary.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def test_every_file_is_written_and_pngs_are_images(report):
    out_dir, paths = report
    expected = {"summary.csv", "summary.md", "klom_vs_compute.png"} | {
        f"{prefix}_{forget_set}.png" for forget_set in FORGET_SETS for prefix in ("entropy", "mia_roc")}
    assert {path.name for path in paths} == expected
    assert {path.name for path in out_dir.iterdir()} == expected
    for path in paths:
        if path.suffix == ".png":
            data = path.read_bytes()
            assert data.startswith(PNG_SIGNATURE), path
            assert len(data) > 10_000, path


def test_summary_csv_rows_order_and_selection_columns(report):
    rows = read_summary(report[0])
    assert [(row["forget_set"], row["method"], row["config"]) for row in rows] == [
        (forget_set, method, config) for forget_set in ("cluster_5", "random_10")
        for method, config in [("do_nothing", "default"), ("ga", "default"), ("ga", "lr=1e-2,epochs=1"),
                               ("retrain", "default")]]
    assert list(rows[0])[:len(REQUIRED_COLUMNS)] == list(REQUIRED_COLUMNS)
    assert list(rows[0])[-len(SELECTION_COLUMNS):] == list(SELECTION_COLUMNS)
    # each set's headline is chosen on the other set: the other set's in-sample best
    assert [row["selected"] for row in rows] == ["True", "False", "True", "True", "True", "True", "False", "True"]
    assert [row["insample_best"] for row in rows] == ["True", "True", "False", "True", "True", "False", "True", "True"]
    ga_cluster, ga_random = rows[1], rows[5]
    assert [ga_cluster[column] for column in SELECTION_COLUMNS[:6]] == [
        "leave_one_out", "lr=1e-2,epochs=1", "3.5", "default", "3.0", "3.0"]
    assert [ga_random[column] for column in SELECTION_COLUMNS[:6]] == [
        "leave_one_out", "default", "3.0", "lr=1e-2,epochs=1", "2.0", "3.0"]
    assert rows[0]["selection_rule"] == rows[3]["selection_rule"] == "only_config"
    assert float(rows[1]["selection_score"]) == 3.0 and int(rows[1]["n_forget"]) == 5


def test_the_headline_interval_is_the_klom_interval_of_its_stored_margins(report, inputs):
    rows = {(row["forget_set"], row["config"]): row for row in read_summary(report[0]) if row["method"] == "ga"}
    for forget_set, config, index in (("random_10", "default", 0), ("cluster_5", "lr=1e-2,epochs=1", 1)):
        path = next(p for p in inputs[1] if p.name == f"{forget_set}-ga.h5")
        arrays = read_artifact(path, "evaluation")
        groups = {group: arrays[f"groups/{group}"] for group in ("forget", "retain", "validation")}
        expected = klom_interval(arrays["oracle_margins"], groups, arrays[config_array(index, "margins")], SEED)
        headline = rows[forget_set, config]
        assert (float(headline["klom_ci_low"]), float(headline["klom_ci_high"])) == (
            expected["klom_ci_low"], expected["klom_ci_high"])
        assert 0 <= expected["klom_ci_low"] < expected["klom_ci_high"]
        # the in-sample best keeps the interval its evaluation job computed
        insample = rows[forget_set, INSAMPLE[forget_set]]
        assert float(insample["klom_ci_low"]) == float(insample["klom_score"]) - 0.1


def test_intervals_computed_two_at_a_time_are_those_computed_one_at_a_time(inputs):
    def intervals(threads):
        rows = select_configurations(read_rows(inputs[0]))
        fill_headline_intervals(rows, read_evaluations(inputs[1], rows), threads)
        return [(row["klom_ci_low"], row["klom_ci_high"]) for row in rows]

    serial = intervals(1)
    assert sum(math.isfinite(low) for low, _ in serial) == 8  # 6 in-sample bests and 2 other headlines
    assert intervals(2) == serial


def test_summary_md_shows_the_headline_beside_the_in_sample_best_and_the_default(report):
    text = (report[0] / "summary.md").read_text()
    assert "Selection: leave one forget set out." in text and "within 0.5 pt of the oracles'" in text
    sections = text.split("## Forget set ")[1:]
    assert [section.split("\n")[0] for section in sections] == ["`cluster_5`", "`random_10`"]
    headline = {"cluster_5": "| ga | lr=1e-2,epochs=1 (2 configs) | best on the other forget sets | 3.500 | 3.850 | "
                             "4.200 | 3.500 [",
                "random_10": "| ga | default (2 configs) | best on the other forget sets | 3.000 | 3.300 | 3.600 | "
                             "3.000 ["}
    insample = {"cluster_5": "| default 3.000 | 3.000 | 0.908 |",
                "random_10": "| lr=1e-2,epochs=1 2.000 | 3.000 | 0.908 |"}
    for section, forget_set in zip(sections, ("cluster_5", "random_10")):
        table = [line for line in section.splitlines() if line.startswith("| ")]
        assert "| KLOM score [CI] | W1 selection score | in-sample best (W1) | default (W1) |" in table[0]
        assert table[0].endswith("| U-LiRA acc | challenge score | compute | suspicious |")
        assert [line.split(" | ")[0] for line in table[2:]] == [
            "| do_nothing", "| ga", "| retrain", "| *noise floor (10 vs 10 oracles)*"]
        assert table[3].startswith(headline[forget_set]) and insample[forget_set] in table[3]
        assert table[2].startswith("| do_nothing | default | only configuration | 6.000 |")
        assert "| 6.000 [5.900, 6.100] | 6.000 | – | – | 0.908 |" in table[2]
        assert "| 0.700 | 0.700 | 0.700 | 0.700 | 0.700 | – | – | 0.910 |" in table[5]
        assert "ideal 0.5" in section and "AUC 0.800" in section


def test_the_guard_and_a_selection_set_reach_the_tables(inputs, tmp_path):
    def summary_md(**selection):
        rows = sort_rows(select_configurations(read_rows(inputs[0]), **selection))
        return write_summary_md(rows, tmp_path / "summary.md", **selection).read_text()

    text = summary_md(selection_set="cluster_5", accuracy_guard=0.001)
    assert "Selection: the configuration of best selection score on forget set `cluster_5`" in text
    # ga loses 0.2 points everywhere: beyond a guard of 0.1 point nothing qualifies
    assert "| ga | default (2 configs) | default (none within the accuracy guard) |" in text
    assert "| 0.908 (-0.2 pt) |" in text
    assert "| lr=1e-2,epochs=1 2.000; none within 0.1 pt |" in text
    text = summary_md(selection_set="cluster_5")
    assert "| ga | default (2 configs) | in-sample (this is selection set `cluster_5`) |" in text
    assert "| ga | default (2 configs) | best on selection set `cluster_5` |" in text


def test_nan_metrics_and_missing_evaluations_still_give_every_file(tmp_path):
    row = metrics_row("random_10", "do_nothing", "default", 6.0, 0.0)
    row.update(mia_pgu_auc="", ulira_accuracy="nan")
    paths = write_report([write_csv(tmp_path / "a.csv", [row])], [], tmp_path / "out")
    assert len(paths) == 5 and all(path.stat().st_size > 0 for path in paths)
    line = next(line for line in (tmp_path / "out" / "summary.md").read_text().splitlines()
                if line.startswith("| do_nothing"))
    assert line.endswith("| – | – | 0 |  |")
    assert math.isnan(float(read_summary(tmp_path / "out")[0]["mia_pgu_auc"]))


def test_errors_are_user_errors(tmp_path, inputs):
    csv_paths, evaluation_paths = inputs
    with pytest.raises(UserError, match="no evaluation CSV"):
        write_report([], [], tmp_path)
    short = write_csv(tmp_path / "short.csv", [metrics_row("random_10", "ga", "x", 1.0, 0.1)],
                      [column for column in REQUIRED_COLUMNS if column != "ulira_accuracy"])
    with pytest.raises(UserError, match="lacks column.*ulira_accuracy"):
        write_report([short], [], tmp_path)
    with pytest.raises(UserError, match="no data row"):
        write_report([write_csv(tmp_path / "empty.csv", [])], [], tmp_path)
    bad = write_csv(tmp_path / "bad.csv", [{**metrics_row("random_10", "ga", "x", 1.0, 0.1), "n_forget": "ten"}])
    with pytest.raises(UserError, match="'n_forget' should be an integer"):
        write_report([bad], [], tmp_path)
    slash = write_csv(tmp_path / "slash.csv", [{**metrics_row("random_10", "ga", "x", 1.0, 0.1), "forget_set": "a/b"}])
    with pytest.raises(UserError, match="forget set name 'a/b'"):
        write_report([slash], [], tmp_path)
    with pytest.raises(UserError, match="is also in"):
        write_report([csv_paths[0], csv_paths[0]], [], tmp_path)
    with pytest.raises(UserError, match="has no row"):
        write_report(csv_paths[:1], evaluation_paths[1:2], tmp_path)
    with pytest.raises(UserError, match="no such artifact"):
        write_report(csv_paths, [tmp_path / "missing.h5"], tmp_path)
    # the headline of ga on cluster_5 (lr=1e-2,epochs=1) is not in this artifact
    partial = write_evaluation(tmp_path / "partial.h5", "cluster_5", "ga", ["default"], 0)
    with pytest.raises(UserError, match="has no config 'lr=1e-2,epochs=1' .*rerun the evaluation"):
        write_report(csv_paths, [partial], tmp_path)
    older = write_artifact(tmp_path / "older.h5", "evaluation", {}, attrs={"method": "ga"}, version=3)
    with pytest.raises(UserError, match=f"stage version 3, this code reads version {STAGE_VERSIONS['evaluation']}"):
        write_report(csv_paths, [older], tmp_path)


def test_datamodels_section_states_quality_cost_and_calibration(inputs, tmp_path):
    attrs = {"estimator": "lasso", "outputs": ["margins", "logits"], "fitted_models": 1800, "heldout_models": 200,
             "margins_lds": 0.674, "margins_r2": 0.469, "logits_lds": 0.558, "logits_r2": 0.33,
             "margins_fit_seconds": 11.6, "logits_fit_seconds": 88.3, "subset_train_seconds": 21.0,
             "options": {}, "scales": {"logit": 0.731, "margin_shift": 0.889}}
    write_report(*inputs, tmp_path, datamodels=attrs)
    section = (tmp_path / "summary.md").read_text().split("## Datamodels")[1]
    assert "fitted on 1800 subset models, scored on 200 held-out" in section
    assert "| margins | 0.674 | 0.469 | 11.6 |" in section and "| logits | 0.558 | 0.330 | 88.3 |" in section
    assert "21 s training subset models" in section and "100 s fitting" in section
    assert "logit 0.731, margin_shift 0.889" in section


def test_test_accuracy_cell_flags_a_loss_of_more_than_the_guard():
    from unlearnflow.report.summary import accuracy_cell as cell
    assert cell({"acc_test": 0.944, "acc_test_oracle": 0.978}) == "0.944 (-3.4 pt)"
    assert cell({"acc_test": 0.975, "acc_test_oracle": 0.978}) == "0.975"
    assert cell({"acc_test": 0.975, "acc_test_oracle": 0.978}, accuracy_guard=0.002) == "0.975 (-0.3 pt)"
    assert cell({"acc_test": math.nan, "acc_test_oracle": 0.978}) == "–"


def test_a_cached_side_artifact_gets_its_one_time_cost_on_its_own_line(inputs, tmp_path):
    """make_report reads every --side artifact's attributes; one that records its precompute
    cost (PGU's gradient space) gets a line of its own, with the cost per model."""
    import torch

    from unlearnflow.core.models import build_model
    from unlearnflow.pgu.gradient_space import compute_gradient_space, write_gradient_space
    from unlearnflow.stages import make_report
    models = [build_model("mlp", (1, 4, 4), 3, hidden=[5]) for _ in range(2)]
    space = compute_gradient_space(models, torch.randn(50, 1, 4, 4), [0, 1])
    space.attrs.update(precompute_seconds=12.5, seconds_per_model=[5.0, 7.5])
    write_gradient_space(tmp_path / "gradient_space.h5", space, {})
    csv_paths, evaluation_paths = inputs
    make_report(out_dir=str(tmp_path / "out"), csv=[str(p) for p in csv_paths],
                evaluations=[str(p) for p in evaluation_paths],
                side=[f"gradient_space={tmp_path / 'gradient_space.h5'}"], selection_set="random_10")
    assert "on forget set `random_10`, among" in (tmp_path / "out" / "summary.md").read_text()
    section = (tmp_path / "out" / "summary.md").read_text().split("## One-time costs")[1]
    assert "- `gradient_space` (PGU's factorisation of R R^T per layer and model (aggregates, no samples)): " \
           "12.50 s (6.25 s per model)" in section
    assert "## Datamodels" not in (tmp_path / "out" / "summary.md").read_text()


def test_linear_banks_get_a_table_of_weight_distances_and_certificate_bounds(tmp_path):
    from unlearnflow.evaluation.rows import ROW_COLUMNS
    rows = [metrics_row("random_10", "do_nothing", "default", 6.0, 0.0),
            metrics_row("random_10", "newton", "default", 0.1, 1.0),
            metrics_row("random_10", "newton", "variant=corrected", 0.5, 1.0)]
    for row, distance, residual in zip(rows, (1.0, 2e-7, 0.32), (50.0, 6e-6, 2.1)):
        row.update(weight_distance=distance, true_retain_gradient_norm=residual)
    rows[1].update(cert_certified=1.0, cert_epsilon=3e-4, cert_delta=1e-5, cert_residual_bound=6.1e-6,
                   cert_residual_bound_violated=0.0)
    rows[2].update(cert_certified=0.0, paper_theorem1_claim=0.0, paper_theorem1_violated=1.0, paper_lemma1_claim=0.25,
                   true_hessian_error=71.0, paper_lemma1_violated=1.0)
    write_report([write_csv(tmp_path / "a.csv", rows, ROW_COLUMNS)], [], tmp_path / "out")
    summary = (tmp_path / "out" / "summary.md").read_text()
    assert "Linear models: distance to the retrained weights" in summary
    assert "| newton | default | 0.900 (-1.0 pt) | 2e-07 | 6e-06 | 6.1e-06 | ε 0.0003 at δ 1e-05 | – | – | – |" in summary
    assert ("| newton | variant=corrected | 0.900 (-1.0 pt) | 0.32 | 2.1 | – | no | 0 (violated 100%) | 71 "
            "| 0.25 (violated 100%) |") in summary
    assert float(read_summary(tmp_path / "out")[1]["weight_distance"]) == 2e-7
    # banks of other models have no such table
    write_report([write_csv(tmp_path / "b.csv", [metrics_row("random_10", "do_nothing", "default", 6.0, 0.0)])],
                 [], tmp_path / "plain")
    assert "Linear models" not in (tmp_path / "plain" / "summary.md").read_text()


def test_u_lira_is_never_printed_beside_a_configuration_it_does_not_describe():
    from unlearnflow.report.summary import ulira_cell
    measured = {"config": "default", "ulira_accuracy": 0.58, "ulira_config": "default"}
    shown = {"config": "lr=1", "ulira_accuracy": math.nan, "ulira_config": "default"}
    assert ulira_cell(shown, [measured, shown]) == "– (default: 0.580)"
    assert ulira_cell(measured, [measured, shown]) == "0.580"
    assert ulira_cell({"config": "x", "ulira_accuracy": math.nan, "ulira_config": ""}, []) == "–"
