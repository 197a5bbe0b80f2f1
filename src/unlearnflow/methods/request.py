"""What an unlearning method is given and what it gives back.

A method is ``unlearn(model, request, hyperparameters, seed) -> MethodResult``: it edits `model`
in place. The request is one of two types, chosen by the method's registry entry:

- :class:`ForgetRequest` for a *source-free* method: the forget samples (inputs and labels), the
  held-out validation split, the method's cached side inputs by name and the state the previous
  request of a sequence left. It holds no retain data and no index into the training set, so a
  source-free method cannot see what it is not allowed to see.
- :class:`UnlearningRequest` for every other method: the same, plus the whole training set
  (inputs, labels) and the forget and retain indices into it.

Side inputs arrive by the names the method declares in the registry (``targets`` for the
matching methods, later ``gradient_space``, ``features``...). A request of a sequence (an
``incremental`` forget set) has ``step`` r > 0 and the ``state`` that request r - 1 returned.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

import torch

from unlearnflow.core.training import FitStats
from unlearnflow.errors import UserError


@dataclass(frozen=True, kw_only=True)
class ForgetRequest:
    """One request as a source-free method sees it; every tensor on the model's device."""

    forget_inputs: torch.Tensor
    forget_labels: torch.Tensor
    num_classes: int
    validation_inputs: torch.Tensor | None = None
    validation_labels: torch.Tensor | None = None
    side: Mapping[str, Any] = field(default_factory=dict)
    state: Any = None
    step: int = 0

    def __post_init__(self) -> None:
        if len(self.forget_inputs) == 0:
            raise UserError("unlearning request: the forget set is empty")
        if len(self.forget_labels) != len(self.forget_inputs):
            raise UserError(f"unlearning request: {len(self.forget_labels)} labels for "
                            f"{len(self.forget_inputs)} forget inputs")


@dataclass(frozen=True, kw_only=True)
class UnlearningRequest(ForgetRequest):
    """A request with the training set: `forget` and `retain` index rows of `inputs`; the model
    was trained on their union (a subset of all rows for U-LiRA's base models)."""

    inputs: torch.Tensor
    labels: torch.Tensor
    forget: torch.Tensor
    retain: torch.Tensor

    def __post_init__(self) -> None:
        super().__post_init__()
        n = len(self.inputs)
        checks = [
            (len(self.labels) == n, f"{len(self.labels)} labels for {n} inputs"),
            (len(self.retain) > 0, "the retain set is empty"),
            ("targets" not in self.side or tuple(self.side["targets"].shape) == (n, self.num_classes),
             f"targets must have shape ({n}, {self.num_classes})"),
        ]
        for ok, message in checks:
            if not ok:
                raise UserError(f"unlearning request: {message}")

    @classmethod
    def of_training_set(cls, inputs: torch.Tensor, labels: torch.Tensor, forget: torch.Tensor,
                        retain: torch.Tensor, num_classes: int, **rest: Any) -> "UnlearningRequest":
        """The request whose forget samples are the rows `forget` of the training set."""
        return cls(inputs=inputs, labels=labels, forget=forget, retain=retain, num_classes=num_classes,
                   forget_inputs=inputs[forget], forget_labels=labels[forget], **rest)

    @property
    def trained_on(self) -> torch.Tensor:
        """The retain indices followed by the forget indices."""
        return torch.cat([self.retain, self.forget])


@dataclass(frozen=True)
class MethodResult:
    """What a request cost, and optionally a certificate (a JSON-able dict written into the
    unlearned artifact) and the state the next request of a sequence starts from."""

    cost: FitStats
    certificate: Mapping[str, Any] | None = None
    state: Any = None
