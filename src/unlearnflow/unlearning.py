"""Unlearning a whole bank: every original model, under every hyper-parameter configuration.

A method (:data:`unlearnflow.methods.METHODS`) edits one model; this module applies it to each
of the N original models of a bank for one forget set, for the method's default configuration
and each configuration of its grid, and records the unlearned models' logits on every point and
the cost. The result is one ``unlearned`` artifact per (method, forget set) holding a bank per
configuration; :func:`read_unlearned` turns each back into a :class:`ModelBank` that the
evaluation loop consumes like any other bank. Weights of unlearned models are not stored: every
metric reads logits only.

Oracle Matching needs target logits, given per configuration by a ``targets`` function of the
hyper-parameters. ``targets: oracle`` uses the mean logits of the forget set's oracles
(:func:`oracle_targets`, Algorithm C.1 with true oracle outputs: the implementation check of the
DMM paper, not an unlearning method, since it needs the retrained models it tries to avoid).
Datamodel Matching's targets are DM-DIRECT's predictions from each original model's own logits
(:func:`datamodel_targets`, Algorithm C.3), and DM-DIRECT itself trains nothing: its bank holds
the predicted logits (:func:`predict_bank`).
"""

from __future__ import annotations

import copy
import itertools
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch

from .artifacts import SPLITS, ModelBank
from .data import Dataset
from .errors import UserError
from .forget_sets import ForgetSet
from .methods import METHODS, UnlearningRequest, dm_direct, hyperparameters
from .store import read_artifact, write_artifact
from .training import model_seed, progress_bar
from .vectorised import predict_logits_many


#: Target logits on the training points for one configuration's hyper-parameters: shape
#: (n, C) shared by all models or (N, n, C) per model.
TargetsFor = Callable[[Mapping[str, Any]], np.ndarray]


@dataclass(frozen=True)
class Configuration:
    """One hyper-parameter configuration of a method and its label in tables."""

    label: str
    hyperparameters: dict[str, Any]


def configurations(method: str, overrides: Mapping[str, Any], grid: Mapping[str, Sequence[Any]]) -> list[Configuration]:
    """The default configuration (method defaults with `overrides`) and every grid point.

    A grid point changes only the keys of the grid; its label lists them (``lr=0.001,epochs=3``).
    """
    default = hyperparameters(method, overrides)
    found = [Configuration("default", default)]
    keys = list(grid)
    if not keys:
        return found
    for values in itertools.product(*(grid[key] for key in keys)):
        changed = dict(zip(keys, values))
        label = ",".join(f"{key}={value}" for key, value in changed.items())
        found.append(Configuration(label, hyperparameters(method, {**overrides, **changed})))
    return found


def unlearn_bank(method: str, originals: ModelBank, dataset: Dataset, forget_set: ForgetSet,
                 configs: Sequence[Configuration], seed: int, device: torch.device,
                 targets: TargetsFor | None = None, progress: bool = False,
                 attrs: Mapping[str, Any] | None = None) -> dict[str, ModelBank]:
    """Apply `method` to every original model under each configuration.

    `targets` gives each configuration's target logits (methods that match targets). Returns one
    bank of unlearned models per configuration label, with the cost per model
    (``unlearn_seconds``, ``unlearn_examples_per_model``) and `attrs` in its attrs.
    """
    labels = forget_set.train_labels
    inputs = {split: torch.from_numpy(getattr(dataset, f"x_{split}")).to(device) for split in SPLITS}
    retain_mask = forget_set.retain_mask(len(labels))
    request_base = dict(inputs=inputs["train"], labels=torch.tensor(labels, device=device),
                        forget=torch.tensor(forget_set.indices, device=device),
                        retain=torch.from_numpy(np.flatnonzero(retain_mask)).to(device),
                        num_classes=dataset.num_classes)
    originals_models = [model.to(device) for model in originals.load_models(dataset.input_shape, dataset.num_classes)]
    banks = {}
    with progress_bar(len(configs) * len(originals_models), f"{method} on {forget_set.name}", progress) as bar:
        for config in configs:
            unlearned = []
            seconds = examples = 0.0
            config_targets = targets(config.hyperparameters) if targets else None
            for index, (model_id, original) in enumerate(zip(originals.model_ids, originals_models)):
                model = copy.deepcopy(original)
                request = UnlearningRequest(**request_base, targets=_targets_of(config_targets, index, device))
                stats = METHODS[method](model, request, config.hyperparameters,
                                        model_seed(seed, f"unlearn/{method}", int(model_id)))
                seconds, examples = seconds + stats.seconds, examples + stats.examples
                unlearned.append(model)
                bar.update()
            logits = {split: predict_logits_many(unlearned, x).cpu().numpy() for split, x in inputs.items()}
            banks[config.label] = _unlearned_bank(method, config, originals, retain_mask, logits, seconds,
                                                  examples / len(originals_models), attrs)
    return banks


def predict_bank(originals: ModelBank, dataset: Dataset, forget_set: ForgetSet, configs: Sequence[Configuration],
                 effects: dm_direct.ForgetEffects, attrs: Mapping[str, Any] | None = None) -> dict[str, ModelBank]:
    """DM-DIRECT (Algorithm C.2) for every original model: the banks of predicted oracle logits,
    one per configuration; `effects` covers every point (train, val, test in order)."""
    labels = {"train": forget_set.train_labels, "val": dataset.y_val, "test": dataset.y_test}
    retain_mask = forget_set.retain_mask(len(forget_set.train_labels))
    banks = {}
    for config in configs:
        start, logits, offset = time.perf_counter(), {}, 0
        for split in SPLITS:
            size = len(labels[split])
            logits[split] = dm_direct.predict(originals.logits[split], labels[split],
                                              effects.slice(slice(offset, offset + size)), config.hyperparameters)
            offset += size
        banks[config.label] = _unlearned_bank("dm_direct", config, originals, retain_mask, logits,
                                              time.perf_counter() - start, 0.0, attrs)
    return banks


def datamodel_targets(originals: ModelBank, forget_set: ForgetSet, effects: dm_direct.ForgetEffects) -> TargetsFor:
    """DMM's targets (Algorithm C.3): DM-DIRECT's prediction from each original model's own
    training-point logits, (N, n, C), for a configuration's construction and scale."""
    n_train = len(forget_set.train_labels)
    train_effects = effects.slice(slice(0, n_train))

    def targets(hp: Mapping[str, Any]) -> np.ndarray:
        return dm_direct.predict(originals.logits["train"], forget_set.train_labels, train_effects,
                                 dm_direct.prediction_hyperparameters(hp))

    return targets


def _unlearned_bank(method: str, config: Configuration, originals: ModelBank, retain_mask: np.ndarray,
                    logits: dict[str, np.ndarray], seconds: float, examples_per_model: float,
                    attrs: Mapping[str, Any] | None) -> ModelBank:
    """The bank of one configuration: logits of the unlearned models and what they cost."""
    return ModelBank(
        weights={}, model_ids=originals.model_ids, seeds=originals.seeds,
        train_masks=np.tile(retain_mask, (len(originals), 1)), logits=logits,
        attrs={"role": f"unlearned/{method}", "method": method, "config": config.label,
               "hyperparameters": config.hyperparameters, "unlearn_seconds": seconds,
               "unlearn_examples_per_model": examples_per_model, **(attrs or {})})


def _targets_of(targets: np.ndarray | None, index: int, device: torch.device) -> torch.Tensor | None:
    if targets is None:
        return None
    chosen = targets if targets.ndim == 2 else targets[index]
    return torch.from_numpy(np.ascontiguousarray(chosen, dtype=np.float32)).to(device)


def oracle_targets(oracles: ModelBank) -> TargetsFor:
    """Mean oracle logits on the training points (Algorithm C.1's target with true oracles),
    the same for every configuration and model.

    Matching one mean collapses the models' spread: the longer OM runs, the narrower the
    unlearned margins' distribution and the *worse* KLOM gets (measured on digits), which is
    why :func:`paired_targets` exists."""
    mean = oracles.logits["train"].mean(axis=0)
    return lambda hp: mean


def paired_targets(retrained: ModelBank, originals: ModelBank) -> TargetsFor:
    """Per-model true targets: original model k matches retrained model k (Algorithm C.1 with
    one oracle per model). Use a bank retrained *independently* of the evaluation's oracles
    (the ``retrain`` reference), so that KLOM does not compare models with their own targets;
    perfect matching then scores like ``retrain``."""
    if len(retrained) != len(originals):
        raise UserError(f"paired oracle targets need one retrained model per original model: "
                        f"{len(retrained)} retrained, {len(originals)} originals "
                        "(set oracles.models = originals.models)")
    logits = retrained.logits["train"]
    return lambda hp: logits


def write_unlearned(path: str | Path, method: str, forget_set: str, banks: Mapping[str, ModelBank],
                    provenance: Mapping[str, Any]) -> Path:
    """One artifact holding the logits of each configuration's bank (``config_<k>/<split>``)."""
    arrays, entries = {}, []
    for k, (label, bank) in enumerate(banks.items()):
        arrays.update({f"config_{k}/{split}": value for split, value in bank.logits.items()})
        entries.append({"label": label, "attrs": bank.attrs})
    first = next(iter(banks.values()))
    arrays.update(model_ids=first.model_ids, seeds=first.seeds, train_masks=first.train_masks)
    return write_artifact(path, "unlearned", arrays, provenance_record=provenance,
                          attrs={"method": method, "forget_set": forget_set, "configs": json.dumps(entries)})


def read_unlearned(path: str | Path) -> dict[str, ModelBank]:
    """Configuration label -> bank of unlearned models (logits only), as written above."""
    artifact = read_artifact(path, "unlearned")
    banks = {}
    for k, entry in enumerate(json.loads(artifact.attrs["configs"])):
        banks[entry["label"]] = ModelBank(
            weights={}, model_ids=artifact["model_ids"], seeds=artifact["seeds"], train_masks=artifact["train_masks"],
            logits={split: artifact[f"config_{k}/{split}"] for split in SPLITS}, attrs=entry["attrs"])
    if not banks:
        raise UserError(f"{path}: unlearned artifact holds no configuration")
    return banks
