"""The stage table (issue 24): one entry per rule, read by the rules, the store's rebuild advice,
the config checks and the registry's artifacts. A toy cached artifact is added the way the
README's "Adding a cached artifact" says: a stage entry, the code that writes and reads it, an
artifact entry a method can need (and its rule, which the workflow tests cover for the real ones)."""

import re
from pathlib import Path

import numpy as np
import pytest

from unlearnflow.config import load_config_file, load_schema, rule_resources, validate_config
from unlearnflow.core import stage_table
from unlearnflow.core.stage_table import STAGE_VERSIONS, STAGES, Stage, output_template, stage_of_path, version_of
from unlearnflow.core.store import read_artifact, rule_of, write_artifact
from unlearnflow.errors import UserError
from unlearnflow.lazy import Lazy
from unlearnflow.registry import ARTIFACTS, ArtifactSpec

ROOT = Path(__file__).resolve().parents[1]


def default_config(**changes):
    config = {**load_config_file(ROOT / "config.yaml"), **changes}
    config.pop("experiments", None)
    return config


@pytest.fixture
def toy_stage(monkeypatch):
    """The toy artifact's entry: per-forget-set scores, made by a rule ``toy_scores``."""
    monkeypatch.setitem(STAGE_VERSIONS, "toy_scores", 3)
    monkeypatch.setitem(STAGES, "toy_scores", Stage({"": "toy/{forget_set}.h5"}, "toy_scores", {"runtime": 5}))
    monkeypatch.setitem(ARTIFACTS, "toy_scores", ArtifactSpec(
        "toy_scores", "", Lazy("unlearnflow.core.store:read_artifact"), contains_retain_data=False,
        for_shadows=False, description="a toy score per point"))


def write_toy_scores(path):
    """What the toy rule's job would run: an artifact of its stage's kind, at its stage's version."""
    return write_artifact(path, "toy_scores", {"scores": np.arange(4.0)})


def test_a_toy_artifact_is_one_entry_that_every_reader_knows(tmp_path, toy_stage):
    assert output_template("toy_scores", forget_set="a") == "toy/a.h5"
    assert ARTIFACTS["toy_scores"].path == "toy/{forget_set}.h5"
    path = tmp_path / "results" / "exp" / "toy" / "a.h5"
    path.parent.mkdir(parents=True)
    write_toy_scores(path)
    np.testing.assert_array_equal(read_artifact(path, "toy_scores")["scores"], np.arange(4.0))
    assert read_artifact(path, "toy_scores").version == version_of("toy_scores") == 3
    # a stale or damaged file names its path and rule
    assert rule_of(path) == "toy_scores"
    with pytest.raises(UserError, match=re.escape("--forcerun results/exp/toy/a.h5 (rule toy_scores;")):
        read_artifact(path, "toy_scores", version=4)
    # its resources come from the table, and the config may set them
    config = validate_config(default_config(resources={"toy_scores": {"threads": 2}}),
                             load_schema(ROOT / "workflow/schemas/config.schema.yaml"))
    assert rule_resources(config, "toy_scores") == {"threads": 2, "mem_mb": 4000, "runtime": 5, "gpu": 0}


def test_a_rule_the_table_does_not_know_is_refused_in_the_config():
    with pytest.raises(UserError, match="resources: unknown rule.s. toy_scores"):
        validate_config(default_config(resources={"toy_scores": {"threads": 2}}),
                        load_schema(ROOT / "workflow/schemas/config.schema.yaml"))


def test_every_rule_output_maps_back_to_its_rule():
    for rule, entry in STAGES.items():
        for output, template in entry.outputs.items():
            concrete = re.sub(r"\{(\w+)\}", lambda match: f"x_{match.group(1)}", template)
            assert stage_of_path(concrete) == (rule, True), (rule, output)
        for template in entry.also_writes:
            assert stage_of_path(re.sub(r"\{\w+\}", "x", template)) == (rule, False)


def test_every_stage_writes_a_versioned_kind_and_declares_known_resources():
    for rule, entry in STAGES.items():
        assert entry.kind in STAGE_VERSIONS, rule
        assert set(entry.resources) <= set(stage_table.DEFAULT_RESOURCES), rule
    assert version_of("fit_datamodels") == STAGE_VERSIONS["datamodels"]


def test_a_cuda_experiment_gives_a_gpu_to_the_stages_that_run_models():
    cuda = {"device": "cuda"}
    assert rule_resources(cuda, "unlearn")["gpu"] == 1 and rule_resources(cuda, "report")["gpu"] == 0
    assert rule_resources({"device": "cpu"}, "unlearn")["gpu"] == 0
    assert rule_resources({**cuda, "resources": {"unlearn": {"gpu": 2}}}, "unlearn")["gpu"] == 2


def test_an_artifact_spec_is_the_output_of_a_stage():
    for name, artifact in ARTIFACTS.items():
        assert artifact.stage in STAGES and artifact.output in STAGES[artifact.stage].outputs, name
    assert ARTIFACTS["datamodels"].path == "datamodels.h5"


def test_every_work_and_size_factor_of_the_table_is_one_the_estimate_computes():
    from unlearnflow.ops.estimate import FACTORS
    used = {factor for entry in STAGES.values() for factor in (*entry.work, *entry.size)}
    assert used <= set(FACTORS) and len(used) > 20
    assert {rule for rule, entry in STAGES.items() if entry.records_seconds} == {
        "train_originals", "train_oracles", "train_subset_models", "retrain", "ulira_base_models", "ulira"}
