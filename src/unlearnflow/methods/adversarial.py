"""Adversarial: instance-wise unlearning with adversarial examples and weight importance (Cha, Cho,
Hwang, Lee, Moon and Lee, "Learning to unlearn: instance-wise unlearning for pre-trained
classifiers", AAAI 2024). It is reference [3] and the "Adversarial" baseline of Table 5 of the
source-free unlearning paper: it reads the forget samples alone (a
:class:`~unlearnflow.methods.request.ForgetRequest`), as the authors' code does.

Three parts, as the authors' code (github.com/csm9493/L2UL, ``main_unlearn_*``, "Baseline 3")
computes them, all on the model before unlearning:

1. **Adversarial anchors** (:func:`adversarial_anchors`). For every forget sample x (label y),
   ``n_adversarial`` targeted L2 PGD attacks, each towards a class t != y drawn uniformly:
   ``delta <- clip_eps(delta - pgd_step * g / ||g||)`` with ``g = grad_delta CE(f(x + delta), t)``,
   ``pgd_steps`` times, from a random start on the sphere ``||delta|| = pgd_eps``. The pairs
   ``(x + delta, t)`` are kept: points next to the forget samples whose (adversarial) predictions
   must not move, so that ascending on the forget samples does not drag the decision regions
   of the data around them along (the paper's representation-level retention).
2. **Weight importance** (:func:`held_weights`, MAS of Aljundi et al. 2018 on the forget samples):
   ``Omega = sum over batches of |grad_theta mean_i ||f(x_i)||_2| * batch size``, min-max
   normalised per tensor; parameter theta_k is held towards its original value with weight
   ``1 - Omega_k``: the parameters the forget samples' outputs depend on least move least.
3. **Unlearning** (:func:`unlearn`). SGD steps on a batch of anchors with the next batch of forget
   samples (the forget batches cycle, neither is shuffled):
   ``L = (sum_A CE(f(x_a), t) - sum_F CE(f(x), y)) / (|A| + |F|)
   + reg_lambda * sum_k (1 - Omega_k) (theta_k - theta0_k)^2 / 2``
   (the code's ``-CE_F |F|/(|A|+|F|) + CE_A |A|/(|A|+|F|)``), until no forget sample is
   classified correctly (checked after every step, as the authors do) or after ``epochs`` passes
   over the anchors (their ``max_iter``).

The defaults are the authors' CIFAR-10 run (``run.sh``: 20 anchors per sample, L2 radius 4.0,
step 0.1, 100 PGD steps, lr 1e-3, reg_lambda 1.0; SGD momentum 0.9, weight decay 1e-4; batches
of 32 forget samples and 256 anchors; at most 1000 epochs). ``pgd_eps`` is in input units: 4.0
suits CIFAR-10 pixels in [0, 1] (image norm about 28); scale it to the data (the linear
experiments' feature rows have norm <= 1).

Where this differs from the authors' code, and why:

- No clipping of ``x + delta`` to the pixel box [0, 1]: unlearnflow's inputs are standardised
  images or features, which have no such box. For the same reason the random start is a uniform
  direction at radius ``pgd_eps`` (advertorch's L2 start, a uniform point of the box projected
  onto the eps-ball, lies on that sphere too, with a direction biased towards the box's centre).
- The target class is uniform over the other classes
  (:func:`~unlearnflow.methods.random_labels.random_wrong_labels`); the code redraws a collision
  as ``(long(rand) * C + C) // 2 = C // 2``, a casting slip.
- BatchNorm statistics stay frozen (eval mode) in every pass, as in all of unlearnflow's fine-tuning;
  the code trains in train mode.
"""

from __future__ import annotations

import itertools
from typing import Any, Mapping

import torch
from torch import nn

from unlearnflow.core.training import FitStats, clock, cross_entropy_loss, make_optimizer, predict_logits
from unlearnflow.methods.common import fine_tune_config, rng
from unlearnflow.methods.declarations import ADVERSARIAL_DEFAULTS, check_adversarial, resolve
from unlearnflow.methods.random_labels import random_wrong_labels
from unlearnflow.methods.request import ForgetRequest, MethodResult

_CROSS_ENTROPY = cross_entropy_loss()
#: the floor on a norm before dividing by it (a zero gradient or perturbation stays zero)
_SMALL_NORM = 1e-6


def _per_row_norm(values: torch.Tensor) -> torch.Tensor:
    """The L2 norm of each row of `values` (N, ...), shaped to broadcast against it."""
    return values.flatten(1).norm(dim=1).view(-1, *([1] * (values.dim() - 1)))


def targeted_l2_pgd(model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor, eps: float, step: float,
                    steps: int, generator: torch.Generator) -> torch.Tensor:
    """``inputs + delta`` with ``||delta|| <= eps`` pushed towards class `targets` by `steps`
    normalised gradient steps on ``CE(f(x + delta), target)`` (each row independently)."""
    start = torch.randn(inputs.shape, generator=generator).to(inputs)
    delta = eps * start / _per_row_norm(start).clamp_min(_SMALL_NORM)
    for _ in range(steps):
        delta.requires_grad_(True)
        loss = _CROSS_ENTROPY(model(inputs + delta), targets).sum()
        (gradient,) = torch.autograd.grad(loss, delta)
        with torch.no_grad():
            delta = delta - step * gradient / _per_row_norm(gradient).clamp_min(_SMALL_NORM)
            delta = delta * (eps / _per_row_norm(delta).clamp_min(_SMALL_NORM)).clamp(max=1.0)
    return (inputs + delta).detach()


def adversarial_anchors(model: nn.Module, request: ForgetRequest, hp: Mapping[str, Any],
                        seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(anchor inputs, target classes): ``n_adversarial`` attacks per forget sample, in the
    authors' order (per batch of ``batch_size`` forget samples, each attack's batch in turn)."""
    n_forget = len(request.forget_inputs)
    rows = torch.cat([torch.arange(first, min(first + hp["batch_size"], n_forget)).repeat(hp["n_adversarial"])
                      for first in range(0, n_forget, hp["batch_size"])]).to(request.forget_inputs.device)
    targets = random_wrong_labels(request.forget_labels[rows], request.num_classes, seed)
    generator = torch.Generator().manual_seed(int(rng(seed, "adversarial/start").integers(2 ** 62)))
    model.eval()
    chunks = torch.arange(len(rows), device=rows.device).split(hp["adversarial_batch_size"])
    anchors = torch.cat([targeted_l2_pgd(model, request.forget_inputs[rows[chunk]], targets[chunk], hp["pgd_eps"],
                                         hp["pgd_step"], hp["pgd_steps"], generator) for chunk in chunks])
    return anchors, targets


def held_weights(model: nn.Module, forget_inputs: torch.Tensor, batch_size: int) -> list[torch.Tensor]:
    """``1 - Omega`` per trainable parameter (Omega: MAS importance on the forget samples, min-max
    normalised per tensor; a tensor of constant importance is held everywhere)."""
    parameters = [p for p in model.parameters() if p.requires_grad]
    importance = [torch.zeros_like(p) for p in parameters]
    model.eval()
    for batch in forget_inputs.split(batch_size):
        gradients = torch.autograd.grad(model(batch).norm(dim=1).mean(), parameters, allow_unused=True)
        for total, gradient in zip(importance, gradients):
            if gradient is not None:
                total.add_(gradient.abs() * len(batch))
    held = []
    for total in importance:
        span = total.max() - total.min()
        normalised = (total - total.min()) / span if span > 0 else torch.zeros_like(total)
        held.append(1 - normalised)
    return held


def forget_samples_misclassified(model: nn.Module, request: ForgetRequest) -> bool:
    """The authors' stopping rule: forget accuracy 0."""
    return not bool((predict_logits(model, request.forget_inputs).argmax(1) == request.forget_labels).any())


def unlearn(model: nn.Module, request: ForgetRequest, hp: Mapping[str, Any], seed: int) -> MethodResult:
    """Ascend CE on the forget samples, hold the anchors' adversarial classes and the unimportant
    weights (module docstring), until every forget sample is misclassified; source-free."""
    hp = resolve("adversarial", ADVERSARIAL_DEFAULTS, hp)
    check_adversarial(hp)
    start = clock()
    n_forget = len(request.forget_inputs)
    anchors, targets = adversarial_anchors(model, request, hp, seed)
    held = held_weights(model, request.forget_inputs, hp["batch_size"])
    parameters = [p for p in model.parameters() if p.requires_grad]
    originals = [p.detach().clone() for p in parameters]
    optimizer = make_optimizer(parameters, fine_tune_config(hp))
    forget_batches = itertools.cycle(torch.arange(n_forget).split(hp["batch_size"]))
    anchor_batches = torch.arange(len(anchors)).split(hp["adversarial_batch_size"])
    pairs = ((anchor_batch, next(forget_batches)) for _ in range(hp["epochs"]) for anchor_batch in anchor_batches)
    steps = examples = 0
    for anchor_batch, forget_batch in pairs:
        examples += n_forget  # the check of the stopping rule
        if forget_samples_misclassified(model, request):
            break
        x_forget, y_forget = request.forget_inputs[forget_batch], request.forget_labels[forget_batch]
        logits = model(torch.cat([x_forget, anchors[anchor_batch]]))
        losses = _CROSS_ENTROPY(logits, torch.cat([y_forget, targets[anchor_batch]]))
        loss = (losses[len(forget_batch):].sum() - losses[:len(forget_batch)].sum()) / len(losses)
        penalty = sum((weight * (p - p0).square()).sum() for weight, p, p0 in zip(held, parameters, originals))
        optimizer.zero_grad()
        (loss + hp["reg_lambda"] * penalty / 2).backward()
        optimizer.step()
        steps += 1
        examples += len(losses)
    attack_examples = len(anchors) * hp["pgd_steps"] + n_forget  # PGD steps and the importance pass
    return MethodResult(FitStats(clock() - start, steps, examples + attack_examples))
