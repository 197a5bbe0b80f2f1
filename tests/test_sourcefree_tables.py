"""The source-free paper's tables (unlearnflow.report.sourcefree_tables) from report summaries, and the
report's linear-model section: each claimed bound beside the truth."""

import math

import pytest

from unlearnflow.cli import main
from unlearnflow.errors import UserError
from unlearnflow.evaluation.rows import CERTIFICATE_COLUMNS, FLOAT_COLUMNS
from unlearnflow.evaluation.selection import select_configurations
from unlearnflow.report.pgu_tables import read_summaries
from unlearnflow.report.sourcefree_tables import experiment_of, natural, sourcefree_tables
from unlearnflow.report.summary import linear_section, write_summary_csv


def row(method, config="default", **values):
    """A complete summary row of a linear experiment's 10% forget set; metrics as given, else 0.5."""
    out = {column: 0.5 for column in FLOAT_COLUMNS}
    out.update(method=method, config=config, forget_set="random_126", forget_kind="random", n_forget=126,
               n_oracles=20, n_unlearned=20, status="ok", shift_corr_forget=math.nan, margin_mae_forget=math.nan,
               precompute_seconds=0.0, acc_test_original=0.92, acc_test_oracle=0.92, retrain_seconds=0.01,
               weight_distance=math.nan, **dict.fromkeys(CERTIFICATE_COLUMNS, math.nan))
    out.update(values)
    # a snapshot made before issue 23 (KLOM chose): its KLOM score is its selection score
    out.setdefault("selection_metric", "klom")
    if out["selection_metric"] == "klom":
        out["klom_score"] = out["selection_score"]
    return out


def summary(tmp_path, rows, experiment="sf-digits-table2"):
    directory = tmp_path / "results" / experiment / "report"
    directory.mkdir(parents=True)
    return write_summary_csv(select_configurations(rows), directory / "summary.csv")


#: what the evaluation writes for a source-free configuration (the paper's claims against the truth)
SOURCE_FREE_TRUTH = dict(cert_certified=0.0, true_retain_gradient_norm=2.07, paper_theorem1_claim=0.0,
                         paper_theorem1_violated=1.0, paper_lemma1_claim=4.33e-4, true_hessian_error=70.9,
                         paper_lemma1_violated=1.0)


def rows_of_table2():
    return [
        row("do_nothing", weight_distance=1.0, acc_test=0.92, selection_score=9.0, unlearn_seconds=0.0,
            true_retain_gradient_norm=48.0),
        row("newton_source_free", "m=250,variant=paper", weight_distance=12.5, acc_test=0.5, selection_score=11.0,
            unlearn_seconds=0.05, **SOURCE_FREE_TRUTH),
        row("newton_source_free", "m=2208,variant=corrected", weight_distance=0.42, acc_test=0.925,
            selection_score=4.0, unlearn_seconds=0.3, **SOURCE_FREE_TRUTH),
        row("newton_certified", weight_distance=1e-6, acc_test=0.92, selection_score=0.0, unlearn_seconds=0.001,
            cert_certified=1.0, cert_epsilon=1.3e-3, cert_delta=1e-5, cert_residual_bound=2.3e-5,
            true_retain_gradient_norm=2.3e-5, cert_residual_bound_violated=0.0),
    ]


def test_every_configuration_is_a_line_with_distance_accuracy_gap_certificate_and_the_selected_one_marked(tmp_path):
    text = sourcefree_tables([summary(tmp_path, rows_of_table2())])
    lines = text.splitlines()
    assert lines[0] == ("#### `sf-digits-table2`, `random_126` (126 points, 20 oracles, 20 models; "
                        "oracles' test acc 0.920)")
    body = [line for line in lines if line.startswith("| ") and not line.startswith(("| method", "| ---"))]
    # report order: do_nothing first; a method's configurations sorted by name; gap in points. One forget
    # set and no selection set: the headline (*) is the first configuration, beside the in-sample best
    assert body[0] == "| do_nothing | default * (in-sample best) | 1 | 0.920 | +0.0 | 9.000 | 0 | 48 | – |"
    paper_claims = "none; paper's Thm 1 0 (violated 100%), Lemma 1 0.000433 (violated 100%) vs true 70.9"
    assert (f"| newton_source_free | m=2208,variant=corrected (in-sample best) | 0.42 | 0.925 | +0.5 | 4.000 | 0.3 "
            f"| 2.07 | {paper_claims} |") in body
    assert (f"| newton_source_free | m=250,variant=paper * | 12.5 | 0.500 | -42.0 | 11.000 | 0.05 | 2.07 "
            f"| {paper_claims} |") in body
    assert ("| newton_certified | default * (in-sample best) | 1e-06 | 0.920 | +0.0 | 0.000 | 0.001 | 2.3e-05 "
            "| ε 0.0013 at δ 1e-05 |") in body
    assert len(body) == 4
    assert "Cost of" not in text
    # configurations in numeric order of their numbers
    configs = ["m=1000,variant=paper", "default", "m=250,variant=paper", "m=2208,variant=paper", "m=500,variant=paper"]
    assert sorted(configs, key=natural) == ["default", "m=250,variant=paper", "m=500,variant=paper",
                                            "m=1000,variant=paper", "m=2208,variant=paper"]


def test_the_cost_line_sums_the_experiments_benchmark_files(tmp_path):
    path = summary(tmp_path, rows_of_table2())
    benchmarks = path.parent.parent / "benchmarks"
    (benchmarks / "unlearned" / "jit").mkdir(parents=True)
    header = "s\th:m:s\tmax_rss\tcpu_time\n"
    (benchmarks / "data.tsv").write_text(header + "2.50\t0:00:02\t100\t1.25\n")
    (benchmarks / "unlearned" / "jit" / "random_126.tsv").write_text(header + "10.00\t0:00:10\t100\t4.00\n")
    (benchmarks / "forget_sets.tsv").write_text(header + "0.50\t0:00:00\tNA\tNA\n")  # ended before a sample
    assert sourcefree_tables([path]).splitlines()[-1] == (
        "Cost of `sf-digits-table2`: 3 jobs, 13 job-seconds wall, 5 CPU seconds (its `benchmarks/`).")


def test_the_command_writes_the_tables_and_refuses_a_summary_without_weight_distance(tmp_path, capsys):
    path = summary(tmp_path, rows_of_table2())
    out = tmp_path / "tables.md"
    assert main(["sourcefree-table", str(path), "--out", str(out)]) == 0
    assert main(["sourcefree-table", str(tmp_path / "missing.csv")]) == 2   # a UserError: one line, status 2
    assert out.read_text() == sourcefree_tables([path]) + "\n"
    assert experiment_of(path) == "sf-digits-table2"
    other = summary(tmp_path, [row("do_nothing", selection_score=1.0)], experiment="digits")
    with pytest.raises(UserError) as error:
        sourcefree_tables([other])
    assert str(error.value) == (f"sourcefree-table: {other} has no weight_distance; give the summary of a "
                                "linear experiment")
    with pytest.raises(UserError, match="^sourcefree-table: no summary.csv given$"):
        read_summaries([], "sourcefree-table")


def test_the_linear_section_puts_each_claimed_bound_beside_the_truth():
    rows = [{**table_row, "acc_test": 0.92} for table_row in rows_of_table2()]
    rows.append(row("newton_certified", "delta=0.01", weight_distance=1e-6, acc_test=0.92, cert_certified=0.5,
                    cert_epsilon=0.7, cert_delta=0.01, cert_residual_bound=2.3e-5, true_retain_gradient_norm=3e-5,
                    cert_residual_bound_violated=0.25))
    lines = linear_section(rows)
    assert lines[2] == ("| method | config | test acc | weight distance | retain grad (true) | certified bound | "
                        "certified (ε at δ) | Thm 1 (paper) | Hessian error (true) | Lemma 1 (paper) |")
    body = lines[4:-1]
    assert body[0] == "| do_nothing | default | 0.920 | 1 | 48 | – | – | – | – | – |"
    assert ("| newton_certified | default | 0.920 | 1e-06 | 2.3e-05 | 2.3e-05 | ε 0.0013 at δ 1e-05 | – | – | – |"
            in body)
    assert ("| newton_certified | delta=0.01 | 0.920 | 1e-06 | 3e-05 | 2.3e-05 (violated 25%) | 50%: ε 0.7 at δ 0.01 "
            "| – | – | – |") in body
    assert ("| newton_source_free | m=2208,variant=corrected | 0.920 | 0.42 | 2.07 | – | no | 0 (violated 100%) | 70.9 "
            "| 0.000433 (violated 100%) |") in body
    # banks of other models: no weight distance, no truth, no section
    assert linear_section([row("do_nothing", selection_score=1.0, acc_test=0.9)]) == []
