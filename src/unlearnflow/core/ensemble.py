"""Train E models at once: stacked parameters, one forward and backward over all of them.

:func:`fit_stacked` is the loop: E existing models, each with its seed, subset, targets and
gradient edit, trained as :func:`~unlearnflow.core.training.fit` would train each alone; it
serves :func:`fit_many` (fresh banks) and the lockstep (:mod:`unlearnflow.core.lockstep`, every
unlearning method's fine-tuning over a bank). Each model has its own seed (initial weights, batch
order, augmentation) and its own training subset (a row of a boolean mask for :func:`fit_many`);
all subsets must have the same size so that the
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
:class:`~unlearnflow.core.training.Optimizer`); splitting the ensemble into cache-sized groups
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
        if x.shape[1] == 1:  # one row: nn.Linear's addmm / mm takes another (gemv) kernel than bmm
            if bias is None:
                return torch.stack([row.mm(w) for row, w in zip(x, transposed)])
            return torch.stack([torch.addmm(b, row, w) for b, row, w in zip(bias, x, transposed)])
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
    vectorised run (``seconds`` covers all models together). A recipe whose batches are not all
    multiples of 64 rows (a partial last batch, say) computes those batches' losses per model
    (:func:`_stacked_loss`), which rounds as ``fit`` does; before fine-tuning shared this loop
    (0a0138e) such batches were computed over the flattened batch and could differ in the last bits.
    """
    masks = np.asarray(masks, dtype=bool)
    if masks.shape != (len(seeds), len(inputs)):
        raise ValueError(f"masks must have shape ({len(seeds)}, {len(inputs)}), got {masks.shape}")
    models = [init_model(build, seed).to(inputs.device) for seed in seeds]
    subsets = [torch.from_numpy(np.flatnonzero(row)).to(inputs.device) for row in masks]
    stats = fit_stacked(models, inputs, [targets] * len(models), config, seeds, subsets, loss,
                        progress=progress, description=description)
    return models, FitStats(seconds=stats.seconds * len(models), steps=stats.steps,
                            examples=stats.examples * len(models))


def fit_stacked(models: Sequence[nn.Module], inputs: torch.Tensor, targets: Sequence[torch.Tensor],
                config: TrainConfig, seeds: Sequence[int], subsets: Sequence[torch.Tensor],
                loss: PerExampleLoss | Sequence[PerExampleLoss] | None = None,
                after_backward: Sequence[Callable[[nn.Module], None]] | None = None,
                progress: bool = False, description: str = "train") -> FitStats:
    """:func:`~unlearnflow.core.training.fit` of E models of one architecture at once, in place:
    model e on ``inputs[subsets[e]]`` (equal sizes; indices may repeat) towards ``targets[e]``,
    with its own seed, and ``after_backward[e]`` run on it after every backward pass.

    `loss` is one per-example loss for all models (computed once over the stacked batch) or one
    per model (each on its own rows). Only parameters with ``requires_grad`` are trained, as in
    ``fit``. While the loop runs, every model's trained parameters are views of the stacked
    parameters, with their gradients as views of the stacked gradients, so `after_backward` reads
    and edits exactly what ``fit`` would give it; afterwards each model owns its parameters again.
    Returns the cost per model: the whole run's wall time shared equally, and each model's own
    steps and examples.
    """
    if len({len(subset) for subset in subsets}) != 1:
        raise UserError(f"vectorised training needs equal training-set sizes per model, got "
                        f"{sorted({len(subset) for subset in subsets})}")
    device, n_models, n_subset = inputs.device, len(models), len(subsets[0])
    loss = loss or cross_entropy_loss(config.label_smoothing)
    for model in models:
        if config.batchnorm == "frozen":
            model.eval()
        else:
            use_batch_statistics(model)
            model.train()
    named = [dict(model.named_parameters()) for model in models]
    params = {name: torch.stack([parameters[name].detach() for parameters in named]).requires_grad_(p.requires_grad)
              for name, p in named[0].items()}
    buffers = {name: torch.stack([dict(model.named_buffers())[name] for model in models])
               for name, _ in models[0].named_buffers()}
    trained = [name for name, p in named[0].items() if p.requires_grad]
    for e, parameters in enumerate(named):
        for name in trained:
            parameters[name].data = params[name].data[e]
    forward = _ensemble_forward(models[0])
    optimizer = make_optimizer([params[name] for name in trained], config)
    generators = [data_generator(seed) for seed in seeds]
    slices = batch_slices(n_subset, config)
    rows_of = _target_rows(targets, device)
    augmenting = bool(config.crop_padding or config.flip)
    step = examples = 0
    start = time.perf_counter()
    try:
        with torch.enable_grad(), progress_bar(config.epochs * len(slices), f"{description} x{n_models}",
                                               progress) as bar:
            for _ in range(config.epochs):
                orders = torch.stack([epoch_order(g, s.cpu()) for g, s in zip(generators, subsets)]).to(device)
                for positions in slices:
                    indices = orders[:, positions]
                    size, batch = indices.shape[1], indices.reshape(-1)
                    x = inputs.index_select(0, batch).view(n_models, size, *inputs.shape[1:])
                    if augmenting:
                        draws = [augmentation_draws(g, size, config) for g in generators]
                        x = augment(x, *_stack_draws(draws), config.crop_padding)
                    set_lr(optimizer, config.lr_at(step, len(slices)))
                    logits = forward(params, buffers, x)
                    per_example = _stacked_loss(loss, logits, rows_of(indices))
                    optimizer.zero_grad()
                    per_example.mean(dim=1).sum().backward()
                    if after_backward is not None:
                        _edit_gradients(named, params, trained, after_backward, models)
                    optimizer.step()
                    step += 1
                    examples += size
                    bar.update()
    finally:  # every model owns its parameters again, also after an error
        for parameters in named:
            for name in trained:
                parameters[name].data = parameters[name].data.clone()
                parameters[name].grad = None
    for model, subset in zip(models, subsets):
        if config.batchnorm == "recalibrate":
            recalibrate_batchnorm(model, inputs[subset.to(device)], config.batch_size)
        model.eval()
    return FitStats(seconds=(time.perf_counter() - start) / n_models, steps=step, examples=examples)


def _stacked_loss(loss: PerExampleLoss | Sequence[PerExampleLoss], logits: torch.Tensor,
                  targets: torch.Tensor) -> torch.Tensor:
    """(E, B) per-example losses of the stacked logits (E, B, C) and targets (E * B, ...), each
    model's row rounded as the model's own batch rounds it in ``fit``: one call over the flattened
    batch when B is a multiple of 64 (every training recipe's batch: at such widths the vectorised
    kernels split each model's rows as they split one model's batch), else one call per model on
    its own rows (the flattened call differs in the last bits for most B that are not multiples
    of 16, measured for B = 1..129; ``vmap`` over the models would be exact too, but its first call
    imports sympy, 0.3 s, more than most unlearning jobs spend in their losses). A list of losses,
    one per model, is always applied model by model."""
    n_models, size = logits.shape[:2]
    if callable(loss) and size % 64 == 0:
        return loss(logits.flatten(0, 1), targets).view(n_models, size)
    losses = [loss] * n_models if callable(loss) else loss
    targets = targets.view(n_models, size, *targets.shape[1:])
    return torch.stack([own(out, target) for own, out, target in zip(losses, _Unstack.apply(logits), targets)])


class _Unstack(torch.autograd.Function):
    """(E, B, C) -> E tensors (B, C), whose gradients are stacked back in the memory layout each
    model's loss produced them in (the cross-entropy's transposed ``log_softmax`` gives its
    gradient class-major). The layers' backward then reduces each model's rows in the order
    ``nn.Linear`` reduces one model's batch: summing a class-major gradient over the batch adds
    contiguous numbers, a row-major one strided numbers, and the two round differently."""

    @staticmethod
    def forward(ctx, stacked: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tuple(row.clone() for row in stacked.unbind(0))

    @staticmethod
    def backward(ctx, *grads: torch.Tensor) -> torch.Tensor:
        if all(g.dim() == 2 and not g.is_contiguous() and g.t().is_contiguous() for g in grads):
            return torch.stack([g.t() for g in grads]).transpose(1, 2)  # class-major, like each model's gradient
        return torch.stack(grads)


def _target_rows(targets: Sequence[torch.Tensor], device: torch.device) -> Callable[[torch.Tensor], torch.Tensor]:
    """(E, B) row indices -> the (E * B, ...) targets of each model's rows: one gather from a
    tensor all models share, else from the models' stacked targets."""
    if all(target is targets[0] for target in targets):
        shared = targets[0].to(device)
        return lambda indices: shared.index_select(0, indices.reshape(-1))
    stacked = torch.cat([target.to(device) for target in targets])
    offsets = torch.arange(len(targets), device=device)[:, None] * len(targets[0])
    return lambda indices: stacked.index_select(0, (indices + offsets).reshape(-1))


def _edit_gradients(named: list[dict[str, nn.Parameter]], params: dict[str, torch.Tensor], trained: list[str],
                    after_backward: Sequence[Callable[[nn.Module], None]], models: Sequence[nn.Module]) -> None:
    """Run each model's `after_backward` on its slice of the stacked gradients (in place, or
    written back when it replaced a gradient)."""
    for e, (parameters, edit, model) in enumerate(zip(named, after_backward, models)):
        views = {name: params[name].grad[e] for name in trained}
        for name in trained:
            parameters[name].grad = views[name]
        edit(model)
        for name in trained:
            if parameters[name].grad is None:
                raise RuntimeError(f"after_backward removed the gradient of {name}; a vectorised fit needs one")
            if parameters[name].grad is not views[name]:
                views[name].copy_(parameters[name].grad)
            parameters[name].grad = None


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
