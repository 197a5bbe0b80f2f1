"""Deletion requests: request -> certificate -> ledger, and the ledger's one-line refusals."""

import json
import re
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
import yaml

from unlearnflow.core.artifacts import (
    read_bank,
    read_forget_samples,
    train_bank,
    weights_only,
    write_bank,
    write_dataset,
    write_forget_set,
)
from unlearnflow.core.data import load_dataset
from unlearnflow.core.forget_sets import build_forget_set
from unlearnflow.core.models import build_model
from unlearnflow.core.training import FitStats, TrainConfig, model_seed
from unlearnflow.errors import UserError
from unlearnflow.methods.request import ForgetRequest, MethodResult
from unlearnflow.ops import ledger as ledger_module
from unlearnflow.ops.ledger import model_hash
from unlearnflow.ops.requests import read_request
from unlearnflow.registry import EDITS_MODEL, METHODS, MethodSpec, register, spec_of
from unlearnflow.sourcefree.linear import LinearObjective, identity_features, train_linear_bank
from unlearnflow.stages import deletion_request, make_request_samples

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def experiment(tmp_path_factory):
    """data.h5 and original_models.h5 of two small digits MLPs."""
    root = tmp_path_factory.mktemp("experiment")
    dataset = load_dataset({"loader": "digits", "max_train": 300})
    build = lambda: build_model("mlp", dataset.input_shape, 10, hidden=[16])  # noqa: E731
    seeds = [model_seed(0, "original", i) for i in range(2)]
    bank = train_bank(build, "mlp", {"hidden": [16]}, "original", range(2), seeds, dataset, dataset.y_train,
                      np.ones((2, len(dataset.y_train)), bool), TrainConfig(epochs=10, batch_size=32),
                      torch.device("cpu"), progress=False)
    write_dataset(root / "data.h5", dataset, {})
    write_bank(root / "original_models.h5", weights_only(bank), {})
    return root, dataset, bank


def request(directory: Path, name: str, **fields) -> str:
    path = directory / f"{name}.yaml"
    path.write_text(yaml.safe_dump({"model": 1, "method": "gradient_ascent", "seed": 0,
                                    "hyperparameters": {"lr": 0.05, "epochs": 3}, **fields}))
    return str(path)


def process(root: Path, path: str, data: str = "data.h5") -> dict:
    """A request as the workflow runs it: for a source-free method, the extraction of its samples
    (the only reader of the data set), then its job on the samples alone; for any other method,
    its job on the data set. Returns the certificate."""
    asked = read_request(path)
    where = dict(request=path, models=str(root / "original_models.h5"), ledger_dir=str(root / "ledger"))
    if spec_of(asked["method"]).source_free:
        samples = root / "request_samples" / f"{asked['name']}.h5"
        make_request_samples(request=path, data=str(root / data), out=str(samples))
        deletion_request(samples=str(samples), **where)
    else:
        deletion_request(data=str(root / data), **where)
    return json.loads((root / "ledger" / f"{asked['name']}.json").read_text())


def copy_experiment(experiment, directory: Path) -> Path:
    """A private copy of the experiment's data and models (for tests that write a ledger)."""
    directory.mkdir()
    for path in Path(experiment[0]).glob("*.h5"):
        (directory / path.name).write_bytes(path.read_bytes())
    return directory


def test_requests_chain_in_the_ledger_and_errors_change_nothing(experiment, tmp_path):
    root, dataset, bank = experiment
    root = Path(root)
    first = process(root, request(tmp_path, "r1", after="original", samples=[5, 3, 8]))
    assert first["model_hash_before"] == model_hash({name: value[1] for name, value in bank.weights.items()})
    assert first["model_hash_after"] != first["model_hash_before"]
    assert first["samples"] == [3, 5, 8] and first["source_free"] is True
    assert first["measured"]["after"]["forget"]["loss"] > first["measured"]["before"]["forget"]["loss"]
    second = process(root, request(tmp_path, "r2", after="r1", samples=[10, 11]))
    assert second["model_hash_before"] == first["model_hash_after"]  # request 2 starts from request 1's result
    ledger_file = root / "ledger" / "ledger.json"
    entries = json.loads(ledger_file.read_text())["entries"]
    assert [entry["request"] for entry in entries] == ["r1", "r2"]
    assert json.loads((root / "ledger" / "r2.json").read_text())["model_hash_after"] == second["model_hash_after"]

    before = ledger_file.read_bytes()
    # a rerun of a processed request's job (after a kill, --rerun-incomplete, a touched file)
    # returns its certificate and changes nothing (issue 19, items 1 and 2)
    assert process(root, request(tmp_path, "r1", after="original", samples=[5, 3, 8])) == first
    assert ledger_file.read_bytes() == before
    refusals = {
        "sample(s) [5] were already forgotten by request r1": dict(after="r2", samples=[5, 20]),
        "request bad: index 100000 is out of range (the training set has 300 points": dict(after="r2",
                                                                                           samples=[100000]),
        "but the ledger's head is 'r2'": dict(after="original", samples=[30]),
        "r1.yaml: request r1 was processed on 20": dict(after="r2", samples=[40], name="r1"),
    }
    for message, fields in refusals.items():
        name = fields.pop("name", "bad")
        with pytest.raises(UserError, match=re.escape(message)) as caught:
            process(root, request(tmp_path, name, **fields))
        assert "\n" not in str(caught.value)
        assert ledger_file.read_bytes() == before

    # nothing a request wrote holds the forgotten samples' inputs
    forgotten = dataset.x_train[[3, 5, 8, 10, 11]].reshape(5, -1)
    for path in (root / "ledger").glob("*.h5"):
        with h5py.File(path) as h5:
            names = []
            h5.visit(names.append)
            for name in names:
                if isinstance(h5[name], h5py.Dataset):
                    flat = np.asarray(h5[name][()]).reshape(-1)
                    assert not any(np.isin(row, flat).all() for row in forgotten), (path, name)


def test_a_killed_request_leaves_the_ledger_and_a_rerun_completes_it(experiment, tmp_path, monkeypatch):
    root = copy_experiment(experiment, tmp_path / "copy")
    path = request(tmp_path, "r1", after="original", samples=[1, 2])
    original_write = ledger_module.write_text

    def killed_at_the_commit(target, text):
        if Path(target).name == "ledger.json":
            raise KeyboardInterrupt  # the process dies after the model and certificate, before the ledger
        return original_write(target, text)

    monkeypatch.setattr(ledger_module, "write_text", killed_at_the_commit)
    with pytest.raises(KeyboardInterrupt):
        process(root, path)
    assert not (root / "ledger" / "ledger.json").exists()
    monkeypatch.setattr(ledger_module, "write_text", original_write)
    done = process(root, path)
    entries = json.loads((root / "ledger" / "ledger.json").read_text())["entries"]
    assert [entry["request"] for entry in entries] == ["r1"] and entries[0]["model_hash_after"] == done["model_hash_after"]


def test_the_methods_state_carries_from_request_to_request(experiment, tmp_path):
    root = copy_experiment(experiment, tmp_path / "copy")
    seen = []

    def counting(model, request, hp, seed):
        assert type(request) is ForgetRequest  # a source-free method gets no training set
        seen.append((request.step, request.state))
        with torch.no_grad():
            list(model.parameters())[-1].add_(0.1)
        return MethodResult(FitStats(0.0, 1, len(request.forget_inputs)), certificate={"bound": 1.5},
                            state={"downdated": np.full(3, (request.state or {"downdated": np.zeros(3)})["downdated"][0]
                                                        + 1.0)})

    register(MethodSpec("toy_counting", "test", EDITS_MODEL, {}, {}, unlearn=counting, source_free=True))
    try:
        for name, after, samples in (("a", "original", [1]), ("b", "a", [2]), ("c", "b", [3])):
            certificate = process(root, request(tmp_path, name, method="toy_counting", hyperparameters={},
                                                after=after, samples=samples))
    finally:
        METHODS.pop("toy_counting")
    assert [step for step, _ in seen] == [0, 1, 2] and seen[0][1] is None
    assert [state["downdated"][0] for _, state in seen[1:]] == [1.0, 2.0]
    assert certificate["method_certificate"] == {"bound": 1.5}


def test_request_files_are_checked(tmp_path):
    from unlearnflow.ops.requests import read_request
    for fields, message in (({"model": 1, "after": "original", "method": "gradient_ascent", "samples": []},
                             "non-empty list"),
                            ({"model": 1, "after": "original", "method": "gradient_ascent", "samples": [1, 1]},
                             "more than once"),
                            ({"model": 1, "method": "gradient_ascent", "samples": [1], "sample": 3},
                             "unknown key(s) sample; missing key(s) after")):
        path = tmp_path / "r.yaml"
        path.write_text(yaml.safe_dump(fields))
        with pytest.raises(UserError, match=re.escape(message)):
            read_request(path)



@pytest.mark.parametrize("requests, message", [
    ({"a": {"method": "gradient_ascnt"}}, "a.yaml: method: unknown unlearning method 'gradient_ascnt'"),
    ({"a": {"method": "dm_direct"}}, "a.yaml: method: dm_direct cannot serve deletion requests"),
    ({"a": {"method": "dmm"}}, "a.yaml: method: dmm cannot serve deletion requests (its targets come from"),
    ({"a": {"hyperparameters": {"lr": -1}}}, "a.yaml: hyperparameters.lr: -1 must be > 0"),
    ({"a": {"hyperparameters": {"lrr": 0.1}}}, "a.yaml: hyperparameters: gradient_ascent: unknown hyper-parameter"),
    ({"a": {"model": "one"}}, "a.yaml: model: must be int, got 'one'"),
    ({"a": {}, "b": {"after": "c"}}, "b.yaml: after: no request 'c'"),
    ({"a": {"model": 2}, "b": {"after": "a"}}, "b.yaml: after: a is a request of model 2, not of model 1"),
])
def test_request_files_are_checked_as_the_workflow_is_parsed(tmp_path, requests, message):
    """Issue 19, items 3 and 4: a request naming another model's head, a misspelled method or a bad
    hyper-parameter is one line naming the file and the key, before any job runs."""
    from unlearnflow.ops.requests import experiment_requests
    folder = tmp_path / "requests" / "exp"
    folder.mkdir(parents=True)
    for name, fields in requests.items():
        request = {"model": 1, "after": "original", "method": "gradient_ascent", "samples": [3], **fields}
        (folder / f"{name}.yaml").write_text(yaml.safe_dump(request))
    with pytest.raises(UserError, match=re.escape(message)):
        experiment_requests("exp", root=tmp_path)


def test_a_source_free_request_reads_its_samples_alone_and_another_method_the_data(experiment, tmp_path):
    root, dataset = copy_experiment(experiment, tmp_path / "copy"), experiment[1]
    where = dict(models=str(root / "original_models.h5"), ledger_dir=str(root / "ledger"))
    ascent = request(tmp_path, "a", after="original", samples=[7, 2])
    descent = request(tmp_path, "b", method="gradient_descent", hyperparameters={"lr": 0.05}, after="a", samples=[9])
    for path in (ascent, descent):
        make_request_samples(request=path, data=str(root / "data.h5"), out=str(root / f"{Path(path).stem}.h5"))
    extracted = read_forget_samples(root / "a.h5")
    assert np.array_equal(extracted.inputs, dataset.x_train[[2, 7]])  # in index order, nothing else of the
    assert np.array_equal(extracted.labels, dataset.y_train[[2, 7]])  # training set
    assert np.array_equal(extracted.x_val, dataset.x_val) and np.array_equal(extracted.y_val, dataset.y_val)

    (root / "data.h5").rename(root / "elsewhere.h5")  # the source-free request's job cannot read the data set
    with pytest.raises(UserError, match=re.escape("a.h5: the samples of request 'a' (indices [2, 7]), not of "
                                                  "request 'b'")):
        deletion_request(request=descent, samples=str(root / "a.h5"), **where)
    deletion_request(request=ascent, samples=str(root / "a.h5"), **where)
    assert json.loads((root / "ledger" / "a.json").read_text())["source_free"] is True
    # a method that is not source-free needs the data set, a source-free one may not be given it
    with pytest.raises(UserError, match="gradient_descent is not source-free: it needs the data set"):
        deletion_request(request=descent, samples=str(root / "b.h5"), **where)
    with pytest.raises(UserError, match="gradient_ascent is source-free: it takes the request's samples alone"):
        deletion_request(request=request(tmp_path, "c", after="a", samples=[11]), data=str(root / "elsewhere.h5"),
                         **where)
    deletion_request(request=descent, data=str(root / "elsewhere.h5"), **where)
    certificate = json.loads((root / "ledger" / "b.json").read_text())
    assert certificate["source_free"] is False and certificate["model_hash_after"] != certificate["model_hash_before"]


def test_request_samples_carry_the_labels_the_models_trained_on(experiment, tmp_path):
    """In an experiment with a poison set every model trained on its flipped labels: a request's
    samples carry those, as a forget set's samples do."""
    root, dataset = Path(experiment[0]), experiment[1]
    poison = build_forget_set("p", {"kind": "poison", "pairs": [[0, 1]], "budget": 0.1}, dataset.x_train,
                              dataset.y_train, seed=0)
    write_forget_set(tmp_path / "p.h5", poison, {})
    flipped = poison.indices[:3]
    make_request_samples(request=request(tmp_path, "p", after="original", samples=flipped.tolist()),
                         data=str(root / "data.h5"), labels_from=str(tmp_path / "p.h5"), out=str(tmp_path / "s.h5"))
    labels = read_forget_samples(tmp_path / "s.h5").labels
    assert np.array_equal(labels, poison.train_labels[flipped]) and (labels != dataset.y_train[flipped]).all()


@pytest.fixture(scope="module")
def linear_experiment(tmp_path_factory):
    """features.h5 and original_models.h5 of two linear models trained to optimum on the squared
    loss with lam 0.01 (not the Newton methods' default 1e-3) and no objective noise."""
    root = tmp_path_factory.mktemp("linear")
    features = identity_features(load_dataset({"loader": "digits", "max_train": 300}))
    objective = LinearObjective("squared", 0.01)
    write_dataset(root / "features.h5", features, {})
    write_bank(root / "original_models.h5", weights_only(train_linear_bank(features, objective, 0.0, [5, 6])), {})
    return root, features, objective


def test_newton_requests_take_the_objective_and_n_from_the_banks_recipe(linear_experiment, tmp_path):
    """Model 1 trained on the squared loss with lam 0.01: a newton_certified request must run
    Newton's step on that objective, which removes the samples exactly (the model retrained
    without them); a newton_source_free request also needs n, which only the recipe knows."""
    source, features, objective = linear_experiment
    n_train, forgotten = len(features.y_train), [3, 8, 40, 41, 99]
    root = copy_experiment((source,), tmp_path / "certified")
    certified = process(root, request(tmp_path, "c", method="newton_certified", hyperparameters={}, after="original",
                                      samples=forgotten), data="features.h5")
    assert {key: certified["hyperparameters"][key] for key in ("loss", "lam")} == {"loss": "squared", "lam": 0.01}
    retain = np.ones(n_train, dtype=bool)
    retain[forgotten] = False
    retrained = train_linear_bank(features, objective, 0.0, [6], train_mask=retain).weights
    head = read_bank(root / "ledger" / "c.h5").weights
    original = read_bank(root / "original_models.h5").weights
    assert set(head) == set(retrained)
    for name in head:
        assert np.abs(head[name][0] - retrained[name][0]).max() < 1e-4
        assert np.abs(original[name][1] - retrained[name][0]).max() > 1e-3  # the step did move the model
    with pytest.raises(UserError, match=re.escape("request d: methods.newton_certified: lam comes from the training "
                                                  "recipe (0.01)")):
        process(root, request(tmp_path, "d", method="newton_certified", hyperparameters={"lam": 0.5}, after="c",
                              samples=[50]), data="features.h5")

    root = copy_experiment((source,), tmp_path / "source_free")
    estimated = process(root, request(tmp_path, "s", method="newton_source_free", after="original", samples=forgotten,
                                      hyperparameters={"variant": "corrected", "m": 150}), data="features.h5")
    assert {key: estimated["hyperparameters"][key] for key in ("loss", "lam", "n_train")} == {
        "loss": "squared", "lam": 0.01, "n_train": n_train}
    assert estimated["source_free"] is True


def test_pgu_requests_keep_the_downdated_factorisation_between_requests(experiment, tmp_path):
    """Issue 19, item 4: a PGU request ran, then was refused because its state (the factorisation)
    "is neither arrays nor JSON". Its state is now arrays: the ledger keeps it, and the second
    request starts from the first one's downdated factorisation, not the cached one."""
    from unlearnflow.ops.ledger import read_state
    from unlearnflow.pgu.gradient_space import Factorisation
    from unlearnflow.stages import gradient_space
    root = copy_experiment(experiment, tmp_path / "pgu")
    gradient_space(data=str(root / "data.h5"), originals=str(root / "original_models.h5"),
                   out=str(root / "gradient_space.h5"), device="cpu", threads=1)
    side = [f"gradient_space={root / 'gradient_space.h5'}"]
    hyperparameters = {"epochs": 2, "stopping": "none"}
    for name, after, samples in (("a", "original", [3, 4, 5]), ("b", "a", [6, 7])):
        path = request(tmp_path, name, method="pgu_tuned", after=after, samples=samples,
                       hyperparameters=hyperparameters)
        request_samples = root / "request_samples" / f"{name}.h5"
        make_request_samples(request=path, data=str(root / "data.h5"), out=str(request_samples))
        deletion_request(request=path, samples=str(request_samples), models=str(root / "original_models.h5"),
                         ledger_dir=str(root / "ledger"), side=side)
    ledger = json.loads((root / "ledger" / "ledger.json").read_text())
    assert [entry["request"] for entry in ledger["entries"]] == ["a", "b"]
    states = [Factorisation.from_arrays(read_state(root / "ledger" / f"{name}.state.h5")) for name in ("a", "b")]
    # b downdated a's factorisation by its own samples' representations: less energy in every layer
    for layer in states[0].layers:
        assert states[1].layers[layer].singular_values.sum() < states[0].layers[layer].singular_values.sum()
