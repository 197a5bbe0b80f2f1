"""The core gradient space of Projected-Gradient Unlearning (PGU paper, Section 3.2.2).

For every convolutional and linear layer l of a model, the *input representations* r_i^l of the
training points span the space that the layer's weight gradients live in (a weight gradient is
sum_i delta_i r_i^T). This module accumulates

    R^l (R^l)^T = sum_i R_i^l (R_i^l)^T = U^l (Sigma^l)^2 (U^l)^T                        (Eq. 2)

over the whole training set in float64, mini-batch by mini-batch, and keeps U^l and the singular
values Sigma^l (square roots of the eigenvalues). That factorisation, cached once per original
model, is all PGU needs at request time: the retain set's factorisation is its downdate by the
forget set's representations (Eq. 3), and the core gradient space is spanned by its first k
columns, k chosen by a threshold gamma on the cumulative singular values.

Representations (what the authors' code does, which the paper describes in words):

- ``nn.Linear``: the layer input itself, ``r = z^{l-1}`` (d = in_features). No bias column: PGU
  never updates biases (Section 4.1), so the gradient of the weight matrix alone is projected,
  and that gradient is spanned by the inputs without a constant 1.
- ``nn.Conv2d``: every patch the kernel sees, extracted by ``unfold`` with the layer's kernel
  size, dilation and padding and stride 1 (every patch, even for a strided conv, as the
  reference), flattened channel-major so that its entries line up with the columns of
  ``weight.view(out_channels, -1)``; each image contributes one row per output position.

Representations come from the model in eval mode (BatchNorm with its running statistics, as
during unlearning, where BatchNorm stays frozen), without augmentation, for the cache and for the
forget samples alike, so that the downdate subtracts exactly what the cache added (the reference
mixes augmented and plain inputs, which makes the subtraction inexact).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import numpy as np
import torch
from torch import nn

from unlearnflow.core.artifacts import ModelBank
from unlearnflow.core.data import Dataset
from unlearnflow.core.models import weight_layers
from unlearnflow.core.store import read_artifact, write_artifact
from unlearnflow.core.training import progress_bar
from unlearnflow.errors import UserError


def representations(layer: nn.Module, layer_input: torch.Tensor) -> torch.Tensor:
    """The input representations of a batch for one layer, one per row (rows, d), in the
    layer's dtype (Section 3.2.2; see the module docstring for conv patches)."""
    if isinstance(layer, nn.Linear):
        return layer_input.reshape(-1, layer.in_features)
    if isinstance(layer, nn.Conv2d):
        if layer.groups != 1 or isinstance(layer.padding, str) or layer.padding_mode != "zeros":
            raise UserError(f"pgu: conv layers with groups, string padding or {layer.padding_mode} padding "
                            "are not supported")
        patches = nn.functional.unfold(layer_input, layer.kernel_size, dilation=layer.dilation,
                                       padding=layer.padding, stride=1)
        return patches.transpose(1, 2).reshape(-1, patches.shape[1])
    raise UserError(f"pgu: no representation for a {type(layer).__name__} layer")


@torch.no_grad()
def layer_representations(model: nn.Module, inputs: torch.Tensor,
                          batch_size: int = 256) -> Iterator[dict[str, torch.Tensor]]:
    """Per batch of `inputs`: layer name -> its input representations (eval mode, forward hooks)."""
    layers = weight_layers(model)
    captured: dict[str, torch.Tensor] = {}
    handles = [layer.register_forward_hook(
        lambda module, args, output, name=name: captured.__setitem__(name, representations(module, args[0])))
        for name, layer in layers]
    model.eval()
    try:
        for batch in inputs.split(batch_size):
            captured.clear()
            model(batch)
            yield dict(captured)
    finally:
        for handle in handles:
            handle.remove()


def covariances(model: nn.Module, inputs: torch.Tensor, batch_size: int = 256) -> dict[str, np.ndarray]:
    """R^l (R^l)^T of every conv/linear layer over `inputs`, accumulated in float64 (Eq. 2)."""
    sums: dict[str, torch.Tensor] = {}
    for batch in layer_representations(model, inputs, batch_size):
        for name, rows in batch.items():
            rows = rows.double()
            sums[name] = sums[name] + rows.T @ rows if name in sums else rows.T @ rows
    return {name: value.cpu().numpy() for name, value in sums.items()}


@dataclass(frozen=True)
class LayerSpace:
    """One layer's factorisation R R^T = U diag(S)^2 U^T: `basis` U (d, d), columns in order of
    decreasing `singular_values` S (d,), both float64."""

    basis: np.ndarray
    singular_values: np.ndarray

    @classmethod
    def of(cls, covariance: np.ndarray) -> "LayerSpace":
        """Eigendecomposition of a symmetric R R^T (Eq. 2); rounding's tiny negative eigenvalues
        (a downdate leaves some) are clipped to 0."""
        # torch's eigh keeps to torch's threads (numpy's LAPACK spins its own, slow on shared cores)
        eigenvalues, vectors = (value.numpy() for value in torch.linalg.eigh(torch.from_numpy(
            (covariance + covariance.T) / 2)))
        order = np.argsort(eigenvalues)[::-1]
        return cls(vectors[:, order], np.sqrt(np.clip(eigenvalues[order], 0.0, None)))

    @property
    def dim(self) -> int:
        return len(self.singular_values)

    def covariance(self) -> np.ndarray:
        """U diag(S)^2 U^T."""
        return (self.basis * self.singular_values ** 2) @ self.basis.T

    def downdate(self, forget_covariance: np.ndarray) -> "LayerSpace":
        """The retain set's factorisation: U_r S_r^2 U_r^T = U S^2 U^T - R_f R_f^T (Eq. 3)."""
        return LayerSpace.of(self.covariance() - forget_covariance)

    def core_size(self, gamma: float, criterion: str = "singular") -> int:
        """k of the core gradient space (Section 3.2.2): the smallest k with
        sum_{i<=k} sigma_i >= gamma sum_i sigma_i (``singular``, the paper's criterion; the
        reference code counts the ratios <= gamma, one fewer), or the same on sigma_i^2
        (``energy``, the criterion of GPM, Saha et al. 2021). gamma >= 1 keeps every direction,
        so the layer does not change (the reference's way to skip a layer)."""
        if gamma >= 1:
            return self.dim
        values = self.singular_values if criterion == "singular" else self.singular_values ** 2
        total = values.sum()
        if total <= 0:
            return 0
        return int(np.searchsorted(np.cumsum(values) / total, gamma, side="left")) + 1

    def core_basis(self, gamma: float, criterion: str = "singular") -> np.ndarray:
        """M = [u_1 ... u_k] (d, k), the basis of the core gradient space."""
        return self.basis[:, : self.core_size(gamma, criterion)]


@dataclass(frozen=True)
class Factorisation:
    """The factorisation of every conv/linear layer of one model, by layer name in forward order."""

    layers: Mapping[str, LayerSpace]

    @classmethod
    def of(cls, model: nn.Module, inputs: torch.Tensor, batch_size: int = 256) -> "Factorisation":
        """Eq. 2 over `inputs` (the whole training set for the cache)."""
        return cls({name: LayerSpace.of(cov) for name, cov in covariances(model, inputs, batch_size).items()})

    def downdate(self, forget_covariances: Mapping[str, np.ndarray]) -> "Factorisation":
        """Eq. 3 for every layer (in the order of `forget_covariances`, the model's forward order); a
        request of a sequence downdates the previous request's result."""
        if set(forget_covariances) != set(self.layers):
            raise UserError("pgu: the gradient space's layers do not match the model's "
                            f"({', '.join(self.layers)} vs {', '.join(forget_covariances)})")
        return Factorisation({name: self.layers[name].downdate(covariance)
                              for name, covariance in forget_covariances.items()})

    def arrays(self) -> dict[str, np.ndarray]:
        """The factorisation as named arrays (``<layer>/basis``, ``<layer>/singular_values``): the
        state a request leaves, which a deletion ledger keeps between requests."""
        return {f"{name}/{part}": getattr(space, part) for name, space in self.layers.items()
                for part in ("basis", "singular_values")}

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, np.ndarray]) -> "Factorisation":
        """The factorisation :meth:`arrays` wrote (layers in any order: a request orders them by its model)."""
        names = dict.fromkeys(key.rsplit("/", 1)[0] for key in arrays)
        return cls({name: LayerSpace(np.asarray(arrays[f"{name}/basis"]),
                                     np.asarray(arrays[f"{name}/singular_values"])) for name in names})

    def check_model(self, model: nn.Module) -> None:
        """The factorisation belongs to a model of this architecture (layer names and widths)."""
        widths = {name: (layer.weight[0].numel()) for name, layer in weight_layers(model)}
        mine = {name: space.dim for name, space in self.layers.items()}
        if widths != mine:
            raise UserError(f"pgu: gradient space of layers {mine} does not fit the model's layers {widths}")


class GradientSpace:
    """The loaded ``gradient_space`` artifact: one :class:`Factorisation` per model of the original
    bank (by position, as the bank orders them), ``model_ids`` and ``attrs`` (with
    ``precompute_seconds``, the whole cache's cost, which the report shows apart)."""

    def __init__(self, factorisations: Sequence[Factorisation], model_ids: np.ndarray, attrs: Mapping[str, Any]):
        self.factorisations = list(factorisations)
        self.model_ids = np.asarray(model_ids)
        self.attrs = dict(attrs)

    def __len__(self) -> int:
        return len(self.factorisations)

    def model(self, index: int) -> Factorisation:
        """The factorisation of the bank's model number `index` (its position)."""
        if not 0 <= index < len(self):
            raise UserError(f"pgu: the gradient space holds {len(self)} models, not model number {index}")
        return self.factorisations[index]


def compute_gradient_space(models: Sequence[nn.Module], inputs: torch.Tensor, model_ids: Sequence[int],
                           batch_size: int = 256, progress: bool = False,
                           train_masks: np.ndarray | None = None) -> GradientSpace:
    """The cache of every model over the training inputs `inputs` (Eq. 2), timed per model.

    `train_masks` (models, points), when given, restricts each model's representations to the
    points it trained on (subset models such as U-LiRA's shadows); by default every model
    trained on all of `inputs`.
    """
    factorisations, seconds = [], []
    with progress_bar(len(models), "gradient space", progress) as bar:
        for index, model in enumerate(models):
            start = time.perf_counter()
            own = inputs if train_masks is None else inputs[torch.from_numpy(train_masks[index]).to(inputs.device)]
            factorisations.append(Factorisation.of(model, own, batch_size))
            seconds.append(time.perf_counter() - start)
            bar.update()
    layers = list(factorisations[0].layers) if factorisations else []
    n_points = len(inputs) if train_masks is None else int(train_masks.sum(1).max())
    return GradientSpace(factorisations, np.asarray(model_ids, dtype=np.int64),
                         {"layers": layers, "dims": [factorisations[0].layers[name].dim for name in layers],
                          "n_points": n_points, "augmentation": "none", "seconds_per_model": seconds,
                          "precompute_seconds": float(sum(seconds))})


def shadow_gradient_space(bank: ModelBank, dataset: Dataset, device: torch.device) -> GradientSpace:
    """The cache of a bank of subset models (U-LiRA's base models), each over its own training points."""
    models = [model.to(device) for model in bank.load_models(dataset.input_shape, dataset.num_classes)]
    return compute_gradient_space(models, torch.from_numpy(dataset.x_train).to(device), bank.model_ids,
                                  train_masks=bank.train_masks)


def write_gradient_space(path: str | Path, space: GradientSpace, provenance: Mapping[str, Any]) -> Path:
    """One artifact: ``model_<k>/<layer>/basis`` and ``.../singular_values`` per model k of the bank."""
    arrays: dict[str, np.ndarray] = {"model_ids": space.model_ids}
    for k, factorisation in enumerate(space.factorisations):
        for name, layer in factorisation.layers.items():
            arrays[f"model_{k}/{name}/basis"] = layer.basis
            arrays[f"model_{k}/{name}/singular_values"] = layer.singular_values
    return write_artifact(path, "gradient_space", arrays, attrs=space.attrs, provenance_record=provenance)


def read_gradient_space(path: str | Path) -> GradientSpace:
    artifact = read_artifact(path, "gradient_space")
    layers = artifact.attrs["layers"]
    factorisations = [Factorisation({name: LayerSpace(artifact[f"model_{k}/{name}/basis"],
                                                      artifact[f"model_{k}/{name}/singular_values"])
                                     for name in layers}) for k in range(len(artifact["model_ids"]))]
    return GradientSpace(factorisations, artifact["model_ids"], artifact.attrs)
