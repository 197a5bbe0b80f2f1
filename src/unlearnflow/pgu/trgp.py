"""De-poisoning with a trust region on the last linear layer (PGU paper, Section 3.2.3 and 4.5;
TRGP: Lin et al., "TRGP: Trust Region Gradient Projection for Continual Learning", ICLR 2022).

Why. De-poisoning must *re-classify* the poisoned samples, and their representations lie largely
in the retain set's core gradient space M (they look like the clean samples of their true class),
so Eq. 4, which removes every gradient component in M, cannot do it: the PGU paper says the naive
projection "will compromise the unlearning process, as noted in [TRGP]", and applies TRGP to the
last linear layer only, with the retain set's core gradient space as the trust region, and Eq. 4
everywhere else. The authors' code for it is missing, so this is built from the TRGP paper's idea.

What TRGP does (its Section 4). A layer's weight W has a component in each old task's subspace,
W M M^T. TRGP selects as the *trust region* the old tasks whose subspace carries much of the new
task's gradient, and replaces the projection W M M^T of each by a *scaled weight projection*
W M Q M^T with a k x k scale matrix Q, initialised to I and learned with the new task's loss,
while W itself only moves orthogonally to the old subspaces (the gradient projection of GPM,
Eq. 4 here). The layer computes with

    W_eff = W (I - M M^T) + W M Q M^T = W + W M (Q - I) M^T.

What we implement. One trust region, the retain set's core gradient space M of the last linear
layer (the core basis PGU already has for it: there is no other old task to select from, so
TRGP's selection criterion, the share of the gradient in M, is only reported:
``kept_gradient_norm_per_layer`` is the share *outside* M). During the request the layer computes
with W_eff through a forward hook (``x W_eff^T = x W^T + (x M)(Q - I)^T (W M)^T``); W gets
Eq. 4's projected gradient, Q the plain gradient of Eq. 1, both by the same SGD. Because the
projected updates of W keep W M fixed, d(loss)/dW projected is exactly Eq. 4 applied to
d(loss)/dW_eff, and W_eff M = W_0 M Q: Q re-mixes, inside the trust region, how the last layer
reads the retain set's core directions, which is what re-labelling poisoned samples needs and
Eq. 4 forbids. At the end W_eff is written into the weight (TRGP keeps Q per task to rebuild old
tasks' weights; an unlearned model has no task to go back to) and the layer is a plain linear
layer again. Source-free like PGU: only the forget samples, the cache and the validation split.
The loss, schedule, stopping and defaults are PGU's de-poisoning ones (lambda < 0).
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np
import torch
from torch import nn

from unlearnflow.core.models import weight_layers
from unlearnflow.errors import UserError
from unlearnflow.methods.declarations import resolve
from unlearnflow.methods.request import ForgetRequest, MethodResult
from unlearnflow.pgu.declarations import TRGP_DEFAULTS, check_trgp
from unlearnflow.pgu.unlearn import run

#: The trainable scale's parameter name on the layer while a request runs.
SCALE = "trgp_scale"


class TrustRegion:
    """TRGP's scaled weight projection W_eff = W + W M (Q - I) M^T on the model's last linear
    layer (module docstring), Q (k, k) a trainable parameter registered on the layer."""

    def __init__(self, model: nn.Module, bases: Mapping[str, np.ndarray], scale_lr: float = 1.0):
        name, layer = weight_layers(model)[-1]
        if not isinstance(layer, nn.Linear):
            raise UserError(f"pgu_trgp: the last conv/linear layer {name} is a {type(layer).__name__}, "
                            "not a linear layer")
        self.name, self.layer = name, layer
        self.basis = torch.from_numpy(np.ascontiguousarray(bases[name])).to(layer.weight)
        k = self.basis.shape[1]
        self.scale = nn.Parameter(torch.eye(k, dtype=layer.weight.dtype, device=layer.weight.device))
        layer.register_parameter(SCALE, self.scale)
        if scale_lr != 1.0:  # plain SGD: a scaled gradient is a scaled learning rate
            self.scale.register_hook(lambda grad: grad * scale_lr)
        self.handle = layer.register_forward_hook(self.scaled_projection)
        self.folded: dict[str, Any] | None = None

    def shift(self) -> torch.Tensor:
        """Q - I."""
        return self.scale - torch.eye(len(self.scale), dtype=self.scale.dtype, device=self.scale.device)

    def scaled_projection(self, layer: nn.Linear, args: tuple[torch.Tensor, ...], output: torch.Tensor) -> torch.Tensor:
        """The layer's output with W_eff: x W^T + b + (x M)(Q - I)^T (W M)^T."""
        return output + ((args[0] @ self.basis) @ self.shift().T) @ (layer.weight @ self.basis).T

    def effective_weight(self) -> torch.Tensor:
        weight = self.layer.weight
        return weight + (weight @ self.basis) @ self.shift() @ self.basis.T

    def certificate(self) -> dict[str, Any]:
        """Where the trust region is, its size k and how far Q moved from I (RMS of Q - I)."""
        if self.folded is not None:
            return self.folded
        with torch.no_grad():
            moved = float(self.shift().norm() / np.sqrt(len(self.scale))) if len(self.scale) else 0.0
        return {"trust_region": self.name, "trust_region_k": int(self.basis.shape[1]),
                "trust_region_scale_change": moved}

    def fold(self) -> None:
        """Write W_eff into the weight and remove Q and the hook (the model is plain again)."""
        self.folded = self.certificate()
        with torch.no_grad():
            self.layer.weight.copy_(self.effective_weight())
        self.handle.remove()
        del self.layer._parameters[SCALE]


def unlearn(model: nn.Module, request: ForgetRequest, hp: Mapping[str, Any], seed: int) -> MethodResult:
    """One de-poisoning request: PGU (Eq. 1 with lambda < 0, Eq. 3, Eq. 4) with TRGP's trust region
    on the last linear layer (module docstring)."""
    hp = resolve("pgu_trgp", TRGP_DEFAULTS, hp)
    check_trgp(hp)
    return run(model, request, hp, seed,
               trust_region=lambda model, bases: TrustRegion(model, bases, hp["scale_lr"]))
