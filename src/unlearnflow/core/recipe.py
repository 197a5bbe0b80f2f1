"""What a config asks to build and train, readable without torch: the model architectures by
name and the training recipe (:class:`TrainConfig`, the config's ``training`` section).

The config checks read these when the workflow is parsed; :mod:`unlearnflow.core.models` builds
the architectures and :mod:`unlearnflow.core.training` runs the recipe.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any, Mapping

from unlearnflow.errors import UserError

#: The architectures :func:`unlearnflow.core.models.build_model` builds, by config name (or a
#: user's factory, ``package.module:function``).
ARCHITECTURES = ("linear", "mlp", "smallvgg", "allcnn", "resnet9", "resnet18")
#: The data loaders :func:`unlearnflow.core.data.load_dataset` knows (or a user's, by import path).
DATA_LOADERS = ("digits", "idx", "cifar", "image_folder", "features")

OPTIMIZERS = ("sgd", "adam")
SCHEDULES = ("constant", "onecycle", "exponential")
BATCHNORM_MODES = ("recalibrate", "frozen")


@dataclass(frozen=True)
class TrainConfig:
    """Hyper-parameters of one training run (the config's ``training`` section).

    Schedules (per optimisation step t of T, with E epochs):
    ``constant``; ``onecycle``: linear warm-up from 0 to ``lr`` over the first
    ``warmup_fraction`` of the steps, then linear decay to 0 (the ResNet-9 recipe of the DMM
    paper, Appendix D); ``exponential``: ``lr * gamma**epoch`` (Oracle Matching decays 0.95 per
    epoch, PGU decays geometrically from 0.05 to 0.01).
    """

    optimizer: str = "sgd"
    lr: float = 0.1
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 5e-4
    epochs: int = 20
    batch_size: int = 64
    schedule: str = "onecycle"
    warmup_fraction: float = 0.2
    gamma: float = 0.95
    label_smoothing: float = 0.0
    crop_padding: int = 0
    flip: bool = False
    drop_last: bool = True
    batchnorm: str = "recalibrate"

    def __post_init__(self) -> None:
        checks = [
            (self.optimizer in OPTIMIZERS, f"optimizer must be one of {', '.join(OPTIMIZERS)}"),
            (self.schedule in SCHEDULES, f"schedule must be one of {', '.join(SCHEDULES)}"),
            (self.batchnorm in BATCHNORM_MODES, f"batchnorm must be one of {', '.join(BATCHNORM_MODES)}"),
            (self.lr > 0, "lr must be positive"),
            (self.epochs >= 1, "epochs must be >= 1"),
            (self.batch_size >= 1, "batch_size must be >= 1"),
            (0 <= self.warmup_fraction < 1, "warmup_fraction must be in [0, 1)"),
            (0 < self.gamma <= 1, "gamma must be in (0, 1]"),
            (self.crop_padding >= 0, "crop_padding must be >= 0"),
            (0 <= self.label_smoothing < 1, "label_smoothing must be in [0, 1)"),
        ]
        for ok, message in checks:
            if not ok:
                raise UserError(f"training: {message}")

    @classmethod
    def from_mapping(cls, mapping: Mapping[str, Any] | None) -> "TrainConfig":
        """Build from a config slice; an unknown key is a one-line UserError."""
        mapping = dict(mapping or {})
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(mapping) - known)
        if unknown:
            raise UserError(f"training: unknown key(s) {', '.join(unknown)} (known: {', '.join(sorted(known))})")
        return cls(**mapping)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def steps_per_epoch(self, n_examples: int) -> int:
        steps = n_examples // self.batch_size if self.drop_last else math.ceil(n_examples / self.batch_size)
        if steps == 0:
            raise UserError(f"training: {n_examples} training examples are fewer than one batch of "
                            f"{self.batch_size} (lower batch_size or set drop_last: false)")
        return steps

    def lr_at(self, step: int, steps_per_epoch: int) -> float:
        """Learning rate of optimisation step `step` (0-based)."""
        if self.schedule == "constant":
            return self.lr
        if self.schedule == "exponential":
            return self.lr * self.gamma ** (step // steps_per_epoch)
        total = self.epochs * steps_per_epoch
        warmup = self.warmup_fraction * total
        t = step + 1
        if t <= warmup:
            return self.lr * t / warmup
        return self.lr * max(0.0, (total - t) / max(total - warmup, 1e-12))
