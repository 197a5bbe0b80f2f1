"""Train E models at once with ``torch.func`` (stack_module_state + functional_call + vmap).

Each model has its own seed (initial weights, batch order, augmentation) and its own training
subset, given as a row of a boolean mask; all subsets must have the same size so that the
models take the same number of steps under the same learning-rate schedule. The forward pass is
``vmap``-ed over the stacked parameters; the loss is the *sum over models* of each model's
mean batch loss, so one ordinary backward pass yields every model's own gradient, and the
optimizer of :mod:`unlearnflow.training` (elementwise SGD or Adam) updates the stacked
parameters exactly as it would update each model alone. The result equals training each model
with :func:`unlearnflow.training.fit` and the same seed, up to floating-point reassociation in
batched matrix products (tested).

BatchNorm follows the policy in :mod:`unlearnflow.training`: batch statistics while training,
then exact recalibration per model over its own subset.
"""

from __future__ import annotations

import copy
import time
from typing import Callable, Sequence

import numpy as np
import torch
from torch import nn
from torch.func import functional_call, stack_module_state, vmap

from .errors import UserError
from .training import (FitStats, PerExampleLoss, TrainConfig, augment, augmentation_draws, batch_slices,
                       cross_entropy_loss, data_generator, epoch_order, init_model, make_optimizer,
                       progress_bar, recalibrate_batchnorm, set_lr, use_batch_statistics)


def _stacked_forward(template: nn.Module) -> Callable:
    """``f(params, buffers, x)`` evaluating `template`'s architecture with given weights."""
    skeleton = copy.deepcopy(template).to("meta")

    def forward(params: dict, buffers: dict, x: torch.Tensor) -> torch.Tensor:
        return functional_call(skeleton, (params, buffers), (x,))

    return forward


def fit_many(build: Callable[[], nn.Module], seeds: Sequence[int], inputs: torch.Tensor, targets: torch.Tensor,
             masks: np.ndarray, config: TrainConfig, loss: PerExampleLoss | None = None,
             progress: bool = False, description: str = "train") -> tuple[list[nn.Module], FitStats]:
    """Train ``len(seeds)`` fresh models from `build`, model e on ``inputs[masks[e]]``.

    Returns the trained models (eval mode, BatchNorm recalibrated) and the cost of the whole
    vectorised run (``seconds`` covers all models together).
    """
    masks = np.asarray(masks, dtype=bool)
    if masks.shape != (len(seeds), len(inputs)):
        raise ValueError(f"masks must have shape ({len(seeds)}, {len(inputs)}), got {masks.shape}")
    sizes = masks.sum(axis=1)
    if len(set(sizes.tolist())) != 1:
        raise UserError(f"vectorised training needs equal training-set sizes per model, got {sorted(set(sizes.tolist()))}")
    if config.batchnorm != "recalibrate":
        raise UserError("vectorised training supports batchnorm: recalibrate only")
    device = inputs.device
    loss = loss or cross_entropy_loss(config.label_smoothing)
    models = [init_model(build, seed) for seed in seeds]
    for model in models:
        use_batch_statistics(model)
        model.to(device).train()
    params, buffers = stack_module_state(models)
    forward = vmap(_stacked_forward(models[0]))
    optimizer = make_optimizer(list(params.values()), config)
    generators = [data_generator(seed) for seed in seeds]
    subsets = [torch.from_numpy(np.flatnonzero(row)) for row in masks]
    n_models, n_subset = len(seeds), int(sizes[0])
    slices = batch_slices(n_subset, config)
    step = examples = 0
    start = time.perf_counter()
    with progress_bar(config.epochs * len(slices), f"{description} x{n_models}", progress) as bar:
        for _ in range(config.epochs):
            orders = torch.stack([epoch_order(g, s) for g, s in zip(generators, subsets)]).to(device)
            for positions in slices:
                batch = orders[:, positions]
                draws = [augmentation_draws(g, batch.shape[1], config) for g in generators]
                x = augment(inputs[batch], *_stack_draws(draws), config.crop_padding)
                set_lr(optimizer, config.lr_at(step, len(slices)))
                logits = forward(params, buffers, x)
                per_example = loss(logits.flatten(0, 1), targets[batch].flatten(0, 1)).view(n_models, -1)
                optimizer.zero_grad(set_to_none=True)
                per_example.mean(dim=1).sum().backward()
                optimizer.step()
                step += 1
                examples += batch.shape[1]
                bar.update()
    for index, (model, subset) in enumerate(zip(models, subsets)):
        model.load_state_dict({name: value[index].detach() for name, value in params.items()}, strict=False)
        recalibrate_batchnorm(model, inputs[subset.to(device)], config.batch_size)
    return models, FitStats(seconds=time.perf_counter() - start, steps=step, examples=examples * n_models)


def _stack_draws(draws: list[tuple[torch.Tensor | None, torch.Tensor | None]]) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    offsets, flips = zip(*draws)
    return (None if offsets[0] is None else torch.stack(offsets),
            None if flips[0] is None else torch.stack(flips))


@torch.no_grad()
def predict_logits_many(models: Sequence[nn.Module], inputs: torch.Tensor, batch_size: int = 1024) -> torch.Tensor:
    """Eval-mode logits of every model on every input, shape (models, inputs, classes)."""
    for model in models:
        model.eval()
    params, buffers = stack_module_state(list(models))
    forward = vmap(_stacked_forward(models[0]), in_dims=(0, 0, None))
    return torch.cat([forward(params, buffers, batch) for batch in inputs.split(batch_size)], dim=1)
