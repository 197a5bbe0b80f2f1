"""Noisy descent, the baseline the DMM authors' benchmark code calls ``noisy_descent`` (its
definition as a public copy of that benchmark file states it; the authors' repository itself was
not available to check against): gradient descent on the retain
set in which every step's gradient is clipped to a global norm of ``max_grad_norm`` and then
perturbed by independent Gaussian noise of standard deviation ``noise_std`` on each entry
(DP-SGD's two operations applied to the batch gradient). ``noise_std = 0`` with a large
``max_grad_norm`` is gradient descent on the retain set. The noise is drawn from the seed's own
stream, so a result is a function of the seed and the hyper-parameters.
"""

from __future__ import annotations

from typing import Any, Mapping

import torch
from torch import nn

from unlearnflow.core.training import fit
from unlearnflow.methods.common import fine_tune_config, rng
from unlearnflow.methods.declarations import NOISY_DESCENT_DEFAULTS, resolve
from unlearnflow.methods.request import MethodResult, UnlearningRequest


def unlearn(model: nn.Module, request: UnlearningRequest, hp: Mapping[str, Any], seed: int) -> MethodResult:
    """Minimise CE on ``request.retain`` with clipped, noised gradients for ``epochs`` epochs."""
    hp = resolve("noisy_descent", NOISY_DESCENT_DEFAULTS, hp)
    noise = torch.Generator(device=request.inputs.device)
    noise.manual_seed(int(rng(seed, "noisy_descent").integers(2 ** 62)))

    def clip_and_noise(model: nn.Module) -> None:
        nn.utils.clip_grad_norm_(model.parameters(), hp["max_grad_norm"])
        for parameter in model.parameters():
            if parameter.grad is not None:
                parameter.grad.add_(torch.randn(parameter.grad.shape, generator=noise, device=parameter.grad.device,
                                                dtype=parameter.grad.dtype), alpha=hp["noise_std"])
    return MethodResult(fit(model, request.inputs, request.labels, fine_tune_config(hp), seed, subset=request.retain,
                            after_backward=clip_and_noise))
