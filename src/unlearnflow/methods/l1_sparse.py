"""l1-sparse unlearning (Jia et al., NeurIPS 2023, "Model Sparsity Can Simplify Machine
Unlearning", Sec. 4, Eq. 5): fine-tune the original model on the retain set with an l1 penalty,
``CE(theta; D_r) + gamma_t ||theta||_1``, which drives it towards a sparse model that unlearns
more like retraining. As in the authors' code, gamma decays linearly over the epochs,
``gamma_t = alpha (1 - t / epochs)`` in epoch t = 0, 1, ...; the penalty's subgradient
``gamma_t sign(theta)`` is added to every parameter's gradient (BatchNorm frozen, as in every
fine-tuning here). ``alpha = 0`` is gradient descent on the retain set with the same recipe.
"""

from __future__ import annotations

import itertools
from typing import Any, Mapping

import torch
from torch import nn

from unlearnflow.core.training import fit
from unlearnflow.methods.common import fine_tune_config
from unlearnflow.methods.declarations import L1_SPARSE_DEFAULTS, resolve
from unlearnflow.methods.request import MethodResult, UnlearningRequest


def unlearn(model: nn.Module, request: UnlearningRequest, hp: Mapping[str, Any], seed: int) -> MethodResult:
    """Minimise CE on ``request.retain`` plus the decaying l1 penalty for ``epochs`` epochs."""
    hp = resolve("l1_sparse", L1_SPARSE_DEFAULTS, hp)
    config = fine_tune_config(hp)
    steps_per_epoch = config.steps_per_epoch(len(request.retain))
    steps = itertools.count()

    def add_penalty_subgradient(model: nn.Module) -> None:
        strength = hp["alpha"] * (1 - (next(steps) // steps_per_epoch) / hp["epochs"])
        for parameter in model.parameters():
            if parameter.grad is not None:
                parameter.grad.add_(torch.sign(parameter.detach()), alpha=strength)
    return MethodResult(fit(model, request.inputs, request.labels, config, seed, subset=request.retain,
                            after_backward=add_penalty_subgradient))
