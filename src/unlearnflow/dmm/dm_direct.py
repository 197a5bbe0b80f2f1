"""DM-DIRECT, DMM paper Algorithm C.2: predict the outputs of a model retrained without the forget
set F from datamodels, ``h(x) = f(theta_0)(x) - sum_{i in F} beta_i(x)``, with no training.

It is not a fine-tuning method (it edits no model): it turns the original models' outputs into
predicted oracle outputs, which are the unlearned "models" of DM-DIRECT and the targets that
Datamodel Matching (:mod:`.dmm`, Algorithm C.3) fine-tunes towards.

Two target constructions (hyper-parameter ``construction``):

* ``logit``: the paper's, per-logit datamodels ``beta_i(x)[c]``; every logit moves by
  ``-scale * sum_{i in F} beta_i(x)[c]``.
* ``margin_shift``: margin datamodels predict the change of the correct-class margin
  ``logit_y - logsumexp(other logits)``; only the correct-class logit moves, by
  ``-scale * sum_{i in F} beta_i(x)``, which moves the margin by exactly that amount and keeps
  each model's other logits (and its own idiosyncrasies) untouched.

``diagonal_only`` is the ablation of Appendix G.2: only the "diagonal" entries ``beta_i(x_i)``
(memorisation scores) are used, so only the forget points themselves move. ``scale`` multiplies
every predicted shift; with ``calibrated`` it is further multiplied by the scale fitted on a
held-out forget set (:func:`calibration_scale`): Appendix G.2 finds that a global rescaling of
the datamodel weights helps, consistently across forget sets, and suggests exactly this.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np

from unlearnflow.errors import UserError
from unlearnflow.methods.declarations import resolve

CONSTRUCTIONS = ("logit", "margin_shift")

#: The datamodel output each construction sums (see unlearnflow.dmm.datamodel_set).
OUTPUT_OF = {"logit": "logits", "margin_shift": "margins"}

#: The paper's per-logit construction; on digits it beat margin shifts once calibrated (README).
DEFAULTS = {"construction": "logit", "diagonal_only": False, "scale": 1.0, "calibrated": False}

#: Both constructions, with and without the diagonal-only ablation.
GRID = {"construction": list(CONSTRUCTIONS), "diagonal_only": [False, True]}


@dataclass(frozen=True)
class ForgetEffects:
    """Datamodel-predicted effect of the forget set on every point (train, val, test in order).

    ``logits[x, c] = sum_{i in F} beta_i(x)[c]`` of the per-logit datamodels and
    ``margins[x] = sum_{i in F} beta_i(x)`` of the margin datamodels (None when the estimator
    did not produce them); the ``*_diagonal`` arrays keep only ``beta_i(x_i)``, i.e. they are
    zero except on the forget points.
    """

    logits: np.ndarray | None
    margins: np.ndarray | None
    logits_diagonal: np.ndarray | None
    margins_diagonal: np.ndarray | None
    #: :func:`calibration_key` -> calibrated scale (from a held-out forget set), when one was fitted
    calibration: Mapping[str, float] | None = None

    def of(self, construction: str, diagonal_only: bool) -> np.ndarray:
        """The effect array one configuration uses."""
        output = OUTPUT_OF[construction]
        effect = getattr(self, output + ("_diagonal" if diagonal_only else ""))
        if effect is None:
            raise UserError(f"dm_direct: construction {construction!r} needs {output} datamodels, "
                            f"which this datamodel estimator did not fit")
        return effect

    def available(self) -> list[tuple[str, bool]]:
        """The (construction, diagonal_only) pairs these effects support."""
        return [(construction, diagonal) for construction in CONSTRUCTIONS for diagonal in (False, True)
                if getattr(self, OUTPUT_OF[construction]) is not None]

    def scale(self, hp: Mapping[str, Any]) -> float:
        """The factor on the predicted shift: ``scale``, times the calibrated one if asked for
        (fitted separately for each construction, full or diagonal-only)."""
        if not hp["calibrated"]:
            return hp["scale"]
        if self.calibration is None:
            raise UserError("dm_direct: calibrated targets need a datamodel calibration (datamodels.calibration_set)")
        return hp["scale"] * self.calibration[calibration_key(hp["construction"], hp["diagonal_only"])]

    def slice(self, rows: slice) -> ForgetEffects:
        """The effects on a contiguous range of points (one split)."""
        arrays = (self.logits, self.margins, self.logits_diagonal, self.margins_diagonal)
        return ForgetEffects(*(None if array is None else array[rows] for array in arrays), self.calibration)


def calibration_key(construction: str, diagonal_only: bool) -> str:
    """How a calibrated scale is named: ``logit``, ``logit/diagonal``, ``margin_shift``, ..."""
    return construction + ("/diagonal" if diagonal_only else "")


def prediction_hyperparameters(hp: Mapping[str, Any]) -> dict[str, Any]:
    """DM-DIRECT's own keys out of a method's hyper-parameters (DMM carries fine-tuning ones too)."""
    return {key: hp[key] for key in DEFAULTS}


def forget_effects(forget: np.ndarray, logit_weights: np.ndarray | None, margin_weights: np.ndarray | None
                   ) -> ForgetEffects:
    """Sum the datamodel weights of the forget points.

    `logit_weights` has shape (n_train, points, C) and `margin_weights` (n_train, points), with
    ``weights[i, x]`` the effect of including training point i on point x; training point i is
    point i (the train split comes first). Either may be None.
    """
    forget = np.asarray(forget, dtype=np.int64)

    def summed(weights: np.ndarray | None) -> tuple[np.ndarray | None, np.ndarray | None]:
        if weights is None:
            return None, None
        total = weights[forget].sum(axis=0, dtype=np.float64)
        diagonal = np.zeros_like(total)
        diagonal[forget] = weights[forget, forget]
        return total, diagonal

    logits, logits_diagonal = summed(logit_weights)
    margins, margins_diagonal = summed(margin_weights)
    return ForgetEffects(logits, margins, logits_diagonal, margins_diagonal)


def predict(original_logits: np.ndarray, labels: np.ndarray, effects: ForgetEffects,
            hp: Mapping[str, Any]) -> np.ndarray:
    """Algorithm C.2: the predicted oracle logits of each original model.

    `original_logits` has shape (models, points, C) (or (points, C)), `labels` (points,) and
    `effects` covers the same points.
    """
    hp = hyperparameters(hp)
    effect = effects.scale(hp) * effects.of(hp["construction"], hp["diagonal_only"])
    predicted = np.array(original_logits, dtype=np.float32)
    if hp["construction"] == "logit":
        predicted -= effect.astype(np.float32)
    else:
        points = np.arange(len(labels))
        predicted[..., points, labels] -= effect.astype(np.float32)
    return predicted


def calibration_scale(original_logits: np.ndarray, oracle_logits: np.ndarray, labels: np.ndarray,
                      forget: np.ndarray, effects: ForgetEffects, construction: str, diagonal_only: bool) -> float:
    """The least-squares factor ``s`` of ``true shift ~ s * predicted shift`` on the forget points
    of a held-out forget set (Appendix G.2's calibration).

    True shift: the mean oracle output minus the mean original output, per forget point (every
    logit for ``logit``, the margin for ``margin_shift``); predicted: DM-DIRECT's shift at scale
    1, ``-sum_{i in F} beta_i(x)`` (or its diagonal). Logits are (models, points, C) over the
    training points and `effects` those of this forget set. The paper picks one global factor by
    unlearning quality; the forget points, where the shifts are largest, are its proxy here, and
    the factor is then applied to every point.
    """
    from unlearnflow.metrics.margins import margins

    if construction == "logit":
        true_shift = oracle_logits.mean(0) - original_logits.mean(0)
    else:
        true_shift = margins(oracle_logits, labels).mean(0) - margins(original_logits, labels).mean(0)
    true_shift = true_shift[forget].astype(np.float64)
    predicted_shift = -effects.of(construction, diagonal_only)[forget].astype(np.float64)
    denominator = float(np.sum(predicted_shift**2))
    if denominator == 0:
        raise UserError("dm_direct: the datamodels predict no shift on the calibration forget set")
    return float(np.sum(predicted_shift * true_shift) / denominator)


def hyperparameters(given: Mapping[str, Any]) -> dict[str, Any]:
    """DM-DIRECT's hyper-parameters with defaults; an unknown construction is a UserError."""
    hp = resolve("dm_direct", DEFAULTS, given)
    if hp["construction"] not in CONSTRUCTIONS:
        raise UserError(f"dm_direct: construction must be one of {', '.join(CONSTRUCTIONS)}, "
                        f"got {hp['construction']!r}")
    return hp
