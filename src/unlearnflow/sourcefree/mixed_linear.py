"""Mixed-linear networks (source-free unlearning, Sec. 3; after Golatkar et al.'s mixed-privacy
forgetting): a network whose weights w0 were trained on public data, linearised in the
parameters of its last ``layers`` linear layers by a first-order Taylor expansion,

    f_lin(x; w0 + Delta) = f(x; w0) + J(x) Delta,    J(x) = d f(x; w) / d w |_{w0}  (K x P),

and trained with the quadratic loss ``1/2 ||f_lin(x) - onehot(y)||^2 + lam/2 ||Delta||^2`` (plus
the objective noise b of the linear banks). The model is linear in Delta, so its loss is the
``mixed_squared`` loss of :class:`~unlearnflow.sourcefree.linear.LinearObjective` on the feature
rows ``[f(x; w0), J(x)]`` (:meth:`MixedLinear.rows`): the Hessian is ``sum J^T J + lam n I`` in
the parameter dimension P, and the Newton methods, the banks and the evaluation of linear models
consume it unchanged. Keep P modest (a small hidden width; ``layers`` 1 or 2): the source-free fit
of Eq. (3) is a P x P PSD problem, identifiable from P (P + 1) / 2 perturbations.

Everything runs in float64 with ``torch.func`` (``jvp`` for ``J(x) Delta``, ``vmap(jacrev)`` for
the per-sample Jacobians).
"""

from __future__ import annotations

import copy

import numpy as np
import torch
from torch import nn
from torch.func import functional_call, jacrev, jvp, vmap

from unlearnflow.core.models import weight_layers
from unlearnflow.errors import UserError


class MixedLinear:
    """`network` (copied, float64, eval mode) linearised in the parameters (weight and bias) of
    its last `layers` ``nn.Linear`` layers around their current values w0."""

    def __init__(self, network: nn.Module, layers: int):
        linears = [(name, module) for name, module in weight_layers(network) if isinstance(module, nn.Linear)]
        if not 1 <= layers <= len(linears):
            raise UserError(f"mixed_linear.layers: {layers} must be between 1 and the network's "
                            f"{len(linears)} linear layers")
        self.network = copy.deepcopy(network).double().eval()
        for parameter in self.network.parameters():
            parameter.requires_grad_(False)
        state = dict(self.network.named_parameters())
        self.names = [f"{name}.{kind}" for name, module in linears[-layers:]
                      for kind, _ in module.named_parameters(recurse=False)]
        self.fixed = {name: value for name, value in state.items() if name not in self.names}
        self.shapes = [state[name].shape for name in self.names]
        self.w0 = torch.cat([state[name].reshape(-1) for name in self.names])

    @property
    def size(self) -> int:
        """P, the number of linearised parameters."""
        return len(self.w0)

    def _as_dict(self, flat: torch.Tensor) -> dict[str, torch.Tensor]:
        parts, start = {}, 0
        for name, shape in zip(self.names, self.shapes):
            count = int(np.prod(shape))
            parts[name] = flat[start:start + count].reshape(shape)
            start += count
        return parts

    def network_outputs(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        """The network's logits ``f(x; w)`` with the linearised layers' parameters set to `w` (P)."""
        return functional_call(self.network, {**self.fixed, **self._as_dict(w)}, (x.double(),))

    def outputs(self, x: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
        """``f(x; w0) + J(x) Delta``: the first-order Taylor expansion, by one Jacobian-vector product."""
        base, tangent = jvp(lambda w: self.network_outputs(x, w), (self.w0,), (delta.double(),))
        return base + tangent

    def jacobian(self, x: torch.Tensor) -> torch.Tensor:
        """Per-sample Jacobians ``J(x_i)`` (n, K, P) at w0."""
        def one(w: torch.Tensor, xi: torch.Tensor) -> torch.Tensor:
            return self.network_outputs(xi[None], w)[0]
        return vmap(jacrev(one), in_dims=(None, 0))(self.w0, x.double())

    def rows(self, x: torch.Tensor) -> np.ndarray:
        """The ``mixed_squared`` feature rows ``[f(x; w0), J(x).reshape(K P)]`` (n, K (1 + P)), float64."""
        with torch.no_grad():
            base = self.network_outputs(x, self.w0)
        J = self.jacobian(x)
        return torch.cat([base, J.reshape(len(x), -1)], dim=1).numpy()

    def weight_for(self, delta: np.ndarray, num_classes: int) -> np.ndarray:
        """The bias-free linear model's weight on :meth:`rows` that predicts ``f_lin(x; w0 + delta)``."""
        from unlearnflow.sourcefree.linear import LinearObjective
        return LinearObjective("mixed_squared", 0.0).model_weight(np.asarray(delta).reshape(1, -1), num_classes)
