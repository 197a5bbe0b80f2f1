"""Typed readers and writers for the workflow's artifacts, on top of :mod:`unlearnflow.core.store`.

- ``dataset``: the normalised splits of :class:`~unlearnflow.core.data.Dataset`.
- ``forget_set``: the requests of a :class:`~unlearnflow.core.forget_sets.ForgetSet` and the
  experiment's training labels (poisoned labels for a poison set).
- ``forget_samples``: the forget samples of a forget set and the validation split, all that a
  source-free method may read (:class:`~unlearnflow.core.forget_sets.ForgetSamples`).
- ``model_bank``: E models of one role (original, oracle of a forget set, ...): stacked weights
  (``weights/<state dict name>``), model ids and seeds, each model's training mask, its logits on
  every train/val/test point (``logits/<split>``), and the training cost.

Readers take what the caller expects (a bank's role, the lineage of what it was made from, see
:func:`unlearnflow.core.store.expect`) and refuse anything else with one line.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch
from torch import nn

from unlearnflow.core.data import Dataset
from unlearnflow.core.ensemble import fit_many, predict_logits_many
from unlearnflow.core.forget_sets import ForgetSamples, ForgetSet
from unlearnflow.core.models import build_model, load_pretrained
from unlearnflow.core.store import expect, file_checksum, read_artifact, write_artifact
from unlearnflow.core.training import TrainConfig
from unlearnflow.errors import UserError

SPLITS = ("train", "val", "test")


def write_dataset(path: str | Path, dataset: Dataset, provenance: Mapping[str, Any]) -> Path:
    arrays = {f"{axis}_{split}": getattr(dataset, f"{axis}_{split}") for split in SPLITS for axis in "xy"}
    arrays.update(classes=np.array(dataset.classes), mean=dataset.mean, std=dataset.std)
    return write_artifact(path, "dataset", arrays, attrs={"name": dataset.name}, provenance_record=provenance)


def read_dataset(path: str | Path) -> Dataset:
    artifact = read_artifact(path, "dataset")
    arrays = {f"{axis}_{split}": artifact[f"{axis}_{split}"] for split in SPLITS for axis in "xy"}
    return Dataset(name=artifact.attrs["name"], classes=tuple(artifact["classes"]), mean=artifact["mean"],
                   std=artifact["std"], **arrays)


def write_forget_set(path: str | Path, forget_set: ForgetSet, provenance: Mapping[str, Any]) -> Path:
    arrays = {f"requests/{r}": request for r, request in enumerate(forget_set.requests)}
    arrays.update(indices=forget_set.indices, train_labels=forget_set.train_labels)
    return write_artifact(path, "forget_set", arrays, provenance_record=provenance,
                          attrs={"name": forget_set.name, "kind": forget_set.kind,
                                 "n_requests": len(forget_set.requests)})


def read_forget_set(path: str | Path, lineage: Mapping[str, str] | None = None) -> ForgetSet:
    """A forget set; with `lineage`, it must have been drawn from that data set."""
    artifact = expect(read_artifact(path, "forget_set"), lineage=lineage)
    requests = tuple(artifact[f"requests/{r}"] for r in range(artifact.attrs["n_requests"]))
    return ForgetSet(artifact.attrs["name"], artifact.attrs["kind"], requests, artifact["train_labels"])


def write_forget_samples(path: str | Path, samples: ForgetSamples, provenance: Mapping[str, Any]) -> Path:
    arrays = {"inputs": samples.inputs, "labels": samples.labels, "request_of": samples.request_of,
              "x_val": samples.x_val, "y_val": samples.y_val}
    return write_artifact(path, "forget_samples", arrays, provenance_record=provenance,
                          attrs={"name": samples.name, "kind": samples.kind, "num_classes": samples.num_classes})


def read_forget_samples(path: str | Path, lineage: Mapping[str, str] | None = None) -> ForgetSamples:
    """The forget samples; with `lineage`, they must come from that data set and forget set."""
    artifact = expect(read_artifact(path, "forget_samples"), lineage=lineage)
    return ForgetSamples(artifact.attrs["name"], artifact.attrs["kind"], artifact["inputs"], artifact["labels"],
                         artifact["request_of"], artifact["x_val"], artifact["y_val"], artifact.attrs["num_classes"])


@dataclass
class ModelBank:
    """E trained models of one role and everything measured on them."""

    weights: dict[str, np.ndarray]      # state dict entries stacked over models
    model_ids: np.ndarray               # (E,)
    seeds: np.ndarray                   # (E,)
    train_masks: np.ndarray             # (E, n_train) bool: the points each model trained on
    logits: dict[str, np.ndarray]       # split -> (E, n_split, classes)
    attrs: dict[str, Any]               # role, arch, options, training recipe, cost
    lineage: dict[str, str] | None = field(default=None)  # root artifacts it was made from, if recorded

    def __len__(self) -> int:
        return len(self.model_ids)

    def builder(self, input_shape: Sequence[int], num_classes: int) -> Callable[[], nn.Module]:
        """A function that builds one (untrained) model of this bank's architecture."""
        return functools.partial(build_model, self.attrs["arch"], tuple(input_shape), num_classes,
                                 **self.attrs["model_options"])

    def load_models(self, input_shape: Sequence[int], num_classes: int) -> list[nn.Module]:
        """The bank's models as modules in eval mode."""
        if not self.weights:
            raise UserError(f"the {self.attrs.get('role', '')} bank stores its models' masks and logits, not their "
                            "weights (subset models: set subset_models.store_weights: true to keep them)")
        build = self.builder(input_shape, num_classes)
        models = []
        for index in range(len(self)):
            model = build()
            model.load_state_dict({name: torch.from_numpy(np.array(value[index]))
                                   for name, value in self.weights.items()})
            models.append(model.eval())
        return models


def write_bank(path: str | Path, bank: ModelBank, provenance: Mapping[str, Any]) -> Path:
    arrays = {f"weights/{name}": value for name, value in bank.weights.items()}
    arrays.update({f"logits/{split}": value for split, value in bank.logits.items()})
    arrays.update(model_ids=bank.model_ids, seeds=bank.seeds, train_masks=bank.train_masks)
    return write_artifact(path, "model_bank", arrays, attrs=bank.attrs, provenance_record=provenance)


def read_bank(path: str | Path, with_weights: bool = True, role: str | None = None,
              lineage: Mapping[str, str] | None = None, points: Mapping[str, slice] | None = None) -> ModelBank:
    """A model bank; with `role` and `lineage`, it must be of that role (``original``,
    ``oracle/<set>``, ``retrain/<set>``, ``subset``, ``ulira_base``) and made from those roots.
    `points` (split -> slice of its points) reads only those points' logits (a split it leaves
    out: all of them)."""
    parts = {f"logits/{split}": np.s_[:, where] for split, where in (points or {}).items()}
    artifact = read_artifact(path, "model_bank", skip_groups=() if with_weights else ("weights",), parts=parts)
    expect(artifact, role=role, lineage=lineage)
    weights = {name[len("weights/"):]: value for name, value in artifact.arrays.items()
               if name.startswith("weights/")}
    logits = {name[len("logits/"):]: value for name, value in artifact.arrays.items() if name.startswith("logits/")}
    return ModelBank(weights=weights, model_ids=artifact["model_ids"], seeds=artifact["seeds"],
                     train_masks=artifact["train_masks"], logits=logits, attrs=artifact.attrs,
                     lineage=artifact.provenance.get("lineage"))


def read_bank_logits(path: str | Path) -> ModelBank:
    """A model bank without its weights: what a method reads of oracles or retrained models (their logits)."""
    return read_bank(path, with_weights=False)


def weights_only(bank: ModelBank) -> ModelBank:
    """The models of `bank` alone: weights, ids, seeds and recipe (training hyper-parameters and,
    for linear banks, the training-set size n), without the logits on every point or the
    training masks (which say which training points exist and were used)."""
    return ModelBank(weights=bank.weights, model_ids=bank.model_ids, seeds=bank.seeds,
                     train_masks=np.zeros((len(bank), 0), dtype=bool), logits={},
                     attrs={key: value for key, value in bank.attrs.items()
                            if key in ("role", "arch", "model_options", "training")},
                     lineage=bank.lineage)


def concatenate_banks(banks: Sequence[ModelBank]) -> ModelBank:
    """One bank from chunks of the same role and recipe, ordered by model id."""
    if not banks:
        raise UserError("no model-bank chunks to gather")
    recipe_keys = ("role", "arch", "model_options", "training")
    first = banks[0].attrs
    for bank in banks[1:]:
        differing = [key for key in recipe_keys if bank.attrs.get(key) != first.get(key)]
        if differing:
            raise UserError(f"cannot gather model-bank chunks with different {', '.join(differing)}")
    order = np.argsort(np.concatenate([bank.model_ids for bank in banks]), kind="stable")

    def stack(values: Sequence[np.ndarray]) -> np.ndarray:
        return np.concatenate(values)[order]

    model_ids = stack([bank.model_ids for bank in banks])
    if len(np.unique(model_ids)) != len(model_ids):
        raise UserError("cannot gather model-bank chunks: some model ids appear twice")
    if len({json.dumps(bank.lineage, sort_keys=True) for bank in banks}) > 1:
        raise UserError("cannot gather model-bank chunks made from different data or forget sets "
                        "(their recorded lineage differs); rerun the chunks' training")
    attrs = dict(first)
    attrs["train_seconds"] = float(sum(bank.attrs["train_seconds"] for bank in banks))
    if "imported_from" in first:
        attrs["imported_from"] = {path: digest for bank in banks for path, digest in bank.attrs["imported_from"].items()}
    return ModelBank(
        weights={name: stack([bank.weights[name] for bank in banks]) for name in banks[0].weights},
        model_ids=model_ids, seeds=stack([bank.seeds for bank in banks]),
        train_masks=stack([bank.train_masks for bank in banks]),
        logits={split: stack([bank.logits[split] for bank in banks]) for split in banks[0].logits},
        attrs=attrs, lineage=banks[0].lineage)



def train_bank(build: Callable[[], nn.Module], arch: str, model_options: Mapping[str, Any], role: str,
               model_ids: Sequence[int], seeds: Sequence[int], dataset: Dataset, labels: np.ndarray,
               masks: np.ndarray, config: TrainConfig, device: torch.device, progress: bool) -> ModelBank:
    """Train models `model_ids` of a role with the vectorised trainer and record their logits."""
    inputs = {split: torch.from_numpy(getattr(dataset, f"x_{split}")).to(device) for split in SPLITS}
    targets = torch.from_numpy(labels).to(device)
    models, stats = fit_many(build, list(seeds), inputs["train"], targets, masks, config, progress=progress,
                             description=role)
    return bank_of_models(models, dataset, model_ids, seeds, masks, {
        "role": role, "arch": arch, "model_options": dict(model_options), "training": config.to_dict(),
        "train_seconds": stats.seconds, "steps_per_model": stats.steps,
        "examples_per_model": stats.examples // len(models), "device": str(device)})


def import_bank(build: Callable[[], nn.Module], arch: str, model_options: Mapping[str, Any], role: str,
                model_ids: Sequence[int], seeds: Sequence[int], dataset: Dataset, state_dicts: Sequence[str],
                masks: np.ndarray) -> ModelBank:
    """A bank of models trained elsewhere: model `model_ids[i]` gets the state dict in file
    `state_dicts[i]` (every tensor of the architecture, the classifier included; a one-line
    UserError naming the file otherwise) and its logits are recorded as a trained bank's. The
    attrs ``imported_from`` map each file to its SHA-256; the bank cost nothing to train."""
    models = []
    for path in state_dicts:
        model = build()
        report = load_pretrained(model, path)
        if report.kept_fresh:
            raise UserError(f"{path}: its classifier does not fit {arch} with {dataset.num_classes} classes "
                            f"({', '.join(report.kept_fresh)}): import trained models of this data set")
        models.append(model)
    return bank_of_models(models, dataset, model_ids, seeds, masks, {
        "role": role, "arch": arch, "model_options": dict(model_options), "training": "imported",
        "imported_from": {str(path): file_checksum(path) for path in state_dicts},
        "train_seconds": 0.0, "steps_per_model": 0, "examples_per_model": 0, "device": "cpu"})


def bank_of_models(models: Sequence[nn.Module], dataset: Dataset, model_ids: Sequence[int], seeds: Sequence[int],
                   masks: np.ndarray, attrs: Mapping[str, Any]) -> ModelBank:
    """The bank of trained `models`: their logits on every split of `dataset`, their weights
    stacked over models, and `attrs`."""
    device = next(models[0].parameters()).device
    inputs = {split: torch.from_numpy(getattr(dataset, f"x_{split}")).to(device) for split in SPLITS}
    logits = {split: predict_logits_many(models, x).cpu().numpy() for split, x in inputs.items()}
    weights = {name: torch.stack([model.state_dict()[name] for model in models]).cpu().numpy()
               for name in models[0].state_dict()}
    return ModelBank(weights=weights, model_ids=np.asarray(model_ids, dtype=np.int64),
                     seeds=np.asarray(seeds, dtype=np.int64), train_masks=np.asarray(masks, dtype=bool),
                     logits=logits, attrs=dict(attrs))
