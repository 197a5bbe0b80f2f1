"""Feature extraction for linear models (source-free unlearning, Sec. 5 "Implementation details";
Guo et al. 2020, Sec. 4): a fixed backbone turns every input into a feature vector, and every
row is L2-normalised so that ``||x|| <= 1``, which the certificates' constants assume (the
gradient bound C and the Lipschitz constant gamma of Theorem 1 are per unit-norm sample).

Backbones (config ``features: {backbone: ...}``):

- ``identity``: the flattened inputs (digits: d = 64), :func:`~unlearnflow.sourcefree.linear.identity_features`;
  with ``pool: k``, images are first average-pooled over k x k blocks (digits with k = 2:
  d = 16); ``side: s`` pools them to s x s whatever their size (s = 4: digits' k = 2,
  Fashion-MNIST's k = 7, d = 16 for one channel). A data-independent way to a small d: the
  source-free fit of Eq. (3) is identifiable
  only from m >= d(d+1)/2 perturbations (2,080 at d = 64, 136 at d = 16), and its cost grows
  with d^2 m.
- ``public``: a network trained on a disjoint "public" part of the training split (source-free
  unlearning, Sec. 3 and 5: the backbone's weights w0 come from data nobody asks to forget). A
  seeded fraction ``public_fraction`` of the training points (:func:`public_split`) trains
  ``arch`` (``options``; :func:`~unlearnflow.core.models.build_model`) with the shared trainer
  (:func:`~unlearnflow.core.training.fit`, recipe ``training``); the features are its
  penultimate activations of the REMAINING (private) training points and of val/test. The public
  points leave the training split of ``features.h5``, so forget sets, originals and oracles never
  see them; the stage records their indices (into data.h5's training split) in the provenance.
  With ``mixed_linear: {layers: L}`` the rows are instead those of the network linearised in its
  last L linear layers around the public weights (Sec. 3,
  :class:`~unlearnflow.sourcefree.mixed_linear.MixedLinear`): ``[f(x; w0), J(x)]``, not
  normalised, for the ``mixed_squared`` loss.
- ``resnet18``: the penultimate activations of a ResNet-18 (:mod:`unlearnflow.core.models`) whose
  weights come from a local state-dict file (``weights: PATH``, a torchvision checkpoint fits with
  ``options: {cifar_stem: false}``); its classifier head is never used.

The result is a :class:`~unlearnflow.core.data.Dataset` of the same splits, labels and classes,
written as the experiment's ``features.h5``; every later stage of a linear experiment reads it
in place of ``data.h5`` (so the features artifact contains retain data, like the data set).
"""

from __future__ import annotations

import contextlib
import dataclasses
from typing import Any, Callable, Mapping

import numpy as np
import torch

from unlearnflow.core.artifacts import SPLITS
from unlearnflow.core.data import Dataset
from unlearnflow.core.training import TrainConfig
from unlearnflow.errors import UserError
from unlearnflow.sourcefree.declarations import check_features_spec
from unlearnflow.sourcefree.linear import identity_features, l2_normalise


def extract_features(dataset: Dataset, spec: Mapping[str, Any]) -> Dataset:
    """Every split of `dataset` through the backbone of `spec`, rows L2-normalised (float32)."""
    check_features_spec(spec)
    if spec["backbone"] == "identity":
        return identity_features(average_pool(dataset, _pool_factor(dataset, spec)))
    if spec["backbone"] == "public":
        return _public_features(dataset, spec)
    return _network_features(dataset, spec)


def public_split(n_train: int, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(public, private) sorted indices into a training split of `n_train` points: a seeded
    ``round(fraction * n_train)`` points are public (at least one point on each side)."""
    size = min(max(int(round(fraction * n_train)), 1), n_train - 1)
    public = np.sort(np.random.default_rng([int(seed), 7_003]).choice(n_train, size, replace=False))
    private = np.setdiff1d(np.arange(n_train), public)
    return public.astype(np.int64), private.astype(np.int64)


def backbone_split(spec: Mapping[str, Any], n_train: int) -> tuple[np.ndarray, np.ndarray]:
    """The (public, private) split a ``public`` features spec draws (:func:`public_split`)."""
    return public_split(n_train, float(spec["public_fraction"]), int(spec.get("seed", 0)))


def train_public_backbone(dataset: Dataset, spec: Mapping[str, Any]) -> torch.nn.Module:
    """The public backbone's network w0: ``arch`` trained on the public points alone (the shared
    trainer, seeded by ``seed``), returned in eval mode."""
    from unlearnflow.core.models import build_model
    from unlearnflow.core.training import fit, model_seed

    public, _ = backbone_split(spec, len(dataset.y_train))
    seed = model_seed(int(spec.get("seed", 0)), "public_backbone", 0)
    torch.manual_seed(seed)
    model = build_model(spec.get("arch", "mlp"), dataset.input_shape, dataset.num_classes,
                        **dict(spec.get("options") or {}))
    inputs, labels = torch.from_numpy(dataset.x_train), torch.from_numpy(dataset.y_train).long()
    stats = fit(model, inputs, labels, TrainConfig.from_mapping(spec.get("training")), seed,
                subset=torch.from_numpy(public), description="public backbone")
    print(f"public backbone {spec.get('arch', 'mlp')}: trained on {len(public)} public points in {stats.seconds:.1f} s")
    return model.eval()


def _public_features(dataset: Dataset, spec: Mapping[str, Any]) -> Dataset:
    """The ``public`` backbone: penultimate activations of the private training points, val and test."""
    from unlearnflow.core.models import penultimate_features

    model = train_public_backbone(dataset, spec)
    _, private = backbone_split(spec, len(dataset.y_train))
    private_inputs = dataclasses.replace(dataset, x_train=dataset.x_train[private], y_train=dataset.y_train[private])
    name, batch = f"{dataset.name}/public-{spec.get('arch', 'mlp')}", int(spec.get("batch_size", 256))
    if spec.get("mixed_linear"):
        from unlearnflow.sourcefree.mixed_linear import MixedLinear
        linearised = MixedLinear(model, spec["mixed_linear"]["layers"])
        print(f"mixed-linear: {spec['mixed_linear']['layers']} layers, P = {linearised.size} parameters")
        return _embedded(private_inputs, lambda x: torch.from_numpy(linearised.rows(x)), batch,
                         f"{name}/mixed-linear-{spec['mixed_linear']['layers']}", normalise=False)
    return _embedded(private_inputs, lambda x: penultimate_features(model, x), batch, name)


def _pool_factor(dataset: Dataset, spec: Mapping[str, Any]) -> int:
    """The pooling factor of an identity backbone: ``pool``, or the one that pools to ``side``."""
    if "side" not in spec:
        return int(spec.get("pool", 1))
    side, shape = int(spec["side"]), dataset.input_shape
    if side < 1 or len(shape) != 3 or shape[1] != shape[2] or shape[1] % side:
        raise UserError(f"config: features.side: {side} must divide the side of square images (C, H, W), got "
                        f"input shape {shape}")
    return shape[1] // side


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
    return _embedded(dataset, lambda x: penultimate_features(model, x), int(spec.get("batch_size", 256)),
                     f"{dataset.name}/resnet18")


def _embedded(dataset: Dataset, embed: Callable[[torch.Tensor], torch.Tensor], batch: int, name: str,
              normalise: bool = True) -> Dataset:
    """Every split of `dataset` through `embed` in batches (float32), rows L2-normalised unless
    `normalise` is false (mixed-linear rows, whose scale is the model's; autograd stays on for them)."""

    def rows(x: np.ndarray) -> np.ndarray:
        parts = []
        for i in range(0, len(x), batch):
            with torch.no_grad() if normalise else contextlib.nullcontext():
                parts.append(embed(torch.from_numpy(x[i:i + batch])).detach().numpy())
        joined = np.concatenate(parts)
        return (l2_normalise(joined) if normalise else joined).astype(np.float32)

    splits = {f"x_{split}": rows(getattr(dataset, f"x_{split}")) for split in SPLITS}
    dim = splits["x_train"].shape[1]
    return Dataset(name=name, y_train=dataset.y_train, y_val=dataset.y_val, y_test=dataset.y_test,
                   classes=dataset.classes, mean=np.zeros(dim, np.float32), std=np.ones(dim, np.float32), **splits)
