"""What every unlearning method shares: fine-tuning configs, per-example losses and the random
draws a method makes once per seed (the hyper-parameters are in :mod:`.declarations`).

Every method trains through :func:`unlearnflow.core.training.fit`; the pieces here only describe
*what* it fits (which indices, which targets tensor, which per-example loss, which config).
"""

from __future__ import annotations

from typing import Any, Callable, Iterator, Mapping

import numpy as np
import torch

from unlearnflow.core.training import FitStats, PerExampleLoss, TrainConfig, clock, cross_entropy_loss
from unlearnflow.methods.declarations import FINE_TUNING


def fine_tune_config(hp: Mapping[str, Any], **overrides: Any) -> TrainConfig:
    """The fine-tuning recipe: constant lr, partial last batch kept (forget sets can be smaller
    than a batch), no augmentation, BatchNorm statistics frozen (eval mode)."""
    recipe = {key: hp[key] for key in FINE_TUNING}
    return TrainConfig(**{**recipe, "schedule": "constant", "drop_last": False, "batchnorm": "frozen",
                          **overrides})


def negated(loss: PerExampleLoss) -> PerExampleLoss:
    """Gradient ascent on `loss`: minimise its negative."""
    return lambda logits, targets: -loss(logits, targets)


def rng(seed: int, stream: str) -> np.random.Generator:
    """A generator for a method's once-per-seed draws, independent of fit's batch order."""
    return np.random.default_rng([seed, *stream.encode()])


def with_labels(values: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Carry integer labels as a last float column next to per-example `values` (n, k)."""
    return torch.cat([values, labels.to(values.dtype)[:, None]], dim=1)


def split_labels(targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Inverse of :func:`with_labels`: (values (B, k), labels (B,) int64)."""
    return targets[:, :-1], targets[:, -1].long()


def batch_gradients(model: torch.nn.Module, inputs: torch.Tensor, labels: torch.Tensor, batch_size: int,
                    reduce: Callable[[torch.Tensor], torch.Tensor]) -> Iterator[list[torch.Tensor]]:
    """Per batch of `batch_size` rows (in order; eval mode, no update), the gradient of
    ``reduce(per-example cross-entropy)`` with respect to every parameter (zeros where unused):
    what weight-importance methods (SSD, SalUn) accumulate."""
    model.eval()
    parameters = list(model.parameters())
    loss = cross_entropy_loss()
    for x, y in zip(inputs.split(batch_size), labels.split(batch_size)):
        gradients = torch.autograd.grad(reduce(loss(model(x), y)), parameters, allow_unused=True)
        yield [torch.zeros_like(parameter) if gradient is None else gradient.detach()
               for parameter, gradient in zip(parameters, gradients)]


def total(stats: list[FitStats], start: float, extra_examples: int = 0) -> FitStats:
    """The cost of several fits since `start`, plus examples processed outside them."""
    return FitStats(seconds=clock() - start, steps=sum(s.steps for s in stats),
                    examples=sum(s.examples for s in stats) + extra_examples)
