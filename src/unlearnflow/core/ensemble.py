"""Train E models at once with ``torch.func`` (stack_module_state + functional_call + vmap).

Each model has its own seed (initial weights, batch order, augmentation) and its own training
subset, given as a row of a boolean mask; all subsets must have the same size so that the
models take the same number of steps under the same learning-rate schedule. The forward pass
runs over the stacked parameters (``vmap`` of ``functional_call``, or batched matrix products
for plain Linear chains, see below); the loss is the *sum over models* of each model's mean
batch loss, so one ordinary backward pass yields every model's own gradient, and the optimizer
of :mod:`unlearnflow.core.training` (elementwise SGD or Adam) updates the stacked parameters exactly
as it would update each model alone. The result equals training each model with
:func:`unlearnflow.core.training.fit` and the same seed (tested): bitwise on the CPU for Linear
chains such as ``mlp`` and ``linear``, up to the rounding of grouped convolutions for conv nets.
Either way a model does not depend on which other models are trained with it.

BatchNorm follows the policy in :mod:`unlearnflow.core.training`: batch statistics while training,
then exact recalibration per model over its own subset.

Speed levers (measured on 2 CPU cores with ``bench/bench_training.py``; a step is a few large
kernels over all E models, so what counts is their number and their memory traffic):

* models that are plain chains of Flatten / Linear / ReLU skip ``vmap`` (:func:`_chain_forward`):
  each Linear layer is one ``baddbmm`` with the bias fused, and its backward
  (:class:`_StackedLinear`) produces weight gradients in the parameters' layout, where autograd
  through ``bmm`` copies each one per step (together ~12% of an MLP step at E=256);
* the batch is gathered with one ``index_select`` over the flattened (model, position) indices,
  and the per-model augmentation draws are skipped when augmentation is off (they draw nothing);
* the shared loss (:func:`~unlearnflow.core.training.cross_entropy_loss`) runs ``log_softmax`` over
  the long dimension of the (models x batch, classes) logits (~20% of an MLP step).

Measured and not used: the fused optimizer (~10% faster, but see
:func:`~unlearnflow.core.training.make_optimizer`); splitting the ensemble into cache-sized groups
(the cost per model only falls as E grows, up to 256 MLPs on digits); feature-major activations
(as fast, not bitwise equal); ``torch.compile`` of the forward and loss (~1.8x faster MLP steps
at E=256, but a 20 s compilation per shape, more than most training runs here take);
reduced-precision float32 matmuls (they would break equality with sequential training). Conv
nets go through ``vmap``, which runs each convolution as one grouped convolution; on the CPU
that is only ~2x faster than training the models one at a time.
"""

from __future__ import annotations

import copy
import time
from typing import Callable, Sequence

import numpy as np
import torch
from torch import nn
from torch.func import functional_call, stack_module_state, vmap

from unlearnflow.core.models import Classifier
from unlearnflow.core.training import (
    FitStats,
    PerExampleLoss,
    TrainConfig,
    augment,
    augmentation_draws,
    batch_slices,
    cross_entropy_loss,
    data_generator,
    epoch_order,
    init_model,
    make_optimizer,
    progress_bar,
    recalibrate_batchnorm,
    set_lr,
    use_batch_statistics,
)
from unlearnflow.errors import UserError


def _stacked_forward(template: nn.Module) -> Callable:
    """``f(params, buffers, x)`` evaluating `template`'s architecture with given weights."""
    skeleton = copy.deepcopy(template).to("meta")

    def forward(params: dict, buffers: dict, x: torch.Tensor) -> torch.Tensor:
        return functional_call(skeleton, (params, buffers), (x,))

    return forward


_CHAIN_LAYERS = (nn.Flatten, nn.Linear, nn.ReLU, nn.Identity)


def _layer_chain(module: nn.Module, name: str = "") -> list[tuple[str, nn.Module]] | None:
    """``(qualified name, layer)`` in execution order if `module` is a plain chain of
    Flatten / Linear / ReLU / Identity layers (exactly those classes, without hooks), nested in
    ``nn.Sequential`` containers or a :class:`~unlearnflow.core.models.Classifier` with the default
    forward; otherwise None."""
    if module._forward_hooks or module._forward_pre_hooks:
        return None
    if type(module) in _CHAIN_LAYERS:
        return [(name, module)]
    if isinstance(module, nn.Sequential) and type(module).forward is nn.Sequential.forward:
        children = list(module.named_children())
    elif (isinstance(module, Classifier) and type(module).forward is Classifier.forward
          and isinstance(module.features, nn.Module)):
        children = [("features", module.features), ("classifier", module.classifier)]
    else:
        return None
    chain: list[tuple[str, nn.Module]] = []
    for child_name, child in children:
        links = _layer_chain(child, f"{name}.{child_name}" if name else child_name)
        if links is None:
            return None
        chain += links
    return chain


class _StackedLinear(torch.autograd.Function):
    """``x @ W.T + b`` for each of E models: `x` (E, N, in), `weight` (E, out, in), `bias` (E, out).

    The backward is ``nn.Linear``'s, per model: in particular the weight gradient is computed as
    ``grad.T @ x``, directly in the parameter's (E, out, in) layout. Autograd through
    ``bmm(x, W.transpose(1, 2))`` would compute its transpose and copy every weight gradient
    on each step; the same kernels as ``nn.Linear`` also keep the results bitwise equal to
    training each model alone.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        ctx.save_for_backward(x, weight)
        ctx.has_bias = bias is not None
        transposed = weight.transpose(1, 2)
        return torch.bmm(x, transposed) if bias is None else torch.baddbmm(bias.unsqueeze(1), x, transposed)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        x, weight = ctx.saved_tensors
        needs_x, needs_weight, needs_bias = ctx.needs_input_grad
        return (torch.bmm(grad, weight) if needs_x else None,
                torch.bmm(grad.transpose(1, 2), x) if needs_weight else None,
                grad.sum(1) if ctx.has_bias and needs_bias else None)


def _chain_forward(chain: list[tuple[str, nn.Module]]) -> Callable:
    """``f(params, buffers, x)`` for stacked `x` of shape (E, B, ...): the chain's forward with
    each Linear layer as one batched matrix product over the E models (:class:`_StackedLinear`)."""
    def key(name: str, tensor: str) -> str:
        return f"{name}.{tensor}" if name else tensor

    def shift(dim: int) -> int:  # a per-model dimension in the stacked tensor
        return dim + 1 if dim >= 0 else dim

    def forward(params: dict, buffers: dict, x: torch.Tensor) -> torch.Tensor:
        for name, layer in chain:
            if isinstance(layer, nn.Linear):
                rows = x.reshape(x.shape[0], -1, x.shape[-1])
                out = _StackedLinear.apply(rows, params[key(name, "weight")], params.get(key(name, "bias")))
                x = out.view(*x.shape[:-1], out.shape[-1])
            elif isinstance(layer, nn.ReLU):
                x = torch.relu(x)
            elif isinstance(layer, nn.Flatten):
                x = x.flatten(shift(layer.start_dim), shift(layer.end_dim))
        return x

    return forward


def _ensemble_forward(template: nn.Module) -> Callable:
    """The training forward ``f(params, buffers, x)`` over stacked weights and inputs (E, B, ...):
    direct batched matrix products for plain Linear chains, else ``vmap`` of ``functional_call``."""
    chain = _layer_chain(template)
    return _chain_forward(chain) if chain is not None else vmap(_stacked_forward(template))


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
    forward = _ensemble_forward(models[0])
    optimizer = make_optimizer(list(params.values()), config)
    generators = [data_generator(seed) for seed in seeds]
    subsets = [torch.from_numpy(np.flatnonzero(row)) for row in masks]
    n_models, n_subset = len(seeds), int(sizes[0])
    slices = batch_slices(n_subset, config)
    augmenting = bool(config.crop_padding or config.flip)
    step = examples = 0
    start = time.perf_counter()
    with progress_bar(config.epochs * len(slices), f"{description} x{n_models}", progress) as bar:
        for _ in range(config.epochs):
            orders = torch.stack([epoch_order(g, s) for g, s in zip(generators, subsets)]).to(device)
            for positions in slices:
                indices = orders[:, positions]
                size, batch = indices.shape[1], indices.reshape(-1)
                x = inputs.index_select(0, batch).view(n_models, size, *inputs.shape[1:])
                if augmenting:
                    draws = [augmentation_draws(g, size, config) for g in generators]
                    x = augment(x, *_stack_draws(draws), config.crop_padding)
                set_lr(optimizer, config.lr_at(step, len(slices)))
                logits = forward(params, buffers, x)
                per_example = loss(logits.flatten(0, 1), targets.index_select(0, batch)).view(n_models, size)
                optimizer.zero_grad(set_to_none=True)
                per_example.mean(dim=1).sum().backward()
                optimizer.step()
                step += 1
                examples += size
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
