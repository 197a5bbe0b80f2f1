"""Artifacts a user can trust (issue 9): every numbered failure of the issue, reproduced on a tiny
experiment built in-process, refused with one line or handled as the issue asks."""

import json
import math
import os
import shutil
import stat

import h5py
import numpy as np
import pytest
import yaml

from unlearnflow import cli, stages
from unlearnflow.config import load_config_file, load_schema, validate_config
from unlearnflow.core.store import (
    check_writable_directory,
    read_artifact,
    rebuild_advice,
    rule_of,
    write_artifact,
    write_text,
)
from unlearnflow.errors import UserError, failed_job_causes
from unlearnflow.evaluation.rows import read_csv
from unlearnflow.metrics.klom import MIN_MODELS, klom, noise_floor

MODEL = {"arch": "mlp", "options": {"hidden": [8]}}
TRAINING = {"epochs": 1, "batch_size": 64, "lr": 0.1}
SCHEMA = os.path.join(os.path.dirname(__file__), "..", "workflow", "schemas", "config.schema.yaml")


def train(results, role, out, forget_set=None, data="data.h5", count=4):
    stages.train(data=str(results / data), role=role, model=MODEL, training=TRAINING, seed=0, first_id=0,
                 count=count, out=str(results / out), device="cpu", threads=1,
                 forget_set=str(results / forget_set) if forget_set else None)


@pytest.fixture(scope="module")
def world(tmp_path_factory, one_thread):
    """results/tiny/ of a small experiment: data, forget set r, 4 originals, 4 oracles of r."""
    results = tmp_path_factory.mktemp("trust") / "results" / "tiny"
    stages.prepare_data(spec={"loader": "digits", "max_train": 200}, out=str(results / "data.h5"))
    stages.make_forget_set(name="r", spec={"kind": "random", "size": 10}, data=str(results / "data.h5"), seed=0,
                           out=str(results / "forget_sets" / "r.h5"))
    train(results, "original", "originals.h5")
    train(results, "oracle", "oracles/r.h5", forget_set="forget_sets/r.h5")
    return results


def evaluate(results, originals="originals.h5", unlearned="originals.h5", method="do_nothing", out="evaluation"):
    stages.evaluate(data=str(results / "data.h5"), forget_set=str(results / "forget_sets" / "r.h5"),
                    originals=str(results / originals), oracles=str(results / "oracles" / "r.h5"),
                    unlearned=[str(results / unlearned)], method=[method], out_h5=[str(results / out / "e.h5")],
                    out_csv=[str(results / out / "e.csv")], threads=1)


def gradient_descent(results, learning_rates, out):
    """Gradient descent on the world's originals over a grid of learning rates, written to `out`."""
    stages.unlearn(method="gradient_descent", method_config={"grid": {"lr": learning_rates}},
                   originals=str(results / "originals.h5"), data=str(results / "data.h5"),
                   forget_set=str(results / "forget_sets" / "r.h5"), seed=0, device="cpu", threads=1,
                   out=str(results / out))


# --- 1. a bank of the wrong role, or made from other data, is refused ----------------------------

def test_1_an_oracle_bank_copied_over_the_originals_is_refused(world, tmp_path):
    results = tmp_path / "results" / "tiny"
    shutil.copytree(world, results)
    shutil.copy(results / "oracles" / "r.h5", results / "originals.h5")
    with pytest.raises(UserError) as error:
        evaluate(results)
    message = str(error.value)
    assert "\n" not in message and message.startswith(f"{results / 'originals.h5'}: expected a model_bank")
    assert "with role original, found role oracle/r" in message
    assert "snakemake --cores 1 --forcerun results/tiny/originals.h5 (rule gather_originals;" in message
    assert not (results / "evaluation" / "e.csv").exists()


def test_1_a_forget_set_or_bank_from_another_data_set_is_refused(world, tmp_path):
    results = tmp_path / "results" / "tiny"
    shutil.copytree(world, results)
    stages.prepare_data(spec={"loader": "digits", "max_train": 200, "seed": 1}, out=str(results / "other.h5"))
    with pytest.raises(UserError, match=r"forget_sets/r\.h5: expected a forget_set made from data sha256:\w{12}, "
                                        r"found one made from data sha256:\w{12}"):
        train(results, "oracle", "x.h5", forget_set="forget_sets/r.h5", data="other.h5")
    # originals of another data set, although of the right role
    train(results, "original", "originals.h5", data="other.h5")
    with pytest.raises(UserError, match=r"originals\.h5: expected a model_bank made from data"):
        evaluate(results)


def test_1_a_reference_bank_must_be_the_one_of_its_method_and_set(world):
    with pytest.raises(UserError, match=r"oracles/r\.h5: expected a model_bank with role retrain/r, found role "
                                        r"oracle/r"):
        evaluate(world, unlearned="oracles/r.h5", method="retrain")


def test_a_gradient_space_of_another_experiment_is_refused(world, tmp_path):
    """Issue 19, item 7: PGU's cached factorisation made from other data (another seed or split) was
    used silently; it records the originals' lineage and the unlearn job checks it."""
    results = tmp_path / "results" / "tiny"
    shutil.copytree(world, results)
    stages.prepare_data(spec={"loader": "digits", "max_train": 200, "seed": 1}, out=str(results / "other.h5"))
    train(results, "original", "other_originals.h5", data="other.h5")
    for data, originals, out in (("data.h5", "originals.h5", "gradient_space.h5"),
                                 ("other.h5", "other_originals.h5", "other_space.h5")):
        stages.gradient_space(data=str(results / data), originals=str(results / originals), out=str(results / out),
                              device="cpu", threads=1)
    stages.make_forget_samples(data=str(results / "data.h5"), forget_set=str(results / "forget_sets" / "r.h5"),
                               labels_from=None, out=str(results / "forget_samples" / "r.h5"))

    def pgu(space):
        stages.unlearn(method="pgu", method_config={"hyperparameters": {"epochs": 1}},
                       originals=str(results / "originals.h5"), forget_samples=str(results / "forget_samples/r.h5"),
                       side=[f"gradient_space={results / space}"], seed=0, device="cpu", threads=1,
                       out=str(results / "unlearned" / "pgu" / "r.h5"))

    with pytest.raises(UserError, match=r"other_space\.h5: expected a gradient_space made from data sha256:\w{12}, "
                                        r"found one made from data sha256:\w{12}.*--forcerun"):
        pgu("other_space.h5")
    assert not (results / "unlearned" / "pgu" / "r.h5").exists()
    pgu("gradient_space.h5")
    assert (results / "unlearned" / "pgu" / "r.h5").is_file()


# --- 2. damaged bytes fail the read with the file and the rule -----------------------------------

def damage_first_chunk(path, dataset):
    """Overwrite 8 bytes inside the first chunk of `dataset`: the file keeps its size."""
    with h5py.File(path, "r") as h5:
        offset = h5[dataset].id.get_chunk_info(0).byte_offset
    with open(path, "r+b") as handle:
        handle.seek(offset + 4)
        handle.write(b"\xde\xad\xbe\xef" * 2)


def test_2_damaged_bytes_in_the_middle_are_one_line_naming_the_file_and_the_rule(world, tmp_path):
    results = tmp_path / "results" / "tiny"
    shutil.copytree(world, results)
    bank = results / "oracles" / "r.h5"
    with h5py.File(bank, "r") as h5:
        assert h5["model_ids"].fletcher32 and h5["logits/train"].fletcher32
    size = bank.stat().st_size
    damage_first_chunk(bank, "model_ids")  # small, uncompressed: only the checksum can tell
    assert bank.stat().st_size == size
    with pytest.raises(UserError) as error:
        evaluate(results)
    message = str(error.value)
    assert message.startswith(f"{bank}: damaged or unreadable HDF5 file") and "\n" not in message
    assert message.endswith(f"snakemake --cores 1 --forcerun results/tiny/{bank.relative_to(results).as_posix()} "
                            "(rule gather_oracles; with your usual --configfile)")


def test_2_the_cli_prints_one_line_for_a_damaged_bank(world, tmp_path, capsys):
    results = tmp_path / "results" / "tiny"
    shutil.copytree(world, results)
    damage_first_chunk(results / "originals.h5", "logits/train")
    status = cli.main(["gather", "--out", str(results / "g.h5"), str(results / "originals.h5")])
    lines = capsys.readouterr().err.strip().splitlines()
    assert status == 2 and len(lines) == 1 and "originals.h5: damaged or unreadable" in lines[0]


def test_2_every_artifact_path_maps_to_the_rule_that_writes_it():
    expected = {"results/x/data.h5": "prepare_data", "results/x/forget_sets/a.h5": "forget_sets",
                "results/x/originals/chunk_0-24.h5": "train_originals", "results/x/original_models.h5":
                "gather_originals", "results/x/oracles/a@2/chunk_0-1.h5": "train_oracles",
                "results/x/oracles/a@2.h5": "gather_oracles", "results/x/unlearned/retrain/a.h5": "retrain",
                "results/x/unlearned/scrub/a.h5": "unlearn", "results/x/evaluation/scrub/a.csv": "evaluate",
                "results/x/ulira/base_models.h5": "ulira_base_models", "results/x/ulira/scrub.csv": "ulira",
                "results/x/subset_models/chunk_0-9.h5": "train_subset_models",
                "results/x/datamodels/chunk_0_of_4.h5": "fit_datamodels",
                "results/x/datamodels.h5": "gather_datamodels", "/abs/results/x/datamodel_calibration.h5":
                "calibrate_datamodels", "results/x/report/summary.csv": "report"}
    assert {path: rule_of(path) for path in expected} == expected
    assert rule_of("elsewhere/d.h5", "dataset") == "prepare_data" and rule_of("elsewhere/b.h5", "model_bank") is None
    assert rebuild_advice("elsewhere/b.h5") == "rebuild it with the stage that wrote it"
    # a rule's output is named by its path, which holds for the config's other experiments (whose
    # rules are prefixed); a file a job writes besides its outputs by its rule
    assert rebuild_advice("/abs/results/other/gradient_space.h5").startswith(
        "rebuild it: snakemake --cores 1 --forcerun results/other/gradient_space.h5 (rule gradient_space;")
    assert rule_of("results/x/features.h5") == "extract_features"
    assert rule_of("results/x/ledger/model_3/req1.json") == "deletion_request"
    assert rebuild_advice("results/x/ledger/model_3/ledger.json").startswith(
        "rebuild it: snakemake --cores 1 --forcerun deletion_request")


# --- 3. a diverged configuration is recorded, never selected, and the report builds --------------

def test_3_a_diverged_configuration_is_a_row_not_a_failure(world, tmp_path):
    results = tmp_path / "results" / "tiny"
    shutil.copytree(world, results)
    gradient_descent(results, [0.01, 1e30], "unlearned/ga.h5")
    evaluate(results, unlearned="unlearned/ga.h5", method="gradient_descent")
    rows = {row["config"]: row for row in read_csv(results / "evaluation" / "e.csv")}
    diverged = [config for config, row in rows.items() if row["status"] == "diverged"]
    assert diverged == ["lr=1e+30"], rows.keys()
    assert math.isnan(rows["lr=1e+30"]["selection_score"]) and rows["lr=1e+30"]["unlearn_seconds"] > 0
    assert all(math.isfinite(row["selection_score"]) for config, row in rows.items() if config not in diverged)
    assert "lr=1e+30" in read_artifact(results / "evaluation" / "e.h5", "evaluation", names=()).attrs["configs"]
    stages.make_report(out_dir=str(results / "report"), csv=[str(results / "evaluation" / "e.csv")],
                       evaluations=[str(results / "evaluation" / "e.h5")])
    summary = (results / "report" / "summary.md").read_text()
    assert "diverged: lr=1e+30" in summary
    best = [line for line in (results / "report" / "summary.csv").read_text().splitlines() if "lr=1e+30" in line]
    assert best and best[0].endswith("False")


def test_9_exploded_or_collapsed_outputs_are_diverged_never_selected_and_named(world, capsys):
    """Issue 19, item 9: finite logits of 1e9 on 3 of 4 models, or one model collapsed to one class,
    make the configuration diverged (never selected), its cause in the job's log; the bound comes
    from evaluation.max_abs_logit."""
    import dataclasses

    from unlearnflow.core.artifacts import read_bank, read_dataset, read_forget_set
    from unlearnflow.evaluation.evaluate import divergence, references
    from unlearnflow.evaluation.selection import select_configurations
    dataset = read_dataset(world / "data.h5")
    forget_set = read_forget_set(world / "forget_sets" / "r.h5")
    originals, oracles = read_bank(world / "originals.h5"), read_bank(world / "oracles" / "r.h5")
    labels = {"train": dataset.y_train, "val": dataset.y_val, "test": dataset.y_test}
    # originals that learned: their logits plus 5 on the true class
    learned = dataclasses.replace(originals, logits={split: logits + 5.0 * np.eye(logits.shape[-1])[labels[split]]
                                                     for split, logits in originals.logits.items()})

    def edited(edit):
        return dataclasses.replace(learned, logits={split: edit(logits.copy()) for split, logits in
                                                    learned.logits.items()})

    def explode(logits):
        logits[:3] *= 1e9
        return logits

    def collapse(logits):
        logits[1] = 0.0
        logits[1, :, 3] = 1.0  # model 1 predicts class 3 everywhere
        return logits
    originals = learned
    banks = {"default": learned, "lr=1e+06": edited(explode), "lr=10": edited(collapse)}
    assert divergence(dataset, originals, originals) is None
    assert divergence(dataset, originals, banks["lr=1e+06"]).startswith("exploded outputs (|logit| up to ")
    assert divergence(dataset, originals, banks["lr=1e+06"], max_abs_logit=1e12) is None
    assert divergence(dataset, originals, banks["lr=10"]).startswith("collapsed: 1 of 4 models at test accuracy <=")
    # models that never learned are not judged
    assert divergence(dataset, edited(collapse), edited(collapse)) is None
    shared = references(dataset, forget_set, originals, oracles, seed=0)
    out = world.parent / "diverged"
    stages._evaluate_method("gradient_descent", banks, dataset, forget_set, originals, oracles, shared, ulira=None,
                            from_scratch=False, seed=0, out_h5=str(out / "e.h5"), out_csv=str(out / "e.csv"),
                            lineage={}, inputs=[])
    rows = {row["config"]: row for row in read_csv(out / "e.csv")}
    assert [rows[config]["status"] for config in banks] == ["ok", "diverged", "diverged"]
    # measured like any other (finite outputs), but never chosen, even when scored best
    assert all(math.isfinite(rows[config]["selection_score"]) for config in banks)
    rows["lr=10"]["selection_score"] = 0.0
    chosen = select_configurations(list(rows.values()), accuracy_guard=1.0)
    assert [row["config"] for row in chosen if row["selected"] or row["insample_best"]] == ["default"]
    log = capsys.readouterr().out
    assert "gradient_descent [lr=1e+06] on r: diverged (exploded outputs (|logit| up to" in log
    assert "gradient_descent [lr=10] on r: diverged (collapsed: 1 of 4 models" in log
    config = validate_config(config_with(evaluation={"max_abs_logit": 100.0}), load_schema(SCHEMA))
    assert config["evaluation"]["max_abs_logit"] == 100.0 and config["evaluation"]["accuracy_guard"] == 0.005


# --- 4 and 5. values checked before any rule runs; KLOM refuses too few models ------------------

def config_with(**changes):
    config = yaml.safe_load(open(os.path.join(os.path.dirname(__file__), "..", "config.yaml")))
    config.update(changes)
    return config


@pytest.mark.parametrize("changes, message", [
    ({"methods": {"gradient_ascent": {"grid": {"lr": [0.01, -0.1]}}}},
     "config: methods.gradient_ascent.grid.lr[1]: -0.1 must be > 0"),
    ({"methods": {"scrub": {"hyperparameters": {"lr": 0}}}}, "config: methods.scrub.hyperparameters.lr: 0 must be > 0"),
    ({"forget_sets": {"r": {"kind": "random", "size": -3}}}, "config: forget_sets.r.size: -3 must be >= 1"),
    ({"forget_sets": {"i": {"kind": "incremental", "requests": 0, "size": 5}}},
     "config: forget_sets.i.requests: 0 must be >= 1"),
    ({"originals": {"models": 1}}, "config: originals.models: 1 is too few; KLOM needs at least 2 models per side"),
    ({"oracles": {"models": 3}}, "config: oracles.models: 3 is too few"),
])
def test_4_5_values_that_would_fail_late_are_refused_with_their_config_path(changes, message):
    with pytest.raises(UserError) as error:
        validate_config(config_with(**changes), load_schema(SCHEMA))
    assert str(error.value).startswith(message), str(error.value)


def test_5_klom_refuses_one_model_per_side_and_says_how_many():
    rng = np.random.default_rng(0)
    for oracle, unlearned, side in ((1, 5, "oracle"), (5, 1, "unlearned")):
        with pytest.raises(UserError, match=f"KLOM needs at least {MIN_MODELS} {side} models .* got 1"):
            klom(rng.normal(size=(oracle, 3)), rng.normal(size=(unlearned, 3)))
    assert klom(rng.normal(size=(2, 3)), rng.normal(size=(2, 3))).shape == (3,)
    with pytest.raises(UserError, match="at least 4 oracle models, got 3"):
        noise_floor(rng.normal(size=(3, 3)), rng)


# --- 6. a failed job's cause reaches the console ------------------------------------------------

def test_6_the_cause_of_each_failed_job_is_read_from_its_log(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "logs").mkdir()
    (tmp_path / "logs" / "a.log").write_text("progress\nunlearnflow: error: first\nunlearnflow: error: d.h5: bad\n")
    (tmp_path / "logs" / "b.log").write_text("Traceback (most recent call last):\nZeroDivisionError\n")
    main_log = ("Error in rule prepare_data:\n    message: None\n    jobid: 1\n"
                "    log: logs/a.log (check log file(s) for error details)\n    shell:\n        python -m x\n"
                "Some other line\nError in rule report:\n    jobid: 2\n"
                "    log: logs/b.log (check log file(s) for error details)\n")
    assert failed_job_causes(main_log) == [
        "unlearnflow: error: d.h5: bad  [rule prepare_data, log logs/a.log]",
        "rule report failed without a one-line cause (a bug or a crash); see logs/b.log"]


def test_6_failed_outputs_are_recorded_and_redone_while_their_experiments_config_is_unchanged(tmp_path,
                                                                                             monkeypatch):
    """Issue 19, item 6 (unlearnflow.ops.reruns): the onerror handler records a failed job's outputs
    with its experiment's config fingerprint; the default target asks for those still missing while
    that config is unchanged, and names the others; outputs of other targets are not recorded;
    onsuccess forgets what exists again or will not be redone."""
    from unlearnflow.config import experiments
    from unlearnflow.ops import reruns
    monkeypatch.chdir(tmp_path)
    log = tmp_path / "snakemake.log"
    log.write_text("Error in rule unlearn:\n    jobid: 1\n    output: results/digits/unlearned/gradient_descent/r5.h5\n"
                   "    log: a.log (check log file(s) for error details)\n"
                   "Error in rule deletion_request:\n    output: results/digits/ledger/model_0/a.receipt.json\n"
                   "Error in rule request_samples:\n    output: results/digits/request_samples/a.h5\n"
                   "Error in rule train_originals:\n    output: results/digits/originals/chunk_0-24.h5\n"
                   "Error in rule prepare_data:\n    output: results/elsewhere/data.h5\n")
    config = {"experiment": "digits", "methods": {"gradient_descent": {}}, "forget_sets": {"r5": {"kind": "random", "size": 5}}}
    planned = experiments(validate_config(config, load_schema(SCHEMA)))
    reruns.record_failed_outputs([str(log)], planned)
    # receipts and request samples belong to `snakemake requests`; another experiment's file to no rule here
    assert sorted(reruns.recorded()) == ["results/digits/originals/chunk_0-24.h5",
                                         "results/digits/unlearned/gradient_descent/r5.h5"]
    assert reruns.outputs_to_redo(planned) == (["results/digits/unlearned/gradient_descent/r5.h5",
                                                 "results/digits/originals/chunk_0-24.h5"], [])
    chunk = tmp_path / "results/digits/originals/chunk_0-24.h5"
    chunk.parent.mkdir(parents=True)
    chunk.write_bytes(b"")
    assert reruns.outputs_to_redo(planned) == (["results/digits/unlearned/gradient_descent/r5.h5"], [])
    changed = experiments(validate_config({**config, "seed": 3}, load_schema(SCHEMA)))
    assert reruns.outputs_to_redo(changed) == ([], ["results/digits/unlearned/gradient_descent/r5.h5"])
    reruns.forget_rebuilt_outputs(planned)
    assert list(reruns.recorded()) == ["results/digits/unlearned/gradient_descent/r5.h5"]
    reruns.forget_rebuilt_outputs(changed)
    assert not reruns.RECORD.exists()


# --- 7. stale temporaries are removed, files respect the umask -----------------------------------

def test_7_a_stage_removes_the_temporaries_a_killed_write_left(tmp_path, capsys):
    out = tmp_path / "d.h5"
    stale = [tmp_path / ".d.h5.k1ll3d.tmp.h5", tmp_path / ".d.h5.x.tmp"]
    for path in stale:
        path.write_bytes(b"\0" * 1000)
    keep = tmp_path / ".other.h5.k1ll3d.tmp.h5"
    keep.write_bytes(b"")
    # the stage fails, yet its output's leftovers are gone: they are removed when it starts
    assert cli.main(["prepare-data", "--spec", '{"loader": "nope"}', "--out", str(out)]) == 2
    assert not any(path.exists() for path in stale) and keep.exists()
    (tmp_path / ".d.h5.again.tmp.h5").write_bytes(b"")
    write_artifact(out, "dataset", {"a": np.arange(3)})
    assert sorted(path.name for path in tmp_path.iterdir()) == [".other.h5.k1ll3d.tmp.h5", "d.h5"]


def test_7_written_files_have_the_permissions_of_the_umask(tmp_path):
    previous = os.umask(0o022)
    try:
        artifact = write_artifact(tmp_path / "a.h5", "dataset", {"a": np.arange(3)})
        text = write_text(tmp_path / "t.csv", "a\n1\n")
        os.umask(0o077)
        private = write_text(tmp_path / "p.csv", "a\n")
    finally:
        os.umask(previous)
    assert stat.S_IMODE(artifact.stat().st_mode) == 0o644 and stat.S_IMODE(text.stat().st_mode) == 0o644
    assert stat.S_IMODE(private.stat().st_mode) == 0o600


# --- 8. unwritable results, YAML syntax errors --------------------------------------------------

def test_8_an_unwritable_results_directory_is_one_line_naming_it(tmp_path):
    (tmp_path / "results").write_text("a file where the results directory should be")
    with pytest.raises(UserError, match=r"results/tiny/forget_sets: cannot write results here \(.*results is not "
                                        r"a directory\)"):
        write_artifact(tmp_path / "results" / "tiny" / "forget_sets" / "r.h5", "dataset", {"a": np.arange(2)})
    with pytest.raises(UserError, match="cannot write results here"):
        check_writable_directory(tmp_path / "results" / "tiny")
    assert check_writable_directory(tmp_path / "new" / "dir") == tmp_path / "new" / "dir"


def test_8_a_yaml_syntax_error_names_the_file_line_and_column(tmp_path, capsys):
    path = tmp_path / "preset.yaml"
    path.write_text("experiment: x\nforget_sets:\n  a: {kind: random, size: 3\n  b: 4\n")
    with pytest.raises(UserError, match=rf"{path}, line 4, column 4: YAML syntax error"):
        load_config_file(path)
    assert cli.main(["check-config", str(path), "--schema", SCHEMA]) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith(f"unlearnflow: error: {path}, line 4, column 4") and "\n" not in error
    path.write_text(json.dumps({"forget_sets": {"a": {"kind": "random", "size": 3}}}))
    assert cli.main(["check-config", str(path), "--schema", SCHEMA]) == 0


def test_check_config_validates_every_experiment_and_names_the_entry(tmp_path, capsys):
    """Issue 19, item 10: an entry of ``experiments:`` the workflow refuses is refused here too,
    at its own path; a valid one is listed."""
    path = tmp_path / "two.yaml"
    main = {"forget_sets": {"a": {"kind": "random", "size": 3}}}
    path.write_text(json.dumps({**main, "experiments": {"small": {"oracles": {"models": 3}}}}))
    assert cli.main(["check-config", str(path), "--schema", SCHEMA]) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("unlearnflow: error: config: experiments.small.oracles.models: 3 is too few"), error
    path.write_text(json.dumps({**main, "experiments": {"small": {"methods": {"gradient_ascent": {}}}}}))
    assert cli.main(["check-config", str(path), "--schema", SCHEMA]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert len(printed) == 2 and "experiment small" in printed[1] and "methods gradient_ascent" in printed[1]


# --- also: forget sets by explicit indices --------------------------------------------------------

def test_a_forget_set_of_explicit_indices_from_the_config_or_a_file(world, tmp_path):
    data = str(world / "data.h5")
    stages.make_forget_set(name="mine", spec={"kind": "indices", "indices": [5, 1, 9]}, data=data, seed=0,
                           out=str(tmp_path / "mine.h5"))
    from unlearnflow.core.artifacts import read_forget_set
    assert read_forget_set(tmp_path / "mine.h5").indices.tolist() == [1, 5, 9]
    (tmp_path / "ids.txt").write_text("# records to forget\n3, 4\n7\n")
    stages.make_forget_set(name="f", spec={"kind": "indices", "file": str(tmp_path / "ids.txt")}, data=data, seed=0,
                           out=str(tmp_path / "f.h5"))
    assert read_forget_set(tmp_path / "f.h5").indices.tolist() == [3, 4, 7]
    with pytest.raises(UserError, match="index 500 is out of range"):
        stages.make_forget_set(name="x", spec={"kind": "indices", "indices": [1, 500]}, data=data, seed=0,
                               out=str(tmp_path / "x.h5"))
    with pytest.raises(UserError, match="contains all 200 training points"):
        stages.make_forget_set(name="x", spec={"kind": "indices", "indices": list(range(200))}, data=data, seed=0,
                               out=str(tmp_path / "x.h5"))


@pytest.mark.parametrize("spec, message", [
    ({"kind": "indices", "indices": [1, 1]}, "index 1 appears 2 times"),
    ({"kind": "indices", "indices": []}, "contains no indices"),
    ({"kind": "indices", "indices": [-2, 3]}, "index -2 is negative"),
    ({"kind": "indices", "indices": ["a"]}, "must be a list of integers"),
    ({"kind": "indices"}, "exactly one of 'indices'"),
    ({"kind": "indices", "file": "no/such.txt"}, "cannot read the index file 'no/such.txt'"),
])
def test_indices_forget_sets_are_validated_with_the_config(spec, message):
    with pytest.raises(UserError, match=message):
        validate_config(config_with(forget_sets={"mine": spec}), load_schema(SCHEMA))


def test_a_bad_line_of_an_index_file_is_named(tmp_path):
    (tmp_path / "ids.txt").write_text("1\n2 x3\n")
    with pytest.raises(UserError, match=r"ids.txt, line 2: 'x3' is not an integer index"):
        validate_config(config_with(forget_sets={"f": {"kind": "indices", "file": str(tmp_path / "ids.txt")}}),
                        load_schema(SCHEMA))


# --- one evaluation job judges every method of a forget set ---------------------------------------

def test_methods_evaluated_in_one_job_get_the_rows_each_gets_alone(world, tmp_path):
    results = tmp_path / "results" / "tiny"
    shutil.copytree(world, results)
    gradient_descent(results, [0.01, 0.1], "unlearned/gd.h5")
    evaluate(results, unlearned="unlearned/gd.h5", method="gradient_descent", out="alone")
    methods = {"do_nothing": "originals.h5", "gradient_descent": "unlearned/gd.h5"}
    stages.evaluate(data=str(results / "data.h5"), forget_set=str(results / "forget_sets" / "r.h5"),
                    originals=str(results / "originals.h5"), oracles=str(results / "oracles" / "r.h5"),
                    method=list(methods), unlearned=[str(results / path) for path in methods.values()],
                    out_h5=[str(results / "together" / f"{m}.h5") for m in methods],
                    out_csv=[str(results / "together" / f"{m}.csv") for m in methods], threads=1)
    alone, together = (read_csv(results / folder / name) for folder, name in
                       (("alone", "e.csv"), ("together", "gradient_descent.csv")))
    assert [row["config"] for row in together] == ["default", "lr=0.01", "lr=0.1"] and len(alone) == len(together)
    for mine, theirs in zip(alone, together):
        assert mine.keys() == theirs.keys()
        assert all(mine[key] == theirs[key] or (isinstance(mine[key], float) and math.isnan(mine[key])
                                                and math.isnan(theirs[key])) for key in mine), (mine, theirs)
    assert read_csv(results / "together" / "do_nothing.csv")[0]["method"] == "do_nothing"
    with pytest.raises(UserError, match="one --unlearned, --out-h5, --out-csv"):
        stages.evaluate(data=str(results / "data.h5"), forget_set=str(results / "forget_sets" / "r.h5"),
                        originals=str(results / "originals.h5"), oracles=str(results / "oracles" / "r.h5"),
                        method=list(methods), unlearned=[str(results / "originals.h5")],
                        out_h5=[str(results / "x.h5")], out_csv=[str(results / "x.csv")], threads=1)
