"""The one training loop of unlearnflow, and the pieces the vectorised trainer shares with it.

Everything that trains or fine-tunes a model (original models, oracles, subset models for
datamodels, and every fine-tuning unlearning method) goes through :func:`fit`. The vectorised
trainer (:mod:`unlearnflow.core.ensemble`) reuses the same schedule, batch order, augmentation,
loss and optimizer construction, so that training E models at once gives the same models as
training each one here with the same seed.

Determinism. A model is defined by one integer seed (:func:`model_seed` derives it from the
global seed, the model's role and its id, never from how models are chunked into jobs). The
seed initialises the weights; ``seed + 1`` seeds the generator that draws the batch order and
the augmentation, in this order per epoch: one permutation of the model's training subset,
then per step the crop offsets and flips.

BatchNorm. Running statistics are *not* tracked while training (batch statistics are used,
which is what training-mode BatchNorm computes anyway); after the last step they are estimated
exactly, as a cumulative average over the model's own training subset without augmentation
(:func:`recalibrate_batchnorm`). This makes training a pure function of the parameters, which
is what ``torch.func.vmap`` needs, and gives identical statistics in both trainers. Fine-tuning
methods that must keep statistics fixed (PGU) use ``batchnorm="frozen"`` (eval mode).
"""

from __future__ import annotations

import hashlib
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch import nn
from torch.optim.adam import adam
from torch.optim.sgd import sgd
from tqdm.auto import tqdm

from unlearnflow.core.recipe import TrainConfig
from unlearnflow.errors import UserError

#: Per-example loss: (logits (B, C), targets (B, ...)) -> losses (B,).
PerExampleLoss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


class _Lockstep(threading.local):
    """What a task of :func:`unlearnflow.core.lockstep.run_lockstep` installs in its thread: where
    :func:`fit` hands its call over, and the task's own clock. Elsewhere :func:`fit` trains and
    :func:`clock` is ``time.perf_counter``."""

    fit: Callable[..., "FitStats"] | None = None
    clock: Callable[[], float] = staticmethod(time.perf_counter)


LOCKSTEP = _Lockstep()


def clock() -> float:
    """Seconds, for a method to time its own cost: ``time.perf_counter()``, or inside a lockstep
    task the task's own time (its share of the vectorised training loops included)."""
    return LOCKSTEP.clock()

@dataclass(frozen=True)
class FitStats:
    """What a training run cost: wall time, optimisation steps and examples processed."""

    seconds: float
    steps: int
    examples: int


def model_seed(global_seed: int, role: str, model_id: int) -> int:
    """Seed of model `model_id` of a role (e.g. ``"original"``, ``"oracle/random_10"``).

    Depends only on (global seed, role, model id), so re-chunking reproduces the same models.
    """
    digest = hashlib.sha256(f"{global_seed}:{role}:{model_id}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**62 - 1)


def init_model(build: Callable[[], nn.Module], seed: int) -> nn.Module:
    """Build a model with weights drawn from `seed`, leaving the global RNG untouched.

    Only the CPU generator is seeded (and restored), since modules are built on the CPU:
    ``torch.manual_seed`` would also queue seeds for every accelerator backend, leaking into
    their global state and costing ~0.5 ms per model, which adds up over hundreds of models.
    """
    with torch.random.fork_rng(devices=[]):
        torch.random.default_generator.manual_seed(seed)
        return build()


def data_generator(seed: int) -> torch.Generator:
    """The generator of a model's batch order and augmentation (see module docstring)."""
    return torch.Generator().manual_seed(seed + 1)


def resolve_device(setting: str = "auto") -> torch.device:
    """``auto`` picks CUDA when available; ``cuda`` without a GPU is a UserError."""
    if setting == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if setting == "cuda" and not torch.cuda.is_available():
        raise UserError("device: 'cuda' requested but no CUDA GPU is available (use 'auto' or 'cpu')")
    if setting not in ("cpu", "cuda"):
        raise UserError(f"device: expected auto, cpu or cuda, got {setting!r}")
    return torch.device(setting)


def epoch_order(generator: torch.Generator, subset: torch.Tensor) -> torch.Tensor:
    """One epoch's visiting order: a permutation of the training indices in `subset`."""
    return subset[torch.randperm(len(subset), generator=generator)]


def batch_slices(n_examples: int, config: TrainConfig) -> list[slice]:
    """Positions of each step's batch within an epoch order (last partial batch per drop_last)."""
    size = config.batch_size
    return [slice(i * size, min((i + 1) * size, n_examples)) for i in range(config.steps_per_epoch(n_examples))]


def augmentation_draws(generator: torch.Generator, batch: int, config: TrainConfig) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """Random crop offsets (batch, 2) and flip flags (batch,) for one step, or None when off."""
    offsets = (torch.randint(0, 2 * config.crop_padding + 1, (batch, 2), generator=generator)
               if config.crop_padding else None)
    flips = torch.rand(batch, generator=generator) < 0.5 if config.flip else None
    return offsets, flips


def augment(images: torch.Tensor, offsets: torch.Tensor | None, flips: torch.Tensor | None,
            padding: int) -> torch.Tensor:
    """Random crop after zero padding and horizontal flip, per example.

    `images` has shape (..., C, H, W); `offsets` (..., 2) and `flips` (...) match its leading
    dimensions. Zero padding pads with the training mean, since inputs are normalised.
    """
    if offsets is None and flips is None:
        return images
    lead, (channels, height, width) = images.shape[:-3], images.shape[-3:]
    flat = images.reshape(-1, channels, height, width)
    count = flat.shape[0]
    rows = torch.arange(height, device=images.device).expand(count, height)
    cols = torch.arange(width, device=images.device).expand(count, width)
    if offsets is not None:
        flat = nn.functional.pad(flat, (padding,) * 4)
        offsets = offsets.reshape(count, 2).to(images.device)
        rows = rows + offsets[:, :1]
        cols = cols + offsets[:, 1:]
    if flips is not None:
        cols = torch.where(flips.reshape(count, 1).to(images.device), cols.flip(1), cols)
    picked = flat[torch.arange(count, device=images.device)[:, None, None], :, rows[:, :, None], cols[:, None, :]]
    return picked.permute(0, 3, 1, 2).reshape(*lead, channels, height, width)


def cross_entropy_loss(label_smoothing: float = 0.0) -> PerExampleLoss:
    """Per-example cross-entropy with optional label smoothing (the default training loss).

    The same values as ``nn.functional.cross_entropy(..., reduction="none")`` (which is
    ``nll_loss`` of ``log_softmax``), except that ``log_softmax`` runs over the first dimension
    of the transposed logits: on the CPU, ``log_softmax`` over a short last dimension (10
    classes) is ~2.5x slower, which matters for the vectorised trainer's (models x batch,
    classes) logits and costs nothing measurable on one model's batch.
    """
    def loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        log_probs = nn.functional.log_softmax(logits.t(), dim=0).t()
        nll = nn.functional.nll_loss(log_probs, labels, reduction="none")
        if label_smoothing:
            return (1 - label_smoothing) * nll - label_smoothing * log_probs.mean(dim=1)
        return nll
    return loss


class Optimizer:
    """SGD (momentum, Nesterov, weight decay) or Adam over a list of tensors; both act
    elementwise, which is what lets the vectorised trainer optimise stacked parameters with the
    same optimizer.

    The update is torch.optim.SGD's / Adam's, through their functional forms
    (``torch.optim.sgd.sgd``, ``torch.optim.adam.adam``: the kernels their ``step`` calls, with
    the same state and the same arguments), so the weights are bitwise those of torch.optim
    (tested). What is left out is ``step``'s wrapper, which imports ``torch._dynamo`` on the first
    step of every process: 0.7 s, paid by every training and unlearning job of the workflow.

    The foreach implementation, not the fused one: fused is ~10% faster for both trainers on the
    CPU, but its vectorised kernels round a tensor's SIMD body and scalar tail differently, so a
    model's weights would depend on how many models are stacked with it (chunking) and differ
    from training it alone; foreach's elementwise operations round each element the same way.
    """

    def __init__(self, params: Sequence[torch.Tensor], config: TrainConfig):
        if config.lr < 0 or config.momentum < 0 or config.weight_decay < 0:
            raise UserError(f"training: lr, momentum and weight_decay must be >= 0, got {config.lr}, "
                            f"{config.momentum} and {config.weight_decay}")
        if config.optimizer == "sgd" and config.nesterov and config.momentum <= 0:
            raise UserError("training: nesterov needs momentum > 0")
        self.params, self.config, self.lr = list(params), config, config.lr
        self.state: list[dict[str, Any]] = [{} for _ in self.params]

    def zero_grad(self) -> None:
        """Set every gradient to None (torch.optim's default)."""
        for p in self.params:
            p.grad = None

    @torch.no_grad()
    def step(self) -> None:
        live = [index for index, p in enumerate(self.params) if p.grad is not None]
        params, grads = [self.params[i] for i in live], [self.params[i].grad for i in live]
        states = [self.state[i] for i in live]
        config = self.config
        if config.optimizer == "sgd":
            buffers = [state.get("momentum_buffer") for state in states]
            sgd(params, grads, buffers, foreach=True, weight_decay=config.weight_decay, momentum=config.momentum,
                lr=self.lr, dampening=0.0, nesterov=config.nesterov, maximize=False)
            if config.momentum != 0:
                for state, buffer in zip(states, buffers):
                    state["momentum_buffer"] = buffer
            return
        for p, state in zip(params, states):
            if not state:
                state.update(step=torch.tensor(0.0, dtype=torch.float64 if torch.get_default_dtype() == torch.float64
                                               else torch.float32),  # torch.optim's scalar dtype
                             exp_avg=torch.zeros_like(p, memory_format=torch.preserve_format),
                             exp_avg_sq=torch.zeros_like(p, memory_format=torch.preserve_format))
        adam(params, grads, [state["exp_avg"] for state in states], [state["exp_avg_sq"] for state in states], [],
             [state["step"] for state in states], foreach=True, amsgrad=False, beta1=0.9, beta2=0.999, lr=self.lr,
             weight_decay=config.weight_decay, eps=1e-8, maximize=False)


def make_optimizer(params: Sequence[torch.Tensor], config: TrainConfig) -> Optimizer:
    """The config's optimizer (:class:`Optimizer`) over `params`."""
    return Optimizer(params, config)


def set_lr(optimizer: Optimizer, lr: float) -> None:
    optimizer.lr = lr


def batchnorm_layers(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


def use_batch_statistics(model: nn.Module) -> None:
    """Make BatchNorm layers use batch statistics and track nothing (see module docstring)."""
    for layer in batchnorm_layers(model):
        layer.track_running_stats = False
        layer.running_mean = layer.running_var = layer.num_batches_tracked = None


@torch.no_grad()
def recalibrate_batchnorm(model: nn.Module, inputs: torch.Tensor, batch_size: int) -> None:
    """Estimate BatchNorm running statistics exactly over `inputs` (cumulative average)."""
    layers = batchnorm_layers(model)
    if not layers:
        return
    for layer in layers:
        layer.track_running_stats = True
        layer.momentum = None
        layer.register_buffer("running_mean", torch.zeros(layer.num_features, device=inputs.device))
        layer.register_buffer("running_var", torch.ones(layer.num_features, device=inputs.device))
        layer.register_buffer("num_batches_tracked", torch.tensor(0, dtype=torch.long, device=inputs.device))
    model.train()
    for batch in inputs.split(batch_size):
        model(batch)
    model.eval()


def progress_bar(total: int, description: str, enabled: bool) -> tqdm:
    """tqdm on stderr (which rules redirect to their log); off in tests."""
    return tqdm(total=total, desc=description, disable=not enabled, mininterval=2.0, leave=False)


def fit(model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor, config: TrainConfig, seed: int,
        subset: torch.Tensor | None = None, loss: PerExampleLoss | None = None,
        after_backward: Callable[[nn.Module], None] | None = None,
        progress: bool = False, description: str = "train") -> FitStats:
    """Train `model` in place on ``inputs[subset]`` (all of them by default).

    `targets` are labels for the default cross-entropy loss, or whatever `loss` expects (target
    logits for Oracle Matching). `after_backward` may edit gradients before the optimizer step
    (PGU projects them). Inputs and targets must already be on the model's device. Inside a task of
    :func:`unlearnflow.core.lockstep.run_lockstep` the call is handed over, to run vectorised with
    the other models' calls.
    """
    if LOCKSTEP.fit is not None:
        return LOCKSTEP.fit(model, inputs, targets, config, seed, subset, loss, after_backward)
    device = inputs.device
    subset = torch.arange(len(inputs), device=device) if subset is None else subset.to(device)
    loss = loss or cross_entropy_loss(config.label_smoothing)
    if config.batchnorm == "frozen":
        model.eval()
    else:
        use_batch_statistics(model)
        model.train()
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = make_optimizer(trainable, config)
    generator = data_generator(seed)
    steps_per_epoch = config.steps_per_epoch(len(subset))
    step = examples = 0
    start = time.perf_counter()
    with progress_bar(config.epochs * steps_per_epoch, description, progress) as bar:
        for _ in range(config.epochs):
            order = epoch_order(generator, subset.cpu()).to(device)
            for positions in batch_slices(len(subset), config):
                batch = order[positions]
                offsets, flips = augmentation_draws(generator, len(batch), config)
                x = augment(inputs.index_select(0, batch), offsets, flips, config.crop_padding)
                set_lr(optimizer, config.lr_at(step, steps_per_epoch))
                batch_loss = loss(model(x), targets.index_select(0, batch)).mean()
                optimizer.zero_grad()
                batch_loss.backward()
                if after_backward is not None:
                    after_backward(model)
                optimizer.step()
                step += 1
                examples += len(batch)
                bar.update()
    if config.batchnorm == "recalibrate":
        recalibrate_batchnorm(model, inputs[subset], config.batch_size)
    model.eval()
    return FitStats(seconds=time.perf_counter() - start, steps=step, examples=examples)


@torch.no_grad()
def predict_logits(model: nn.Module, inputs: torch.Tensor, batch_size: int = 1024) -> torch.Tensor:
    """Eval-mode logits of `model` on every row of `inputs`."""
    model.eval()
    return torch.cat([model(batch) for batch in inputs.split(batch_size)])


def to_numpy_state(model: nn.Module) -> dict[str, np.ndarray]:
    """A model's state dict as numpy arrays (for the artifact store)."""
    return {name: tensor.detach().cpu().numpy() for name, tensor in model.state_dict().items()}


def subset_mask(seed: int, n: int, fraction: float) -> np.ndarray:
    """Boolean mask of exactly ``round(fraction * n)`` points drawn with `seed` (datamodels' subsets)."""
    chosen = np.random.default_rng(seed).choice(n, size=int(round(fraction * n)), replace=False)
    mask = np.zeros(n, dtype=bool)
    mask[chosen] = True
    return mask
