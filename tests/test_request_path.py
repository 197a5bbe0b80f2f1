"""One request path (issue 24): the runner, U-LiRA's shadows and the deletion ledger all build and
apply requests through runner.unlearn_request. A recording toy method receives the same kind of
request from each of the three, and a source-free one never a retain input."""

import dataclasses
import json

import numpy as np
import pytest
import torch
import yaml

from unlearnflow.core.artifacts import train_bank, weights_only, write_bank, write_dataset
from unlearnflow.core.data import load_dataset
from unlearnflow.core.forget_sets import build_forget_set
from unlearnflow.core.models import build_model
from unlearnflow.core.training import FitStats, TrainConfig, model_seed, subset_mask
from unlearnflow.errors import UserError
from unlearnflow.evaluation.ulira import run_ulira
from unlearnflow.methods.request import ForgetRequest, MethodResult, UnlearningRequest
from unlearnflow.registry import EDITS_MODEL, METHODS, MethodSpec, register, spec_of
from unlearnflow.runner import RequestParts, TrainingRows, apply_method, unlearn_request
from unlearnflow.stages import deletion_request, make_request_samples

pytestmark = pytest.mark.usefixtures("one_thread")
RECORDED: dict[str, list[tuple]] = {}


def describe(request: ForgetRequest) -> tuple:
    """What a request holds, independent of which points: its type, the fields it fills, the
    shapes of a forget input and of the validation split, the number of classes."""
    filled = tuple(sorted(field.name for field in dataclasses.fields(request)
                          if getattr(request, field.name) is not None and field.name not in ("side", "state", "step")))
    return (type(request).__name__, filled, tuple(request.forget_inputs.shape[1:]),
            tuple(request.validation_inputs.shape), request.num_classes)


def recorder(name):
    def unlearn(model, request, hp, seed):
        RECORDED.setdefault(name, []).append(describe(request))
        if isinstance(request, UnlearningRequest):
            assert not set(request.forget.tolist()) & set(request.retain.tolist())
        return MethodResult(FitStats(0.0, 1, len(request.forget_inputs)))
    return unlearn


@pytest.fixture(scope="module")
def toy_methods():
    for name, source_free in (("toy_record_source_free", True), ("toy_record_full", False)):
        register(MethodSpec(name, "test", EDITS_MODEL, {}, {}, unlearn=recorder(name), source_free=source_free))
    yield
    for name in ("toy_record_source_free", "toy_record_full"):
        METHODS.pop(name)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Eight digits MLPs on random halves (base models for U-LiRA, originals for the rest), their
    data set and bank on disk for the ledger."""
    root = tmp_path_factory.mktemp("request_path")
    dataset = load_dataset({"loader": "digits", "max_train": 300})
    seeds = [model_seed(0, "original", i) for i in range(8)]
    masks = np.stack([subset_mask(seed, len(dataset.y_train), 0.5) for seed in seeds])
    build = lambda: build_model("mlp", dataset.input_shape, 10, hidden=[8])  # noqa: E731
    bank = train_bank(build, "mlp", {"hidden": [8]}, "original", range(8), seeds, dataset, dataset.y_train, masks,
                      TrainConfig(epochs=2, batch_size=64), torch.device("cpu"), progress=False)
    write_dataset(root / "data.h5", dataset, {})
    write_bank(root / "original_models.h5", weights_only(bank), {})
    return root, dataset, bank


def run_all_three(method, world):
    root, dataset, bank = world
    RECORDED.pop(method, None)
    forget_set = build_forget_set("r", {"kind": "random", "size": 3}, dataset.x_train, dataset.y_train, seed=0)
    apply_method(method, bank, dataset, forget_set)
    runner = RECORDED.pop(method)
    run_ulira(method, bank, dataset, dataset.y_train, TrainConfig(epochs=1), 0, forget_sets_per_model=4,
              forget_size=2, pool_class=0, pool_size=10, device=torch.device("cpu"))
    shadows = RECORDED.pop(method)
    path = root / f"{method}.yaml"
    path.write_text(yaml.safe_dump({"model": 1, "method": method, "seed": 0, "hyperparameters": {},
                                    "after": "original", "samples": [4, 9]}))
    where = dict(request=str(path), models=str(root / "original_models.h5"), ledger_dir=str(root / "ledger" / method))
    if spec_of(method).source_free:
        samples = root / f"{method}_samples.h5"
        make_request_samples(request=str(path), data=str(root / "data.h5"), out=str(samples))
        deletion_request(samples=str(samples), **where)
    else:
        deletion_request(data=str(root / "data.h5"), **where)
    ledger = RECORDED.pop(method)
    certificate = json.loads((root / "ledger" / method / f"{method}.json").read_text())
    return runner, shadows, ledger, certificate


def test_the_runner_the_shadows_and_the_ledger_hand_a_method_the_same_request(toy_methods, world):
    runner, shadows, ledger, certificate = run_all_three("toy_record_source_free", world)
    assert len(runner) == 8 and len(shadows) == 8 * 4 and len(ledger) == 1
    dataset = world[1]
    assert set(runner) == set(shadows) == set(ledger) == {
        ("ForgetRequest", ("forget_inputs", "forget_labels", "num_classes", "validation_inputs",
                           "validation_labels"), dataset.x_train.shape[1:], dataset.x_val.shape, 10)}
    assert certificate["source_free"]

    runner, shadows, ledger, certificate = run_all_three("toy_record_full", world)
    assert set(runner) == set(shadows) == set(ledger) and len(set(runner)) == 1
    kind, filled, *_ = runner[0]
    assert kind == "UnlearningRequest" and {"inputs", "labels", "forget", "retain"} <= set(filled)
    assert not certificate["source_free"]


def test_a_source_free_method_cannot_be_handed_the_training_set_nor_another_method_denied_it(toy_methods):
    rows = torch.zeros((5, 2))
    training = TrainingRows(inputs=rows, labels=torch.zeros(5, dtype=torch.long), forget=torch.tensor([0]),
                            retain=torch.tensor([1, 2, 3, 4]))
    parts = RequestParts(forget_inputs=rows[:1], forget_labels=torch.zeros(1, dtype=torch.long), num_classes=2,
                         training=training)
    model = torch.nn.Linear(2, 2)
    with pytest.raises(UserError, match="toy_record_source_free is source-free: its request takes the forget samples"):
        unlearn_request(spec_of("toy_record_source_free"), model, parts, {}, None, {}, 0)
    with pytest.raises(UserError, match="toy_record_full is not source-free: its request needs the training set"):
        unlearn_request(spec_of("toy_record_full"), model, dataclasses.replace(parts, training=None), {}, None, {}, 0)
