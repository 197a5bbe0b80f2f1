"""The PGU paper's tables (unlearnflow.report.pgu_tables) from report summaries."""

import math

import pytest

from unlearnflow.cli import main
from unlearnflow.errors import UserError
from unlearnflow.evaluation.rows import FLOAT_COLUMNS
from unlearnflow.evaluation.selection import select_configurations
from unlearnflow.report.pgu_tables import (
    class_sample_checks,
    pgu_tables,
    read_summaries,
    recoveries,
    selected_rows,
)
from unlearnflow.report.summary import write_summary_csv


def row(forget_set, kind, method, config="default", **values):
    """A complete summary row; accuracies and times as given, everything else 0.5."""
    out = {column: 0.5 for column in FLOAT_COLUMNS}
    out.update(method=method, config=config, forget_set=forget_set, forget_kind=kind, n_forget=30, n_oracles=50,
               n_unlearned=50, status="ok", shift_corr_forget=math.nan, margin_mae_forget=0.1,
               precompute_seconds=0.0, acc_test_original=0.99, retrain_seconds=2.0, unlearn_seconds=0.0)
    out.update(values)
    # a snapshot made before issue 23 (KLOM chose): its KLOM score is its selection score
    out.setdefault("selection_metric", "klom")
    if out["selection_metric"] == "klom":
        out["klom_score"] = out["selection_score"]
    return out


def class_sample_rows(pgu_forget=0.97, pgu_auc=0.6):
    """do_nothing, retrain and two pgu configurations (the second has the lower selection score)."""
    fs = "class_sample_0"
    return [
        row(fs, "class_sample", "do_nothing", acc_forget=1.0, acc_retain=1.0, acc_test=0.99, mia_pgu_auc=0.9,
            mia_attack_auc=0.9, selection_score=5.0),
        row(fs, "class_sample", "retrain", acc_forget=0.98, acc_retain=1.0, acc_test=0.99, mia_pgu_auc=0.5,
            mia_attack_auc=0.9, selection_score=0.5, unlearn_seconds=2.0),
        row(fs, "class_sample", "pgu_tuned", "lr=1.0", acc_forget=1.0, acc_retain=1.0, acc_test=0.99,
            mia_pgu_auc=0.88, mia_attack_auc=0.9, selection_score=4.0, unlearn_seconds=0.1),
        row(fs, "class_sample", "pgu_tuned", "lr=5.0", acc_forget=pgu_forget, acc_retain=0.998, acc_test=0.988,
            mia_pgu_auc=pgu_auc, mia_attack_auc=0.9, selection_score=1.0, unlearn_seconds=0.2),
    ]


def summary(tmp_path, rows, name="summary.csv", in_sample=True):
    """A report's summary.csv of `rows` of one forget set, configured as its own selection set (the
    headline is then the in-sample best within the accuracy guard) or, without `in_sample`, with
    none (the headline is then the default configuration)."""
    selection_set = rows[0]["forget_set"] if in_sample else None
    return write_summary_csv(select_configurations(rows, selection_set=selection_set), tmp_path / name)


def test_removal_table_shows_each_methods_selected_configuration_as_errors_and_time(tmp_path):
    rows = read_summaries([summary(tmp_path, class_sample_rows())])
    chosen = selected_rows(rows)["class_sample_0"]
    assert [r["method"] for r in chosen] == ["do_nothing", "pgu_tuned", "retrain"]
    assert chosen[1]["config"] == "lr=5.0" and chosen[1]["insample_best"] and chosen[1]["selected"]
    text = pgu_tables(rows)
    line = next(line for line in text.splitlines() if line.startswith("| pgu_tuned"))
    # forget err 3.00, retain err 0.20, test err 1.20, MIA 0.600, power 0.900, score 1.000 (the in-sample
    # best's too), 0.2 s, 0.1 x retrain
    assert line == "| pgu_tuned | lr=5.0 | 3.00 | 0.20 | 1.20 | 0.600 | 0.900 | 1.000 | 1.000 | 0.2 | 0.100 |"
    assert "lr=1.0" not in text
    # without a selection set, one forget set gives the default (the first configuration here), with
    # the in-sample best beside it
    rows = read_summaries([summary(tmp_path, class_sample_rows(), in_sample=False)])
    assert selected_rows(rows)["class_sample_0"][1]["selection_rule"] == "default:no_heldout_set"
    line = next(line for line in pgu_tables(rows).splitlines() if line.startswith("| pgu_tuned"))
    assert line.startswith("| pgu_tuned | lr=1.0 |") and "| 4.000 | 1.000 (lr=5.0) |" in line


def test_class_sample_checks_measure_against_retrain_and_the_originals(tmp_path):
    rows = selected_rows(read_summaries([summary(tmp_path, class_sample_rows())]))["class_sample_0"]
    checks = class_sample_checks(rows, "pgu_tuned")
    measured = [c.measured for c in checks]
    assert measured == pytest.approx([1.0, 3.0, 0.2, 0.2, 0.3])
    assert [c.passed for c in checks] == [True, True, True, True, True]
    # a forget error far from the retrained one, and an attack that still finds the points
    rows = selected_rows(read_summaries([summary(tmp_path, class_sample_rows(pgu_forget=0.9, pgu_auc=0.89))]))
    checks = class_sample_checks(rows["class_sample_0"], "pgu_tuned")
    assert [c.passed for c in checks] == [False, True, True, True, False]


def test_attack_check_does_not_apply_without_attack_power(tmp_path):
    rows = class_sample_rows()
    for r in rows:
        r["mia_attack_auc"] = 0.6
    checks = class_sample_checks(selected_rows(read_summaries([summary(tmp_path, rows)]))["class_sample_0"],
                                 "pgu_tuned")
    assert checks[-1].passed is None
    assert "n/a" in pgu_tables(read_summaries([summary(tmp_path, rows)]), acceptance="pgu_tuned")


def poison_rows(name, n_forget, poisoned, clean, methods):
    rows = [row(name, "poison", "do_nothing", n_forget=n_forget, acc_test=poisoned, acc_test_oracle=clean),
            row(name, "poison", "retrain", n_forget=n_forget, acc_test=clean, acc_test_oracle=clean)]
    rows += [row(name, "poison", method, n_forget=n_forget, acc_test=acc, acc_test_oracle=clean)
             for method, acc in methods.items()]
    return rows


def test_summaries_that_share_a_forget_set_name_are_refused(tmp_path):
    paths = [summary(tmp_path, class_sample_rows(), name) for name in ("a.csv", "b.csv")]
    with pytest.raises(UserError, match="forget set 'class_sample_0' appears in several summaries"):
        selected_rows(read_summaries(paths))


def test_depoison_table_has_one_line_per_budget_with_the_share_recovered(tmp_path):
    paths = [summary(tmp_path, poison_rows("poison_20", 250, 0.80, 0.98, {"pgu_depoison": 0.89, "pgu_trgp": 0.95}),
                     "a.csv"),
             summary(tmp_path, poison_rows("poison_10", 125, 0.90, 0.98, {"pgu_depoison": 0.94, "pgu_trgp": 0.90}),
                     "b.csv")]
    rows = read_summaries(paths)
    found = recoveries(rows)
    assert [r.forget_set for r in found] == ["poison_10", "poison_20"]  # by budget
    assert found[1].recovered("pgu_depoison") == pytest.approx(0.5)
    assert found[0].recovered("pgu_trgp") == pytest.approx(0.0)
    text = pgu_tables(rows)
    assert "| poison_20 | 250 | 80.00 | 98.00 | 89.00 (50%) | 95.00 (83%) |" in text
    assert "### `poison" not in text  # poison sets only in Table 4


def test_every_configuration_of_the_depoison_methods_has_its_recovered_share_and_validation_accuracy(tmp_path):
    rows = poison_rows("poison_20", 250, 0.80, 0.98, {"pgu_depoison": 0.89, "pgu_trgp": 0.95})
    rows.append(row("poison_20", "poison", "pgu_trgp", "lr=3.0", n_forget=250, acc_test=0.84, acc_test_oracle=0.98,
                    acc_val=0.86))
    rows.append(row("poison_10", "poison", "do_nothing", n_forget=125, acc_test=0.90, acc_test_oracle=0.98))
    text = pgu_tables(read_summaries([summary(tmp_path, rows, in_sample=False)]), configurations=True)
    table = text.split("Every configuration:")[1]
    assert "| pgu_trgp | lr=3.0 | – | 84.00 (22%), 86.00 |" in table  # (84 - 80) / (98 - 80); no 10% row
    assert "| pgu_depoison | default | – | 89.00 (50%), 50.00 |" in table
    assert table.index("pgu_trgp | default") < table.index("pgu_trgp | lr=3.0")
    assert "Every configuration" not in pgu_tables(read_summaries([summary(tmp_path, rows, "b.csv", False)]))


def test_depoison_table_says_so_when_poisoning_cost_no_accuracy(tmp_path):
    rows = read_summaries([summary(tmp_path, poison_rows("poison_20", 200, 0.7945, 0.7941,
                                                         {"pgu_depoison": 0.7955, "pgu_trgp": 0.7954}))])
    assert math.isnan(recoveries(rows)[0].recovered("pgu_trgp"))
    assert "| 79.55 (poisoning cost nothing) | 79.54 (poisoning cost nothing) |" in pgu_tables(rows)


def test_cli_writes_the_tables_and_rejects_a_file_that_is_not_a_summary(tmp_path, capsys):
    path = summary(tmp_path, class_sample_rows())
    out = tmp_path / "tables.md"
    assert main(["pgu-table", str(path), "--acceptance", "pgu_tuned", "--out", str(out)]) == 0
    text = out.read_text()
    assert "### `class_sample_0`" in text and "Acceptance (issue 10) for `pgu_tuned`" in text
    raw = tmp_path / "raw.csv"
    raw.write_text("\n".join(path.read_text().splitlines()[:2]).replace(",selected", ",other"))
    with pytest.raises(UserError, match="not a report summary"):
        read_summaries([raw])
    assert main(["pgu-table", str(tmp_path / "missing.csv")]) == 2
