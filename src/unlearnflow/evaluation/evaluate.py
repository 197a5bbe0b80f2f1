"""The evaluation loop: every metric of one unlearning result, from model banks' logits.

One result is a bank of N unlearned models for one (method, configuration, forget set). It is
compared with the forget set's N oracles (models retrained without it) and the N original
models the method started from. Groups of points follow the DMM paper (Section 3): the
forget set, the retained training points and the validation set. All metrics read only the
banks' stored logits, so evaluating a method never retrains or re-runs a model.

The row written per result has the columns of :data:`unlearnflow.evaluation.rows.ROW_COLUMNS`, the
one schema the report reads back. A configuration whose models output NaN or infinite logits
(a learning rate that diverged) is not an error: its row has status ``diverged`` and NaN
metrics (:func:`diverged_evaluation`), and no selection picks it. Exploded outputs, finite but
beyond any trained model's, and a model collapsed to a constant predictor's accuracy make a
configuration diverged too (:func:`divergence`), its metrics measured as for any other.

A method's evaluation artifact (:func:`artifact_arrays`) keeps the per-point arrays of every
configuration, so that the report can show whichever configuration it selects
(:mod:`unlearnflow.evaluation.selection`) and compute that configuration's bootstrap interval
of the KLOM score (:func:`klom_interval`) from the stored margins.

Two distances between the oracles' and the unlearned models' margins are reported per group:
KLOM exactly as the DMM paper defines it (``klom_*``, ``klom_score``: the mean over groups of the
95th percentile), and the W1 of margins over the oracles' spread (``w1_*_mean``,
``selection_score``: the mean over groups of the mean over points), which neither added spread nor
collapse can lower (:mod:`unlearnflow.metrics.wasserstein`, ``docs/klom-blind-spots.md``); the
latter chooses configurations.

What depends only on the references (the oracles' noise floor and the PGU attack, trained on
original vs retrained models) is computed once per evaluation job (:func:`references`) and
shared by every configuration evaluated in it; its random streams make it the same in every
job of the forget set, so one attack judges every method. Each random read-out draws from its own stream
of the seed (:data:`STREAMS`), so a result's numbers do not depend on what was evaluated before.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

from unlearnflow.core.artifacts import ModelBank
from unlearnflow.core.data import Dataset
from unlearnflow.core.forget_sets import ForgetSet
from unlearnflow.evaluation.certificates import certificate_columns
from unlearnflow.evaluation.rows import CONFIG_ARRAYS, DIVERGED, GROUPS, OK, ROW_COLUMNS, STATISTICS, W1, config_array
from unlearnflow.evaluation.selection import score_key
from unlearnflow.metrics import wasserstein
from unlearnflow.metrics.challenge import challenge_score, forgetting_quality
from unlearnflow.metrics.declarations import MAX_ABS_LOGIT
from unlearnflow.metrics.klom import bootstrap_ci, group_score, klom, summarise
from unlearnflow.metrics.margins import margins, oracle_halves
from unlearnflow.metrics.mia import PguAttack, fit_pgu_attack, judge, per_example_loss, simple_mia
from unlearnflow.metrics.readouts import accuracy, exclude_classes, prediction_entropy, remove_class_rows

SIMPLE_MIA_FOLDS = 5
#: bootstrap replicates of the KLOM score's interval
KLOM_INTERVAL_REPLICATES = 200
#: one random stream per read-out: ``np.random.default_rng([seed, STREAMS[name]])``
STREAMS = {"noise_floor": 0, "bootstrap": 1, "simple_mia": 2, "pgu_attack": 3}


def _stream(seed: int, name: str) -> np.random.Generator:
    return np.random.default_rng([seed, STREAMS[name]])


@dataclass
class Evaluation:
    """One evaluated result: the summary row and the per-point arrays behind the plots."""

    row: dict[str, Any]
    arrays: dict[str, np.ndarray]
    #: why its models count as diverged ("" when they do not; :func:`divergence`)
    diverged: str = ""


@dataclass
class References:
    """What every result of one forget set is compared with, computed by :func:`references`.

    groups: point indices of the forget, retain and validation groups in the margin columns.
    oracle_margins: the oracles' margins on [train, validation] points, (models, points).
    floor_summary: the group statistics of the oracles' noise floor, KLOM between two random halves
    of the oracles (:func:`~unlearnflow.metrics.margins.oracle_halves`; the floor of
    :func:`~unlearnflow.metrics.klom.noise_floor`).
    w1_floor_summary: the same of the W1 of margins, on the same halves.
    attack: the PGU membership attack trained on the original vs the oracle models.
    """

    groups: dict[str, np.ndarray]
    oracle_margins: np.ndarray
    floor_summary: dict[str, dict[str, float]]
    w1_floor_summary: dict[str, dict[str, float]]
    attack: PguAttack


def group_margins(bank: ModelBank, dataset: Dataset, forget_set: ForgetSet) -> np.ndarray:
    """Margins of `bank` on the [train, validation] points, shape (models, points)."""
    return np.concatenate([margins(bank.logits["train"], forget_set.train_labels),
                           margins(bank.logits["val"], dataset.y_val)], axis=1)


def references(dataset: Dataset, forget_set: ForgetSet, originals: ModelBank, oracles: ModelBank,
               seed: int = 0) -> References:
    """The noise floor and the trained PGU attack of one forget set (see :class:`References`)."""
    labels, forget = forget_set.train_labels, forget_set.indices
    retain = np.flatnonzero(forget_set.retain_mask(len(labels)))
    groups = {"forget": forget, "retain": retain, "validation": len(labels) + np.arange(len(dataset.y_val))}
    oracle_margins = group_margins(oracles, dataset, forget_set)
    halves = oracle_halves(oracle_margins, _stream(seed, "noise_floor"))
    floor_summary = summarise(klom(*halves), groups)
    w1_floor_summary = summarise(wasserstein.w1_margins(*halves), groups)
    attack = fit_pgu_attack(originals.logits["train"][:, forget], oracles.logits["train"][:, forget], labels[forget],
                            _stream(seed, "pgu_attack"), n_jobs=1)
    return References(groups=groups, oracle_margins=oracle_margins, floor_summary=floor_summary,
                      w1_floor_summary=w1_floor_summary, attack=attack)


#: the cause of divergence that leaves nothing to measure
NON_FINITE = "non-finite outputs"


def divergence(dataset: Dataset, originals: ModelBank, unlearned: ModelBank,
               max_abs_logit: float = MAX_ABS_LOGIT) -> str | None:
    """Why the models of `unlearned` count as diverged, or None: a non-finite output, an output
    beyond ``±max_abs_logit`` (exploded: finite logits of 1e9 rank like any others, so accuracy
    and margins alone would not show it), or a model whose test accuracy is at most a constant
    predictor's (the test set's majority-class rate) where every original model had at least twice
    that (collapsed; models that never learned are not judged)."""
    if not all(np.isfinite(logits).all() for logits in unlearned.logits.values()):
        return NON_FINITE
    largest = max(float(np.abs(logits).max(initial=0.0)) for logits in unlearned.logits.values())
    if largest > max_abs_logit:
        return f"exploded outputs (|logit| up to {largest:.3g} > evaluation.max_abs_logit {max_abs_logit:g})"
    constant = np.bincount(dataset.y_test).max() / len(dataset.y_test)
    test_accuracy = (unlearned.logits["test"].argmax(-1) == dataset.y_test).mean(axis=1)
    original_accuracy = (originals.logits["test"].argmax(-1) == dataset.y_test).mean(axis=1)
    collapsed = np.flatnonzero(test_accuracy <= constant)
    if collapsed.size and original_accuracy.min() >= 2 * constant:
        return (f"collapsed: {collapsed.size} of {len(test_accuracy)} models at test accuracy <= {constant:.3f}, "
                "a constant predictor's")
    return None


def evaluate(dataset: Dataset, forget_set: ForgetSet, originals: ModelBank, oracles: ModelBank,
             unlearned: ModelBank, method: str, config: str = "default", seed: int = 0,
             ulira_accuracy: float = math.nan, ulira_config: str = "", n_boot: int = KLOM_INTERVAL_REPLICATES,
             paired_with_originals: bool = True, shared: References | None = None,
             max_abs_logit: float = MAX_ABS_LOGIT) -> Evaluation:
    """Compare `unlearned` with `oracles` (KLOM, accuracies, entropy, MIAs, cost).

    Cost: ``compute_fraction`` is the unlearned bank's training examples processed per model
    (``examples_per_model``; 0 when the method trains nothing) over the oracles' (retraining),
    the measure of the DMM paper's Figure 1; ``unlearn_seconds`` and ``retrain_seconds`` are
    the per-model wall times recorded in the banks; ``precompute_seconds`` is the one-time
    cost a method amortises over requests (datamodels: subset models and fitting), stated
    apart as the paper does. `paired_with_originals` says that
    unlearned model i started from original model i (false for retraining from scratch).
    `shared` is :func:`references` of the same banks and seed, computed here when not given.
    `ulira_accuracy` is U-LiRA's attacker accuracy against `ulira_config`, the configuration its
    shadows ran (NaN and "" where none was measured for this one).
    A configuration whose models :func:`divergence` calls diverged (`max_abs_logit` bounds their
    outputs) has status ``diverged`` and its cause in the evaluation's ``diverged`` field; its
    metrics are measured unless its outputs are not finite (:func:`diverged_evaluation`).
    `n_boot` is the number of bootstrap replicates of the KLOM score's interval (0: no
    interval, NaN; a workflow job computes it for the in-sample best configuration only, the
    report for the configuration it shows). The arrays hold the configuration's margins as
    float32 (``margins``) for the report's interval.
    """
    cause = divergence(dataset, originals, unlearned, max_abs_logit)
    if cause == NON_FINITE:
        return diverged_evaluation(dataset, forget_set, originals, oracles, unlearned, method, config, ulira_accuracy,
                                   ulira_config)
    shared = shared or references(dataset, forget_set, originals, oracles, seed)
    labels = forget_set.train_labels
    forget = forget_set.indices
    groups, oracle_margins, floor_summary = shared.groups, shared.oracle_margins, shared.floor_summary
    unlearned_margins = group_margins(unlearned, dataset, forget_set)
    per_point = klom(oracle_margins, unlearned_margins)
    summary = summarise(per_point, groups)
    w1_summary = summarise(wasserstein.w1_margins(oracle_margins, unlearned_margins), groups)

    row = _identity(forget_set, oracles, unlearned, method, config, DIVERGED if cause else OK)
    for group in GROUPS:
        for statistic in STATISTICS:
            row[f"klom_{group}_{statistic}"] = summary[group][statistic]
        row[f"floor_{group}_p95"] = floor_summary[group]["p95"]
        row[f"w1_{group}_mean"] = w1_summary[group]["mean"]
    row["klom_score"] = group_score(summary)
    row.update(klom_interval(oracle_margins, groups, unlearned_margins, seed, n_boot))
    row["floor_klom_score"] = group_score(floor_summary)
    row["selection_score"] = group_score(w1_summary, statistic="mean")
    row["floor_selection_score"] = group_score(shared.w1_floor_summary, statistic="mean")
    row.update(_readouts(dataset, forget_set, originals, oracles, unlearned))
    forgetting = forgetting_quality(unlearned_margins[:, forget], oracle_margins[:, forget])
    row["challenge_forgetting"] = forgetting
    row["challenge_score"] = challenge_score(forgetting, (row["acc_retain"], row["acc_retain_oracle"]),
                                             (row["acc_test"], row["acc_test_oracle"]))
    original_forget_margins = margins(originals.logits["train"][:, forget], labels[forget])
    row.update(forget_margin_shift(original_forget_margins, oracle_margins[:, forget], unlearned_margins[:, forget]))

    entropies = {name: prediction_entropy(bank.logits["train"][:, forget])
                 for name, bank in (("original", originals), ("oracle", oracles), ("unlearned", unlearned))}
    row["entropy_forget"] = float(entropies["unlearned"].mean())
    row["mia_simple"] = _simple_mia(unlearned, labels, forget, dataset.y_test, _stream(seed, "simple_mia"))
    attack = judge(shared.attack, unlearned.logits["train"][:, forget], paired_with_originals)
    row["mia_pgu_auc"], row["mia_attack_auc"] = attack.unlearned_auc, attack.attack_auc
    row["ulira_accuracy"], row["ulira_config"] = ulira_accuracy, ulira_config
    row.update(_cost(oracles, unlearned))
    row["weight_distance"] = weight_distance(originals, oracles, unlearned)
    row.update(certificate_columns(dataset, forget_set, originals, unlearned))

    arrays = {f"klom/{g}": per_point[groups[g]] for g in GROUPS}
    arrays.update({f"entropy/{name}": value for name, value in entropies.items()})
    arrays.update({"mia/fpr": attack.fpr, "mia/tpr": attack.tpr, "margins": unlearned_margins.astype(np.float32)})
    return Evaluation(row=row, arrays=arrays, diverged=cause or "")


def klom_interval(oracle_margins: np.ndarray, groups: Mapping[str, np.ndarray], unlearned_margins: np.ndarray,
                  seed: int, n_boot: int = KLOM_INTERVAL_REPLICATES) -> dict[str, float]:
    """``klom_ci_low`` and ``klom_ci_high``: the groups' bootstrap intervals of KLOM-95
    (:func:`~unlearnflow.metrics.klom.bootstrap_ci`, `n_boot` replicates, the seed's ``bootstrap``
    stream) averaged end by end, a conservative interval for their equal-weight mean; NaN when
    `n_boot` is 0. `oracle_margins` and `groups` are those of :func:`references`,
    `unlearned_margins` :func:`group_margins` of the unlearned bank."""
    if not n_boot:
        return {"klom_ci_low": math.nan, "klom_ci_high": math.nan}
    intervals = bootstrap_ci(oracle_margins, unlearned_margins, groups, _stream(seed, "bootstrap"),
                             stat="p95", n_boot=n_boot)
    return {"klom_ci_low": float(np.mean([intervals[g][0] for g in GROUPS])),
            "klom_ci_high": float(np.mean([intervals[g][1] for g in GROUPS]))}


def diverged_evaluation(dataset: Dataset, forget_set: ForgetSet, originals: ModelBank, oracles: ModelBank,
                        unlearned: ModelBank, method: str, config: str, ulira_accuracy: float = math.nan,
                        ulira_config: str = "") -> Evaluation:
    """The evaluation of a configuration whose models output non-finite logits: status
    ``diverged``, NaN for every quality metric, the references' accuracies and the cost it
    took; the unlearned entropies are NaN and the attack's ROC curve empty."""
    row = {column: math.nan for column in ROW_COLUMNS}
    row.update(_identity(forget_set, oracles, unlearned, method, config, DIVERGED))
    test = _readouts(dataset, forget_set, originals, oracles, originals)
    row.update(acc_test_oracle=test["acc_test_oracle"], acc_test_original=test["acc_test_original"],
               acc_retain_oracle=test["acc_retain_oracle"],
               ulira_accuracy=ulira_accuracy, ulira_config=ulira_config, **_cost(oracles, unlearned))
    forget = forget_set.indices
    arrays = {f"entropy/{name}": prediction_entropy(bank.logits["train"][:, forget])
              for name, bank in (("original", originals), ("oracle", oracles))}
    arrays["entropy/unlearned"] = np.full_like(arrays["entropy/oracle"], np.nan)
    arrays.update({"mia/fpr": np.zeros(0), "mia/tpr": np.zeros(0)})
    return Evaluation(row=row, arrays=arrays, diverged=NON_FINITE)


def weight_distance(originals: ModelBank, oracles: ModelBank, unlearned: ModelBank) -> float:
    """Mean over models k of ``||W_u,k - W_retrain,k|| / ||W_0,k - W_retrain,k||`` (Frobenius) for
    banks of linear models (NaN otherwise, or without weights): W_0,k is original k, W_u,k the
    unlearned model that started from it, and W_retrain,k the *oracle with the same model id*,
    which in a linear experiment shares model k's objective noise b, so it is exactly the
    retrained model that certified removal of original k approximates (Guo et al., Sec. 3;
    source-free unlearning, Eq. 1). 0 is exact removal, 1 is the untouched model; accuracy cannot
    replace it, since on easy data the untouched model is as accurate as the retrained one."""
    banks = (originals, oracles, unlearned)
    if any(bank.attrs.get("arch") != "linear" or not bank.weights for bank in banks):
        return math.nan
    name = next(iter(originals.weights))
    if any(name not in bank.weights for bank in banks):
        return math.nan
    position = [{int(model_id): i for i, model_id in enumerate(bank.model_ids)} for bank in banks]
    shared = sorted(set(position[0]) & set(position[1]) & set(position[2]))
    ratios = []
    for model_id in shared:
        w0, wr, wu = (np.asarray(bank.weights[name][where[model_id]], np.float64)
                      for bank, where in zip(banks, position))
        ratios.append(np.linalg.norm(wu - wr) / max(np.linalg.norm(w0 - wr), 1e-300))
    return float(np.mean(ratios)) if ratios else math.nan


def evaluate_method(dataset: Dataset, forget_set: ForgetSet, originals: ModelBank, oracles: ModelBank,
                    banks: Mapping[str, ModelBank], method: str, shared: References, seed: int = 0,
                    ulira_accuracy: float = math.nan, ulira_config: str = "", paired_with_originals: bool = True,
                    max_abs_logit: float = MAX_ABS_LOGIT) -> tuple[list[Evaluation], dict[str, np.ndarray]]:
    """The evaluation protocol of one method on one forget set: :func:`evaluate` of every
    configuration (`banks`: label -> unlearned bank) against the `shared` references, U-LiRA's
    accuracy on the row of `ulira_config` only (the configuration its shadows ran), and the KLOM
    score's bootstrap interval (200 KLOM evaluations) for the in-sample best configuration alone;
    the report computes it for the configuration it shows when that is another. Returns the
    evaluations (rows and causes of divergence), in the order of `banks`, and the evaluation
    artifact's arrays (:func:`artifact_arrays`)."""
    results = [evaluate(dataset, forget_set, originals, oracles, bank, method, label, seed=seed,
                        ulira_accuracy=ulira_accuracy if label == ulira_config else math.nan,
                        ulira_config=ulira_config, paired_with_originals=paired_with_originals, shared=shared,
                        n_boot=0, max_abs_logit=max_abs_logit) for label, bank in banks.items()]
    best = insample_best(results)
    if best.row["status"] != DIVERGED:
        best_margins = group_margins(banks[best.row["config"]], dataset, forget_set)
        best.row.update(klom_interval(shared.oracle_margins, shared.groups, best_margins, seed))
    return results, artifact_arrays(results, shared)


def insample_best(results: Sequence[Evaluation]) -> Evaluation:
    """The configuration of lowest selection score against the oracles that scored it, diverged
    ones last (:func:`~unlearnflow.evaluation.selection.score_key`): the report's ``insample_best``."""
    return min(results, key=lambda result: score_key(result.row))


def artifact_arrays(results: Sequence[Evaluation], shared: References) -> dict[str, np.ndarray]:
    """The arrays of one method's evaluation artifact (layout: :mod:`unlearnflow.evaluation.rows`):
    the entropies of the original and oracle models, the oracles' margins (float32) and the point
    groups once, and every configuration's arrays, in the order of `results`."""
    arrays = {name: results[0].arrays[name] for name in ("entropy/original", "entropy/oracle")}
    arrays["oracle_margins"] = shared.oracle_margins.astype(np.float32)
    arrays.update({f"groups/{group}": shared.groups[group] for group in GROUPS})
    for index, result in enumerate(results):
        arrays.update({config_array(index, name): value for name, value in result.arrays.items()
                       if name in CONFIG_ARRAYS})
    return arrays


def _identity(forget_set: ForgetSet, oracles: ModelBank, unlearned: ModelBank, method: str, config: str,
              status: str) -> dict[str, Any]:
    """The columns that say which result a row describes, and its status."""
    return {"method": method, "config": config, "forget_set": forget_set.name, "forget_kind": forget_set.kind,
            "n_forget": len(forget_set.indices), "n_oracles": len(oracles), "n_unlearned": len(unlearned),
            "selection_metric": W1, "status": status}


def _readouts(dataset: Dataset, forget_set: ForgetSet, originals: ModelBank, oracles: ModelBank,
              unlearned: ModelBank) -> dict[str, float]:
    """Mean accuracies; for class removal (PGU paper, Section 4.3, Table 2) the test accuracy counts
    only the retained classes, and the retain and test accuracies of every bank are read with the
    forgotten classes' rows of the last layer removed (their logits -inf)."""
    labels = forget_set.train_labels
    forget = forget_set.indices
    retain = forget_set.retain_mask(len(labels))
    test = np.ones(len(dataset.y_test), dtype=bool)
    removed = np.unique(labels[forget]) if forget_set.kind == "class" else np.array([], dtype=np.int64)
    if forget_set.kind == "class":
        test = exclude_classes(dataset.y_test, removed)

    def test_accuracy(bank: ModelBank) -> float:
        return accuracy(remove_class_rows(bank.logits["test"][:, test], removed), dataset.y_test[test]).mean

    return {
        "acc_forget": accuracy(unlearned.logits["train"][:, forget], labels[forget]).mean,
        "acc_retain": accuracy(remove_class_rows(unlearned.logits["train"][:, retain], removed), labels[retain]).mean,
        "acc_retain_oracle": accuracy(remove_class_rows(oracles.logits["train"][:, retain], removed), labels[retain]).mean,
        "acc_val": accuracy(unlearned.logits["val"], dataset.y_val).mean,
        "acc_test": test_accuracy(unlearned),
        "acc_test_oracle": test_accuracy(oracles),
        "acc_test_original": test_accuracy(originals),
    }


def forget_margin_shift(original: np.ndarray, oracle: np.ndarray, unlearned: np.ndarray) -> dict[str, float]:
    """How well the unlearned models' mean forget-point margins track the oracles' (DMM paper, DM-DIRECT).

    Inputs are margins (models, forget points). ``shift_corr_forget``: Pearson correlation over
    forget points of the achieved shift (mean unlearned - mean original margin) with the true
    shift (mean oracle - mean original); NaN when a shift is constant (do-nothing). The
    correlation of margin *levels* would say little: do-nothing already reaches ~0.98.
    ``margin_mae_forget``: mean absolute error of the mean unlearned margin vs the mean oracle margin.
    """
    base, target, reached = original.mean(0), oracle.mean(0), unlearned.mean(0)
    achieved_shift, true_shift = reached - base, target - base
    constant = len(base) < 2 or np.ptp(achieved_shift) == 0 or np.ptp(true_shift) == 0
    correlation = math.nan if constant else float(np.corrcoef(achieved_shift, true_shift)[0, 1])
    return {"shift_corr_forget": correlation, "margin_mae_forget": float(np.mean(np.abs(reached - target)))}


def _simple_mia(bank: ModelBank, labels: np.ndarray, forget: np.ndarray, y_test: np.ndarray,
                rng: np.random.Generator) -> float:
    """Mean over models of the loss-threshold attack's accuracy, forget vs test points (NaN for
    forget sets too small for its cross-validation)."""
    if len(forget) < SIMPLE_MIA_FOLDS:
        return math.nan
    forget_losses = per_example_loss(bank.logits["train"][:, forget], labels[forget])
    test_losses = per_example_loss(bank.logits["test"], y_test)
    return float(np.mean([simple_mia(f, t, rng, n_splits=SIMPLE_MIA_FOLDS) for f, t in zip(forget_losses, test_losses)]))


def unlearning_cost(bank: ModelBank) -> tuple[float, float]:
    """(seconds, training examples processed) per model that producing `bank` cost.

    Unlearning methods record their own cost; the original models cost nothing to "unlearn"
    (do-nothing); any other bank was trained from scratch without the forget set (retrain).
    """
    attrs = bank.attrs
    if "unlearn_examples_per_model" in attrs:
        return attrs["unlearn_seconds"] / len(bank), attrs["unlearn_examples_per_model"]
    if attrs["role"] == "original":
        return 0.0, 0.0
    return attrs["train_seconds"] / len(bank), attrs["examples_per_model"]


def _cost(oracles: ModelBank, unlearned: ModelBank) -> dict[str, float]:
    seconds, examples = unlearning_cost(unlearned)
    return {
        "unlearn_seconds": seconds,
        "retrain_seconds": oracles.attrs["train_seconds"] / len(oracles),
        "compute_fraction": examples / oracles.attrs["examples_per_model"],
        "precompute_seconds": float(unlearned.attrs.get("precompute_seconds", 0.0)),
    }
