"""The source-free presets (issue 11): config/sourcefree-mixed-linear.yaml (the paper's Table 4 on a
mixed-linear network, digits) and config/sourcefree-public-fashion-mnist.yaml (linear models on
Fashion-MNIST features of a public-split backbone) validate, size their source-free fits so that
the Hessian is identifiable, and plan their experiments without reading retain data in a
source-free job."""

from pathlib import Path

import pytest
import torch
import yaml
from test_data import make_idx
from workflow_runs import REPO, dry_run_jobs

from unlearnflow.config import load_schema, validate_config
from unlearnflow.core.data import load_dataset
from unlearnflow.core.models import build_model, penultimate_features
from unlearnflow.sourcefree.features import public_split
from unlearnflow.sourcefree.hessian import VARIANTS
from unlearnflow.sourcefree.mixed_linear import MixedLinear

SCHEMA = REPO / "workflow" / "schemas" / "config.schema.yaml"
MIXED = REPO / "config" / "sourcefree-mixed-linear.yaml"
FASHION = REPO / "config" / "sourcefree-public-fashion-mnist.yaml"
NEWTON = {"newton_certified", "newton_source_free"}
#: the source-free step's grid: every reading beside the default (Eq. 3 as printed)
OTHER_READINGS = [variant for variant in VARIANTS if variant != "paper"]


def preset(path: Path) -> dict:
    return validate_config(yaml.safe_load(path.read_text()), load_schema(SCHEMA))


def private_size(n_train: int, features: dict) -> int:
    """The training points left to the bank once the public backbone's share is drawn."""
    return len(public_split(n_train, features["public_fraction"], features["seed"])[1])


def source_free_fit(config: dict) -> dict:
    return config["methods"]["newton_source_free"]


def test_the_mixed_linear_preset_is_table_4_with_an_identifiable_fit():
    config = preset(MIXED)
    features = config["features"]
    assert config["training"]["loss"] == "mixed_squared" and features["backbone"] == "public"
    digits = load_dataset(config["data"])
    backbone = build_model(features["arch"], digits.input_shape, digits.num_classes, **features["options"])
    P = MixedLinear(backbone, features["mixed_linear"]["layers"]).size
    assert P == 4 * 3 + 3 + 3 * 10 + 10 == 55  # the last two linear layers, 4 -> 3 -> 10
    fit = source_free_fit(config)
    assert fit["hyperparameters"]["m"] >= P * (P + 1) // 2 and fit["grid"]["variant"] == OTHER_READINGS
    assert set(config["methods"]) == NEWTON
    n_private = private_size(len(digits.y_train), features)
    sizes = sorted(spec["size"] for spec in config["forget_sets"].values())
    assert sizes == [round(fraction * n_private) for fraction in (0.10, 0.15, 0.20)]
    assert all(spec["kind"] == "random" for spec in config["forget_sets"].values())
    # the ridge configuration adds lam n_r I at the largest set (ridge * n = lam * n_r, to 1%)
    ridge = max(fit["grid"]["ridge"])
    assert ridge * n_private == pytest.approx(config["training"]["lam"] * (n_private - sizes[-1]), rel=0.01)


def test_the_public_fashion_mnist_preset_has_an_identifiable_fit_and_the_baselines():
    config = preset(FASHION)
    features, data = config["features"], config["data"]
    assert data["loader"] == "idx" and config["training"]["loss"] == "squared" and "mixed_linear" not in features
    backbone = build_model(features["arch"], (1, 28, 28), 10, **features["options"])
    d = penultimate_features(backbone.eval(), torch.zeros(2, 1, 28, 28)).shape[1]  # the features' width
    assert d == 32  # the README and the config say d = 32
    assert source_free_fit(config)["hyperparameters"]["m"] >= d * (d + 1) // 2
    assert source_free_fit(config)["grid"]["variant"] == OTHER_READINGS
    assert set(config["methods"]) == NEWTON | {"gradient_ascent", "jit", "random_labels", "random_labels_forget"}
    (forget,) = config["forget_sets"].values()
    assert forget["kind"] == "random" and forget["size"] == round(0.10 * private_size(data["max_train"], features))


@pytest.mark.parametrize("path", [MIXED, FASHION], ids=lambda p: p.name)
def test_the_source_free_presets_plan_every_method_on_every_forget_set(tmp_path, path):
    config = yaml.safe_load(path.read_text())
    if config["data"]["loader"] == "idx" and not Path(config["data"]["path"]).is_dir():
        make_idx(tmp_path / "fashion")  # a tiny IDX directory: a dry run reads no data
        config["data"]["path"] = str(tmp_path / "fashion")
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    jobs = dry_run_jobs(tmp_path)
    results = f"results/{config['experiment']}"
    forget_sets = set(config["forget_sets"])
    evaluated = {tuple(output.split("/")[-2:]) for job in jobs if job["rule"] == "evaluate"
                 for output in job["output"] if output.endswith(".csv")}
    assert evaluated == {(method, f"{fs}.csv") for method in {"do_nothing", "retrain", *config["methods"]}
                         for fs in forget_sets}
    assert [job for job in jobs if job["rule"] == "extract_features"][0]["output"] == [f"{results}/features.h5"]
    source_free = [job for job in jobs if job["rule"] == "unlearn" and "/newton_source_free/" in job["output"][0]]
    assert {job["wildcards"]["forget_set"] for job in source_free} == forget_sets
    for job in source_free:
        assert sorted(job["input"]) == [f"{results}/forget_samples/{job['wildcards']['forget_set']}.h5",
                                        f"{results}/original_models.h5"], job
