"""The CIFAR-10 / ResNet-9 scale preset (config/cifar10.yaml) on a tiny CIFAR-format directory:
the loader reads the python pickles, the preset validates and plans the jobs its numbers imply,
and a reduced copy of it runs end to end on the CPU."""

import math
import pickle
import re
from pathlib import Path

import numpy as np
import pytest
import yaml
from workflow_runs import REPO, snakemake

from unlearnflow.config import load_schema, needs, uses_calibration, validate_config
from unlearnflow.core.artifacts import read_bank, read_dataset
from unlearnflow.core.data import load_dataset
from unlearnflow.errors import UserError
from unlearnflow.registry import spec_of

PRESET = REPO / "config" / "cifar10.yaml"
SCHEMA = REPO / "workflow" / "schemas" / "config.schema.yaml"
CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
PER_BATCH = 40  # images per pickle: 200 training images (20 per class), 40 test images


def write_cifar(directory: Path, per_batch: int = PER_BATCH, seed: int = 0) -> Path:
    """A CIFAR-10 python-pickle directory as the official tarball has it (bytes keys, uint8 rows
    of 3072 pixels, labels as a list), with `per_batch` random images per batch."""
    rng = np.random.default_rng(seed)
    directory.mkdir(parents=True, exist_ok=True)
    for name in [f"data_batch_{number}" for number in range(1, 6)] + ["test_batch"]:
        labels = [int(label) for label in rng.permutation(np.arange(per_batch) % 10)]
        batch = {b"batch_label": name.encode(), b"labels": labels, b"filenames": [b"x.png"] * per_batch,
                 b"data": rng.integers(0, 256, size=(per_batch, 3 * 32 * 32), dtype=np.uint8)}
        (directory / name).write_bytes(pickle.dumps(batch))
    meta = {b"label_names": [name.encode() for name in CLASSES], b"num_cases_per_batch": per_batch,
            b"num_vis": 3072}
    (directory / "batches.meta").write_bytes(pickle.dumps(meta))
    return directory


def job_counts(output: str) -> dict[str, int]:
    table = output.split("Job stats:")[1].split("total")[0]
    return {rule: int(count) for rule, count in re.findall(r"^(\w+)\s+(\d+)\s*$", table, re.M)}


def preset() -> dict:
    return yaml.safe_load(PRESET.read_text())


def test_the_cifar_loader_reads_the_python_pickles(tmp_path):
    directory = write_cifar(tmp_path / "cifar-10-batches-py")
    dataset = load_dataset({"loader": "cifar", "path": str(directory), "validation_fraction": 0.5})
    assert dataset.classes == CLASSES and dataset.input_shape == (3, 32, 32)
    assert len(dataset.y_train) == 5 * PER_BATCH and len(dataset.y_val) + len(dataset.y_test) == PER_BATCH
    # the rows are channel-major (R plane, G plane, B plane): pixel (c, i, j) is data[c*1024 + 32*i + j]
    first = pickle.loads((directory / "data_batch_1").read_bytes())
    pixels = dataset.x_train[0] * dataset.std.reshape(3, 1, 1) + dataset.mean.reshape(3, 1, 1)
    assert np.allclose(pixels[1, 2, 3] * 255, first[b"data"][0][1024 + 2 * 32 + 3], atol=1e-3)
    assert dataset.y_train[0] == first[b"labels"][0]


def test_a_missing_or_damaged_cifar_file_is_one_line(tmp_path):
    directory = write_cifar(tmp_path / "cifar")
    (directory / "data_batch_3").unlink()
    with pytest.raises(UserError) as error:
        load_dataset({"loader": "cifar", "path": str(directory)})
    assert str(error.value) == f"cifar loader: {directory / 'data_batch_3'}: no such file; expected a CIFAR python pickle"
    (directory / "data_batch_3").write_bytes(b"not a pickle")
    with pytest.raises(UserError, match=r"data_batch_3: expected a CIFAR python pickle, cannot unpickle") as error:
        load_dataset({"loader": "cifar", "path": str(directory)})
    assert "\n" not in str(error.value)
    with pytest.raises(UserError, match="expected the CIFAR-10 .batches.meta, data_batch_1..5, test_batch."):
        load_dataset({"loader": "cifar", "path": str(tmp_path)})


def test_the_preset_has_the_reference_recipe_and_scale():
    config = validate_config(preset(), load_schema(SCHEMA))
    assert config["device"] == "cuda" and config["data"]["loader"] == "cifar"
    assert config["model"] == {"arch": "resnet9", "options": {"width": 64}}
    training = config["training"]
    assert (training["optimizer"], training["lr"], training["momentum"], training["weight_decay"],
            training["batch_size"], training["epochs"]) == ("sgd", 0.4, 0.9, 5e-4, 512, 24)
    assert training["crop_padding"] > 0 and training["flip"]
    # the learning rate peaks at 0.4 at the end of epoch 5 and reaches 0 at the end of epoch 24
    from unlearnflow.core.training import TrainConfig
    recipe, steps = TrainConfig.from_mapping(training), 50_000 // 512
    rates = np.array([recipe.lr_at(step, steps) for step in range(24 * steps)])
    assert rates.argmax() in (5 * steps - 2, 5 * steps - 1) and rates.max() == pytest.approx(0.4, rel=1e-3)
    assert rates[-1] == 0 and np.all(np.diff(rates[5 * steps:]) < 0)
    assert config["subset_models"]["models"] == 20_000 and config["subset_models"]["fraction"] == 0.5
    assert config["originals"]["models"] == 100 and config["oracles"]["models"] == 100
    sets = config["forget_sets"]  # DMM paper, Appendix D.2: random 10, 100, 1000 and six subpopulations
    assert sorted(spec["size"] for spec in sets.values() if spec["kind"] == "random") == [10, 100, 1000]
    assert sum(spec["kind"] == "cluster" for spec in sets.values()) == 6
    assert {"dmm", "dm_direct", "gradient_ascent", "gradient_descent", "scrub"} <= set(config["methods"])


def expected_plan(config: dict) -> dict[str, int]:
    """Jobs per rule that the preset's numbers imply (datamodel fitting is counted apart)."""
    n_sets = len(config["forget_sets"])
    trained_sets = n_sets + uses_calibration(config)  # the calibration set's oracles, too
    methods = list(config["methods"])
    chunks = {bank: math.ceil(config[bank]["models"] / config[bank]["chunk_size"])
              for bank in ("originals", "oracles", "subset_models")}
    plan = {"prepare_data": 1, "forget_sets": trained_sets, "train_originals": chunks["originals"],
            "gather_originals": 1, "train_oracles": trained_sets * chunks["oracles"], "gather_oracles": trained_sets,
            "retrain": n_sets, "train_subset_models": chunks["subset_models"], "unlearn": len(methods) * n_sets,
            "evaluate": n_sets, "ulira_base_models": 1, "ulira": len(methods) + 2,
            "report": 1, "all": 1}
    if uses_calibration(config):
        plan["calibrate_datamodels"] = 1
    if any(spec_of(method).source_free for method in methods):
        plan["forget_samples"] = n_sets
    if any("gradient_space" in needs(config, method) for method in methods):
        plan["gradient_space"] = 1
    return plan


def test_the_preset_dry_runs_with_the_jobs_its_numbers_imply(tmp_path):
    directory = write_cifar(tmp_path / "cifar-10-batches-py")
    workdir = tmp_path / "work"
    workdir.mkdir()
    output = snakemake(workdir, "--configfile", str(PRESET), "--config", f"data={{loader: cifar, path: {directory}}}",
                       "--dry-run", "--printshellcmds").stdout
    plan = job_counts(output)
    config = validate_config(preset(), load_schema(SCHEMA))
    expected = expected_plan(config)
    fitting = {rule: count for rule, count in plan.items() if rule not in expected}
    assert {rule: plan.get(rule) for rule in expected} == expected
    # the datamodel fit: one job or one per chunk of target points plus a gather, nothing else
    assert fitting and all(rule.startswith(("fit_datamodels", "gather_datamodels")) for rule in fitting), fitting
    assert expected["train_subset_models"] == 800 and expected["train_oracles"] == 40 and expected["unlearn"] == 54
    # every training job runs on a GPU; retraining 100 models goes in passes of a chunk's size
    training = re.findall(r"^rule (train_\w+|retrain):\n(?:    .*\n)*?    resources: (.*)$", output, re.M)
    assert training and all("gpu=1" in resources for _, resources in training)
    retrain = [line for line in output.splitlines() if "--role retrain" in line]
    assert len(retrain) == 9 and all("--count 100 " in line and "--models-per-pass 25" in line for line in retrain)
    assert all("--device cuda" in line for line in retrain)


def test_a_bank_trained_in_passes_equals_one_trained_at_once(tmp_path, one_thread):
    from unlearnflow import stages
    data = tmp_path / "data.h5"
    stages.prepare_data(spec={"loader": "digits", "seed": 0}, out=str(data))
    common = dict(data=str(data), role="original", model={"arch": "mlp", "options": {"hidden": [8]}},
                  training={"epochs": 1, "batch_size": 64}, seed=0, first_id=2, count=3, device="cpu")
    stages.train(**common, out=str(tmp_path / "once.h5"))
    stages.train(**common, out=str(tmp_path / "passes.h5"), models_per_pass=2)
    once, passes = read_bank(tmp_path / "once.h5"), read_bank(tmp_path / "passes.h5")
    assert passes.model_ids.tolist() == [2, 3, 4] and np.array_equal(passes.seeds, once.seeds)
    for name, weights in once.weights.items():
        np.testing.assert_array_equal(passes.weights[name], weights)
    np.testing.assert_array_equal(passes.logits["test"], once.logits["test"])
    with pytest.raises(UserError, match="--models-per-pass must be >= 0"):
        stages.train(**common, out=str(tmp_path / "bad.h5"), models_per_pass=-1)


def reduced_preset(cifar: Path) -> dict:
    """The preset with its structure (loader, ResNet-9, recipe, forget-set kinds, calibration,
    methods) and tiny sizes: 1 epoch, width 4, a few models, CPU, ridge datamodels."""
    config = preset()
    config.update(device="cpu", progress=False, experiment="cifar10")
    config["data"]["path"] = str(cifar)
    config["model"]["options"]["width"] = 4
    config["training"].update(epochs=1, batch_size=32)
    config["originals"] = {"models": 3, "chunk_size": 3}
    config["oracles"] = {"models": 4, "chunk_size": 4}
    config["subset_models"] = {"models": 13, "chunk_size": 13, "fraction": 0.5}
    # ridge: on 10 models of random images the lasso's path ends at all-zero weights, which leaves
    # nothing to calibrate (the preset's lasso is what the dry run plans)
    config["datamodels"].update(estimator="ridge", options={"alphas": [0.1, 1.0]}, heldout_models=3,
                                calibration_set={"kind": "random", "size": 4})
    config["forget_sets"] = {"random_10": {"kind": "random", "size": 10},
                             "cluster_0": {**config["forget_sets"]["cluster_0"], "size": 6, "n_clusters": 4,
                                           "components": 5}}
    config["evaluation"]["ulira"] = {"base_models": 8, "forget_sets_per_model": 2, "forget_size": 2,
                                     "pool_class": 5}
    config["methods"] = {"dmm": {"hyperparameters": {"calibrated": True, "epochs": 1, "batch_size": 16}},
                         "gradient_ascent": {}}
    config.pop("resources")
    return config


@pytest.mark.slow
def test_a_reduced_preset_runs_end_to_end_on_the_cpu(tmp_path):
    """DMM on the preset's random and cluster sets: data, forget sets, originals, oracles (and the
    calibration set's), subset models, datamodels, calibration, U-LiRA, unlearning, evaluation."""
    cifar = write_cifar(tmp_path / "cifar-10-batches-py")
    workdir = tmp_path / "work"
    workdir.mkdir()
    (workdir / "config.yaml").write_text(yaml.safe_dump(reduced_preset(cifar)))
    targets = [f"results/cifar10/evaluation/dmm/{name}.csv" for name in ("random_10", "cluster_0")]
    snakemake(workdir, *targets)
    results = workdir / "results" / "cifar10"
    dataset = read_dataset(results / "data.h5")
    assert dataset.classes == CLASSES and dataset.input_shape == (3, 32, 32) and len(dataset.y_train) == 200
    originals = read_bank(results / "originals.h5")
    assert originals.attrs["arch"] == "resnet9" and originals.attrs["training"]["crop_padding"] == 4
    assert originals.attrs["training"]["flip"] and len(originals) == 3
    assert len(read_bank(results / "oracles" / "cluster_0.h5")) == 4
    for target in targets:
        rows = (workdir / target).read_text().splitlines()
        assert len(rows) >= 2 and "klom" in rows[0]
    assert "Nothing to be done" in snakemake(workdir, "--dry-run", *targets).stdout
