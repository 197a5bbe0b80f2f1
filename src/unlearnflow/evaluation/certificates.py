"""The truth behind the certificates of linear models: what each claimed bound bounds, computed
from the retain data, which the evaluation has and a source-free method does not (issue 18).

For a bank of linear models (arch ``linear`` and a linear training recipe, mixed-linear rows
included) and every unlearned model k, in float64 on the stored (float32) weights
(:func:`model_truths`):

- ``retain_gradient_norm``: ``||grad L_b(w_k; D_r)||``, with b recovered from original k by
  stationarity over its training set (:func:`~unlearnflow.sourcefree.linear.stationarity_noise`,
  as ``newton_certified`` does) and D_r the training points not forgotten; 0 is exact removal.
  Computed for every linear bank: ``do_nothing``'s is ``||grad_F||``, and the ``retrain``
  reference, whose models draw b of their own, measures that difference;
- ``epsilon_of_retain_gradient_norm``: Guo et al.'s Thm. 3 epsilon of that true norm, at the
  certificate's objective-noise std and delta (where the certificate claims an epsilon);
- ``hessian_error``: where the certificate stores the estimated Hessian H^, the true
  ``||H^ - H_r||_F`` per block, the largest over blocks (Lemma 1 is stated per d x d block), with
  H_r at the weights the request started from: the original model for a first request. For a
  later request of a sequence the Hessian of the quadratic losses (``squared``,
  ``mixed_squared``) does not depend on the weights; the others' is not computed (NaN), since the
  bank does not hold the previous request's weights.

:func:`certificate_columns` turns them into the evaluation row's columns
(:data:`~unlearnflow.evaluation.rows.CERTIFICATE_COLUMNS`): each claim (means over models) beside
its truth, with the share of models whose claim is below the truth (``*_violated``), the share
certified, the worst epsilon, and the share of estimated Hessians whose m perturbations could
identify the block (``hessian_identified``, :func:`identified`).
"""

from __future__ import annotations

import math
from typing import Any, Mapping

import numpy as np

from unlearnflow.core.artifacts import ModelBank
from unlearnflow.core.data import Dataset
from unlearnflow.core.forget_sets import ForgetSet
from unlearnflow.evaluation.rows import CERTIFICATE_COLUMNS
from unlearnflow.sourcefree.certificate import PAPER_CLAIMS, guo_epsilon
from unlearnflow.sourcefree.identifiability import perturbations_needed
from unlearnflow.sourcefree.linear import WEIGHT, LinearObjective, gradient_norm, recipe_objective, stationarity_noise

#: claimed bound column -> (its violated-share column, where the claim sits in a certificate, the true quantity)
CLAIMS = {
    "cert_residual_bound": ("cert_residual_bound_violated", ("residual_bound",), "retain_gradient_norm"),
    "paper_lemma1_claim": ("paper_lemma1_violated", (PAPER_CLAIMS, "lemma1_claim"), "hessian_error"),
    "paper_theorem1_claim": ("paper_theorem1_violated", (PAPER_CLAIMS, "theorem1_claim"), "retain_gradient_norm"),
}
#: the truths' columns: mean over models
TRUTHS = {"true_retain_gradient_norm": "retain_gradient_norm", "true_hessian_error": "hessian_error"}
#: losses whose Hessian does not depend on the weights
QUADRATIC_LOSSES = ("squared", "mixed_squared")


def certificate_columns(dataset: Dataset, forget_set: ForgetSet, originals: ModelBank,
                        unlearned: ModelBank) -> dict[str, float]:
    """The certificate columns of one evaluated bank (module docstring); NaN for banks of other
    models, without weights, or for what no certificate claims."""
    columns = dict.fromkeys(CERTIFICATE_COLUMNS, math.nan)
    objective = _linear_objective(originals, unlearned)
    if objective is None:
        return columns
    labels = forget_set.train_labels
    x = dataset.x_train.reshape(len(labels), -1).astype(np.float64)
    retain = forget_set.retain_mask(len(labels))
    position = {int(model_id): i for i, model_id in enumerate(originals.model_ids)}
    certificates = unlearned.attrs.get("certificates") or [{}] * len(unlearned.model_ids)
    from_original = objective.loss in QUADRATIC_LOSSES or unlearned.attrs.get("step", 0) == 0
    claimed, truths = [], []
    for k, model_id in enumerate(unlearned.model_ids):
        i = position.get(int(model_id))
        if i is None:
            continue
        trained = originals.train_masks[i] if originals.train_masks.size else np.ones(len(labels), bool)
        truths.append(model_truths(objective, x, labels, trained, trained & retain,
                                   originals.weights[WEIGHT][i], unlearned.weights[WEIGHT][k], certificates[k],
                                   from_original))
        claimed.append(certificates[k])
    if not truths:
        return columns
    for column, key in TRUTHS.items():
        columns[column] = _mean([truth[key] for truth in truths])
    for column, (violated, path, key) in CLAIMS.items():
        pairs = [(claim, truth[key]) for claim, truth in
                 ((_lookup(certificate, path), truth) for certificate, truth in zip(claimed, truths))
                 if claim is not None and math.isfinite(truth[key])]
        columns[column] = _mean([claim for claim, _ in pairs])
        columns[violated] = _mean([float(claim < truth) for claim, truth in pairs])
    columns["hessian_identified"] = _mean([identified(c) for c in claimed])
    columns["cert_certified"] = _mean([float(c["certified"]) for c in claimed if "certified" in c])
    columns["cert_epsilon"] = _max([c.get("epsilon") for c in claimed])
    columns["cert_delta"] = _max([c.get("delta") for c in claimed])
    return columns


def model_truths(objective: LinearObjective, x: np.ndarray, labels: np.ndarray, trained: np.ndarray,
                 retain: np.ndarray, original_weight: np.ndarray, weight: np.ndarray,
                 certificate: Mapping[str, Any] | None, from_original: bool = True) -> dict[str, float | None]:
    """The true quantities behind one model's certificate (module docstring): `x` (n, width)
    float64 rows, `trained` and `retain` boolean masks over them, the original's and the
    unlearned model's stored (K, width) weights; `from_original` says whether the request started
    from the original (else no Hessian error for a non-quadratic loss)."""
    certificate = certificate or {}
    W0 = objective.parameters(np.asarray(original_weight, np.float64))
    W = objective.parameters(np.asarray(weight, np.float64))
    b, b_error = stationarity_noise(objective, W0, x[trained], labels[trained])
    norm, _ = gradient_norm(objective, W, x[retain], labels[retain], b, b_error)
    epsilon = certificate.get("epsilon")
    stored = certificate.get("estimated_hessian")
    return {"retain_gradient_norm": norm,
            "epsilon_of_retain_gradient_norm": None if epsilon is None else guo_epsilon(
                norm, certificate["objective_noise_std"], certificate["delta"]),
            "hessian_error": hessian_error(objective, W0, x[retain], labels[retain], stored)
            if stored and from_original else math.nan}


def identified(certificate: Mapping[str, Any]) -> float | None:
    """1 where a certificate's estimated Hessian came from enough perturbations to identify its
    p x p block (m >= p(p+1)/2, :mod:`unlearnflow.sourcefree.identifiability`; p is the
    certificate's ``d``), 0 where not, None where nothing was estimated (``m`` absent or 0, as for
    ``newton_certified``'s exact Hessian)."""
    if not certificate.get("m") or "d" not in certificate:
        return None
    return float(certificate["m"] >= perturbations_needed(int(certificate["d"])))


def hessian_error(objective: LinearObjective, W: np.ndarray, x_retain: np.ndarray, y_retain: np.ndarray,
                  stored: Mapping[str, Any]) -> float:
    """``max_blocks ||H^ - H_r(W)||_F`` for a certificate's stored estimate (one block standing for
    every row's when ``shared_by_rows``)."""
    true = objective.hessian(W, x_retain, y_retain).blocks
    estimate = np.asarray(stored["blocks"], np.float64)
    return float(np.linalg.norm(np.broadcast_to(estimate, true.shape) - true, axis=(1, 2)).max())


def _linear_objective(originals: ModelBank, unlearned: ModelBank) -> LinearObjective | None:
    """The objective of banks of linear models trained to optimum (None for any other banks)."""
    training = originals.attrs.get("training")
    linear = all(bank.attrs.get("arch") == "linear" and WEIGHT in bank.weights for bank in (originals, unlearned))
    if not linear or not isinstance(training, Mapping) or training.get("kind") != "linear":
        return None
    return recipe_objective(training)


def _lookup(certificate: Mapping[str, Any], path: tuple[str, ...]) -> float | None:
    for key in path:
        certificate = certificate.get(key) if isinstance(certificate, Mapping) else None
    return None if certificate is None else float(certificate)


def _mean(values: list[float]) -> float:
    finite = [value for value in values if value is not None and math.isfinite(value)]
    return float(np.mean(finite)) if finite else math.nan


def _max(values: list[float | None]) -> float:
    present = [float(value) for value in values if value is not None]
    return max(present) if present else math.nan
