"""Feature extraction for linear models (source-free unlearning, Sec. 5 "Implementation details";
Guo et al. 2020, Sec. 4): a fixed backbone turns every input into a feature vector, and every
row is L2-normalised so that ``||x|| <= 1``, which the certificates' constants assume (the
gradient bound C and the Lipschitz constant gamma of Theorem 1 are per unit-norm sample).

Backbones (config ``features: {backbone: ...}``):

- ``identity``: the flattened inputs (digits: d = 64), :func:`~unlearnflow.sourcefree.linear.identity_features`;
  with ``pool: k``, images are first average-pooled over k x k blocks (digits with k = 2:
  d = 16). A data-independent way to a small d: the source-free fit of Eq. (3) is identifiable
  only from m >= d(d+1)/2 perturbations (2,080 at d = 64, 136 at d = 16), and its cost grows
  with d^2 m.
- ``resnet18``: the penultimate activations of a ResNet-18 (:mod:`unlearnflow.core.models`) whose
  weights come from a local state-dict file (``weights: PATH``, a torchvision checkpoint fits with
  ``options: {cifar_stem: false}``); its classifier head is never used.

The result is a :class:`~unlearnflow.core.data.Dataset` of the same splits, labels and classes,
written as the experiment's ``features.h5``; every later stage of a linear experiment reads it
in place of ``data.h5`` (so the features artifact contains retain data, like the data set).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

import numpy as np
import torch

from unlearnflow.core.artifacts import SPLITS
from unlearnflow.core.data import Dataset
from unlearnflow.errors import UserError
from unlearnflow.sourcefree.linear import identity_features, l2_normalise

BACKBONES = ("identity", "resnet18")
#: keys each backbone takes besides ``backbone``
BACKBONE_KEYS = {"identity": ("pool",), "resnet18": ("weights", "options", "batch_size")}


def check_features_spec(spec: Mapping[str, Any]) -> None:
    """The backbone is known and takes the given keys (one-line UserError otherwise)."""
    backbone = spec.get("backbone")
    if backbone not in BACKBONES:
        raise UserError(f"config: features.backbone: unknown backbone {backbone!r} (known: {', '.join(BACKBONES)})")
    unknown = sorted(set(spec) - {"backbone", *BACKBONE_KEYS[backbone]})
    if unknown:
        allowed = ", ".join(BACKBONE_KEYS[backbone]) or "no other keys"
        raise UserError(f"config: features: backbone {backbone} takes {allowed}, not {', '.join(unknown)}")
    if backbone == "resnet18" and not spec.get("weights"):
        raise UserError("config: features.weights: the resnet18 backbone needs a local state-dict file")


def extract_features(dataset: Dataset, spec: Mapping[str, Any]) -> Dataset:
    """Every split of `dataset` through the backbone of `spec`, rows L2-normalised (float32)."""
    check_features_spec(spec)
    if spec["backbone"] == "identity":
        return identity_features(average_pool(dataset, int(spec.get("pool", 1))))
    return _network_features(dataset, spec)


def average_pool(dataset: Dataset, factor: int) -> Dataset:
    """Image inputs (C, H, W) averaged over factor x factor blocks (H and W divisible by it)."""
    if factor == 1:
        return dataset
    shape = dataset.input_shape
    if factor < 1 or len(shape) != 3 or shape[1] % factor or shape[2] % factor:
        raise UserError(f"config: features.pool: {factor} must divide the image sides {shape[1:]} "
                        f"of inputs (C, H, W), got input shape {shape}")
    C, H, W = shape

    def pool(x: np.ndarray) -> np.ndarray:
        blocks = x.reshape(len(x), C, H // factor, factor, W // factor, factor)
        return blocks.mean(axis=(3, 5)).astype(x.dtype)

    pooled = {f"x_{split}": pool(getattr(dataset, f"x_{split}")) for split in SPLITS}
    return dataclasses.replace(dataset, **pooled)


def _network_features(dataset: Dataset, spec: Mapping[str, Any]) -> Dataset:
    """Penultimate activations of a pretrained ResNet-18 (weights from a local file)."""
    from unlearnflow.core.models import build_model, load_pretrained, penultimate_features

    model = build_model("resnet18", dataset.input_shape, dataset.num_classes, **dict(spec.get("options") or {}))
    print(load_pretrained(model, spec["weights"]))
    model.eval()
    batch = int(spec.get("batch_size", 256))

    def embed(x: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            parts = [penultimate_features(model, torch.from_numpy(x[i:i + batch])).numpy()
                     for i in range(0, len(x), batch)]
        return l2_normalise(np.concatenate(parts)).astype(np.float32)

    splits = {f"x_{split}": embed(getattr(dataset, f"x_{split}")) for split in SPLITS}
    dim = splits["x_train"].shape[1]
    return Dataset(name=f"{dataset.name}/resnet18", y_train=dataset.y_train, y_val=dataset.y_val,
                   y_test=dataset.y_test, classes=dataset.classes, mean=np.zeros(dim, np.float32),
                   std=np.ones(dim, np.float32), **splits)
