"""The report: summary tables, figures and clear errors, on small synthetic evaluations."""

import csv
import math

import numpy as np
import pytest

from unlearnflow.core.store import STAGE_VERSIONS, write_artifact
from unlearnflow.errors import UserError
from unlearnflow.evaluation.rows import FLOAT_COLUMNS, REQUIRED_COLUMNS
from unlearnflow.report.summary import write_report

FORGET_SETS = {"random_10": ("random", 10), "cluster_5": ("cluster", 5)}
#: (method, config, selection score, compute fraction)
RUNS = [("do_nothing", "default", 6.0, 0.0), ("retrain", "default", 0.8, 1.0),
        ("ga", "lr=1e-3,epochs=3", 3.0, 0.05), ("ga", "lr=1e-2,epochs=1", 2.0, 0.02)]
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
    row.update(selection_score=score, selection_ci_low=score - 0.1, selection_ci_high=score + 0.1,
               floor_selection_score=0.7, acc_test=0.9, acc_test_oracle=0.91, mia_pgu_auc=0.5 + score / 20,
               mia_attack_auc=0.8, compute_fraction=compute, unlearn_seconds=compute, retrain_seconds=1.0)
    return row


def write_csv(path, rows, columns=REQUIRED_COLUMNS):
    """Write `rows` with a header of `columns`, as the evaluation step does."""
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(columns), extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    return path


def write_evaluation(path, forget_set, method, config, seed):
    """An evaluation artifact: entropies of 6 models on the forget points and an ROC curve."""
    rng = np.random.default_rng(seed)
    size = FORGET_SETS[forget_set][1]
    fpr = np.linspace(0, 1, 11)
    arrays = {"entropy/original": rng.uniform(0, 0.5, (6, size)), "entropy/oracle": rng.uniform(0.5, 2, (6, size)),
              "entropy/unlearned": rng.uniform(0, 2, (6, size)), "mia/fpr": fpr, "mia/tpr": fpr ** (0.3 + 0.2 * seed),
              **{f"klom/{group}": rng.uniform(0, 3, size) for group in ("forget", "retain", "validation")}}
    return write_artifact(path, "evaluation", arrays,
                          attrs={"method": method, "config": config, "forget_set": forget_set}, version=STAGE_VERSIONS["evaluation"])


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """CSV and evaluation files for 2 forget sets x 3 methods, ga with 2 configs."""
    root = tmp_path_factory.mktemp("evaluation")
    csv_paths, evaluation_paths = [], []
    for forget_set in FORGET_SETS:
        for index, (method, config, score, compute) in enumerate(RUNS):
            name = f"{forget_set}-{method}-{index}"
            csv_paths.append(write_csv(root / f"{name}.csv", [metrics_row(forget_set, method, config, score,
                                                                          compute)]))
            evaluation_paths.append(write_evaluation(root / f"{name}.h5", forget_set, method, config, index))
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


def test_summary_csv_rows_order_and_best_flags(report):
    rows = read_summary(report[0])
    assert [(row["forget_set"], row["method"], row["config"]) for row in rows] == [
        (forget_set, method, config) for forget_set in ("cluster_5", "random_10")
        for method, config in [("do_nothing", "default"), ("ga", "lr=1e-2,epochs=1"), ("ga", "lr=1e-3,epochs=3"),
                               ("retrain", "default")]]
    assert [row["best"] for row in rows] == ["True", "True", "False", "True"] * 2
    assert list(rows[0])[:len(REQUIRED_COLUMNS)] == list(REQUIRED_COLUMNS) and list(rows[0])[-1] == "best"
    assert float(rows[1]["selection_score"]) == 2.0 and int(rows[1]["n_forget"]) == 5


def test_summary_md_shows_bounds_floor_and_best_config(report):
    text = (report[0] / "summary.md").read_text()
    sections = text.split("## Forget set ")[1:]
    assert [section.split("\n")[0] for section in sections] == ["`cluster_5`", "`random_10`"]
    for section in sections:
        table = [line for line in section.splitlines() if line.startswith("| ")]
        assert [line.split(" | ")[0] for line in table[2:]] == [
            "| do_nothing", "| ga", "| retrain", "| *noise floor (10 vs 10 oracles)*"]
        # the fixture's unlearned models lose a point of test accuracy against the oracles
        assert "| lr=1e-2,epochs=1 (best of 2; none within 0.5 pt of test acc) |" in table[3]
        assert "| 0.900 (-1.0 pt) |" in table[3]
        assert "2.000 [1.900, 2.100]" in table[3]
        assert "| 0.700 | 0.700 | 0.700 | 0.700 | 0.910 |" in table[5]
        assert "ideal 0.5" in section and "AUC 0.800" in section


def test_nan_metrics_and_missing_evaluations_still_give_every_file(tmp_path):
    row = metrics_row("random_10", "do_nothing", "default", 6.0, 0.0)
    row.update(mia_pgu_auc="", ulira_accuracy="nan")
    paths = write_report([write_csv(tmp_path / "a.csv", [row])], [], tmp_path / "out")
    assert len(paths) == 5 and all(path.stat().st_size > 0 for path in paths)
    line = next(line for line in (tmp_path / "out" / "summary.md").read_text().splitlines()
                if line.startswith("| do_nothing"))
    assert line.endswith("| – | – | 0 |")
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


def test_test_accuracy_cell_flags_a_loss_of_more_than_half_a_point():
    from unlearnflow.report.summary import accuracy_cell as cell
    assert cell({"acc_test": 0.944, "acc_test_oracle": 0.978}) == "0.944 (-3.4 pt)"
    assert cell({"acc_test": 0.975, "acc_test_oracle": 0.978}) == "0.975"
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
                evaluations=[str(p) for p in evaluation_paths], side=[f"gradient_space={tmp_path / 'gradient_space.h5'}"])
    section = (tmp_path / "out" / "summary.md").read_text().split("## One-time costs")[1]
    assert "- `gradient_space` (PGU's factorisation of R R^T per layer and model (aggregates, no samples)): " \
           "12.50 s (6.25 s per model)" in section
    assert "## Datamodels" not in (tmp_path / "out" / "summary.md").read_text()


def test_linear_banks_get_a_table_of_weight_distances_and_certificate_bounds(tmp_path):
    from unlearnflow.evaluation.rows import ROW_COLUMNS
    rows = [metrics_row("random_10", "do_nothing", "default", 6.0, 0.0),
            metrics_row("random_10", "newton", "default", 0.1, 1.0),
            metrics_row("random_10", "newton", "variant=corrected", 0.5, 1.0)]
    for row, distance, residual in zip(rows, (1.0, 2e-7, 0.32), (math.nan, 6e-14, math.nan)):
        row.update(weight_distance=distance, cert_residual_gradient_norm=residual, cert_lemma1_bound=0.25,
                   cert_theorem1_bound=math.nan, cert_data_dependent_bound=0.0)
    write_report([write_csv(tmp_path / "a.csv", rows, ROW_COLUMNS)], [], tmp_path / "out")
    summary = (tmp_path / "out" / "summary.md").read_text()
    assert "Linear models: distance to the retrained weights" in summary
    assert "| newton | default | 0.900 (-1.0 pt) | 2e-07 | 6e-14 | 0 | – | 0.25 |" in summary
    assert "| newton | variant=corrected | 0.900 (-1.0 pt) | 0.32 | – | 0 | – | 0.25 |" in summary
    assert float(read_summary(tmp_path / "out")[1]["weight_distance"]) == 2e-7
    # banks of other models have no such table
    write_report([write_csv(tmp_path / "b.csv", [metrics_row("random_10", "do_nothing", "default", 6.0, 0.0)])],
                 [], tmp_path / "plain")
    assert "Linear models" not in (tmp_path / "plain" / "summary.md").read_text()
