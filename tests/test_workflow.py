"""The Snakemake workflow: lint, planning, a real run, idempotence and targeted invalidation."""

import copy
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from workflow_runs import REPO, dry_run_jobs, snakemake

from unlearnflow.config import experiments, load_config_file, load_schema, validate_config
from unlearnflow.core.artifacts import concatenate_banks, read_bank, read_dataset, read_forget_set
from unlearnflow.core.store import read_artifact
from unlearnflow.dmm.datamodel_set import fit_datamodel_set, read_calibration, read_datamodels
from unlearnflow.errors import UserError
from unlearnflow.evaluation.rows import read_csv
from unlearnflow.runner import read_unlearned

SCHEMA = REPO / "workflow" / "schemas" / "config.schema.yaml"

TINY = {
    "experiment": "tiny",
    "progress": False,
    "device": "cpu",
    "model": {"arch": "mlp", "options": {"hidden": [16]}},
    "training": {"epochs": 2, "batch_size": 64, "lr": 0.1},
    "originals": {"models": 3, "chunk_size": 2},
    "oracles": {"models": 4, "chunk_size": 2},
    "forget_sets": {"r5": {"kind": "random", "size": 5}, "c7": {"kind": "class_sample", "class": 7, "size": 4}},
    "evaluation": {"ulira": {"base_models": 8, "forget_sets_per_model": 2, "forget_size": 2, "pool_size": 12}},
}


#: a linear experiment: 4x4-pooled digits features, bias-free linear models trained to optimum with
#: their own objective noise (source-free unlearning, issue 11)
LINEAR = {**TINY, "features": {"backbone": "identity", "pool": 2}, "model": {"arch": "linear", "options": {"bias": False}},
          "training": {"optimizer": "lbfgs", "loss": "squared", "lam": 0.001, "noise_std": 0.1},
          "originals": {"models": 3, "chunk_size": 3}, "oracles": {"models": 4, "chunk_size": 4},
          "forget_sets": {"r30": {"kind": "random", "size": 30}},
          "methods": {"newton_certified": {}, "newton_source_free": {"grid": {"variant": ["corrected"]}},
                      "jit": {"hyperparameters": {"sigma": 0.05}}}}


def planned_jobs(workdir: Path, *args: str) -> dict[str, int]:
    """Jobs per rule that a dry run plans (empty when there is nothing to do)."""
    output = snakemake(workdir, "--dry-run", *args).stdout
    if "Nothing to be done" in output:
        return {}
    table = output.split("Job stats:")[1].split("total")[0]
    return {rule: int(count) for rule, count in re.findall(r"^(\w+)\s+(\d+)\s*$", table, re.M)}


def write_config(workdir: Path, config: dict) -> None:
    (workdir / "config.yaml").write_text(yaml.safe_dump(config))


@pytest.fixture
def tiny(tmp_path):
    write_config(tmp_path, TINY)
    return tmp_path


def test_lint_is_clean():
    result = subprocess.run([sys.executable, "-m", "snakemake", "--lint"], cwd=REPO, capture_output=True, text=True)
    assert "Congratulations, your workflow is in a good condition" in result.stdout + result.stderr, result.stdout


@pytest.mark.parametrize("path", [REPO / "config.yaml", *sorted((REPO / "config").glob("*.yaml"))],
                         ids=lambda p: p.name)
def test_default_config_and_presets_are_valid(path):
    config = validate_config(yaml.safe_load(path.read_text()), load_schema(SCHEMA))
    assert config["originals"]["models"] >= 50 and config["oracles"]["models"] >= 50  # KLOM's noise needs >= 50
    assert config["forget_sets"]


def test_dry_run_plans_the_expected_jobs(tiny):
    assert planned_jobs(tiny) == {"prepare_data": 1, "forget_sets": 2, "train_originals": 2, "gather_originals": 1,
                                  "train_oracles": 4, "gather_oracles": 2, "retrain": 2, "ulira_base_models": 1,
                                  "ulira": 2, "evaluate": 2, "report": 1, "all": 1}


DATAMODELS = {
    "methods": {"dm_direct": {"grid": {"construction": ["logit", "margin_shift"]}},
                "dmm": {"hyperparameters": {"epochs": 2, "calibrated": True}}},
    "subset_models": {"models": 40, "chunk_size": 20},
    # ridge: a lasso path with 30 models for 1,257 features converges slowly (minutes)
    "datamodels": {"estimator": "ridge", "heldout_models": 10, "options": {"alphas": [0.1, 1.0]},
                   "calibration_set": {"kind": "random", "size": 5}, "fit_jobs": 4},
}


def test_dry_run_with_datamodel_methods_plans_subset_models_datamodels_and_calibration(tmp_path):
    write_config(tmp_path, {**TINY, **DATAMODELS})
    assert planned_jobs(tmp_path) == {"prepare_data": 1, "forget_sets": 3, "train_originals": 2, "gather_originals": 1,
                                      "train_oracles": 6, "gather_oracles": 3, "retrain": 2, "ulira_base_models": 1,
                                      "ulira": 4, "train_subset_models": 2, "fit_datamodels": 4, "gather_datamodels": 1,
                                      "calibrate_datamodels": 1, "unlearn": 4, "evaluate": 2, "report": 1, "all": 1}


def fit_commands(workdir: Path) -> list[str]:
    """The planned fit-datamodels command lines."""
    plan = snakemake(workdir, "--dry-run", "--printshellcmds").stdout
    return [line for line in plan.splitlines() if "unlearnflow fit-datamodels" in line]


def fitted_spec(command: str) -> dict:
    return json.loads(re.search(r"--spec '([^']+)'", command).group(1))


def test_the_fit_is_scattered_over_fit_jobs_and_fits_only_what_the_methods_read(tmp_path):
    # DMM alone (per-logit targets): the logits of the training points, over 3 jobs
    write_config(tmp_path, {**TINY, **DATAMODELS, "methods": {"dmm": {"hyperparameters": {"epochs": 2}}},
                            "datamodels": {**DATAMODELS["datamodels"], "fit_jobs": 3}})
    commands = fit_commands(tmp_path)
    assert sorted(re.search(r"--chunk (\d+) --chunks 3 ", line).group(1) for line in commands) == ["0", "1", "2"]
    assert all(fitted_spec(line)["outputs"] == ["logits"] and fitted_spec(line)["splits"] == ["train"]
               for line in commands)
    # DM-DIRECT (evaluated on every split) with margin shifts only: margins of every point
    write_config(tmp_path, {**TINY, **DATAMODELS,
                            "methods": {"dm_direct": {"hyperparameters": {"construction": "margin_shift"}}}})
    commands = fit_commands(tmp_path)
    assert len(commands) == 4 and fitted_spec(commands[0])["splits"] == ["train", "val", "test"]
    assert fitted_spec(commands[0])["outputs"] == ["margins"]
    # outputs given explicitly are fitted as given; two jobs by default
    given = {key: value for key, value in DATAMODELS["datamodels"].items() if key != "fit_jobs"}
    write_config(tmp_path, {**TINY, **DATAMODELS, "methods": {"dmm": {}},
                            "datamodels": {**given, "outputs": ["margins", "logits"]}})
    commands = fit_commands(tmp_path)
    assert len(commands) == 2 and fitted_spec(commands[0])["outputs"] == ["margins", "logits"]
    # subset models keep their weights only when asked to
    def train_commands() -> list[str]:
        plan = snakemake(tmp_path, "--dry-run", "--printshellcmds").stdout
        return [line for line in plan.splitlines() if "unlearnflow train " in line and "--role subset" in line]
    assert train_commands() and all("--outputs-only" in line for line in train_commands())
    write_config(tmp_path, {**TINY, **DATAMODELS, "methods": {"dmm": {}},
                            "subset_models": {**DATAMODELS["subset_models"], "store_weights": True}})
    assert train_commands() and not any("--outputs-only" in line for line in train_commands())


def test_trak_fits_from_the_originals_and_calibration_is_built_only_when_used(tmp_path):
    trak = {**DATAMODELS, "methods": {"dm_direct": {"hyperparameters": {"construction": "margin_shift"}}},
            "subset_models": {"models": 12, "chunk_size": 6},
            "datamodels": {"estimator": "trak", "calibration_set": {"kind": "random", "size": 5}}}
    write_config(tmp_path, {**TINY, **trak})
    jobs = planned_jobs(tmp_path)
    assert jobs["train_subset_models"] == 2 and "calibrate_datamodels" not in jobs
    assert jobs["forget_sets"] == 2 and jobs["train_oracles"] == 4  # no calibration set: nothing is calibrated
    plan = snakemake(tmp_path, "--dry-run", "--printshellcmds").stdout
    fits = [line for line in plan.splitlines() if "unlearnflow fit-datamodels" in line]
    assert len(fits) == 1 and "--chunk 0 --chunks 1 " in fits[0]  # trak is one job whatever fit_jobs says
    assert "--originals results/tiny/originals.h5" in fits[0]


@pytest.mark.slow
def test_real_run_with_datamodel_methods(tmp_path):
    # one forget set (the dry run above plans both): the run is about the datamodels' jobs
    write_config(tmp_path, {**TINY, **DATAMODELS, "forget_sets": {"r5": TINY["forget_sets"]["r5"]}})
    snakemake(tmp_path)
    results = tmp_path / "results" / "tiny"
    datamodels = read_datamodels(results / "datamodels.h5")
    n_points = sum(datamodels.split_sizes.values())
    assert datamodels.weights("logits").shape == (datamodels.split_sizes["train"], n_points, 10)
    assert datamodels.attrs["fitted_models"] == 30 and np.isfinite(datamodels.summary()["margins_lds"])
    # gathered from 4 jobs, it equals one fit of every point
    assert datamodels.attrs["fit_jobs"] == 4
    chunks = sorted((results / "subset_models").glob("chunk_*.h5"))
    # issue 22: a chunk stores masks and logits, not weights (subset_models.store_weights: false)
    assert not read_bank(chunks[0]).weights
    with pytest.raises(UserError, match="subset bank stores its models' masks and logits, not their weights"):
        read_bank(chunks[0]).load_models((64,), 10)
    subset = concatenate_banks([read_bank(path, with_weights=False) for path in chunks])
    data = read_dataset(results / "data.h5")
    labels = np.concatenate([data.y_train, data.y_val, data.y_test])
    logits = np.concatenate([subset.logits[split] for split in ("train", "val", "test")], axis=1)
    single = fit_datamodel_set(subset.train_masks, logits, labels, datamodels.split_sizes, "ridge", 10,
                               {"alphas": [0.1, 1.0]}, log=lambda _: None)
    for output in ("margins", "logits"):
        ours, theirs = datamodels.datamodels[output], single.datamodels[output]
        # a target whose two penalties tie in validation MSE up to rounding may choose either
        # (30 models for 1,257 points: at most 1 of the 17,970 logits seen); every other one is equal
        same = np.isclose(ours.alphas, theirs.alphas, rtol=1e-5)
        assert same.mean() > 0.99
        np.testing.assert_allclose(ours.weights[:, same], theirs.weights[:, same], rtol=0,
                                   atol=1e-4 * np.abs(theirs.weights).max())  # float32, an ill-conditioned Gram
        np.testing.assert_allclose(ours.bias[same], theirs.bias[same], atol=1e-4)
    scales = read_calibration(results / "datamodel_calibration.h5")
    assert set(scales) == {"logit", "logit/diagonal", "margin_shift", "margin_shift/diagonal"}
    assert all(np.isfinite(list(scales.values())))
    dmm = read_unlearned(results / "unlearned" / "dmm" / "r5.h5")["default"]
    assert dmm.attrs["precompute_seconds"] > 0 and dmm.weights
    summary = (results / "report" / "summary.md").read_text()
    assert summary.count("| dm_direct |") == 1 and summary.count("| dmm |") == 1
    assert planned_jobs(tmp_path) == {}


@pytest.mark.parametrize("change, message", [
    ({"training": {"epochs": "two"}}, "config: training.epochs: 'two' is not of type 'integer'"),
    ({"forget_sets": {"r5": {"kind": "random", "sise": 5}}}, "unknown key 'sise' for kind 'random'"),
    ({"modle": {}}, "'modle' was unexpected"),
    ({**DATAMODELS, "datamodels": {"heldout_models": 35}}, "cannot spare 35 held-out models"),
    ({**DATAMODELS, "datamodels": {"options": {"alpha": 1}}}, "unknown option(s) alpha for estimator lasso"),
    ({**DATAMODELS, "datamodels": {"estimator": "trak", "heldout_models": 10}}, "construction logit needs logits"),
    ({**DATAMODELS, "datamodels": {"fit_jobs": 0}}, "config: datamodels.fit_jobs: 0 is less than the minimum of 1"),
    ({**DATAMODELS, "datamodels": {"heldout_models": 10, "calibration_set": {"kind": "class", "class": 3}}},
     "kind must be random"),
    ({"methods": {"gradient_ascent": {"grid": {"lr": [0.01, -0.1]}}}},
     "config: methods.gradient_ascent.grid.lr[1]: -0.1 must be > 0"),
    ({"originals": {"models": 1, "chunk_size": 1}}, "config: originals.models: 1 is too few"),
    ({"forget_sets": {"r5": {"kind": "random", "size": -5}}}, "config: forget_sets.r5.size: -5 must be >= 1"),
    ({**LINEAR, "model": {"arch": "mlp"}}, "config: model: optimizer lbfgs trains bias-free linear models"),
    ({**LINEAR, "methods": {"newton_certified": {"hyperparameters": {"lam": 0.1}}}},
     "config: methods.newton_certified: lam comes from the training recipe (0.001)"),
    ({"features": {"backbone": "identity"}}, "config: features: extracted features are the inputs of linear models"),
    ({**LINEAR, **DATAMODELS, "methods": {"dm_direct": {}}},
     "config: methods.dm_direct: needs datamodels, fitted on subset models, which a linear experiment"),
    # issue 19, item 11: refused before the originals train, not when the Newton job runs
    ({"methods": {"newton_source_free": {}}},
     "config: methods.newton_source_free: unlearns linear models trained to optimum"),
    # issue 19, item 10: an error in an entry of experiments names its place there
    ({"experiments": {"{experiment}_small": {"originals": {"models": 1, "chunk_size": 1}}}},
     "config: experiments.{experiment}_small.originals.models: 1 is too few"),
])
def test_config_errors_are_one_line(tmp_path, change, message):
    write_config(tmp_path, {**TINY, **change})
    result = snakemake(tmp_path, "--dry-run", check=False)
    assert result.returncode != 0
    error_lines = [line for line in (result.stdout + result.stderr).splitlines() if line.strip()]
    assert len(error_lines) == 1 and message in error_lines[0], error_lines


def test_a_logs_folder_jobs_cannot_write_is_one_line_before_any_job(tmp_path):
    """Issue 19, item 13: the folders of the jobs' logs and benchmarks are checked with the results."""
    write_config(tmp_path, TINY)
    (tmp_path / "results" / "tiny").mkdir(parents=True)
    (tmp_path / "results" / "tiny" / "logs").write_text("not a folder")
    result = snakemake(tmp_path, "--dry-run", check=False)
    assert result.returncode != 0
    error_lines = [line for line in (result.stdout + result.stderr).splitlines() if line.strip()]
    assert error_lines == ["unlearnflow: error: results/tiny/logs: cannot write results here (results/tiny/logs is "
                           "not a directory); make the directory writable or choose another one"], error_lines


@pytest.mark.slow
def test_real_run_then_nothing_then_only_oracles_after_an_oracle_change(tiny):
    snakemake(tiny)
    results = tiny / "results" / "tiny"
    data = read_dataset(results / "data.h5")
    originals = read_bank(results / "originals.h5")
    assert list(originals.model_ids) == [0, 1, 2] and originals.train_masks.all()
    assert originals.logits["test"].shape == (3, len(data.y_test), 10)
    assert (originals.logits["test"].argmax(-1) == data.y_test).mean() > 0.7
    forget = read_forget_set(results / "forget_sets" / "r5.h5")
    oracles = read_bank(results / "oracles" / "r5.h5")
    assert oracles.attrs["role"] == "oracle/r5"
    assert not oracles.train_masks[:, forget.indices].any()
    assert oracles.train_masks.sum(1).tolist() == [len(data.y_train) - 5] * 4
    # the same model ids of different roles are different models
    assert not np.allclose(oracles.logits["test"][0], originals.logits["test"][0])
    for log in (results / "logs").rglob("*.log"):
        assert "Traceback" not in log.read_text(), log
    report = results / "report"
    assert sorted(p.name for p in report.iterdir()) == sorted(
        ["summary.md", "summary.csv", "klom_vs_compute.png", "entropy_r5.png", "entropy_c7.png",
         "mia_roc_r5.png", "mia_roc_c7.png"])
    summary = (report / "summary.md").read_text()
    assert summary.count("| do_nothing |") == 2 and summary.count("| retrain |") == 2

    assert planned_jobs(tiny) == {}
    snakemake(tiny, "--report", "report.html")
    html = (tiny / "report.html").read_text()
    assert "klom_vs_compute.png" in html and "noise floor" in html.lower()

    write_config(tiny, {**TINY, "oracles": {**TINY["oracles"], "training": {"epochs": 3}}})
    assert planned_jobs(tiny) == {"train_oracles": 4, "gather_oracles": 2, "retrain": 2, "evaluate": 2, "report": 1,
                                  "all": 1}

    write_config(tiny, {**TINY, "originals": {"models": 4, "chunk_size": 2}})
    assert planned_jobs(tiny) == {"train_originals": 1, "gather_originals": 1, "evaluate": 2, "report": 1,
                                  "all": 1}  # chunk 2-3 only

    # issue 19, item 5: a forget set added to the finished run is built, evaluated and reported,
    # and nothing is retrained for the others
    added = {**TINY, "forget_sets": {**TINY["forget_sets"], "r6": {"kind": "random", "size": 6}}}
    write_config(tiny, added)
    assert planned_jobs(tiny) == {"forget_sets": 1, "train_oracles": 2, "gather_oracles": 1, "retrain": 1,
                                  "evaluate": 1, "report": 1, "all": 1}
    snakemake(tiny)
    assert {"entropy_r6.png", "mia_roc_r6.png"} <= {p.name for p in report.iterdir()}
    rows = read_csv(report / "summary.csv")
    assert {row["forget_set"] for row in rows} == {"r5", "c7", "r6"}
    assert planned_jobs(tiny) == {}


def test_a_plain_rerun_redoes_the_jobs_that_failed_until_their_input_is_mended(tmp_path):
    """Issue 19, item 6: after evaluations failed on a wrong input (another set's oracles, copied
    over r5's and given r5's own time stamp, so that nothing looks out of date), a plain rerun
    redoes them and fails with the same line while the input is wrong; rebuilt, the run completes."""
    write_config(tmp_path, TINY)
    snakemake(tmp_path)
    oracles = tmp_path / "results" / "tiny" / "oracles"
    stamp = (oracles / "r5.h5").stat()
    shutil.copyfile(oracles / "c7.h5", oracles / "r5.h5")
    os.utime(oracles / "r5.h5", ns=(stamp.st_atime_ns, stamp.st_mtime_ns))
    assert planned_jobs(tmp_path) == {}  # Snakemake sees nothing out of date

    def failure_line(*args):
        failed = snakemake(tmp_path, *args, check=False)
        assert failed.returncode != 0
        return next(line for line in failed.stderr.splitlines() if line.startswith("unlearnflow: error:")), failed
    first, _ = failure_line("--forcerun", "evaluate")
    assert "results/tiny/oracles/r5.h5: expected a model_bank with role oracle/r5, found role oracle/c7" in first
    evaluation = tmp_path / "results" / "tiny" / "evaluation"
    assert not list(evaluation.rglob("r5.*")) and (tmp_path / "results" / "tiny" / "report" / "summary.md").exists()
    again, rerun = failure_line()
    assert again == first
    assert "output(s) of jobs that failed in an earlier run are missing (results/tiny/evaluation/" in rerun.stderr
    advice = re.search(r"rebuild it: snakemake (--cores 1 --forcerun \S+)", first).group(1)
    snakemake(tmp_path, *advice.split())
    assert {p.name for p in evaluation.rglob("r5.*")} == {"r5.h5", "r5.csv"}
    assert planned_jobs(tmp_path) == {}


#: what a deletion request's job may read besides: its request file, its extracted samples and the
#: certificate of the request before it (indices, hashes and readouts, no inputs)
REQUEST_FILES = (r"requests/\w+/[\w.-]+\.yaml", r"results/\w+/request_samples/[\w.-]+\.h5",
                 r"results/\w+/ledger/model_\d+/[\w.-]+\.json")


def retain_data_inputs(job: dict, also_allowed: tuple[str, ...] = ()) -> list[str]:
    """Inputs of a job that hold retain data: anything but the models alone, the forget samples,
    side artifacts the registry declares free of retain data and the patterns `also_allowed`."""
    from unlearnflow.registry import ARTIFACTS
    allowed = [r"results/\w+/original_models\.h5", r"results/\w+/forget_samples/[\w.@-]+\.h5", *also_allowed] + [
        "results/\\w+/" + re.escape(spec.path).replace(re.escape("{forget_set}"), "[\\w.@-]+")
        for spec in ARTIFACTS.values() if not spec.contains_retain_data]
    return [path for path in job["input"] if not any(re.fullmatch(pattern, path) for pattern in allowed)]


SEQUENCE = {**TINY, "forget_sets": {**TINY["forget_sets"], "inc": {"kind": "incremental", "requests": 2, "size": 6}},
            "methods": {"gradient_ascent": {"grid": {"lr": [0.01, 0.1]}}, "gradient_descent": {}}}


def test_no_job_of_a_source_free_method_reads_retain_data(tmp_path):
    from unlearnflow.registry import METHODS
    write_config(tmp_path, SEQUENCE)
    jobs = [job for job in dry_run_jobs(tmp_path) if job["rule"] == "unlearn"]
    source_free = [job for job in jobs if METHODS[job["wildcards"]["method"]].source_free]
    assert {job["wildcards"]["method"] for job in source_free} == {"gradient_ascent"}
    assert len(source_free) == 3
    for job in source_free:
        assert retain_data_inputs(job) == [], job
        assert not any(path.endswith("/data.h5") for path in job["input"])
    # the check can fail: a method that is not source-free reads data.h5 and the original bank
    other = next(job for job in jobs if job["wildcards"]["method"] == "gradient_descent")
    assert "results/tiny/data.h5" in retain_data_inputs(other)


def test_no_source_free_job_of_a_linear_experiment_reads_the_features(tmp_path):
    """features.h5 holds every training input: the source-free Newton method and JiT read the
    forget samples and the models alone; Newton (+) reads the features (the check can fail)."""
    write_config(tmp_path, LINEAR)
    jobs = dry_run_jobs(tmp_path)
    unlearn = {job["wildcards"]["method"]: job for job in jobs if job["rule"] == "unlearn"}
    assert set(unlearn) == {"newton_certified", "newton_source_free", "jit"}
    for method in ("newton_source_free", "jit"):
        assert retain_data_inputs(unlearn[method]) == [], unlearn[method]
        assert sorted(unlearn[method]["input"]) == ["results/tiny/forget_samples/r30.h5",
                                                    "results/tiny/original_models.h5"]
    assert retain_data_inputs(unlearn["newton_certified"]) == ["results/tiny/features.h5",
                                                               "results/tiny/forget_sets/r30.h5",
                                                               "results/tiny/originals.h5"]
    extract = next(job for job in jobs if job["rule"] == "extract_features")
    assert extract["input"] == ["results/tiny/data.h5"]
    # every later stage reads the features, never the raw data; U-LiRA does not run on linear banks
    later = [job for job in jobs if job["rule"] not in ("prepare_data", "extract_features", "all")]
    assert not any(path.endswith("/data.h5") for job in later for path in job["input"])
    assert not any(job["rule"].startswith("ulira") for job in jobs)


PGU = {**SEQUENCE, "methods": {**SEQUENCE["methods"], "pgu": {}, "pgu_tuned": {"grid": {"lr": [3.0, 10.0]}}}}


def test_pgu_plans_its_gradient_space_once_and_its_unlearn_jobs_read_no_retain_data(tmp_path):
    """The cache reads the training set once; PGU's unlearn jobs (a sequence included) read the
    forget samples, the models alone and the cache, as the registry declares."""
    write_config(tmp_path, PGU)
    jobs = dry_run_jobs(tmp_path)
    cache = [job for job in jobs if job["rule"] == "gradient_space"]
    assert len(cache) == 1
    assert sorted(cache[0]["input"]) == ["results/tiny/data.h5", "results/tiny/original_models.h5"]
    pgu = [job for job in jobs if job["rule"] == "unlearn" and job["wildcards"]["method"].startswith("pgu")]
    assert {(job["wildcards"]["method"], job["wildcards"]["forget_set"]) for job in pgu} == {
        (method, forget_set) for method in ("pgu", "pgu_tuned") for forget_set in ("r5", "c7", "inc")}
    for job in pgu:
        assert "results/tiny/gradient_space.h5" in job["input"]
        assert retain_data_inputs(job) == [], job
    plan = snakemake(tmp_path, "--dry-run", "--printshellcmds").stdout
    assert "--side gradient_space=results/tiny/gradient_space.h5" in plan
    assert "python -m unlearnflow gradient-space --stage-version 1" in plan


@pytest.mark.slow
def test_real_run_of_pgu_on_a_sequence(tmp_path):
    """The cache, then PGU on two requests: each request's certificate, the cache's cost beside it."""
    config = {**TINY, "forget_sets": {"inc": SEQUENCE["forget_sets"]["inc"]}, "methods": {"pgu_tuned": {}},
              "originals": {"models": 3, "chunk_size": 3}}
    write_config(tmp_path, config)
    results = tmp_path / "results" / "tiny"
    snakemake(tmp_path, "results/tiny/unlearned/pgu_tuned/inc.h5")
    steps = [read_unlearned(results / "unlearned" / "pgu_tuned" / "inc.h5", step)["default"] for step in (0, 1)]
    for step in steps:
        assert step.attrs["precompute_seconds"] > 0
        assert len(step.attrs["certificates"]) == 3 and all(c["k"] for c in step.attrs["certificates"])
    assert "Traceback" not in (results / "logs" / "gradient_space.log").read_text()


def test_a_sequence_is_evaluated_after_every_request_against_its_prefix_oracles(tmp_path):
    write_config(tmp_path, SEQUENCE)
    jobs = dry_run_jobs(tmp_path)
    oracles = {job["wildcards"]["forget_set"] for job in jobs if job["rule"] == "gather_oracles"}
    assert oracles == {"r5", "c7", "inc@1", "inc@2"}
    unlearn = {job["wildcards"]["forget_set"] for job in jobs if job["rule"] == "unlearn"}
    assert unlearn == {"r5", "c7", "inc"}  # one job unlearns the whole sequence, request by request
    evaluated = [job for job in jobs if job["rule"] == "evaluate" and job["wildcards"]["forget_set"].startswith("inc")]
    assert len(evaluated) == 2
    for job in evaluated:
        step = job["wildcards"]["forget_set"]
        assert f"results/tiny/oracles/{step}.h5" in job["input"]
        assert "results/tiny/unlearned/gradient_ascent/inc.h5" in job["input"]
        assert f"results/tiny/evaluation/gradient_ascent/{step}.csv" in job["output"]
    plan = snakemake(tmp_path, "--dry-run", "--printshellcmds").stdout
    assert "--forget-set results/tiny/forget_sets/inc.h5 --requests 1 --originals" in plan
    assert re.search(r"train .*--role oracle --forget-set results/tiny/forget_sets/inc.h5 --requests 2", plan)


@pytest.mark.slow
def test_real_run_of_a_sequence_keeps_every_step(tmp_path):
    config = {**SEQUENCE, "forget_sets": {"inc": SEQUENCE["forget_sets"]["inc"]},
              "methods": {"gradient_ascent": {}}}
    write_config(tmp_path, config)
    snakemake(tmp_path)
    results = tmp_path / "results" / "tiny"
    originals = read_bank(results / "originals.h5")
    first, second = (read_unlearned(results / "unlearned" / "gradient_ascent" / "inc.h5", step)["default"]
                     for step in (0, 1))
    name = next(iter(originals.weights))
    assert not np.array_equal(first.weights[name], originals.weights[name])
    assert not np.array_equal(second.weights[name], first.weights[name])
    for step in ("inc@1", "inc@2"):
        oracles = read_bank(results / "oracles" / f"{step}.h5")
        assert oracles.attrs["role"] == f"oracle/{step}"
    assert read_bank(results / "oracles" / "inc@2.h5").train_masks.sum(1)[0] == \
        read_bank(results / "oracles" / "inc@1.h5").train_masks.sum(1)[0] - 6
    summary = (results / "report" / "summary.md").read_text()
    assert "## Forget set `inc@1`" in summary and "## Forget set `inc@2`" in summary
    # a new unlearning hyper-parameter reruns unlearning, never training
    write_config(tmp_path, {**config, "methods": {"gradient_ascent": {"hyperparameters": {"lr": 0.02}}}})
    planned = planned_jobs(tmp_path)
    assert planned and not any(rule.startswith(("train", "gather", "retrain", "ulira_base")) for rule in planned)
    assert planned["unlearn"] == 1 and planned["evaluate"] == 2


def test_resources_come_from_the_config_and_every_rule_has_defaults(tmp_path):
    from unlearnflow.core.stage_table import STAGES
    listing = subprocess.run([sys.executable, "-m", "snakemake", "--list-rules"], cwd=REPO, capture_output=True,
                             text=True).stdout
    prefixes = tuple(f"{name}_" for name in list(experiments(load_config_file(REPO / "config.yaml")))[1:])
    rules = [line.split()[0] for line in listing.splitlines() if line.strip() and not line[0].isspace()]
    assert prefixes and any(rule.startswith(prefixes) for rule in rules)  # the default run's other experiments
    rules = [rule for rule in rules if not rule.startswith(prefixes)]
    assert set(rules) - {"all", "theory", "requests"} == set(STAGES)
    write_config(tmp_path, {**SEQUENCE, "device": "cuda",
                            "resources": {"unlearn": {"mem_mb": 9000, "runtime": 7}, "default": {"runtime": 50}}})
    jobs = dry_run_jobs(tmp_path)
    unlearn = next(job for job in jobs if job["rule"] == "unlearn")
    assert "mem_mb=9000" in unlearn["resources"] and "runtime=7" in unlearn["resources"]
    assert "gpu=1" in unlearn["resources"]  # the experiment runs on cuda
    evaluate = next(job for job in jobs if job["rule"] == "evaluate")
    assert "runtime=50" in evaluate["resources"] and "gpu" not in evaluate["resources"]
    write_config(tmp_path, {**TINY, "resources": {"unlaern": {"mem_mb": 1}}})
    result = snakemake(tmp_path, "--dry-run", check=False)
    assert result.returncode != 0 and "resources: unknown rule(s) unlaern" in result.stdout + result.stderr


def test_the_datamodels_chain_goes_first_among_the_jobs_ready_to_run(tmp_path):
    """Issue 22: subset models, the fit, its gather and the calibration carry the stage table's
    priority into the plan (the longest path of the default run); every other job has none."""
    from unlearnflow.core.stage_table import CRITICAL_PATH, STAGES
    config = load_config_file(REPO / "config.yaml")
    config.pop("experiments")
    write_config(tmp_path, config)
    priorities = {}
    for job in dry_run_jobs(tmp_path):
        priorities.setdefault(job["rule"], set()).add(job["priority"])
    chain = {"train_subset_models", "fit_datamodels", "gather_datamodels", "calibrate_datamodels"}
    assert {rule: {STAGES[rule].priority} for rule in priorities if rule in STAGES} == {
        rule: found for rule, found in priorities.items() if rule in STAGES}
    assert {rule for rule, found in priorities.items() if found != {0}} == chain
    assert all(priorities[rule] == {CRITICAL_PATH} for rule in chain)


def test_several_experiments_run_the_same_rules_under_their_own_results(tmp_path):
    second = {"model": {"arch": "linear"}, "forget_sets": {"r3": {"kind": "random", "size": 3}},
              "methods": {"gradient_ascent": {}}}
    write_config(tmp_path, {**TINY, "experiments": {"tiny_linear": second}})
    jobs = dry_run_jobs(tmp_path)
    main = [job for job in jobs if not job["rule"].startswith("tiny_linear_") and job["rule"] != "all"]
    other = [job for job in jobs if job["rule"].startswith("tiny_linear_")]
    assert {job["rule"] for job in other} >= {"tiny_linear_train_originals", "tiny_linear_unlearn",
                                              "tiny_linear_report"}
    assert all("results/tiny_linear/" in path for job in other for path in job["input"])
    assert not any("results/tiny_linear/" in path for job in main for path in job["input"])
    plan = snakemake(tmp_path, "--dry-run", "--printshellcmds").stdout
    assert '"arch":"linear"' in plan and '"arch":"mlp"' in plan
    write_config(tmp_path, {**TINY, "experiments": {"tiny": second}})
    result = snakemake(tmp_path, "--dry-run", check=False)
    assert result.returncode != 0 and "an experiment of that name already runs" in result.stdout + result.stderr


@pytest.mark.slow
def test_a_public_backbone_keeps_its_training_points_out_of_every_forget_set(tmp_path):
    """The workflow's extract_features trains the public backbone and drops its points from the
    training split: the forget set drawn downstream indexes the private points alone."""
    public = {"backbone": "public", "public_fraction": 0.25, "arch": "mlp", "options": {"hidden": [12]},
              "training": {"epochs": 2, "lr": 0.05, "batch_size": 32}}
    write_config(tmp_path, {**LINEAR, "features": public})
    snakemake(tmp_path, "results/tiny/forget_sets/r30.h5")
    results = tmp_path / "results" / "tiny"
    raw, features = read_dataset(results / "data.h5"), read_dataset(results / "features.h5")
    seeds = read_artifact(results / "features.h5", "dataset", names=()).provenance["seeds"]
    public_points, private = seeds["public_indices"], np.array(seeds["private_indices"])
    assert seeds["public_size"] == len(public_points) == round(0.25 * len(raw.y_train))
    assert features.x_train.shape == (len(raw.y_train) - len(public_points), 12)
    forget = read_forget_set(results / "forget_sets" / "r30.h5")
    assert len(forget.indices) == 30 and not set(private[forget.indices]) & set(public_points)


def evaluated_configs(results: Path, method: str, forget_set: str) -> dict[str, dict]:
    """A method's evaluation rows on a forget set, by configuration."""
    return {row["config"]: row for row in read_csv(results / "evaluation" / method / f"{forget_set}.csv")}


@pytest.mark.slow
def test_real_run_of_a_linear_experiment_lands_newton_on_the_retrained_weights(tmp_path):
    """Newton (+) on the squared loss is exact: distance ~0 to oracle k, which shares original k's
    objective noise (float32 storage limits it to ~1e-5); do_nothing is at distance 1 by
    definition; the certificates travel through the unlearned artifact into the report."""
    write_config(tmp_path, LINEAR)
    snakemake(tmp_path)
    results = tmp_path / "results" / "tiny"
    features = read_dataset(results / "features.h5")
    assert features.x_train.shape[1] == 16
    originals = read_bank(results / "originals.h5")
    assert originals.attrs["training"]["n_train"] == len(features.y_train)

    def rows(method):
        return evaluated_configs(results, method, "r30")

    assert float(rows("do_nothing")["default"]["weight_distance"]) == 1.0
    assert float(rows("newton_certified")["default"]["weight_distance"]) < 1e-3
    assert float(rows("newton_source_free")["variant=corrected"]["weight_distance"]) < 1.0
    certified, corrected = rows("newton_certified")["default"], rows("newton_source_free")["variant=corrected"]
    assert certified["cert_certified"] == 1.0 and certified["cert_residual_bound_violated"] == 0.0
    assert certified["cert_epsilon"] < 1e-2 and certified["cert_delta"] == 1e-5
    assert corrected["cert_certified"] == 0.0 and corrected["paper_lemma1_violated"] == 1.0
    unlearned = read_unlearned(results / "unlearned" / "newton_certified" / "r30.h5")["default"]
    certificates = unlearned.attrs["certificates"]
    assert len(certificates) == 3 and all(c["n"] == len(features.y_train) and c["n_forget"] == 30
                                          for c in certificates)
    assert {c["loss"] for c in certificates} == {"squared"} and {c["lam"] for c in certificates} == {0.001}
    source_free = read_unlearned(results / "unlearned" / "newton_source_free" / "r30.h5")
    assert {c["variant"] for c in source_free["variant=corrected"].attrs["certificates"]} == {"corrected"}
    summary = (results / "report" / "summary.md").read_text()
    assert "Linear models: distance to the retrained weights" in summary
    assert re.search(r"\| newton_certified \| default \| [^|]+ \| [0-9.e-]+ \| [0-9.e-]+ \|", summary)
    assert planned_jobs(tmp_path) == {}


#: a mixed-linear experiment: an MLP (hidden 4, 2) trained on 25% public digits, linearised in its
#: last two layers (P = 4*2+2 + 2*10+10 = 40 parameters), quadratic loss (source-free unlearning, Sec. 3);
#: m = 2 P(P+1)/2 perturbations: at m = P(P+1)/2 = 820 the APG fit does not converge in its 2,000
#: iterations and its error in H_F's small eigen-directions (H_F's condition number is ~2e4) costs
#: a distance of ~10 for the corrected step (0.43 at m = 1,640, as with the exact H_F)
MIXED = {**LINEAR, "features": {"backbone": "public", "public_fraction": 0.25, "arch": "mlp",
                                "options": {"hidden": [4, 2]}, "training": {"epochs": 5, "lr": 0.05, "batch_size": 32},
                                "mixed_linear": {"layers": 2}},
         "training": {"optimizer": "lbfgs", "loss": "mixed_squared", "lam": 0.001, "noise_std": 0.1},
         "methods": {"newton_certified": {},
                     "newton_source_free": {"hyperparameters": {"m": 1640}, "grid": {"variant": ["corrected"]}}}}


@pytest.mark.slow
def test_real_run_of_a_mixed_linear_experiment(tmp_path):
    """The mixed-linear network runs through the linear experiment's stages: rows [f(x; w0), J(x)]
    of the private points, Newton (+) lands on the retrained parameters (float32 storage), the
    paper's source-free step overshoots and the corrected one does not."""
    write_config(tmp_path, MIXED)
    snakemake(tmp_path, "results/tiny/evaluation/newton_certified/r30.csv",
              "results/tiny/evaluation/newton_source_free/r30.csv", "results/tiny/evaluation/do_nothing/r30.csv")
    results = tmp_path / "results" / "tiny"
    features = read_dataset(results / "features.h5")
    assert features.x_train.shape[1] == 10 * (1 + 40)

    def rows(method):
        return evaluated_configs(results, method, "r30")

    assert float(rows("do_nothing")["default"]["weight_distance"]) == 1.0
    assert float(rows("newton_certified")["default"]["weight_distance"]) < 1e-2
    source_free = rows("newton_source_free")
    assert float(source_free["variant=corrected"]["weight_distance"]) < 1.0 < float(source_free["default"]["weight_distance"])
    unlearned = read_unlearned(results / "unlearned" / "newton_certified" / "r30.h5")["default"]
    assert {c["loss"] for c in unlearned.attrs["certificates"]} == {"mixed_squared"}
    assert {c["d"] for c in unlearned.attrs["certificates"]} == {40}


def write_requests(workdir: Path, experiment: str, requests: dict[str, tuple[str, str, list[int]]]) -> None:
    """requests/{experiment}/{name}.yaml for name -> (method, after, samples), on model 1."""
    folder = workdir / "requests" / experiment
    folder.mkdir(parents=True)
    for name, (method, after, samples) in requests.items():
        (folder / f"{name}.yaml").write_text(yaml.safe_dump({"model": 1, "after": after, "method": method,
                                                             "samples": samples}))


@pytest.mark.parametrize("config, source_free, data", [(TINY, "gradient_ascent", "results/tiny/data.h5"),
                                                       (LINEAR, "newton_source_free", "results/tiny/features.h5")])
def test_no_deletion_request_of_a_source_free_method_reads_retain_data(tmp_path, config, source_free, data):
    """A source-free method's request job reads its extracted samples, the models alone and the
    certificate before it; the extraction is the request's one job that reads the data set. The
    request of a method that is not source-free reads the data set (the check can fail)."""
    write_config(tmp_path, config)
    other = "gradient_descent" if config is TINY else "newton_certified"
    write_requests(tmp_path, "tiny", {"a": (source_free, "original", [3, 4]), "b": (other, "a", [5]),
                                      "c": ("random_labels_forget", "b", [6])})
    jobs = dry_run_jobs(tmp_path, "requests")
    requests = {job["wildcards"]["request"]: job for job in jobs if job["rule"] == "deletion_request"}
    assert sorted(requests["a"]["input"]) == ["requests/tiny/a.yaml", "results/tiny/original_models.h5",
                                              "results/tiny/request_samples/a.h5"]
    assert sorted(requests["c"]["input"]) == ["requests/tiny/c.yaml", "results/tiny/ledger/model_1/b.receipt.json",
                                              "results/tiny/original_models.h5", "results/tiny/request_samples/c.h5"]
    for name in ("a", "c"):
        assert retain_data_inputs(requests[name], REQUEST_FILES) == [], requests[name]
    assert retain_data_inputs(requests["b"], REQUEST_FILES) == [data]
    extraction = {job["wildcards"]["request"]: job["input"] for job in jobs if job["rule"] == "request_samples"}
    assert extraction == {"a": ["requests/tiny/a.yaml", data], "c": ["requests/tiny/c.yaml", data]}


@pytest.mark.slow
def test_a_bad_request_file_blocks_only_the_requests(tmp_path):
    """Issue 19, item 4: a misspelled method in a request is one line naming the file when the
    requests are asked for, and does not stop the experiment's own workflow."""
    write_config(tmp_path, TINY)
    write_requests(tmp_path, "tiny", {"a": ("gradient_ascnt", "original", [3, 4])})
    assert planned_jobs(tmp_path)["train_originals"] >= 1
    result = snakemake(tmp_path, "--dry-run", "requests", check=False)
    assert result.returncode != 0
    errors = [line for line in (result.stdout + result.stderr).splitlines() if "error" in line.lower()]
    assert len(errors) == 1 and errors[0].startswith(
        "unlearnflow: error: requests/tiny/a.yaml: method: unknown unlearning method 'gradient_ascnt' (known: "), errors


def test_deletion_requests_run_in_ledger_order(tmp_path):
    write_config(tmp_path, TINY)
    write_requests(tmp_path, "tiny", {"a": ("gradient_ascent", "original", [3, 4]), "b": ("gradient_ascent", "a", [5])})
    jobs = [job for job in dry_run_jobs(tmp_path, "requests") if job["rule"] == "deletion_request"]
    assert {job["wildcards"]["request"] for job in jobs} == {"a", "b"}
    later = next(job for job in jobs if job["wildcards"]["request"] == "b")
    assert "results/tiny/ledger/model_1/a.receipt.json" in later["input"]  # ledger order is the DAG's order
    snakemake(tmp_path, "requests")
    results = tmp_path / "results" / "tiny"
    ledger = json.loads((results / "ledger" / "model_1" / "ledger.json").read_text())
    assert [entry["request"] for entry in ledger["entries"]] == ["a", "b"]
    assert ledger["entries"][1]["model_hash_before"] == ledger["entries"][0]["model_hash_after"]
    certificate = json.loads((results / "ledger" / "model_1" / "b.json").read_text())
    assert certificate["source_free"] is True
    assert not list(results.glob("request_samples/*.h5"))  # temporary: no file keeps the forgotten inputs
    assert planned_jobs(tmp_path, "requests") == {}

    # issue 19, items 1 and 2: touching a processed request (a comment, a checkout) reruns its job,
    # which keeps every ledger file; changing what it asks is one line, and nothing is lost
    ledger_files = {path: path.read_bytes() for path in (results / "ledger" / "model_1").iterdir()
                    if not path.name.endswith(".receipt.json")}
    request_file = tmp_path / "requests" / "tiny" / "a.yaml"
    request_file.write_text(request_file.read_text() + "# reviewed\n")
    snakemake(tmp_path, "requests")
    assert {path: path.read_bytes() for path in ledger_files} == ledger_files
    request_file.write_text(request_file.read_text().replace("- 4", "- 7"))
    failed = snakemake(tmp_path, "requests", check=False)
    assert failed.returncode != 0
    causes = [line for line in (failed.stdout + failed.stderr).splitlines() if line.startswith("unlearnflow: error:")]
    assert len(causes) == 1 and "a.yaml: request a was processed on" in causes[0], causes
    assert {path: path.read_bytes() for path in ledger_files} == ledger_files


def test_an_unwritable_results_directory_or_a_yaml_error_is_one_line(tmp_path):
    write_config(tmp_path, TINY)
    (tmp_path / "results").write_text("a file where the results go")
    result = snakemake(tmp_path, "--dry-run", check=False)
    lines = [line for line in (result.stdout + result.stderr).splitlines() if line.strip()]
    assert result.returncode != 0 and len(lines) == 1, lines
    assert lines[0].startswith("unlearnflow: error: results/tiny: cannot write results here (results is not a")
    (tmp_path / "config.yaml").write_text("experiment: tiny\nforget_sets:\n  r5: {kind: random, size: 5\n  c: 1\n")
    result = snakemake(tmp_path, "--dry-run", check=False)
    lines = [line for line in (result.stdout + result.stderr).splitlines() if line.strip()]
    assert result.returncode != 0 and len(lines) == 1, lines
    assert lines[0].startswith("unlearnflow: error: config.yaml, line 4, column 4: YAML syntax error")


@pytest.mark.slow
def test_a_damaged_input_is_named_on_the_console_and_its_advice_rebuilds_it(tiny):
    """Issue 9, items 2, 6 and 9: the failed job's one-line cause reaches the console with its
    log, names the damaged file and the command that rebuilds it, and following it works."""
    target = "results/tiny/forget_sets/r5.h5"
    snakemake(tiny, target)
    data = tiny / "results" / "tiny" / "data.h5"
    import h5py
    with h5py.File(data, "r") as h5:
        offset = h5["x_train"].id.get_chunk_info(0).byte_offset
    with open(data, "r+b") as handle:  # damage bytes in the middle; the size stays
        handle.seek(offset + 16)
        handle.write(bytes(64))
    failed = snakemake(tiny, target, check=False)
    assert failed.returncode != 0
    console = failed.stdout + failed.stderr
    cause = next(line for line in console.splitlines() if line.startswith("unlearnflow: error:"))
    assert cause.startswith("unlearnflow: error: results/tiny/data.h5: damaged or unreadable HDF5 file")
    assert cause.endswith("[rule forget_sets, log results/tiny/logs/forget_sets/r5.log]")
    advice = re.search(r"rebuild it: snakemake (--cores 1 --forcerun results/tiny/data\.h5) \(rule prepare_data;", cause)
    assert advice, cause
    snakemake(tiny, *advice.group(1).split(), target)
    assert read_forget_set(tiny / target).indices.size == 5
    assert read_dataset(data).x_train.shape[0] > 0
    assert planned_jobs(tiny, target) == {}


#: The PGU paper's experiments on a digits CNN (config/pgu-cnn-*.yaml): forget sets each
#: experiment evaluates (a sequence's prefixes each against its own oracles) and its methods.
PGU_CNN_PRESETS = {
    "pgu-cnn-class-sample.yaml": ({"pgu-cnn-class-sample": ["class_sample_0", "class_sample_5"]}, {"pgu", "pgu_tuned"}),
    "pgu-cnn-class.yaml": ({"pgu-cnn-class": ["class_0"]}, {"pgu", "pgu_tuned"}),
    "pgu-cnn-incremental.yaml": ({"pgu-cnn-incremental": [f"incremental_4x25@{r}" for r in range(1, 5)]},
                                 {"pgu", "pgu_tuned"}),
    "pgu-cnn-depoison.yaml": ({f"pgu-cnn-depoison-{b}": [f"poison_{b}"] for b in (10, 20, 30)},
                              {"pgu_depoison", "pgu_trgp"}),
    # the same four on Fashion-MNIST (config/pgu-cnn-fmnist-*.yaml)
    "pgu-cnn-fmnist-class-sample.yaml": ({"pgu-cnn-fmnist-class-sample": ["class_sample_6"]}, {"pgu", "pgu_tuned"}),
    "pgu-cnn-fmnist-class.yaml": ({"pgu-cnn-fmnist-class": ["class_0"]}, {"pgu", "pgu_tuned"}),
    "pgu-cnn-fmnist-incremental.yaml": ({"pgu-cnn-fmnist-incremental": [f"incremental_4x25@{r}" for r in range(1, 5)]},
                                        {"pgu", "pgu_tuned"}),
    "pgu-cnn-fmnist-depoison.yaml": ({f"pgu-cnn-fmnist-depoison-{b}": [f"poison_{b}"] for b in (10, 20, 30)},
                                     {"pgu_depoison", "pgu_trgp"}),
}


@pytest.mark.parametrize("name", sorted(PGU_CNN_PRESETS))
def test_pgu_cnn_presets_plan_the_papers_experiments(tmp_path, name):
    """Each preset plans, per experiment, the references and its PGU methods on its forget sets with
    oracles per forget set (per prefix for Table 3), on the SmallVGG, and PGU reads no retain data."""
    experiments, methods = PGU_CNN_PRESETS[name]
    config = yaml.safe_load((REPO / "config" / name).read_text())
    assert config["model"]["arch"] == "smallvgg" and set(config["methods"]) == methods
    write_config(tmp_path, config)
    jobs = dry_run_jobs(tmp_path)

    def rule(job):  # the rule without another experiment's prefix
        return job["rule"].split("_", 1)[1] if job["rule"].startswith("pgu-cnn-") else job["rule"]

    for experiment, forget_sets in experiments.items():
        mine = [job for job in jobs if any(path.startswith(f"results/{experiment}/") for path in job["input"])]
        evaluated = {tuple(path.split("/")[-2:]) for job in mine if rule(job) == "evaluate"
                     for path in job["output"] if path.endswith(".csv")}
        assert evaluated == {(m, f"{fs}.csv") for m in {"do_nothing", "retrain", *methods} for fs in forget_sets}
        oracles = {job["wildcards"]["forget_set"] for job in mine if rule(job) == "gather_oracles"}
        assert oracles == set(forget_sets)
        for job in (job for job in mine if rule(job) == "unlearn"):
            assert f"results/{experiment}/gradient_space.h5" in job["input"]
            assert not any(path.endswith(("/data.h5", "/originals.h5")) or "/forget_sets/" in path
                           for path in job["input"]), job
    if name.endswith("-class.yaml"):
        assert all(m["hyperparameters"]["stopping"] == "class_rows" for m in config["methods"].values())
    if name.endswith("-depoison.yaml"):
        budgets = [config["forget_sets"]["poison_10"]["budget"],
                   *(e["forget_sets"][f"poison_{b}"]["budget"] for b, e in
                     zip((20, 30), config["experiments"].values()))]
        assert budgets == [0.1, 0.2, 0.3]


@pytest.mark.parametrize("table", ["class-sample", "class", "incremental", "depoison"])
def test_fashion_mnist_pgu_presets_run_the_digits_experiments_on_fashion_mnist(table):
    """Each Fashion-MNIST preset validates, reads the IDX files of Debian's dataset-fashion-mnist,
    keeps >= 50 models per side and runs the digits preset's forget-set kinds and method settings."""
    digits, fmnist = (validate_config(yaml.safe_load((REPO / "config" / f"pgu-cnn-{name}.yaml").read_text()),
                                      load_schema(REPO / "workflow" / "schemas" / "config.schema.yaml"))
                      for name in (table, f"fmnist-{table}"))
    assert fmnist["data"]["loader"] == "idx" and fmnist["data"]["path"] == "/usr/share/datasets/fashion-mnist"
    assert fmnist["originals"]["models"] >= 50 and fmnist["oracles"]["models"] >= 50
    expected = copy.deepcopy(digits["methods"])
    if table == "class-sample":  # beside the paper's stopping rule, the forgotten class's validation accuracy
        expected["pgu_tuned"]["grid"]["stopping"] = ["sample", "sample_class"]
    assert fmnist["model"]["arch"] == "smallvgg" and fmnist["methods"] == expected

    def kinds(config):
        sets = [config["forget_sets"], *(e["forget_sets"] for e in config.get("experiments", {}).values())]
        return {(spec["kind"], spec.get("requests"), spec.get("budget")) for fs in sets for spec in fs.values()}
    assert kinds(fmnist) == kinds(digits)


#: a user's module in the working directory: a model factory and a data loader (issue 21)
USER_MODULE = '''
import numpy as np
from sklearn.datasets import load_digits
from torch import nn


def tiny_net(input_shape, num_classes, hidden=16):
    return nn.Sequential(nn.Flatten(), nn.Linear(int(np.prod(input_shape)), hidden), nn.ReLU(),
                         nn.Linear(hidden, num_classes))


def digits_split():
    digits = load_digits()
    x, y = digits.images[:, None] / 16.0, digits.target
    return {"x_train": x[:1200], "y_train": y[:1200], "x_test": x[1200:], "y_test": y[1200:]}


def not_a_model(input_shape, num_classes):
    return 3
'''


def test_a_users_own_model_and_loader_by_name_run_through_the_workflow(tmp_path):
    (tmp_path / "mine.py").write_text(USER_MODULE)
    config = {**TINY, "model": {"arch": "mine:tiny_net", "options": {"hidden": 24}},
              "data": {"loader": "mine:digits_split"}, "forget_sets": {"r5": TINY["forget_sets"]["r5"]}}
    write_config(tmp_path, config)
    snakemake(tmp_path)
    results = tmp_path / "results" / "tiny"
    data, originals = read_dataset(results / "data.h5"), read_bank(results / "originals.h5", with_weights=True)
    assert len(data.y_train) == 1200 and len(data.y_test) + len(data.y_val) == 597
    assert originals.attrs["arch"] == "mine:tiny_net" and originals.attrs["model_options"] == {"hidden": 24}
    assert originals.weights["1.weight"].shape == (3, 24, 64)
    assert (originals.logits["test"].argmax(-1) == data.y_test).mean() > 0.7
    assert "| retrain |" in (results / "report" / "summary.md").read_text()
    # the same models as state dicts trained elsewhere (originals.state_dicts): imported, not trained
    import torch
    files = []
    for index in range(3):
        torch.save({name: torch.from_numpy(value[index]) for name, value in originals.weights.items()},
                   tmp_path / f"model{index}.pt")
        files.append(f"model{index}.pt")
    write_config(tmp_path, {**config, "originals": {**config["originals"], "state_dicts": files[:2]}})
    failed = snakemake(tmp_path, "--dry-run", check=False)
    assert "config: originals.state_dicts: 2 file(s) for originals.models 3: give one per model" in failed.stderr
    write_config(tmp_path, {**config, "originals": {**config["originals"], "state_dicts": files}})
    snakemake(tmp_path, "results/tiny/originals.h5")
    imported = read_bank(results / "originals.h5", with_weights=True)
    assert sorted(imported.attrs["imported_from"]) == files and imported.attrs["training"] == "imported"
    for split in ("train", "test"):
        np.testing.assert_allclose(imported.logits[split], originals.logits[split], rtol=1e-5, atol=1e-6)
    # a factory that returns no module, or a module that is not there: one line naming the key
    write_config(tmp_path, {**config, "model": {"arch": "mine:not_a_model"}})
    failed = snakemake(tmp_path, "--forcerun", "train_originals", check=False)
    assert "unlearnflow: error: config: model.arch: mine:not_a_model returned int, not a torch.nn.Module" in (
        failed.stdout + failed.stderr)
    write_config(tmp_path, {**config, "data": {"loader": "theirs:digits_split"}})
    failed = snakemake(tmp_path, "--dry-run", check=False)
    assert failed.returncode != 0 and (
        "unlearnflow: error: config: data.loader: no module 'theirs' on the Python path or in the working directory"
        in failed.stderr)
