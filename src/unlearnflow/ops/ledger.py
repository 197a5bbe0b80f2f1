"""Deletion requests against a finished experiment, with a certificate each and a ledger per model.

A request is a YAML file (``requests/{experiment}/{name}.yaml``)::

    model: 3               # id of the model in the experiment's original bank
    after: original        # the ledger head it edits: "original" or the previous request's name
    method: gradient_ascent
    samples: [12, 40, 77]  # training-set indices to forget
    hyperparameters: {lr: 0.01}
    seed: 0

What a request reads depends on its method, as for an ``unlearn`` job. The request's samples
(:func:`request_samples`: the inputs under the experiment's training labels, and the validation
split, as a forget set's ``forget_samples``) are all that a **source-free** method gets: the
workflow extracts them in a job of their own (``request_samples``, the one job of the request
that reads the data set), and the request's job reads them, the head model and the shared side
artifacts its method declares (which hold no retain data). A method that is not source-free also
gets the training set. The certificate's ``source_free`` says which of the two the job read.

Processing it (:func:`process_request`) checks it against the model's **ledger**
(``results/{experiment}/ledger/model_{id}/ledger.json``): the request must edit the ledger's
head (request r starts from the result of request r - 1, and from the method's saved state, so
incremental requests compose), may not name a sample an earlier request forgot, and may not be
in the ledger already; a sample outside the training set is refused where the data set is read
(:func:`request_samples`). Each violation is one UserError line and nothing changes. Then the
registered method unlearns the samples from the head model, with the hyper-parameters the
request gives over the method's defaults and those the method derives from the models' training
recipe (``MethodSpec.from_recipe``: the Newton methods' objective and n), and three files are
written: the new head (weights and the method's state, ``{name}.h5``), the **certificate**
(``{name}.json``: hashes of the model before and after and of the forget samples, method,
hyper-parameters, seed, what is measurable without retain data, the method's own certificate,
wall time) and, last, the ledger with the new entry: writing the ledger is the commit, so a
request killed before it leaves the ledger as it was and a rerun completes it.
No file written by a request's job holds the forgotten samples' inputs (only their indices and
hash); the extracted samples are a temporary file of the workflow, removed once the request's
job succeeded.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch

from unlearnflow.core.artifacts import ModelBank, read_bank, read_forget_samples, write_bank, write_forget_samples
from unlearnflow.core.data import Dataset
from unlearnflow.core.forget_sets import ForgetSamples, ForgetSet, validate_indices
from unlearnflow.core.store import expect, provenance, read_artifact, write_artifact, write_text
from unlearnflow.core.training import cross_entropy_loss, predict_logits
from unlearnflow.errors import UserError
from unlearnflow.ops.requests import ORIGINAL, read_request, request_hash, request_needs
from unlearnflow.registry import ARTIFACTS, RequestContext, configurations, spec_of
from unlearnflow.runner import RequestParts, TrainingRows, side_inputs, unlearn_request


def model_hash(weights: Mapping[str, np.ndarray]) -> str:
    """SHA-256 over a model's state dict (names and bytes, in name order)."""
    digest = hashlib.sha256()
    for name in sorted(weights):
        digest.update(name.encode())
        digest.update(np.ascontiguousarray(weights[name]).tobytes())
    return digest.hexdigest()


def samples_hash(inputs: np.ndarray, labels: np.ndarray) -> str:
    """SHA-256 of the forget samples: what a certificate records instead of the samples."""
    return hashlib.sha256(np.ascontiguousarray(inputs).tobytes() + np.ascontiguousarray(labels).tobytes()).hexdigest()


def read_ledger(path: str | Path, model: int) -> dict[str, Any]:
    """The ledger of one model, or a new one (no entries; the head is the original model)."""
    path = Path(path)
    if not path.is_file():
        return {"model": model, "entries": []}
    ledger = json.loads(path.read_text())
    if ledger.get("model") != model:
        raise UserError(f"{path}: the ledger of model {ledger.get('model')}, not of model {model}")
    return ledger


def head(ledger: Mapping[str, Any]) -> str:
    """The name of the ledger's last request, or "original"."""
    return ledger["entries"][-1]["request"] if ledger["entries"] else ORIGINAL


def check_request(request: Mapping[str, Any], ledger: Mapping[str, Any]) -> None:
    """The ledger's rules: a new request, against the head, of samples not forgotten before. Each
    violation is one UserError line."""
    name = request["name"]
    if request["after"] != head(ledger):
        raise UserError(f"request {name}: edits model {ledger['model']} after {request['after']!r}, but the "
                        f"ledger's head is {head(ledger)!r}; make the request against the head")
    for entry in ledger["entries"]:
        again = sorted(set(request["samples"]) & set(entry["samples"]))
        if again:
            raise UserError(f"request {name}: sample(s) {again[:5]} were already forgotten by request "
                            f"{entry['request']}")


def processed_certificate(asked: Mapping[str, Any], request: str | Path, ledger: Mapping[str, Any],
                          directory: Path) -> dict[str, Any] | None:
    """The certificate of a request its model's ledger already holds (a rerun of its job: after a
    kill, ``--rerun-incomplete`` or a touched file), None for a new one. A processed request is
    immutable: one whose fields changed since is one UserError line, and nothing is redone."""
    entry = next((entry for entry in ledger["entries"] if entry["request"] == asked["name"]), None)
    if entry is None:
        return None
    if entry.get("request_hash", request_hash(asked)) != request_hash(asked):
        when = entry.get("processed", "an earlier run")
        raise UserError(f"{request}: request {asked['name']} was processed on {when}; a processed request cannot "
                        "change: restore it and write a new request")
    certificate = directory / f"{asked['name']}.json"
    if not certificate.is_file():
        raise UserError(f"{certificate}: the certificate of request {asked['name']}, which the ledger of model "
                        f"{ledger['model']} holds, is missing; restore it from a copy of the ledger folder")
    return json.loads(certificate.read_text())


def request_samples(request: Mapping[str, Any], dataset: Dataset, labels: np.ndarray) -> ForgetSamples:
    """The request's samples, in index order, under the experiment's training `labels`, and the
    validation split: all that a source-free method may read (a request is an ``indices`` forget
    set). A sample outside the training set is one UserError line."""
    indices = validate_indices(np.asarray(request["samples"]), len(labels), f"request {request['name']}")
    chosen = ForgetSet(request["name"], "indices", (indices,), labels)
    return ForgetSamples.of(chosen, dataset.x_train, dataset.x_val, dataset.y_val, dataset.num_classes)


def write_request_samples(path: str | Path, samples: ForgetSamples, request: Mapping[str, Any],
                          record: Mapping[str, Any]) -> None:
    """The request's samples as a ``forget_samples`` artifact; the provenance's config records
    which request and indices they are (:func:`read_request_samples` checks them)."""
    config = {"request": request["name"], "samples": sorted(request["samples"])}
    write_forget_samples(path, samples, {**record, "config": config})


def read_request_samples(path: str | Path, request: Mapping[str, Any]) -> tuple[ForgetSamples, dict[str, str]]:
    """The samples extracted for `request` and their lineage (the data set and labels they come
    from); samples extracted for another request or other indices are one UserError line."""
    recorded = read_artifact(path, "forget_samples", names=()).provenance
    config = recorded.get("config", {})
    if config.get("request") != request["name"] or config.get("samples") != sorted(request["samples"]):
        raise UserError(f"{path}: the samples of request {config.get('request')!r} (indices "
                        f"{config.get('samples')}), not of request {request['name']!r}; extract them again "
                        "(rule request_samples)")
    return read_forget_samples(path), dict(recorded.get("lineage") or {})


def request_hyperparameters(request: Mapping[str, Any], recipe: Mapping[str, Any] | None) -> dict[str, Any]:
    """The request's hyper-parameters over its method's defaults, with those the method derives
    from the models' training `recipe` filled in (the registry's :func:`configurations`: the
    Newton methods' loss, lam and n_train); a request that sets one otherwise is refused."""
    try:
        return configurations(request["method"], {"hyperparameters": request["hyperparameters"]},
                              recipe)[0].hyperparameters
    except UserError as error:
        raise UserError(f"request {request['name']}: {error}") from None


def load_head(ledger: Mapping[str, Any], ledger_dir: Path, models_path: str | Path) -> tuple[ModelBank, Any]:
    """The head model (a bank of one) and the method state it left (None for the original)."""
    if not ledger["entries"]:
        bank = read_bank(models_path)
        index = np.flatnonzero(bank.model_ids == ledger["model"])
        one = ModelBank(weights={name: value[index] for name, value in bank.weights.items()},
                        model_ids=bank.model_ids[index], seeds=bank.seeds[index],
                        train_masks=np.zeros((1, 0), dtype=bool), logits={}, attrs=dict(bank.attrs))
        return one, None
    entry = ledger["entries"][-1]
    bank = read_bank(ledger_dir / f"{entry['request']}.h5")
    state_file = ledger_dir / f"{entry['request']}.state.h5"
    state = read_state(state_file) if state_file.is_file() else None
    if model_hash({k: v[0] for k, v in bank.weights.items()}) != entry["model_hash_after"]:
        raise UserError(f"{ledger_dir / entry['request']}.h5: the head model's hash differs from the ledger's; "
                        "the file was changed after its request")
    return bank, state


def original_model(models_path: str | Path, model: int,
                   lineage: Mapping[str, str] | None) -> tuple[int, Mapping[str, Any] | None]:
    """The position of model `model` in the original bank (its side inputs are per position) and
    the bank's training recipe; the bank must be the original models of the samples' data set."""
    record = expect(read_artifact(models_path, "model_bank", names=("model_ids",)), role="original",
                    lineage=lineage)
    ids = record["model_ids"]
    index = np.flatnonzero(ids == model)
    if index.size == 0:
        raise UserError(f"{models_path}: no model {model} (ids {ids.min()}..{ids.max()})")
    return int(index[0]), record.attrs.get("training")


def write_state(path: Path, state: Any, record: Mapping[str, Any]) -> None:
    """A method's saved state: a mapping of arrays (e.g. a downdated factorisation) or a JSON value."""
    if isinstance(state, Mapping) and all(isinstance(v, np.ndarray) for v in state.values()):
        write_artifact(path, "ledger_state", dict(state), provenance_record=record, attrs={"form": "arrays"})
    else:
        try:
            text = json.dumps(state)
        except TypeError:
            raise UserError(f"the method's state ({type(state).__name__}) is neither arrays nor JSON: "
                            "it cannot be kept in a ledger") from None
        write_artifact(path, "ledger_state", {}, provenance_record=record, attrs={"form": "json", "json": text})


def read_state(path: Path) -> Any:
    artifact = read_artifact(path, "ledger_state")
    return dict(artifact.arrays) if artifact.attrs["form"] == "arrays" else json.loads(artifact.attrs["json"])


def readouts(model: torch.nn.Module, inputs: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    logits = predict_logits(model, inputs)
    return {"accuracy": float((logits.argmax(1) == labels).float().mean()),
            "loss": float(cross_entropy_loss()(logits, labels).mean())}


def process_request(*, request: str, models: str, ledger_dir: str, samples: ForgetSamples,
                    training_set: tuple[np.ndarray, np.ndarray] | None = None,
                    lineage: Mapping[str, str] | None = None, device: str = "cpu",
                    side_paths: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Process one deletion request (module docstring); returns its certificate.

    `samples` are the request's (:func:`request_samples`). `training_set`, (inputs, the
    experiment's labels) of the whole training set, is what a method that is not source-free
    needs and a source-free one may not be given. `lineage` is the samples' (the data set and
    labels they come from): the original bank must be made from the same.
    """
    start = time.perf_counter()
    asked = read_request(request)
    directory = Path(ledger_dir)
    ledger_path = directory / "ledger.json"
    ledger = read_ledger(ledger_path, asked["model"])
    done = processed_certificate(asked, request, ledger, directory)
    if done is not None:
        return done
    needs, side_paths = request_needs(asked), dict(side_paths or {})
    spec = spec_of(asked["method"])
    if set(needs) != set(side_paths):
        raise UserError(f"request {asked['name']}: {asked['method']} needs the side artifacts "
                        f"{sorted(needs) or 'none'}, got {sorted(side_paths) or 'none'}")
    if spec.source_free and training_set is not None:
        raise UserError(f"request {asked['name']}: {asked['method']} is source-free: it takes the request's samples "
                        "alone, not the data set")
    if not spec.source_free and training_set is None:
        raise UserError(f"request {asked['name']}: {asked['method']} is not source-free: it needs the data set")
    check_request(asked, ledger)
    index, recipe = original_model(models, asked["model"], lineage)
    hp = request_hyperparameters(asked, recipe)
    bank, state = load_head(ledger, directory, models)
    torch_device = torch.device(device)

    def on_device(array: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(array).to(torch_device)

    model = bank.load_models(samples.inputs.shape[1:], samples.num_classes)[0].to(torch_device)
    before_hash = model_hash({k: v[0] for k, v in bank.weights.items()})
    forget_inputs, forget_labels = on_device(samples.inputs), on_device(samples.labels)
    validation = (on_device(samples.x_val), on_device(samples.y_val))
    forgotten = np.unique(np.concatenate([np.asarray(entry["samples"], dtype=np.int64)
                                          for entry in [*ledger["entries"], asked]]))
    # what prepare knows, as in an unlearn job: nothing of the training set when source-free
    context = (RequestContext(None, None, {}) if training_set is None else
               RequestContext(forgotten, training_set[1], {}))
    loaded = {name: ARTIFACTS[name].load(path) for name, path in side_paths.items()} if spec.prepare else {}
    training = None
    if training_set is not None:
        inputs, labels = training_set
        training = TrainingRows(inputs=on_device(inputs), labels=on_device(labels),
                                forget=on_device(np.sort(asked["samples"])),
                                retain=on_device(np.setdiff1d(np.arange(len(labels)), forgotten)))
    parts = RequestParts(forget_inputs=forget_inputs, forget_labels=forget_labels, num_classes=samples.num_classes,
                         validation_inputs=validation[0], validation_labels=validation[1],
                         step=len(ledger["entries"]), training=training)
    measured_before = {"forget": readouts(model, forget_inputs, forget_labels),
                       "validation": readouts(model, *validation)}
    result = unlearn_request(spec, model, parts, side_inputs(spec, loaded, hp, context)(index), state, hp,
                             int(asked["seed"]))
    weights = {name: value.detach().cpu().numpy()[None] for name, value in model.state_dict().items()}
    after_hash = model_hash({k: v[0] for k, v in weights.items()})
    certificate = {
        "request": asked["name"], "model": asked["model"], "method": asked["method"], "paper": spec.paper,
        # what this job read: the request's samples alone, or the training set as well
        "source_free": training_set is None, "hyperparameters": hp, "seed": int(asked["seed"]),
        "samples": sorted(asked["samples"]), "samples_hash": samples_hash(samples.inputs, samples.labels),
        "model_hash_before": before_hash, "model_hash_after": after_hash, "after": asked["after"],
        "measured": {"before": measured_before, "after": {"forget": readouts(model, forget_inputs, forget_labels),
                                                          "validation": readouts(model, *validation)}},
        "method_certificate": dict(result.certificate or {}), "unlearn_seconds": result.cost.seconds,
        "examples": result.cost.examples, "wall_seconds": time.perf_counter() - start,
    }
    record = provenance({"request": asked}, {"seed": asked["seed"]}, [request])
    new_head = ModelBank(weights=weights, model_ids=bank.model_ids, seeds=bank.seeds,
                         train_masks=np.zeros((1, 0), dtype=bool), logits={},
                         attrs={**{k: bank.attrs[k] for k in ("arch", "model_options")},
                                "role": f"ledger/model_{asked['model']}/{asked['name']}"})
    write_bank(directory / f"{asked['name']}.h5", new_head, record)
    if result.state is not None:
        write_state(directory / f"{asked['name']}.state.h5", result.state, record)
    write_text(directory / f"{asked['name']}.json", json.dumps(certificate, indent=2, default=float))
    entry = {**{key: certificate[key] for key in ("request", "method", "samples", "samples_hash", "model_hash_before",
                                                  "model_hash_after", "seed")},
             "request_hash": request_hash(asked), "processed": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())}
    write_text(ledger_path, json.dumps({**ledger, "entries": [*ledger["entries"], entry]}, indent=2))
    return certificate
