"""The DMM paper's side inputs: the target logits of Oracle Matching and Datamodel Matching, and
DM-DIRECT's predicted outputs, from the artifacts these methods declare in the registry.

- :func:`true_targets` (OM, Algorithm C.1 with true oracle outputs): the mean logits of the forget
  set's oracles (``oracle_targets``), or, per model, the logits of one independently retrained
  model (``paired_targets``: original k matches retrained k).
- :func:`datamodel_targets` (DMM, Algorithm C.3): DM-DIRECT's prediction from each original
  model's own training-point logits.
- :func:`predict_outputs` (DM-DIRECT, Algorithm C.2): the predicted oracle logits on every split.

Which datamodel targets each reads (what ``fit_datamodels`` must fit, see
:func:`unlearnflow.config.datamodel_splits`): DMM the training points only (its fine-tuning set is
the forget set plus a retain sample drawn per model seed from all retain points, so the bank's
union covers nearly the whole train split); DM-DIRECT every point of every split, because it is
evaluated as predicted outputs: KLOM on the forget, retain and validation points, accuracy and
the loss-threshold attack on the test points. The calibration reads the calibration forget set's
training points.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

import numpy as np

from unlearnflow.dmm import dm_direct
from unlearnflow.errors import UserError

SPLIT_ORDER = ("train", "val", "test")


def true_targets(side: Mapping[str, Any], hp: Mapping[str, Any], context) -> Callable[[int], dict[str, np.ndarray]]:
    """OM's targets on the training points: the oracles' mean (the same for every model) or,
    paired, retrained model k's logits for original model k.

    Matching one mean collapses the models' spread: the longer OM runs, the narrower the
    unlearned margins' distribution and the *worse* KLOM gets (measured on digits), which is why
    the paired targets exist. Use a retrained bank independent of the evaluation's oracles (the
    ``retrain`` reference), so that KLOM does not compare models with their own targets."""
    if "oracle_targets" in side:
        mean = side["oracle_targets"].logits["train"].mean(axis=0)
        return lambda index: {"targets": mean}
    retrained = side["paired_targets"]
    n_models = len(context.original_logits["train"])
    if len(retrained) != n_models:
        raise UserError(f"paired oracle targets need one retrained model per original model: "
                        f"{len(retrained)} retrained, {n_models} originals "
                        "(set oracles.models = originals.models)")
    logits = retrained.logits["train"]
    return lambda index: {"targets": logits[index]}


def _effects(side: Mapping[str, Any], context) -> dm_direct.ForgetEffects:
    return side["datamodels"].forget_effects(context.forget, side.get("calibration"))


def _split_rows(datamodels, split: str, n_points: int) -> slice:
    """The rows of `split` among the datamodels' points (train, val, test in order)."""
    sizes = datamodels.split_sizes
    fitted = list(getattr(datamodels, "fitted_splits", SPLIT_ORDER))
    if split not in fitted:
        raise UserError(f"datamodels were fitted on the {' + '.join(fitted)} points only, not {split}; "
                        "refit them with a method that predicts every split (dm_direct) configured")
    if sizes.get(split) != n_points:
        raise UserError(f"datamodels of splits {sizes} do not match {n_points} {split} points; "
                        "refit them (fit_datamodels) on this data set")
    start = sum(sizes[name] for name in SPLIT_ORDER[:SPLIT_ORDER.index(split)])
    return slice(start, start + n_points)


def datamodel_targets(side: Mapping[str, Any], hp: Mapping[str, Any],
                      context) -> Callable[[int], dict[str, np.ndarray]]:
    """DMM's targets: DM-DIRECT's prediction from model k's own training-point logits."""
    train_logits = context.original_logits["train"]
    effects = _effects(side, context).slice(_split_rows(side["datamodels"], "train", train_logits.shape[1]))
    prediction = dm_direct.prediction_hyperparameters(hp)
    return lambda index: {"targets": dm_direct.predict(train_logits[index], context.labels, effects, prediction)}


def predict_outputs(side: Mapping[str, Any], hp: Mapping[str, Any], context,
                    labels: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """DM-DIRECT: the predicted oracle logits of every original model on each split given."""
    effects = _effects(side, context)
    predicted = {}
    for split, logits in context.original_logits.items():
        rows = _split_rows(side["datamodels"], split, logits.shape[1])
        predicted[split] = dm_direct.predict(logits, labels[split], effects.slice(rows),
                                             dm_direct.prediction_hyperparameters(hp))
    return predicted
