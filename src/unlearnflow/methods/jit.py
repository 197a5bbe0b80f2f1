"""JiT, "just in time" zero-shot unlearning by Lipschitz regularisation (Foster, Schoepf and Brintrup
2024, "Zero-shot machine unlearning at scale via Lipschitz regularization"; a source-free
baseline of Table 5 of the source-free unlearning paper).

For every forget sample x it draws n perturbed copies ``x'_j = x + sigma * eps_j`` (eps ~ N(0, I))
and minimises the empirical local Lipschitz constant of the model around x,

    L(x) = 1/n sum_j ||f(x) - f(x'_j)||_2 / ||x - x'_j||_2,

by SGD over the forget samples (gradients through both outputs), which smooths the model where
it memorised the forget samples and so moves its outputs there towards the data's trend. It
reads the forget samples alone (a :class:`~unlearnflow.methods.request.ForgetRequest`).

``outputs`` chooses f: the logits (default) or the softmax probabilities. Foster et al. run one
epoch with one sample per step and tune lr and sigma; so does the grid (:mod:`.declarations`). On a bias-free linear
model ``f(x) - f(x') = W (x - x')`` does not depend on x, so JiT only shrinks W towards 0 there,
isotropically in expectation: a baseline that the Newton methods should beat on weight distance.
"""

from __future__ import annotations

from typing import Any, Mapping

import torch
from torch import nn

from unlearnflow.core.training import FitStats, clock, make_optimizer
from unlearnflow.methods.common import fine_tune_config, rng
from unlearnflow.methods.declarations import JIT_DEFAULTS, check_jit, resolve
from unlearnflow.methods.request import ForgetRequest, MethodResult


def lipschitz_loss(model: nn.Module, x: torch.Tensor, noise: torch.Tensor, outputs: str = "logits") -> torch.Tensor:
    """Mean over samples and perturbations of ``||f(x) - f(x + noise)|| / ||noise||`` (the JiT
    objective above); `x` is (B, ...), `noise` (n, B, ...)."""
    n, batch = noise.shape[:2]
    perturbed = (x.unsqueeze(0) + noise).reshape(n * batch, *x.shape[1:])
    out = model(torch.cat([x, perturbed]))
    if outputs == "probabilities":
        out = torch.softmax(out, dim=-1)
    clean, noisy = out[:batch], out[batch:].reshape(n, batch, -1)
    return ((noisy - clean.unsqueeze(0)).norm(dim=-1) / noise.reshape(n, batch, -1).norm(dim=-1)).mean()


def unlearn(model: nn.Module, request: ForgetRequest, hp: Mapping[str, Any], seed: int) -> MethodResult:
    """Minimise :func:`lipschitz_loss` over the forget samples, ``epochs`` passes in batches of
    ``batch_size``, BatchNorm frozen (eval mode); source-free."""
    hp = resolve("jit", JIT_DEFAULTS, hp)
    check_jit(hp)
    start = clock()
    x_forget = request.forget_inputs
    generator = torch.Generator(device="cpu").manual_seed(int(rng(seed, "jit").integers(2 ** 62)))
    model.eval()
    optimizer = make_optimizer([p for p in model.parameters() if p.requires_grad], fine_tune_config(hp))
    steps = 0
    for _ in range(hp["epochs"]):
        order = torch.randperm(len(x_forget), generator=generator)
        for first in range(0, len(order), hp["batch_size"]):
            x = x_forget[order[first:first + hp["batch_size"]].to(x_forget.device)]
            noise = hp["sigma"] * torch.randn((hp["n_perturbations"], *x.shape), generator=generator)
            loss = lipschitz_loss(model, x, noise.to(device=x.device, dtype=x.dtype), hp["outputs"])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            steps += 1
    examples = hp["epochs"] * len(x_forget) * (1 + hp["n_perturbations"])
    return MethodResult(FitStats(clock() - start, steps, examples))
