"""Selective Synaptic Dampening, SSD (Foster, Schoepf and Brintrup, AAAI 2024, Sec. 3, Eqs. 3-4):
no training. The importance of parameter i to a data set is the diagonal of its Fisher information,
estimated as the authors' code does: the mean over batches (in order, of ``batch_size``) of the
squared gradient of the batch's mean cross-entropy. A parameter much more important to the forget
set than to the whole training set D (retain and forget), ``[]_F,i > alpha []_D,i`` (Eq. 3), is
dampened, ``theta_i <- min(lambda []_D,i / []_F,i, 1) theta_i`` (Eq. 4, lambda the dampening
constant); the others keep their value. Not source-free: it reads D.
"""

from __future__ import annotations

from typing import Any, Mapping

import torch
from torch import nn

from unlearnflow.core.training import FitStats, clock
from unlearnflow.methods.common import batch_gradients
from unlearnflow.methods.declarations import SSD_DEFAULTS, check_ssd, resolve
from unlearnflow.methods.request import MethodResult, UnlearningRequest


def importances(model: nn.Module, inputs: torch.Tensor, labels: torch.Tensor, batch_size: int) -> list[torch.Tensor]:
    """Per parameter, the mean over batches of the squared gradient of the batch's mean CE (eval mode)."""
    squares = [torch.zeros_like(parameter) for parameter in model.parameters()]
    batches = 0
    for gradients in batch_gradients(model, inputs, labels, batch_size, torch.mean):
        batches += 1
        for square, gradient in zip(squares, gradients):
            square += gradient ** 2
    return [square / batches for square in squares]


def unlearn(model: nn.Module, request: UnlearningRequest, hp: Mapping[str, Any], seed: int) -> MethodResult:
    """Dampen the parameters selected by Eq. 3 as Eq. 4 says (`seed` is unused: SSD draws nothing)."""
    hp = resolve("ssd", SSD_DEFAULTS, hp)
    check_ssd(hp)
    start = clock()
    trained_on = request.trained_on
    whole = importances(model, request.inputs[trained_on], request.labels[trained_on], hp["batch_size"])
    forget = importances(model, request.forget_inputs, request.forget_labels, hp["batch_size"])
    with torch.no_grad():
        for parameter, on_whole, on_forget in zip(model.parameters(), whole, forget):
            selected = on_forget > hp["alpha"] * on_whole
            factor = torch.clamp(hp["dampening"] * on_whole / torch.where(selected, on_forget, 1.0), max=1.0)
            parameter.mul_(torch.where(selected, factor, 1.0))
    batches = -(-len(trained_on) // hp["batch_size"]) - (-len(request.forget) // hp["batch_size"])
    return MethodResult(FitStats(seconds=clock() - start, steps=batches,
                                 examples=len(trained_on) + len(request.forget)))
