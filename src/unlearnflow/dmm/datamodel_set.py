"""The experiment's datamodels: fitted once, stored, and summed over forget sets (DMM paper, Section 4).

A :class:`DatamodelSet` holds linear datamodels for every point of the data set (train, then
validation, then test): *margin* datamodels (one target per point, the correct-class margin
``logit_y - logsumexp(other logits)``) and, for the regression estimators, *per-logit* datamodels
(one target per point and class, the paper's DM-DIRECT input). ``weights[i, x]`` is the effect on
point x's output of including training point i (:class:`~unlearnflow.dmm.regression.Datamodels`).

Estimators (config ``datamodels.estimator``):

* ``lasso`` / ``ridge``: regress the outputs of models trained on random subsets (the
  ``subset_models`` bank; masks and logits) on their subset masks, Ilyas et al. 2022, with the
  batched solvers of :mod:`unlearnflow.dmm.regression`;
* ``trak``: margin datamodels from a few fully trained models (the original bank) by
  :func:`unlearnflow.dmm.trak.trak_margin_datamodels`, for users without thousands of models.

Quality is scored on subset models held out of every fit (the last ``heldout_models`` by model
id; for ``trak``, which fits on none, every subset model): the linear datamodeling score (LDS)
and R^2 per target, written with the datamodels.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch
from torch import nn

from unlearnflow.core.store import read_artifact, write_artifact
from unlearnflow.dmm.dm_direct import (
    ForgetEffects,
    calibration_key,
    calibration_scale,
    forget_effects,
)
from unlearnflow.dmm.regression import (
    Datamodels,
    fit_lasso,
    fit_ridge,
    heldout_r2,
    linear_datamodeling_score,
)
from unlearnflow.errors import UserError
from unlearnflow.metrics.margins import margins

ESTIMATORS = ("lasso", "ridge", "trak")
OUTPUTS = ("margins", "logits")

#: The ``datamodels`` config slice's defaults (as in the workflow's schema).
DATAMODEL_DEFAULTS: dict[str, Any] = {"estimator": "lasso", "heldout_models": 200, "outputs": list(OUTPUTS),
                                      "options": {}}

#: Options of each estimator and their defaults (config ``datamodels.options``).
ESTIMATOR_OPTIONS: dict[str, dict[str, Any]] = {
    "lasso": {"n_alphas": 20, "alpha_min_ratio": 0.01, "val_fraction": 0.2, "tol": 1e-4, "max_iter": 1000},
    "ridge": {"alphas": [1e-3, 3e-3, 1e-2, 3e-2, 0.1, 0.3, 1.0, 3.0, 10.0], "val_fraction": 0.2},
    "trak": {"checkpoints": 10, "projection_dim": 1024, "damping": 1e-3},
}


@dataclass
class DatamodelSet:
    """Datamodels of every point, by output (``"margins"``, ``"logits"``), with their scores.

    ``datamodels["logits"].weights`` is stored flat, (n_train, points * C); :meth:`weights`
    returns it as (n_train, points, C). ``scores[f"{output}/lds"]`` and ``[f"{output}/r2"]`` are
    per target on the held-out subset models.
    """

    estimator: str
    split_sizes: dict[str, int]
    num_classes: int
    datamodels: dict[str, Datamodels]
    scores: dict[str, np.ndarray] = field(default_factory=dict)
    attrs: dict[str, Any] = field(default_factory=dict)

    def weights(self, output: str) -> np.ndarray | None:
        """(n_train, points) margin weights or (n_train, points, C) logit weights; None if not fitted."""
        if output not in self.datamodels:
            return None
        weights = self.datamodels[output].weights
        return weights.reshape(weights.shape[0], -1, self.num_classes) if output == "logits" else weights

    def forget_effects(self, forget: np.ndarray, calibration: Mapping[str, float] | None = None) -> ForgetEffects:
        """``sum_{i in F} beta_i(x)`` for every point x (DM-DIRECT's correction), with the
        calibrated scales of :func:`calibrate` if given."""
        if np.any(forget < 0) or np.any(forget >= self.split_sizes["train"]):
            raise UserError("datamodels: forget indices outside the training set the datamodels were fitted on")
        return replace(forget_effects(forget, self.weights("logits"), self.weights("margins")), calibration=calibration)

    def summary(self) -> dict[str, float]:
        """Mean LDS and R^2 of each output (NaN targets, e.g. constant outputs, ignored)."""
        return {name.replace("/", "_"): float(np.nanmean(values)) for name, values in self.scores.items()}


def options(estimator: str, given: Mapping[str, Any]) -> dict[str, Any]:
    """The estimator's options, `given` over the defaults; unknown ones are a UserError."""
    if estimator not in ESTIMATORS:
        raise UserError(f"datamodels: unknown estimator {estimator!r} (known: {', '.join(ESTIMATORS)})")
    unknown = sorted(set(given) - set(ESTIMATOR_OPTIONS[estimator]))
    if unknown:
        raise UserError(f"datamodels: unknown option(s) {', '.join(unknown)} for estimator {estimator} "
                        f"(known: {', '.join(ESTIMATOR_OPTIONS[estimator])})")
    return {**ESTIMATOR_OPTIONS[estimator], **given}


def subset_outputs(logits: np.ndarray, labels: np.ndarray) -> dict[str, np.ndarray]:
    """The regression targets of subset models: margins (models, points) and logits (models, points * C)."""
    return {"margins": margins(logits, labels).astype(np.float32), "logits": logits.reshape(len(logits), -1)}


def split_heldout(n_models: int, heldout_models: int) -> tuple[slice, slice]:
    """(fitted, held-out) model ranges: the last `heldout_models` models are only scored."""
    if heldout_models < 3 or n_models - heldout_models < 10:
        raise UserError(f"datamodels: {n_models} subset models cannot spare {heldout_models} held-out models "
                        f"(need >= 3 held out and >= 10 to fit)")
    return slice(0, n_models - heldout_models), slice(n_models - heldout_models, n_models)


def fit_datamodel_set(masks: np.ndarray, logits: np.ndarray, labels: np.ndarray, split_sizes: Mapping[str, int],
                      estimator: str, heldout_models: int, given_options: Mapping[str, Any] | None = None,
                      seed: int = 0, device: str = "cpu", log=print, outputs: Sequence[str] = OUTPUTS) -> DatamodelSet:
    """Fit margin and/or per-logit datamodels (`outputs`) by lasso or ridge on subset models.

    `masks` (models, n_train) bool and `logits` (models, points, C) come from the subset-model
    bank (points: train, val, test); `labels` (points,) are the labels the models trained on
    (train) and the true labels (val, test). The last `heldout_models` models score the fit.
    Per-logit datamodels hold n_train x points x C weights: on large data sets fit margins only.
    """
    unknown = sorted(set(outputs) - set(OUTPUTS))
    if unknown or not outputs:
        raise UserError(f"datamodels: outputs must be some of {', '.join(OUTPUTS)}, got {list(outputs)}")
    if estimator == "trak":
        raise UserError("datamodels: fit_datamodel_set fits lasso or ridge; use trak_datamodel_set for trak")
    chosen = options(estimator, given_options or {})
    fitted, held = split_heldout(len(masks), heldout_models)
    if estimator == "lasso" and fitted.stop < masks.shape[1]:
        log(f"note: lasso on {fitted.stop} models for {masks.shape[1]} training points: the lambda path converges "
            f"slowly with fewer models than points (minutes per thousand targets); ridge is fast")
    targets = subset_outputs(logits, labels)
    result = DatamodelSet(estimator, dict(split_sizes), logits.shape[-1], {}, attrs={
        "estimator": estimator, "options": chosen, "fitted_models": fitted.stop, "heldout_models": heldout_models})
    for output in OUTPUTS:
        if output not in outputs:
            continue
        start = time.perf_counter()
        y = targets[output]
        if estimator == "lasso":
            datamodels = fit_lasso(masks[fitted], y[fitted], chosen["n_alphas"], chosen["alpha_min_ratio"],
                                   chosen["val_fraction"], seed, device, chosen["tol"], chosen["max_iter"])
        else:
            datamodels = fit_ridge(masks[fitted], y[fitted], tuple(chosen["alphas"]), chosen["val_fraction"], seed,
                                   device)
        result.datamodels[output] = datamodels
        _score(result, output, masks[held], y[held])
        result.attrs[f"{output}_fit_seconds"] = time.perf_counter() - start
        log(f"{estimator} {output} datamodels: {y.shape[1]} targets in {result.attrs[f'{output}_fit_seconds']:.1f} s, "
            f"held-out LDS {result.summary()[f'{output}_lds']:.3f}, R^2 {result.summary()[f'{output}_r2']:.3f}")
    return result


def trak_datamodel_set(models: Sequence[nn.Module], x_train: torch.Tensor, train_labels: np.ndarray,
                       x_eval: torch.Tensor, labels: np.ndarray, split_sizes: Mapping[str, int],
                       heldout_masks: np.ndarray, heldout_logits: np.ndarray, given_options: Mapping[str, Any] | None,
                       seed: int = 0, progress: bool = False, log=print) -> DatamodelSet:
    """Margin datamodels by TRAK from the first ``checkpoints`` of `models` (independently trained
    models: TRAK's ensemble), scored on subset models.

    `x_eval` holds every point (train, val, test) and `labels` their labels; `heldout_masks` and
    `heldout_logits` are subset models that only score the estimate (none is fitted on).
    """
    from unlearnflow.dmm.trak import trak_margin_datamodels

    chosen = options("trak", given_options or {})
    if chosen["checkpoints"] > len(models):
        raise UserError(f"datamodels: trak wants {chosen['checkpoints']} checkpoints, the original bank has "
                        f"{len(models)} models")
    start = time.perf_counter()
    device = x_train.device
    datamodels = trak_margin_datamodels(models[: chosen["checkpoints"]], x_train,
                                        torch.as_tensor(train_labels, device=device), x_eval,
                                        torch.as_tensor(labels, device=device), chosen["projection_dim"],
                                        chosen["damping"], seed=seed, progress=progress)
    # TRAK's bias is the full-data models' margin, i.e. the prediction for the all-ones mask:
    # anchor the linear model there, so that it predicts subset models too (held-out R^2).
    datamodels.bias = datamodels.bias - datamodels.weights.sum(axis=0)
    result = DatamodelSet("trak", dict(split_sizes), heldout_logits.shape[-1], {"margins": datamodels}, attrs={
        "estimator": "trak", "options": chosen, "fitted_models": 0, "heldout_models": len(heldout_masks)})
    _score(result, "margins", heldout_masks, subset_outputs(heldout_logits, labels)["margins"])
    result.attrs["margins_fit_seconds"] = time.perf_counter() - start
    log(f"trak margin datamodels from {chosen['checkpoints']} models in {result.attrs['margins_fit_seconds']:.1f} s, "
        f"held-out LDS {result.summary()['margins_lds']:.3f}, R^2 {result.summary()['margins_r2']:.3f}")
    return result


def _score(result: DatamodelSet, output: str, masks: np.ndarray, outputs: np.ndarray) -> None:
    datamodels = result.datamodels[output]
    result.scores[f"{output}/lds"] = linear_datamodeling_score(datamodels, masks, outputs).astype(np.float32)
    result.scores[f"{output}/r2"] = heldout_r2(datamodels, masks, outputs).astype(np.float32)


def write_datamodels(path: str | Path, result: DatamodelSet, provenance: Mapping[str, Any]) -> Path:
    arrays = {}
    for output, datamodels in result.datamodels.items():
        arrays.update({f"{output}/weights": result.weights(output), f"{output}/bias": datamodels.bias,
                       f"{output}/alphas": datamodels.alphas})
    arrays.update(result.scores)
    attrs = {**result.attrs, "estimator": result.estimator, "split_sizes": result.split_sizes,
             "num_classes": result.num_classes, "outputs": list(result.datamodels), **result.summary()}
    return write_artifact(path, "datamodels", arrays, attrs=attrs, provenance_record=provenance)


def read_datamodels(path: str | Path) -> DatamodelSet:
    artifact = read_artifact(path, "datamodels")
    attrs = artifact.attrs
    datamodels = {}
    for output in attrs["outputs"]:
        weights = artifact[f"{output}/weights"]
        datamodels[output] = Datamodels(weights.reshape(weights.shape[0], -1), artifact[f"{output}/bias"].reshape(-1),
                                        artifact[f"{output}/alphas"].reshape(-1), attrs["estimator"])
    scores = {name: value for name, value in artifact.arrays.items() if name.endswith(("/lds", "/r2"))}
    return DatamodelSet(attrs["estimator"], attrs["split_sizes"], int(attrs["num_classes"]), datamodels, scores, attrs)


def calibrate(datamodels: DatamodelSet, original_logits: np.ndarray, oracle_logits: np.ndarray, labels: np.ndarray,
              forget: np.ndarray) -> dict[str, float]:
    """Scales fitted on a held-out forget set (DMM paper, Appendix G.2), one per construction,
    full or diagonal-only (named by :func:`~unlearnflow.dmm.dm_direct.calibration_key`): the
    least-squares slope of the oracles' true shift on the predicted one over its forget points."""
    effects = datamodels.forget_effects(forget)
    return {calibration_key(construction, diagonal): calibration_scale(original_logits, oracle_logits, labels, forget,
                                                                        effects, construction, diagonal)
            for construction, diagonal in effects.available()}


def write_calibration(path: str | Path, scales: Mapping[str, float], forget_set: str,
                      provenance: Mapping[str, Any]) -> Path:
    return write_artifact(path, "datamodel_calibration", {}, attrs={"scales": dict(scales), "forget_set": forget_set},
                          provenance_record=provenance)


def read_calibration(path: str | Path) -> dict[str, float]:
    return dict(read_artifact(path, "datamodel_calibration").attrs["scales"])
