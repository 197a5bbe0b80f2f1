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

Scatter and gather: every target is its own regression (the models' Gram matrix is shared, the
coefficients are not), so the fit splits over contiguous ranges of points (:func:`point_chunks`),
one job each (`fit_datamodel_set` with ``points``, written as a ``datamodels_part`` artifact),
and :func:`gather_datamodel_sets` concatenates the parts into the one artifact. Which points are
fitted (``splits``, a prefix of train, val, test) and which outputs follow from what the
configured methods read (:func:`unlearnflow.config.datamodel_splits`): DM-DIRECT predicts every
split, DMM's targets and the calibration read training points only.
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
from unlearnflow.dmm.estimators import OUTPUTS, SPLITS, estimator_of, options, split_heldout
from unlearnflow.dmm.regression import (
    Datamodels,
    fit_lasso,
    fit_ridge,
    heldout_r2,
    linear_datamodeling_score,
)
from unlearnflow.errors import UserError
from unlearnflow.metrics.margins import margins

#: The ``datamodels`` config slice's defaults (as in the workflow's schema).
DATAMODEL_DEFAULTS: dict[str, Any] = {"estimator": "lasso", "heldout_models": 200, "outputs": list(OUTPUTS),
                                      "splits": list(SPLITS), "options": {}, "fit_jobs": 2}

@dataclass
class DatamodelSet:
    """Datamodels of every point, by output (``"margins"``, ``"logits"``), with their scores.

    ``datamodels["logits"].weights`` is stored flat, (n_train, points * C); :meth:`weights`
    returns it as (n_train, points, C). ``scores[f"{output}/lds"]`` and ``[f"{output}/r2"]`` are
    per target on the held-out subset models. The points are those of :attr:`fitted_splits` (a
    prefix of train, val, test; ``split_sizes`` keeps every split's size); a part of a scattered
    fit (``attrs["points"] = [start, stop]``) holds a range of them.
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

    @property
    def fitted_splits(self) -> list[str]:
        """The splits whose points have datamodels (artifacts before version 2: all of them)."""
        return list(self.attrs.get("splits", SPLITS))

    def forget_effects(self, forget: np.ndarray, calibration: Mapping[str, float] | None = None) -> ForgetEffects:
        """``sum_{i in F} beta_i(x)`` for every point x (DM-DIRECT's correction), with the
        calibrated scales of :func:`calibrate` if given."""
        if np.any(forget < 0) or np.any(forget >= self.split_sizes["train"]):
            raise UserError("datamodels: forget indices outside the training set the datamodels were fitted on")
        return replace(forget_effects(forget, self.weights("logits"), self.weights("margins")), calibration=calibration)

    def summary(self) -> dict[str, float]:
        """Mean LDS and R^2 of each output (NaN targets, e.g. constant outputs, ignored)."""
        return {name.replace("/", "_"): float(np.nanmean(values)) for name, values in self.scores.items()}


def subset_outputs(logits: np.ndarray, labels: np.ndarray, models_per_block: int = 128) -> dict[str, np.ndarray]:
    """The regression targets of subset models: margins (models, points) and logits (models, points * C).
    Margins are computed (in float64) `models_per_block` models at a time, so that their
    temporaries stay small beside the logits."""
    margin_blocks = [margins(logits[first : first + models_per_block], labels).astype(np.float32)
                     for first in range(0, max(len(logits), 1), models_per_block)]
    return {"margins": np.concatenate(margin_blocks), "logits": logits.reshape(len(logits), -1)}


def check_splits(splits: Sequence[str]) -> list[str]:
    """`splits` as a list; it must be a non-empty prefix of train, val, test (the points' order)."""
    splits = list(splits)
    if not splits or splits != list(SPLITS[: len(splits)]):
        raise UserError(f"datamodels: splits must be train, train + val or train + val + test, got {splits}")
    return splits


def point_chunks(n_points: int, jobs: int) -> list[tuple[int, int]]:
    """`jobs` contiguous ranges [start, stop) of near-equal size covering `n_points` points."""
    if jobs < 1 or jobs > n_points:
        raise UserError(f"datamodels: fit_jobs must lie in [1, {n_points}] for {n_points} points, got {jobs}")
    edges = [n_points * job // jobs for job in range(jobs + 1)]
    return list(zip(edges[:-1], edges[1:]))


def fit_datamodel_set(masks: np.ndarray, logits: np.ndarray, labels: np.ndarray, split_sizes: Mapping[str, int],
                      estimator: str, heldout_models: int, given_options: Mapping[str, Any] | None = None,
                      seed: int = 0, device: str = "cpu", log=print, outputs: Sequence[str] = OUTPUTS,
                      splits: Sequence[str] = SPLITS, points: tuple[int, int] | None = None,
                      logits_from: int = 0) -> DatamodelSet:
    """Fit margin and/or per-logit datamodels (`outputs`) by lasso or ridge on subset models.

    `masks` (models, n_train) bool and `logits` (models, points, C) come from the subset-model
    bank (points: train, val, test); `labels` (points,) are the labels the models trained on
    (train) and the true labels (val, test). The last `heldout_models` models score the fit.
    Per-logit datamodels hold n_train x points x C weights: on large data sets fit margins only.

    Only the points of `splits` (a prefix of train, val, test) are targets; `points` = (start,
    stop) fits a range of them (one part of a scattered fit, :func:`gather_datamodel_sets`);
    `logits` may then hold the points from `logits_from` on alone (a fit job reads its range). Each
    target is its own regression, so a part's datamodels are those of the whole fit up to float32
    rounding (the batched lasso keeps each target's own working set and the sweep it converged
    in); only a target whose candidate penalties tie in validation MSE to rounding may choose
    another one.
    """
    unknown = sorted(set(outputs) - set(OUTPUTS))
    if unknown or not outputs:
        raise UserError(f"datamodels: outputs must be some of {', '.join(OUTPUTS)}, got {list(outputs)}")
    if not estimator_of(estimator).regression:
        raise UserError(f"datamodels: fit_datamodel_set fits regressions on subset models, not {estimator}")
    chosen = options(estimator, given_options or {})
    splits = check_splits(splits)
    n_points = sum(split_sizes[split] for split in splits)
    start, stop = (0, n_points) if points is None else points
    if not 0 <= start < stop <= n_points:
        raise UserError(f"datamodels: points [{start}, {stop}) outside the {n_points} points of {', '.join(splits)}")
    fitted, held = split_heldout(len(masks), heldout_models)
    if estimator == "lasso" and fitted.stop < masks.shape[1]:
        log(f"note: lasso on {fitted.stop} models for {masks.shape[1]} training points: the lambda path converges "
            f"slowly with fewer models than points (6 ms per logit, 19 ms per margin at 2,800 points, 1,800 models); "
            f"ridge is faster")
    if not 0 <= logits_from <= start or stop - logits_from > logits.shape[1]:
        raise UserError(f"datamodels: the logits from point {logits_from} on do not cover points [{start}, {stop})")
    targets = subset_outputs(logits[:, start - logits_from : stop - logits_from], labels[start:stop])
    result = DatamodelSet(estimator, dict(split_sizes), logits.shape[-1], {}, attrs={
        "estimator": estimator, "options": chosen, "fitted_models": fitted.stop, "heldout_models": heldout_models,
        "splits": splits, "points": [start, stop]})
    for output in OUTPUTS:
        if output not in outputs:
            continue
        began = time.perf_counter()
        y = targets[output]
        if estimator == "lasso":
            datamodels = fit_lasso(masks[fitted], y[fitted], chosen["n_alphas"], chosen["alpha_min_ratio"],
                                   chosen["val_fraction"], seed, device, chosen["tol"], chosen["max_iter"],
                                   chosen["patience"], chosen["path_tol"])
        else:
            datamodels = fit_ridge(masks[fitted], y[fitted], tuple(chosen["alphas"]), chosen["val_fraction"], seed,
                                   device)
        result.datamodels[output] = datamodels
        _score(result, output, masks[held], y[held])
        result.attrs[f"{output}_fit_seconds"] = time.perf_counter() - began
        log(f"{estimator} {output} datamodels: {y.shape[1]} targets in {result.attrs[f'{output}_fit_seconds']:.1f} s, "
            f"held-out LDS {result.summary()[f'{output}_lds']:.3f}, R^2 {result.summary()[f'{output}_r2']:.3f}")
    return result


def trak_datamodel_set(models: Sequence[nn.Module], x_train: torch.Tensor, train_labels: np.ndarray,
                       x_eval: torch.Tensor, labels: np.ndarray, split_sizes: Mapping[str, int],
                       heldout_masks: np.ndarray, heldout_logits: np.ndarray, given_options: Mapping[str, Any] | None,
                       seed: int = 0, progress: bool = False, log=print, splits: Sequence[str] = SPLITS) -> DatamodelSet:
    """Margin datamodels by TRAK from the first ``checkpoints`` of `models` (independently trained
    models: TRAK's ensemble), scored on subset models.

    `x_eval` holds every point (train, val, test) and `labels` their labels; `heldout_masks` and
    `heldout_logits` are subset models that only score the estimate (none is fitted on). Only the
    points of `splits` get datamodels. TRAK is one job (its cost is the models' gradients, shared
    by all targets), never scattered.
    """
    from unlearnflow.dmm.trak import trak_margin_datamodels

    chosen = options("trak", given_options or {})
    splits = check_splits(splits)
    n_points = sum(split_sizes[split] for split in splits)
    x_eval, labels, heldout_logits = x_eval[:n_points], labels[:n_points], heldout_logits[:, :n_points]
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
        "estimator": "trak", "options": chosen, "fitted_models": 0, "heldout_models": len(heldout_masks),
        "splits": splits, "points": [0, n_points]})
    _score(result, "margins", heldout_masks, subset_outputs(heldout_logits, labels)["margins"])
    result.attrs["margins_fit_seconds"] = time.perf_counter() - start
    log(f"trak margin datamodels from {chosen['checkpoints']} models in {result.attrs['margins_fit_seconds']:.1f} s, "
        f"held-out LDS {result.summary()['margins_lds']:.3f}, R^2 {result.summary()['margins_r2']:.3f}")
    return result


@dataclass
class FitInputs:
    """What a datamodel fit reads, from the fit stage's artifacts: the subset models' training
    `masks` (models, n_train) and `logits` on every point (models, points, C), every point's
    `labels` (train: the experiment's), the splits' sizes and the `splits` to fit (a prefix of
    train, val, test), `points` (start, stop) for one part of a scattered fit (`logits` then may
    hold the points from `logits_from` on alone), the held-out models
    and `outputs` of a regression; for an estimator that reads ``checkpoints``, the original
    models and every point's `inputs` (train first) on their device."""

    masks: np.ndarray
    logits: np.ndarray
    labels: np.ndarray
    split_sizes: Mapping[str, int]
    splits: Sequence[str]
    heldout_models: int
    outputs: Sequence[str]
    seed: int = 0
    device: str = "cpu"
    points: tuple[int, int] | None = None
    logits_from: int = 0
    checkpoints: Sequence[nn.Module] = ()
    inputs: torch.Tensor | None = None
    progress: bool = False


def fit_regression(estimator: str, given_options: Mapping[str, Any], data: FitInputs) -> DatamodelSet:
    """The lasso and ridge entries' fit (:func:`fit_datamodel_set`)."""
    return fit_datamodel_set(data.masks, data.logits, data.labels, data.split_sizes, estimator, data.heldout_models,
                             given_options, data.seed, data.device, outputs=data.outputs, splits=data.splits,
                             points=data.points, logits_from=data.logits_from)


def fit_trak(estimator: str, given_options: Mapping[str, Any], data: FitInputs) -> DatamodelSet:
    """The trak entry's fit (:func:`trak_datamodel_set`), every subset model scoring it."""
    n_train = data.split_sizes["train"]
    return trak_datamodel_set(data.checkpoints, data.inputs[:n_train], data.labels[:n_train], data.inputs, data.labels,
                              data.split_sizes, data.masks, data.logits, given_options, data.seed, data.progress,
                              splits=data.splits)


def _score(result: DatamodelSet, output: str, masks: np.ndarray, outputs: np.ndarray) -> None:
    datamodels = result.datamodels[output]
    result.scores[f"{output}/lds"] = linear_datamodeling_score(datamodels, masks, outputs).astype(np.float32)
    result.scores[f"{output}/r2"] = heldout_r2(datamodels, masks, outputs).astype(np.float32)


#: The artifact kind of one part of a scattered fit (a range of points; gathered into ``datamodels``).
PART_KIND = "datamodels_part"


def gather_datamodel_sets(parts: Sequence[DatamodelSet]) -> DatamodelSet:
    """The datamodels of every fitted point from the parts of a scattered fit.

    The parts (any order) must come from one fit (same estimator, options, models, outputs and
    splits) and their point ranges must tile the fitted points. Weights, biases, chosen
    regularisations and held-out scores are concatenated along the targets; ``*_fit_seconds``
    are summed over the parts (the CPU time the fit took, whatever the number of jobs).
    """
    if not parts:
        raise UserError("datamodels: no parts to gather")
    parts = sorted(parts, key=lambda part: part.attrs["points"][0])
    first = parts[0]
    same = ("estimator", "options", "fitted_models", "heldout_models", "splits")
    for part in parts[1:]:
        differing = [key for key in same if part.attrs[key] != first.attrs[key]]
        if differing or list(part.datamodels) != list(first.datamodels) or part.split_sizes != first.split_sizes:
            raise UserError(f"datamodels: the parts come from different fits ({', '.join(differing) or 'outputs'} "
                            "differ); refit them")
    n_points = sum(first.split_sizes[split] for split in first.fitted_splits)
    edges = [part.attrs["points"] for part in parts]
    if edges[0][0] != 0 or edges[-1][1] != n_points or any(a[1] != b[0] for a, b in zip(edges, edges[1:])):
        raise UserError(f"datamodels: the parts' point ranges {edges} do not tile the {n_points} fitted points")
    datamodels = {}
    for output, head in first.datamodels.items():
        datamodels[output] = Datamodels(
            np.concatenate([part.datamodels[output].weights for part in parts], axis=1),
            np.concatenate([part.datamodels[output].bias for part in parts]),
            np.concatenate([part.datamodels[output].alphas for part in parts]), head.method)
    scores = {name: np.concatenate([part.scores[name] for part in parts]) for name in first.scores}
    attrs = {**first.attrs, "points": [0, n_points], "fit_jobs": len(parts)}
    for key in first.attrs:
        if key.endswith("_fit_seconds"):
            attrs[key] = float(sum(part.attrs[key] for part in parts))
            attrs[key.replace("_fit_seconds", "_slowest_job_seconds")] = float(max(part.attrs[key] for part in parts))
    return DatamodelSet(first.estimator, dict(first.split_sizes), first.num_classes, datamodels, scores, attrs)


def write_datamodels(path: str | Path, result: DatamodelSet, provenance: Mapping[str, Any],
                     kind: str = "datamodels") -> Path:
    """Write datamodels (`kind` ``datamodels``) or one part of a scattered fit (:data:`PART_KIND`)."""
    arrays = {}
    for output, datamodels in result.datamodels.items():
        arrays.update({f"{output}/weights": result.weights(output), f"{output}/bias": datamodels.bias,
                       f"{output}/alphas": datamodels.alphas})
    arrays.update(result.scores)
    attrs = {**result.attrs, "estimator": result.estimator, "split_sizes": result.split_sizes,
             "num_classes": result.num_classes, "outputs": list(result.datamodels), **result.summary()}
    return write_artifact(path, kind, arrays, attrs=attrs, provenance_record=provenance)


def read_datamodels(path: str | Path, kind: str = "datamodels") -> DatamodelSet:
    artifact = read_artifact(path, kind)
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
