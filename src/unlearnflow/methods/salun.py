"""SalUn, saliency unlearning (Fan et al., ICLR 2024, Sec. 4, Eqs. 4-6): the weight saliency map
``m = 1[|grad_theta CE(theta_0; D_f)| >= gamma]`` keeps the ``salient_fraction`` of all weights
(one threshold over every parameter) whose forget-loss gradient at the original model is largest
(Eq. 4), and random-label unlearning then updates those weights alone, ``theta = m * (theta_0 +
delta) + (1 - m) * theta_0`` (Eq. 5): fine-tuning on the forget set relabelled uniformly at random
(the authors' code draws from all classes) together with the retain set under its true labels
(Eq. 6), every other weight's gradient zeroed before each step. As in the authors' code, weight
decay still acts on the unsalient weights. Not source-free: it reads the retain set.
"""

from __future__ import annotations

import math
from typing import Any, Mapping

import torch
from torch import nn

from unlearnflow.core.training import fit
from unlearnflow.methods.common import batch_gradients, fine_tune_config, rng
from unlearnflow.methods.declarations import SALUN_DEFAULTS, check_fraction, resolve
from unlearnflow.methods.request import MethodResult, UnlearningRequest


def saliency_mask(model: nn.Module, inputs: torch.Tensor, labels: torch.Tensor, fraction: float,
                  batch_size: int) -> list[torch.Tensor]:
    """Per parameter, whether its |gradient of the mean forget CE| (eval mode) is among the
    largest `fraction` of all entries (Eq. 4)."""
    gradients = [torch.zeros_like(parameter) for parameter in model.parameters()]
    for batch in batch_gradients(model, inputs, labels, batch_size, lambda losses: losses.sum() / len(inputs)):
        for total, gradient in zip(gradients, batch):
            total += gradient
    magnitudes = torch.cat([gradient.abs().flatten() for gradient in gradients])
    kept = max(1, math.ceil(fraction * magnitudes.numel()))
    threshold = torch.topk(magnitudes, kept).values[-1]
    return [gradient.abs() >= threshold for gradient in gradients]


def unlearn(model: nn.Module, request: UnlearningRequest, hp: Mapping[str, Any], seed: int) -> MethodResult:
    """Random-label fine-tuning of forget and retain sets on the salient weights (Eqs. 5-6)."""
    hp = resolve("salun", SALUN_DEFAULTS, hp)
    check_fraction("salun", "salient_fraction")(hp)
    masks = saliency_mask(model, request.forget_inputs, request.forget_labels, hp["salient_fraction"],
                          hp["batch_size"])
    labels = request.labels.clone()
    random = rng(seed, "salun").integers(0, request.num_classes, len(request.forget))
    labels[request.forget] = torch.from_numpy(random).to(labels.device, labels.dtype)

    def salient_only(model: nn.Module) -> None:
        for parameter, mask in zip(model.parameters(), masks):
            if parameter.grad is not None:
                parameter.grad.mul_(mask)
    return MethodResult(fit(model, request.inputs, labels, fine_tune_config(hp), seed, subset=request.trained_on,
                            after_backward=salient_only))
