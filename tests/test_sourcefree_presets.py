"""The source-free unlearning presets (config/sourcefree-*.yaml): each validates, has one
experiment per table of the paper with the numbers the README's tables come from, and dry-runs."""

import re

import numpy as np
import pytest
import yaml
from workflow_runs import REPO, snakemake

from unlearnflow.config import experiments, load_schema, validate_config
from unlearnflow.core.data import load_dataset
from unlearnflow.sourcefree.features import extract_features
from unlearnflow.sourcefree.hessian import VARIANTS
from unlearnflow.sourcefree.identifiability import perturbations_needed

SCHEMA = REPO / "workflow" / "schemas" / "config.schema.yaml"
#: the source-free step's grid of Tables 1, 3 and 5: every reading beside the default (Eq. 3 as printed)
OTHER_READINGS = [variant for variant in VARIANTS if variant != "paper"]
#: preset -> (experiment prefix, training-set size, pixels, d of Tables 1/3/5, d of Table 2)
PRESETS = {"sourcefree-digits.yaml": ("sf-digits", 1258, 64, 16, 64),
           "sourcefree-fashion-mnist.yaml": ("sf-fmnist", 2000, 784, 16, 49)}


def load(name: str) -> dict:
    return validate_config(yaml.safe_load((REPO / "config" / name).read_text()), load_schema(SCHEMA))


def dimension(config: dict, pixels: int) -> int:
    return pixels // config["features"].get("pool", 1) ** 2


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_each_preset_has_one_experiment_per_table(name):
    prefix, n, pixels, d, d2 = PRESETS[name]
    found = experiments(load(name))
    tables = ["table1", "table2", "table3-lam0", "table3-lam5e-4", "table3-lam1e-3", "table5"]
    assert list(found) == [f"{prefix}-{table}" for table in tables]
    for experiment, config in found.items():
        assert config["model"]["arch"] == "linear" and config["training"]["optimizer"] == "lbfgs"
        assert config["training"]["loss"] == "squared" and config["originals"]["models"] >= 10
        assert dimension(config, pixels) == (d2 if experiment.endswith("table2") else d)
    # Table 1: 5 / 10 / 15 % forget, Newton (+) and every source-free reading at twice d(d+1)/2
    table1 = found[f"{prefix}-table1"]
    sizes = sorted(spec["size"] for spec in table1["forget_sets"].values())
    assert [round(100 * size / n) for size in sizes] == [5, 10, 15]
    source_free = table1["methods"]["newton_source_free"]
    assert source_free["hyperparameters"]["m"] == 2 * perturbations_needed(d)
    assert source_free["grid"]["variant"] == OTHER_READINGS and "newton_certified" in table1["methods"]
    ten_percent = [{"kind": "random", "size": round(0.1 * n)}]
    # Table 2: the paper's 250 / 500 / 1000 perturbations and one just above d(d+1)/2 > 1000
    table2 = found[f"{prefix}-table2"]
    grid = table2["methods"]["newton_source_free"]["grid"]
    assert grid["m"] == [250, 500, 1000, perturbations_needed(d2) + 2 * d2] and perturbations_needed(d2) > 1000
    assert grid["variant"] == list(VARIANTS)
    assert list(table2["forget_sets"].values()) == ten_percent
    # Table 3: lambda in {0, 5e-4, 1e-3}, Table 1's features and methods at 10 %; the training
    # features have full rank, so that lam = 0 has a unique minimiser
    table3 = [found[f"{prefix}-table3-{suffix}"] for suffix in ("lam0", "lam5e-4", "lam1e-3")]
    assert [config["training"]["lam"] for config in table3] == [0.0, 5e-4, 1e-3]
    features = extract_features(load_dataset(table3[0]["data"]), table3[0]["features"])
    assert features.x_train.shape == (n, d) and np.linalg.matrix_rank(features.x_train.astype(float)) == d
    for config in table3:
        assert list(config["forget_sets"].values()) == ten_percent and config["methods"] == table1["methods"]
    # Table 5: the source-free baselines beside Newton (Adversarial, Random Labels both on the forget
    # samples alone and with the retain set); each headline is chosen on a second random 10 % set,
    # never on the judged one
    table5 = found[f"{prefix}-table5"]
    assert {"gradient_ascent", "random_labels_forget", "random_labels", "jit", "adversarial",
            "newton_certified", "newton_source_free"} == set(table5["methods"])
    selection_set = table5["evaluation"]["selection"]["forget_set"]
    judged = {name: spec for name, spec in table5["forget_sets"].items() if name != selection_set}
    assert list(judged.values()) == ten_percent and table5["forget_sets"][selection_set] == ten_percent[0]
    assert table5["methods"]["newton_source_free"]["grid"]["variant"] == OTHER_READINGS


@pytest.mark.slow  # ~30 s each on the shared 2-core machine: the DAG of six experiments
@pytest.mark.parametrize("name", sorted(PRESETS))
def test_each_preset_dry_runs(tmp_path, name):
    output = snakemake(tmp_path, "--configfile", str(REPO / "config" / name), "--dry-run").stdout
    counts = dict(re.findall(r"^([\w.-]+)\s+(\d+)\s*$", output.split("Job stats:")[1].split("total")[0], re.M))
    prefix = PRESETS[name][0]
    # unlearn jobs: Table 1 two methods x three forget sets, Tables 2-3 two each, Table 5 seven
    # methods x (the judged set + the selection set)
    assert counts["unlearn"] == "6" and counts[f"{prefix}-table2_unlearn"] == "2"
    assert counts[f"{prefix}-table5_unlearn"] == "14"
    assert all(counts[f"{prefix}-table3-{s}_report"] == "1" for s in ("lam0", "lam5e-4", "lam1e-3"))
