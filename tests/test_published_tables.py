"""Published tables (unlearnflow.report.published): snapshots under docs/results/, table blocks in
the markdown rendered from them by ``python -m unlearnflow tables``, and ``--check``."""

from __future__ import annotations

import hashlib
import math
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from unlearnflow.cli import main
from unlearnflow.errors import UserError
from unlearnflow.evaluation.rows import FLOAT_COLUMNS
from unlearnflow.evaluation.selection import select_configurations
from unlearnflow.report.pgu_tables import pgu_tables, read_summaries
from unlearnflow.report.published import (
    checkout_state,
    headline_column,
    klom_below_retraining,
    make_snapshot,
    method_comparison,
    pairwise_wins,
    pgu_renderer,
    presets,
    read_snapshot,
    selection_optimism,
    sourcefree_renderer,
)
from unlearnflow.report.sourcefree_tables import sourcefree_tables
from unlearnflow.report.summary import write_summary_csv

REPO = Path(__file__).resolve().parents[1]
BENCHMARK_HEADER = "s\th:m:s\tmax_rss\tcpu_time\n"


def row(forget_set, method, config="default", **values):
    """A complete summary row; metrics as given, else 0.5 (test accuracy at the oracles')."""
    out = {column: 0.5 for column in FLOAT_COLUMNS}
    out.update(method=method, config=config, forget_set=forget_set, forget_kind="random", n_forget=10, n_oracles=20,
               n_unlearned=20, status="ok", shift_corr_forget=math.nan, margin_mae_forget=0.1, precompute_seconds=0.0,
               acc_test=0.9, acc_test_oracle=0.9, acc_test_original=0.9, retrain_seconds=2.0, unlearn_seconds=0.1,
               weight_distance=math.nan)
    out.update(values)
    # a snapshot made before issue 23 (KLOM chose): its KLOM score is its selection score
    out.setdefault("selection_metric", "klom")
    if out["selection_metric"] == "klom":
        out["klom_score"] = out["selection_score"]
    return out


def digits_rows():
    """Two forget sets; references with one configuration, dmm and gd with two each. Held out
    (leave one set out), dmm takes the configuration that is best on the *other* set."""
    scores = {  # forget set -> (method, config) -> (selection score, compute fraction)
        "random_10": {("do_nothing", "default"): (2.6, 0.0), ("retrain", "default"): (1.57, 1.0),
                      ("dmm", "default"): (1.6, 0.007), ("dmm", "lr=0.1"): (1.5, 0.02),
                      ("gd", "default"): (1.7, 0.05), ("gd", "lr=0.2"): (1.55, 0.1)},
        "cluster_60": {("do_nothing", "default"): (5.1, 0.0), ("retrain", "default"): (1.57, 1.0),
                       ("dmm", "default"): (3.6, 0.007), ("dmm", "lr=0.1"): (3.9, 0.02),
                       ("gd", "default"): (3.0, 0.05), ("gd", "lr=0.2"): (2.2, 0.1)},
    }
    return select_configurations([row(forget_set, method, config, selection_score=score, compute_fraction=compute)
                                  for forget_set, by_config in scores.items()
                                  for (method, config), (score, compute) in by_config.items()])


def linear_rows():
    return select_configurations([
        row("random_126", "do_nothing", weight_distance=1.0, selection_score=9.0, unlearn_seconds=0.0),
        row("random_126", "newton_certified", weight_distance=1e-6, selection_score=0.1, unlearn_seconds=0.001)])


def finished_run(tmp_path: Path, experiment: str, rows) -> Path:
    """A finished run's ``results/EXPERIMENT/report/summary.csv`` with two benchmark files."""
    report = tmp_path / "results" / experiment / "report"
    report.mkdir(parents=True)
    benchmarks = report.parent / "benchmarks" / "unlearned"
    benchmarks.mkdir(parents=True)
    (benchmarks.parent / "data.tsv").write_text(BENCHMARK_HEADER + "2.50\t0:00:02\t100\t1.25\n")
    (benchmarks / "dmm.tsv").write_text(BENCHMARK_HEADER + "10.00\t0:00:10\t100\t4.00\n")
    (report / "summary.md").write_text("# Unlearning report\n")
    return write_summary_csv(rows, report / "summary.csv")


def snapshot_of(tmp_path: Path, root: Path, name: str, rows) -> Path:
    config = tmp_path / f"{name}.yaml"
    config.write_text(f"experiment: {name}\n")
    summary = finished_run(tmp_path, name, rows)
    return make_snapshot(name=name, summary=summary, config=config, command="snakemake --cores 2",
                         machine="test machine", commit="0123abc", root=root)


MANIFEST = {"tables": {
    "digits-methods": {"renderer": "method-comparison", "snapshots": ["digits"],
                       "options": {"methods": {"do-nothing": "do_nothing", "retrain": "retrain", "DMM": "dmm",
                                               "GD": "gd"}, "compute": ["dmm"],
                                   "forget_sets": ["random_10", "cluster_60"]}},
    "digits-pgu": {"renderer": "pgu-table", "snapshots": ["digits"]},
    "linear": {"renderer": "sourcefree-table", "snapshots": ["linear"]},
}}
README = """# A project

Some prose.

<!-- table: digits-methods -->
| stale | table |
<!-- /table: digits-methods -->

More prose, then the linear tables.
<!-- table: linear -->
<!-- /table: linear -->
The end.
"""


@pytest.fixture
def project(tmp_path) -> Path:
    """A repository root with two snapshots, a manifest, and blocks in README.md and docs/pgu.md."""
    root = tmp_path / "repo"
    snapshot_of(tmp_path, root, "digits", digits_rows())
    snapshot_of(tmp_path, root, "linear", linear_rows())
    (root / "docs" / "results" / "tables.yaml").write_text(yaml.safe_dump(MANIFEST, sort_keys=False))
    (root / "README.md").write_text(README)
    (root / "docs" / "pgu.md").write_text("# PGU\n\n<!-- table: digits-pgu -->\n<!-- /table: digits-pgu -->\n")
    return root


def tables(root: Path, *options: str) -> int:
    return main(["tables", "--root", str(root), *options])


def test_the_repository_tables_agree_with_their_committed_snapshots():
    result = subprocess.run([sys.executable, "-m", "unlearnflow", "tables", "--check"], cwd=REPO,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "agree with their snapshots" in result.stdout


def test_the_method_comparison_shows_the_headline_score_the_in_sample_best_and_the_compute(tmp_path):
    snapshot = read_snapshot(tmp_path / "repo", snapshot_of(tmp_path, tmp_path / "repo", "digits", digits_rows()).name)
    text = method_comparison([snapshot], {"do-nothing": "do_nothing", "retrain": "retrain", "DMM": "dmm", "GD": "gd"},
                             compute=["dmm"], forget_sets=["random_10", "cluster_60"])
    # dmm on random_10: the default (best on cluster_60), its in-sample best lr=0.1 (1.5) in brackets;
    # on cluster_60 the other way round; gd's lr=0.2 is best everywhere, so no brackets, and bold
    assert text.splitlines() == [
        "| forget set | do-nothing | retrain | DMM | GD | DMM compute |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
        "| random_10 | 2.600 | 1.570 | 1.600 [1.500] | **1.550** | 0.7% |",
        "| cluster_60 | 5.100 | 1.570 | 3.900 [3.600] | **2.200** | 2.0% |",
        "",
        "Headline configuration: best on the other forget sets. [In brackets: the in-sample best, chosen on the "
        "set's own oracles, where it is another configuration.]",
    ]
    unranked = method_comparison([snapshot], {"DMM": "dmm", "GD": "gd"}, unranked=["gd"]).splitlines()
    assert unranked[2] == "| random_10 | **1.600** [1.500] | 1.550 |"   # gd shown, not ranked
    plain = method_comparison([snapshot], {"DMM": "dmm"}, insample=False).splitlines()
    assert plain[2:4] == ["| random_10 | **1.600** |", "| cluster_60 | **3.900** |"]  # the summary's order
    assert plain[-1] == "Headline configuration: best on the other forget sets."
    with pytest.raises(UserError, match="'scrub' is in no snapshot's summary"):
        method_comparison([snapshot], {"SCRUB": "scrub"})
    with pytest.raises(UserError, match="method 'do_nothing' has two headline rows on forget set 'random_10'"):
        method_comparison([snapshot, snapshot], {"DMM": "dmm"})


def test_a_headline_column_shows_one_column_of_each_methods_headline_configuration(tmp_path):
    snapshot = read_snapshot(tmp_path / "repo", snapshot_of(tmp_path, tmp_path / "repo", "digits", digits_rows()).name)
    text = headline_column([snapshot], {"DMM": "dmm", "GD": "gd"}, "compute_fraction", ["random_10", "cluster_60"],
                           spec=".1%")
    assert text.splitlines() == ["| forget set | DMM | GD |", "| --- | ---: | ---: |",
                                 "| random_10 | 0.7% | 10.0% |", "| cluster_60 | 2.0% | 10.0% |"]
    for method, column, forget_sets, name in [("scrub", "compute_fraction", None, "scrub"),
                                              ("dmm", "nope", None, "nope"), ("dmm", "config", None, "config"),
                                              ("dmm", "compute_fraction", ["random_11"], "random_11")]:
        with pytest.raises(UserError, match=f"'{name}' is no forget set, method or numeric column"):
            headline_column([snapshot], {"X": method}, column, forget_sets)
    with pytest.raises(UserError, match="method 'do_nothing' has two headline rows"):
        headline_column([snapshot, snapshot], {"DMM": "dmm"}, "compute_fraction")


def test_a_diverged_headline_is_marked_and_is_neither_bold_nor_a_win(tmp_path):
    """Issue 19, item 9: a diverged configuration keeps its numbers, so the tables must not rank it."""
    rows = [{**row, "status": "diverged"} if row["method"] == "gd" else row for row in digits_rows()]
    snapshot = read_snapshot(tmp_path / "repo", snapshot_of(tmp_path, tmp_path / "repo", "digits", rows).name)
    table = method_comparison([snapshot], {"DMM": "dmm", "GD": "gd"}, insample=False).splitlines()
    assert table[2] == "| random_10 | **1.600** | 1.550 (diverged) |"
    assert pairwise_wins([snapshot], [["gd", "dmm"]]) == "- `gd` scores below `dmm` on 0 of 2 forget sets."
    assert headline_column([snapshot], {"GD": "gd"}, "compute_fraction", spec=".1%").splitlines()[2] == (
        "| random_10 | 10.0% (diverged) |")


def test_the_optimism_of_in_sample_selection_and_pairwise_wins_come_from_the_headline_rows(tmp_path):
    snapshot = read_snapshot(tmp_path / "repo", snapshot_of(tmp_path, tmp_path / "repo", "digits", digits_rows()).name)
    # dmm: held out, random_10 takes the default (1.6, in-sample 1.5) and cluster_60 lr=0.1 (3.9, in-sample and
    # default 3.6); gd: lr=0.2 is the in-sample best and the headline on both sets (1.55 and 2.2, defaults 1.7, 3.0)
    assert selection_optimism([snapshot]).splitlines()[2:] == [
        "| dmm | 2 | 2 of 2 | +0.200 (+0.300) | +0.150 |",
        "| gd | 2 | 0 of 2 | +0.000 (+0.000) | -0.475 |",
    ]
    assert selection_optimism([snapshot], methods=["gd"]).splitlines()[2:] == ["| gd | 2 | 0 of 2 | +0.000 (+0.000) "
                                                                              "| -0.475 |"]
    assert pairwise_wins([snapshot], [["gd", "dmm"], ["dmm", "do_nothing"], ["dmm", "gd"]]).splitlines() == [
        "- `gd` scores below `dmm` on 2 of 2 forget sets.",
        "- `dmm` scores below `do_nothing` on 2 of 2 forget sets.",
        "- `dmm` scores below `gd` on 0 of 2 forget sets.",
    ]
    with pytest.raises(UserError, match="should name two methods"):
        pairwise_wins([snapshot], [["dmm", "scrub"]])
    with pytest.raises(UserError, match="'scrub' is in no snapshot's summary"):
        selection_optimism([snapshot], methods=["scrub"])


def test_the_paper_renderers_equal_their_commands_with_name_and_cost_from_the_snapshot(tmp_path):
    root = tmp_path / "repo"
    linear, digits = (read_snapshot(root, snapshot_of(tmp_path, root, name, rows).name)
                      for name, rows in (("linear", linear_rows()), ("digits", digits_rows())))
    # the results directories the snapshots were made from are still there: same text, cost line included
    source = tmp_path / "results" / "linear" / "report" / "summary.csv"
    assert sourcefree_renderer([linear]) == sourcefree_tables([source])
    assert sourcefree_renderer([linear]).splitlines()[-1] == (
        "Cost of `linear`: 2 jobs, 12 job-seconds wall, 5 CPU seconds (its `benchmarks/`).")
    assert pgu_renderer([digits]) == pgu_tables(read_summaries([digits.summary]))


def test_a_snapshot_keeps_the_summary_the_config_and_where_they_came_from(tmp_path):
    directory = snapshot_of(tmp_path, tmp_path / "repo", "digits", digits_rows())
    assert directory == tmp_path / "repo" / "docs" / "results" / "digits"
    summary = tmp_path / "results" / "digits" / "report" / "summary.csv"
    assert (directory / "summary.csv").read_bytes() == summary.read_bytes()
    assert (directory / "summary.md").read_text() == "# Unlearning report\n"   # the report's other figures
    assert (directory / "config.yaml").read_text() == "experiment: digits\n"
    metadata = yaml.safe_load((directory / "snapshot.yaml").read_text())
    assert metadata["experiment"] == "digits" and metadata["source"] == str(summary)
    assert metadata["commit"] == "0123abc" and metadata["uncommitted_changes"] is None
    assert metadata["config_sha256"] == hashlib.sha256(b"experiment: digits\n").hexdigest()
    assert metadata["command"] == "snakemake --cores 2" and metadata["machine"] == "test machine"
    assert metadata["cost"] == {"jobs": 2, "wall_seconds": 12.5, "cpu_seconds": 5.25}
    assert metadata["date"].endswith(" UTC")


def test_a_snapshot_reads_the_commit_of_the_checkout_and_needs_one(tmp_path, capsys):
    head = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    state = checkout_state(REPO / "src", None)
    assert state["commit"] == head and isinstance(state["uncommitted_changes"], bool)
    summary = finished_run(tmp_path, "digits", digits_rows())  # tmp_path is no git checkout
    (tmp_path / "config.yaml").write_text("{}\n")
    assert main(["snapshot", "--name", "digits", "--summary", str(summary), "--config", str(tmp_path / "config.yaml"),
                 "--root", str(tmp_path / "repo")]) == 2
    assert "is not in a git checkout, so the run's commit is unknown; give --commit" in capsys.readouterr().err


def test_tables_render_every_block_in_place_and_a_second_run_changes_nothing(project, capsys):
    assert tables(project, "--check") == 1  # the committed blocks are stale or empty
    assert tables(project) == 0
    readme = (project / "README.md").read_text()
    assert readme.startswith("# A project\n\nSome prose.\n\n<!-- table: digits-methods -->\n\n"
                             "| forget set | do-nothing |")
    assert "| random_10 | 2.600 | 1.570 | 1.600 [1.500] | **1.550** | 0.7% |" in readme
    assert ("\n\n<!-- /table: digits-methods -->\n\nMore prose, then the linear tables.\n"
            "<!-- table: linear -->\n\n####") in readme
    assert readme.endswith("(its `benchmarks/`).\n\n<!-- /table: linear -->\nThe end.\n")
    assert "| pgu_tuned" not in readme and "### `cluster_60`" in (project / "docs" / "pgu.md").read_text()
    capsys.readouterr()
    before = {path: path.read_bytes() for path in (project / "README.md", project / "docs" / "pgu.md")}
    assert tables(project) == 0
    assert tables(project, "--check") == 0
    assert {path: path.read_bytes() for path in before} == before
    assert capsys.readouterr().out.splitlines()[-1] == "3 table(s) agree with their snapshots"


def test_check_names_an_edited_block_changes_nothing_and_tables_restores_it(project, capsys):
    tables(project)
    readme = project / "README.md"
    rendered = readme.read_text()
    readme.write_text(rendered.replace("| 3.900 [3.600] |", "| 3.910 [3.600] |"))
    edited = readme.read_text()
    capsys.readouterr()
    assert tables(project, "--check") == 1
    assert readme.read_text() == edited
    out = capsys.readouterr().out.splitlines()
    line = rendered.splitlines().index("<!-- table: digits-methods -->") + 1
    assert out == [f"README.md:{line}: table 'digits-methods' differs from what its snapshot(s) digits render",
                   "1 of 3 table(s) differ from their snapshots; python -m unlearnflow tables rewrites them"]
    assert tables(project) == 0
    assert readme.read_text() == rendered


@pytest.mark.parametrize("readme, message", [
    ("<!-- table: digits-methods -->\n", "README.md:1: table 'digits-methods' is never closed"),
    ("<!-- /table: linear -->\n", "README.md:1: '<!-- /table: linear -->' closes no open table 'linear'"),
    ("<!-- table: linear -->\n<!-- table: digits-methods -->\n",
     "README.md:2: table 'digits-methods' opens inside table 'linear'"),
    ("<!-- table: linear -->\n<!-- /table: digits-methods -->\n",
     "README.md:2: '<!-- /table: digits-methods -->' closes no open table 'digits-methods'"),
    ("<!-- table: linear --> with text\n", "README.md:1: malformed table marker"),
    ("<!-- table: unknown -->\n<!-- /table: unknown -->\n",
     "README.md:1: table 'unknown' is not in docs/results/tables.yaml"),
    (README, "table 'digits-pgu' is in no block"),
])
def test_malformed_or_unknown_blocks_are_one_line_errors_and_nothing_is_written(project, capsys, readme, message):
    (project / "docs" / "pgu.md").unlink()
    (project / "README.md").write_text(readme)
    assert tables(project) == 2
    error = capsys.readouterr().err
    assert message in error and error.count("\n") == 1
    assert (project / "README.md").read_text() == readme


@pytest.mark.parametrize("entry, message", [
    ({"renderer": "pgu-table", "snapshots": ["absent"]}, "no snapshot 'absent' (no summary.csv or snapshot.yaml)"),
    ({"renderer": "histogram", "snapshots": ["digits"]}, "unknown renderer 'histogram' (known: sourcefree-table, "),
    ({"renderer": "pgu-table", "snapshots": []}, "'snapshots' should be a non-empty list"),
    ({"renderer": "pgu-table", "snapshots": ["digits"], "options": {"colour": "red"}},
     "options do not fit renderer 'pgu-table'"),
])
def test_a_bad_manifest_entry_is_a_one_line_error(project, capsys, entry, message):
    manifest = project / "docs" / "results" / "tables.yaml"
    manifest.write_text(yaml.safe_dump({"tables": {**MANIFEST["tables"], "digits-pgu": entry}}, sort_keys=False))
    assert tables(project, "--check") == 2
    error = capsys.readouterr().err
    assert message in error and error.count("\n") == 1


def test_klom_below_retraining_lists_what_beats_exact_unlearning_and_presets_sums_their_cost(tmp_path):
    snapshot = read_snapshot(tmp_path / "repo", snapshot_of(tmp_path, tmp_path / "repo", "digits", digits_rows()).name)
    # retraining's KLOM score is 1.57 on both sets: dmm lr=0.1 (1.5) and gd lr=0.2 (1.55) on random_10 beat it
    assert klom_below_retraining([snapshot]).splitlines()[2:] == [
        "| digits | random_10 | dmm | lr=0.1 | 1.500 | 1.570 | +0.0 | – | – | – |",
        "| digits | random_10 | gd | lr=0.2 * | 1.550 | 1.570 | +0.0 | – | – | – |",
    ]
    config = str(snapshot.metadata["config"])
    table = presets([snapshot], {config: "the digits", "config/other.yaml": "nothing yet"}).splitlines()
    assert table[2] == f"| `{config}` | the digits | `digits` | 2 | 12 |"  # the two benchmark files
    assert table[3] == "| `config/other.yaml` | nothing yet | – | – | – |"
    with pytest.raises(UserError, match="is not among the presets"):
        presets([snapshot], {"config/other.yaml": "nothing yet"})


def test_the_readme_is_short_starts_with_the_two_commands_and_links_every_docs_page():
    readme = (REPO / "README.md").read_text()
    assert len(readme.splitlines()) <= 400
    assert readme.split("\n")[2:6] == [
        "```bash", "pip install torch==2.13.0 && pip install -e . && snakemake --cores 2",
        'pip install torch==2.13.0 && pip install -e ".[test]" && python -m pytest -q -n 2', "```"]
    for page in ("dmm.md", "pgu.md", "sourcefree.md", "operations.md", "klom-blind-spots.md", "baselines.md"):
        assert f"(docs/{page})" in readme and (REPO / "docs" / page).is_file()
