"""What every unlearning method shares: hyper-parameter resolution, fine-tuning configs,
per-example losses and the random draws a method makes once per seed.

Every method trains through :func:`unlearnflow.core.training.fit`; the pieces here only describe
*what* it fits (which indices, which targets tensor, which per-example loss, which config).
"""

from __future__ import annotations

import time
from typing import Any, Mapping

import numpy as np
import torch

from unlearnflow.core.training import FitStats, PerExampleLoss, TrainConfig
from unlearnflow.errors import UserError

#: Defaults every fine-tuning method starts from (Appendix D.4 of the DMM paper: plain SGD, as
#: the public baselines build ``SGD(lr=lr)`` without momentum or weight decay; batch 64).
FINE_TUNING = {"lr": 1e-3, "epochs": 5, "batch_size": 64, "optimizer": "sgd", "momentum": 0.0,
               "weight_decay": 0.0}

#: The learning-rate and epoch grids of Appendix D.4 (GA and GD), reused by the other
#: fine-tuning baselines that the paper does not tune.
LR_GRID = [1e-5, 1e-4, 1e-3, 1e-2]
EPOCH_GRID = [1, 3, 5, 7, 10]


def resolve(method: str, defaults: Mapping[str, Any], given: Mapping[str, Any]) -> dict[str, Any]:
    """`given` over `defaults`; an unknown key or a value of the wrong type is a one-line UserError."""
    unknown = sorted(set(given) - set(defaults))
    if unknown:
        raise UserError(f"{method}: unknown hyper-parameter(s) {', '.join(map(str, unknown))} "
                        f"(known: {', '.join(sorted(defaults))})")
    for key, value in given.items():
        if not _same_kind(value, defaults[key]):
            raise UserError(f"{method}: hyper-parameter {key} must be {type(defaults[key]).__name__}, "
                            f"got {value!r}")
    return {**defaults, **given}


def _same_kind(value: Any, default: Any) -> bool:
    if isinstance(default, bool) or isinstance(value, bool):
        return isinstance(value, bool) and isinstance(default, bool)
    if isinstance(default, float):
        return isinstance(value, (int, float))
    if isinstance(default, list):
        return isinstance(value, (list, tuple))
    return isinstance(value, type(default))


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


def total(stats: list[FitStats], start: float, extra_examples: int = 0) -> FitStats:
    """The cost of several fits since `start`, plus examples processed outside them."""
    return FitStats(seconds=time.perf_counter() - start, steps=sum(s.steps for s in stats),
                    examples=sum(s.examples for s in stats) + extra_examples)
