"""Deletion requests: request -> certificate -> ledger, and the ledger's one-line refusals."""

import json
import re
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
import yaml

from unlearnflow.core.artifacts import train_bank, weights_only, write_bank, write_dataset
from unlearnflow.core.data import load_dataset
from unlearnflow.core.models import build_model
from unlearnflow.core.training import FitStats, TrainConfig, model_seed
from unlearnflow.errors import UserError
from unlearnflow.methods.request import MethodResult
from unlearnflow.ops import ledger as ledger_module
from unlearnflow.ops.ledger import model_hash, process_request
from unlearnflow.registry import EDITS_MODEL, METHODS, MethodSpec, register

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


def process(root: Path, path: str) -> dict:
    return process_request(request=path, data=str(root / "data.h5"), models=str(root / "original_models.h5"),
                           ledger_dir=str(root / "ledger"))


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
    refusals = {
        "sample(s) [5] were already forgotten by request r1": dict(after="r2", samples=[5, 20]),
        "unknown sample(s) [100000]": dict(after="r2", samples=[100000]),
        "but the ledger's head is 'r2'": dict(after="original", samples=[30]),
        "already in the ledger": dict(after="r2", samples=[40], name="r1"),
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
    root, _, _ = experiment
    root = Path(tmp_path / "copy")
    root.mkdir()
    for name in ("data.h5", "original_models.h5"):
        (root / name).write_bytes((Path(experiment[0]) / name).read_bytes())
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
    root = Path(tmp_path / "copy")
    root.mkdir()
    for name in ("data.h5", "original_models.h5"):
        (root / name).write_bytes((Path(experiment[0]) / name).read_bytes())
    seen = []

    def counting(model, request, hp, seed):
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
    from unlearnflow.ops.ledger import read_request
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
