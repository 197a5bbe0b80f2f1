"""The datamodel estimators' registry (issue 24): a new estimator is its module and one entry of
unlearnflow.dmm.estimators.ESTIMATORS; the config checks, the rules' fit jobs, the fit stage and the
report read the entry, never the estimator's name."""

import copy

import numpy as np
import pytest
from workflow_runs import REPO

from unlearnflow.config import datamodel_fit_jobs, datamodel_outputs, load_config_file, validate_config
from unlearnflow.dmm.datamodel_set import FitInputs, fit_datamodel_set
from unlearnflow.dmm.estimators import ESTIMATORS, Estimator, estimator_of, options
from unlearnflow.errors import UserError
from unlearnflow.report.summary import datamodels_section


def fit_toy(estimator, given_options, data):
    """A toy estimator's module: ridge at one penalty, under its own name."""
    result = fit_datamodel_set(data.masks, data.logits, data.labels, data.split_sizes, "ridge", data.heldout_models,
                               {"alphas": [given_options["penalty"]]}, outputs=data.outputs, splits=data.splits,
                               log=lambda _: None)
    result.estimator = result.attrs["estimator"] = estimator
    result.attrs["options"] = dict(given_options)
    return result


@pytest.fixture
def toy_estimator():
    ESTIMATORS["toy"] = Estimator("toy", f"{__name__}:fit_toy", {"penalty": 1.0}, scatters=False)
    yield ESTIMATORS["toy"]
    ESTIMATORS.pop("toy")


def test_the_entries_say_what_the_workflow_must_know():
    assert [name for name, entry in ESTIMATORS.items() if entry.regression] == ["lasso", "ridge"]
    assert estimator_of("trak").checkpoints and not estimator_of("trak").scatters
    assert estimator_of("trak").outputs == ("margins",)
    assert options("ridge", {"val_fraction": 0.1})["val_fraction"] == 0.1
    with pytest.raises(UserError, match="unknown estimator 'lasso2' .known: lasso, ridge, trak"):
        estimator_of("lasso2")
    with pytest.raises(UserError, match="unknown option.s. alpha for estimator lasso"):
        options("lasso", {"alpha": 1})


def test_a_toy_estimator_is_one_entry_and_its_module(toy_estimator):
    config = copy.deepcopy(load_config_file(REPO / "config.yaml"))
    config.pop("experiments")
    config["datamodels"] = {**config.get("datamodels", {}), "estimator": "toy", "options": {"penalty": 0.5},
                            "fit_jobs": 3}
    validate_config(config, load_config_file(REPO / "workflow" / "schemas" / "config.schema.yaml"))
    assert datamodel_fit_jobs(config) == 1  # it does not scatter
    assert datamodel_outputs(config) == ["margins", "logits"]  # what the constructions read (no fixed outputs)
    rng = np.random.default_rng(0)
    masks = rng.random((40, 12)) < 0.5
    logits = rng.normal(size=(40, 12 + 3, 3)).astype(np.float32)
    data = FitInputs(masks=masks, logits=logits, labels=rng.integers(0, 3, 15), split_sizes={"train": 12, "val": 3,
                     "test": 0}, splits=["train", "val"], heldout_models=10, outputs=["margins"])
    result = toy_estimator.load_fit()("toy", options("toy", {"penalty": 0.5}), data)
    assert result.estimator == "toy" and result.weights("margins").shape == (12, 15)
    section = "\n".join(datamodels_section({**result.attrs, "subset_train_seconds": 1.0, "outputs": ["margins"],
                                            **{f"margins_{score}": 0.5 for score in ("lds", "r2")}}))
    assert "Estimator `toy`: fitted on 30 subset models" in section
