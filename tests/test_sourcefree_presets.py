"""The source-free unlearning presets (config/sourcefree-*.yaml): each validates, has one
experiment per table of the paper with the numbers the README's tables come from, and dry-runs."""

import re

import pytest
import yaml
from workflow_runs import REPO, snakemake

from unlearnflow.config import experiments, load_schema, validate_config
from unlearnflow.sourcefree.hessian import identifiable_m

SCHEMA = REPO / "workflow" / "schemas" / "config.schema.yaml"
#: preset -> (experiment prefix, training-set size, feature dimension d)
PRESETS = {"sourcefree-digits.yaml": ("sf-digits", 1258, 64),
           "sourcefree-fashion-mnist.yaml": ("sf-fmnist", 2000, 49)}


def load(name: str) -> dict:
    return validate_config(yaml.safe_load((REPO / "config" / name).read_text()), load_schema(SCHEMA))


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_each_preset_has_one_experiment_per_table(name):
    prefix, n, d = PRESETS[name]
    found = experiments(load(name))
    tables = ["table1", "table2", "table3-lam0", "table3-lam5e-4", "table3-lam1e-3", "table5"]
    assert list(found) == [f"{prefix}-{table}" for table in tables]
    for config in found.values():
        assert config["model"]["arch"] == "linear" and config["training"]["optimizer"] == "lbfgs"
        assert config["training"]["loss"] == "squared" and config["originals"]["models"] == 20
    # Table 1: 5 / 10 / 15 % forget, Newton (+) and both source-free variants at an identified m
    table1 = found[f"{prefix}-table1"]
    sizes = sorted(spec["size"] for spec in table1["forget_sets"].values())
    assert [round(100 * size / n) for size in sizes] == [5, 10, 15]
    source_free = table1["methods"]["newton_source_free"]
    assert source_free["hyperparameters"]["m"] >= identifiable_m(d)
    assert source_free["grid"]["variant"] == ["paper", "corrected"] and "newton_certified" in table1["methods"]
    # Table 2: the paper's 250 / 500 / 1000 perturbations and one at d(d+1)/2 or above
    ms = found[f"{prefix}-table2"]["methods"]["newton_source_free"]["grid"]["m"]
    assert ms[:3] == [250, 500, 1000] and ms[3] >= identifiable_m(d) > 1000
    # Table 3: lambda in {0, 5e-4, 1e-3}, everything else as Table 1 at 10 %
    lams = [found[f"{prefix}-table3-{suffix}"]["training"]["lam"] for suffix in ("lam0", "lam5e-4", "lam1e-3")]
    assert lams == [0.0, 5e-4, 1e-3]
    assert all(found[f"{prefix}-table3-{s}"]["methods"] == table1["methods"] for s in ("lam0", "lam5e-4", "lam1e-3"))
    # Table 5: the source-free baselines beside Newton
    assert {"gradient_ascent", "random_labels", "jit", "newton_certified",
            "newton_source_free"} == set(found[f"{prefix}-table5"]["methods"])


@pytest.mark.slow  # ~30 s each on the shared 2-core machine: the DAG of six experiments
@pytest.mark.parametrize("name", sorted(PRESETS))
def test_each_preset_dry_runs(tmp_path, name):
    output = snakemake(tmp_path, "--configfile", str(REPO / "config" / name), "--dry-run").stdout
    counts = dict(re.findall(r"^([\w.-]+)\s+(\d+)\s*$", output.split("Job stats:")[1].split("total")[0], re.M))
    prefix = PRESETS[name][0]
    # unlearn jobs: Table 1 two methods x three forget sets, Tables 2-3 two each, Table 5 five
    assert counts["unlearn"] == "6" and counts[f"{prefix}-table2_unlearn"] == "2"
    assert counts[f"{prefix}-table5_unlearn"] == "5"
    assert all(counts[f"{prefix}-table3-{s}_report"] == "1" for s in ("lam0", "lam5e-4", "lam1e-3"))
