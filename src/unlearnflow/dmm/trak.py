"""Margin datamodels from a few trained models by TRAK (Park et al. 2023, "TRAK: Attributing Model Behavior at Scale").

Datamodel Matching needs linear datamodels ``weights[i, x]``: the effect on eval point x's margin
of including training point i. Fitting them by regression (:mod:`unlearnflow.dmm.regression`) takes
thousands of subset-trained models; TRAK estimates them from a handful of models trained on all
the data. Citations are by step of the paper's method section (Section 3) rather than by equation
number; Algorithm 1 of its Appendix D.2 ("TRAK for multi-class classifiers (as implemented)") is
the recipe followed here.

* Warm-up (binary logistic regression): one Newton step from the full solution estimates the
  leave-one-out effect on the output ``f(x)`` as ``x^T (X^T R X)^{-1} x_i (1 - p_i)``.
* Step 1 (linearise): replace features by the per-example gradients of the model output,
  here the margin ``f(z) = logit_y - logsumexp_{c != y} logit_c = log(p_y / (1 - p_y))``, for which
  the loss gradient is ``dL/df = -(1 - p_y)``: TRAK's one-minus-probability residual
  ``Q = diag(1 - p_i)``.
* Step 2 (reduce dimension): project gradients to ``p`` dimensions with a Gaussian matrix
  ``P ~ N(0, 1/p)`` (Johnson-Lindenstrauss): ``phi(z) = P^T grad f(z)``, ``Phi`` stacks the
  training points' ``phi``.
* Step 3 (estimate): ``tau(x)_i = phi(x)^T (Phi^T Phi)^{-1} phi(z_i) (1 - p_i)``; the kernel is
  damped here, ``Phi^T Phi + lambda I`` (see `damping`).
* Step 4 (ensemble): with models ``k = 1..M``, ``tau = (mean_k Phi_eval_k K_k^{-1} Phi_k^T) *
  mean_k Q_k``. Step 5 (soft-thresholding for sparsity) is not applied: DM-DIRECT sums the
  weights over forget sets, where small coefficients still add up.

Cost per model, with ``n = n_train + n_eval`` points, ``d`` trainable parameters and ``p =
projection_dim``: ``n`` per-example margin gradients (``vmap(grad)``, about 3 forward passes each),
``2 n d p`` flops of projection, ``ceil(n / batch_size) * d * p`` Gaussian draws (the projection is
regenerated for every batch, in blocks of ``_BLOCK_ELEMENTS``, so it is never stored whole),
``n_train p^2 + p^3 / 3`` flops for the kernel and its Cholesky factor and ``2 n_train n_eval p``
for the scores; all on the models' device, the kernel and scores in float64. Memory:
``batch_size * d`` per-example gradients, one projection block, ``n * p`` float64 projected
gradients and the result, ``n_train * n_eval`` float64 plus its float32 copy. For very large models
(millions of parameters) the projection dominates the run time. Measured on one CPU thread: an MLP
with 4,810 parameters, 3,000 training and 3,000 eval points, ``p = 1024``: 1.4 s per model.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad_and_value, vmap

from unlearnflow.core.training import progress_bar
from unlearnflow.dmm.regression import Datamodels
from unlearnflow.errors import UserError

#: Most entries of the projection matrix generated at once (64 MiB of float32).
_BLOCK_ELEMENTS = 1 << 24


def trak_margin_datamodels(models: Sequence[nn.Module], x_train: torch.Tensor, y_train: torch.Tensor,
                           x_eval: torch.Tensor, y_eval: torch.Tensor, projection_dim: int = 1024,
                           damping: float = 1e-3, seed: int = 0, batch_size: int = 256,
                           progress: bool = False) -> Datamodels:
    """TRAK estimate of margin datamodels: one target per eval point, its correct-class margin.

    Args:
        models: independently trained models (all on the full training set), each ``x -> logits``.
            They are evaluated in eval mode (batch norm uses its running statistics; buffers are
            constants); their mode is restored afterwards.
        x_train, y_train: the training points and integer labels.
        x_eval, y_eval: the points whose margins are attributed (may include training points).
        projection_dim: ``p``, the dimension of the random projection (any ``p >= 1``; gradients
            are projected even when ``p`` exceeds the number of parameters).
        damping: ``lambda`` relative to the mean diagonal of ``Phi^T Phi`` (its mean eigenvalue),
            so it is scale-free. The default 1e-3 stays close to TRAK's undamped estimator: it
            only tames the directions the training gradients (nearly) do not span (``Phi^T Phi``
            is singular when ``p > n_train``, and symmetries such as softmax shifts or ReLU
            rescaling make some directions exactly flat) and shrinks a direction of average
            eigenvalue by 0.1%. When ``p`` exceeds the kernel's rank (``n_train`` or the number of
            parameters) the mean diagonal falls like rank / p, and so does the damping.
        seed: seeds the projection of model k with ``(seed, k)``.
        batch_size: examples per batch of per-example gradients.
        progress: show a progress bar over models x batches.

    Returns:
        ``Datamodels`` with ``weights`` (n_train, n_eval) float32, ``weights[i, x] > 0`` when
        including training point i raises x's margin; ``bias`` (n_eval,) the eval margins of the
        (full-data) models, averaged; ``alphas`` zeros; ``method == "trak"``.
    """
    x_train, y_train, x_eval, y_eval = _check_inputs(models, x_train, y_train, x_eval, y_eval)
    for name, value in (("projection_dim", projection_dim), ("batch_size", batch_size)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise UserError(f"trak: {name} must be a positive integer, got {value!r}")
    if not (isinstance(damping, (int, float)) and math.isfinite(damping) and damping >= 0):
        raise UserError(f"trak: damping must be a finite number >= 0, got {damping!r}")
    n_train, n_eval = len(x_train), len(x_eval)
    batches = math.ceil(n_train / batch_size) + math.ceil(n_eval / batch_size)
    device = next(models[0].parameters()).device
    scores = torch.zeros(n_train, n_eval, dtype=torch.float64, device=device)
    residuals = torch.zeros(n_train, dtype=torch.float64, device=device)
    bias = torch.zeros(n_eval, dtype=torch.float64, device=device)
    with progress_bar(len(models) * batches, "trak", progress) as bar:
        for k, model in enumerate(models):
            projection_seed = int(np.random.SeedSequence([seed, k]).generate_state(1)[0])
            phi_train, margins_train = (t.to(device) for t in _projected_gradients(
                model, x_train, y_train, projection_dim, projection_seed, batch_size, bar))
            phi_eval, margins_eval = (t.to(device) for t in _projected_gradients(
                model, x_eval, y_eval, projection_dim, projection_seed, batch_size, bar))
            if not all(torch.isfinite(t).all() for t in (phi_train, phi_eval, margins_train, margins_eval)):
                raise UserError(f"trak: model {k} gives non-finite margins or margin gradients")
            scores.addmm_(phi_train, _solve_kernel(phi_train, phi_eval, damping))
            residuals += torch.sigmoid(-margins_train)  # 1 - p_i, as p_i = sigmoid(margin_i)
            bias += margins_eval
    count = len(models)
    weights = scores.mul_(residuals[:, None] / count**2).to(torch.float32)  # mean scores times mean residuals
    return Datamodels(weights.cpu().numpy(), (bias / count).to(torch.float32).cpu().numpy(),
                      np.zeros(n_eval, dtype=np.float32), "trak")


def _check_inputs(models, x_train, y_train, x_eval, y_eval):
    if len(models) == 0:
        raise UserError("trak: no models given")
    tensors = [torch.as_tensor(t) for t in (x_train, y_train, x_eval, y_eval)]
    for (x, y), split in zip((tensors[:2], tensors[2:]), ("train", "eval")):
        if y.ndim != 1 or len(x) != len(y) or len(y) == 0:
            raise UserError(f"trak: x_{split} and y_{split} must hold the same positive number of points "
                            f"(y_{split} 1-D), got shapes {tuple(x.shape)} and {tuple(y.shape)}")
        if not x.is_floating_point() or not torch.isfinite(x).all():
            raise UserError(f"trak: x_{split} must be finite floating-point inputs")
        if y.is_floating_point() or y.is_complex() or y.dtype == torch.bool:
            raise UserError(f"trak: y_{split} must hold integer labels, got {y.dtype}")
    for k, model in enumerate(models):
        if not any(p.requires_grad for p in model.parameters()):
            raise UserError(f"trak: model {k} has no trainable parameters")
        classes = _num_classes(model, tensors[0])
        if classes < 2:
            raise UserError(f"trak: model {k} has {classes} output; margins need at least 2 classes")
        for y, split in ((tensors[1], "train"), (tensors[3], "eval")):
            if y.min() < 0 or y.max() >= classes:
                raise UserError(f"trak: y_{split} must lie in [0, {classes}) for model {k}, "
                                f"got labels {int(y.min())}..{int(y.max())}")
    return tensors


def _num_classes(model: nn.Module, x: torch.Tensor) -> int:
    """Number of logits `model` gives for ``x[:1]`` in eval mode (its mode is restored)."""
    reference = next(model.parameters())
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            return model(x[:1].to(reference.device, reference.dtype)).shape[-1]
    finally:
        model.train(was_training)


def _projected_gradients(model: nn.Module, x: torch.Tensor, y: torch.Tensor, projection_dim: int, seed: int,
                         batch_size: int, bar) -> tuple[torch.Tensor, torch.Tensor]:
    """``(P^T grad f(z_j) for every point (n, p) float64, margins f(z_j) (n,) float64)`` under `model`."""
    params = {name: p.detach() for name, p in model.named_parameters() if p.requires_grad}
    constants = {name: p.detach() for name, p in model.named_parameters() if not p.requires_grad}
    constants.update((name, b.detach()) for name, b in model.named_buffers())
    reference = next(iter(params.values()))

    def margin(params, x, correct):
        logits = functional_call(model, (params, constants), (x.unsqueeze(0),)).squeeze(0)
        others = torch.logsumexp(logits.masked_fill(correct, -math.inf), dim=0)
        return torch.where(correct, logits, 0.0).sum() - others

    per_example = vmap(grad_and_value(margin), in_dims=(None, 0, 0))
    classes = _num_classes(model, x)
    was_training = model.training
    model.eval()
    try:
        phi, values = [], []
        for start in range(0, len(x), batch_size):
            xb = x[start:start + batch_size].to(reference.device, reference.dtype)
            correct = F.one_hot(y[start:start + batch_size].to(reference.device).long(), classes).bool()
            grads, margins = per_example(params, xb, correct)
            phi.append(_project(grads, projection_dim, seed).double())
            values.append(margins.double())
            bar.update(1)
    finally:
        model.train(was_training)
    return torch.cat(phi), torch.cat(values)


def _project(grads: dict[str, torch.Tensor], projection_dim: int, seed: int) -> torch.Tensor:
    """``G P`` for per-example gradients G (batch x d) and P ~ N(0, 1/p) (d x p) drawn from `seed`.

    P is generated in blocks of rows (at most ``_BLOCK_ELEMENTS`` entries), parameter tensor by
    parameter tensor in a fixed order, from a generator reseeded on every call: every batch sees
    the same P, and no more than one block of it exists at a time.
    """
    first = next(iter(grads.values()))
    generator = torch.Generator(device=first.device).manual_seed(seed)
    out = torch.zeros(len(first), projection_dim, dtype=first.dtype, device=first.device)
    rows = max(1, _BLOCK_ELEMENTS // projection_dim)
    for g in grads.values():
        flat = g.reshape(len(g), -1)
        for start in range(0, flat.shape[1], rows):
            block = flat[:, start:start + rows]
            out += block @ torch.randn(block.shape[1], projection_dim, generator=generator, dtype=block.dtype,
                                       device=block.device)
    return out / math.sqrt(projection_dim)


def _solve_kernel(phi_train: torch.Tensor, phi_eval: torch.Tensor, damping: float) -> torch.Tensor:
    """``(Phi^T Phi + lambda I)^{-1} Phi_eval^T`` (p x n_eval), ``lambda = damping * mean diag(Phi^T Phi)``.

    Cholesky in float64; a pseudo-inverse (least squares) when the damped kernel is still singular.
    """
    kernel = phi_train.T @ phi_train
    kernel.diagonal().add_(damping * kernel.diagonal().mean())
    factor, info = torch.linalg.cholesky_ex(kernel)
    if info == 0:
        return torch.cholesky_solve(phi_eval.T, factor)
    return torch.linalg.pinv(kernel, hermitian=True) @ phi_eval.T
