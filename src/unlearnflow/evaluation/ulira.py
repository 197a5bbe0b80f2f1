"""Shadow experiments of efficient U-LiRA (DMM paper, Appendix F, Algorithm F.4).

N base models are trained on random 50% subsets of the training set (a ``model_bank`` of role
``ulira_base``, built by the ordinary bank trainer with subset masks). For each base model i,
`forget_sets_per_model` random forget sets F_ij of `forget_size` points are drawn from the
points of a *pool* (the forgettable points, by default points of one class) that model i trained
on; the method under test unlearns each F_ij from model i. The unlearned models of the first
half of the base models are *shadows*, those of the second half *targets*. Per pool point,
Gaussians are fitted to the shadows' margins on it where they unlearned it and where their
base model never saw it; each target is then attacked on the points it unlearned and on pool
points it never saw (:func:`unlearnflow.metrics.ulira.ulira_accuracy`). 0.5 is ideal.

The references have their own shadow unlearners: ``do_nothing`` (the unlearned model is the
base model) and ``retrain`` (a fresh model on the base subset without F_ij). Every registered
method (:mod:`unlearnflow.registry`) runs on the shadows with its configured default
hyper-parameters, given the side artifacts it declares; a method that needs an artifact the
shadows cannot have (``for_shadows`` false: the true oracle targets of oracle matching, since
the shadows have no oracles) gets NaN, unless the artifact can be built for the base models
(``build_for_shadows``: PGU's gradient space, each base model's over its own training subset).
The datamodels can serve shadows: they predict any subset model's outputs, so DM-DIRECT and
DMM see each shadow's own logits and forget set.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass
from functools import partial
from typing import Any, Callable, Mapping

import numpy as np
import torch

from unlearnflow.core.artifacts import ModelBank
from unlearnflow.core.data import Dataset
from unlearnflow.core.ensemble import fit_many, predict_logits_many
from unlearnflow.core.lockstep import run_lockstep
from unlearnflow.core.training import (
    TrainConfig,
    model_seed,
    predict_logits,
    progress_bar,
)
from unlearnflow.errors import UserError
from unlearnflow.metrics.margins import margins
from unlearnflow.metrics.ulira import ulira_accuracy
from unlearnflow.registry import ARTIFACTS, EDITS_MODEL, MethodSpec, RequestContext, hyperparameters, spec_of
from unlearnflow.runner import RequestParts, TrainingRows, side_inputs, unlearn_request


@dataclass(frozen=True)
class ShadowDesign:
    """Which points each unlearned shadow/target model forgot: indices (base, set, point)."""

    pool: np.ndarray          # (P,) training indices of the forgettable points
    forget_sets: np.ndarray   # (N, n_f, m) training indices, each row within its base subset


def draw_forget_sets(base_masks: np.ndarray, labels: np.ndarray, seed: int, forget_sets_per_model: int,
                     forget_size: int, pool_class: int, pool_size: int | None = None) -> ShadowDesign:
    """The pool (the training points of `pool_class`, or `pool_size` random ones of them) and
    n_f forget sets per base model. A smaller pool gives each point more shadow observations."""
    rng = np.random.default_rng([seed, 0x5AD0])
    pool = np.flatnonzero(labels == pool_class)
    if pool.size == 0:
        raise UserError(f"ulira: class {pool_class} has no training points")
    if pool_size is not None:
        if pool_size > pool.size:
            raise UserError(f"ulira: pool_size {pool_size} exceeds the {pool.size} points of class {pool_class}")
        pool = np.sort(rng.choice(pool, pool_size, replace=False))
    sets = []
    for mask in base_masks:
        candidates = pool[mask[pool]]
        if candidates.size < forget_size:
            raise UserError(f"ulira: a base model trained on only {candidates.size} points of class "
                            f"{pool_class}, fewer than forget_size {forget_size}")
        sets.append([np.sort(rng.choice(candidates, forget_size, replace=False))
                     for _ in range(forget_sets_per_model)])
    return ShadowDesign(pool=pool, forget_sets=np.asarray(sets, dtype=np.int64))


def _do_nothing(base: ModelBank, design: ShadowDesign, **_: Any) -> tuple[np.ndarray, float, int]:
    n_sets = design.forget_sets.shape[1]
    return np.repeat(base.logits["train"][:, None], n_sets, axis=1), 0.0, 0


def _retrain(base: ModelBank, design: ShadowDesign, dataset: Dataset, labels: np.ndarray, config: TrainConfig,
             seed: int, device: torch.device, progress: bool, models_per_pass: int = 0,
             **_: Any) -> tuple[np.ndarray, float, int]:
    """One model retrained per (base model, forget set), vectorised in passes of at most
    `models_per_pass` models (0: all at once; a model does not depend on its pass)."""
    n_base, n_sets, _ = design.forget_sets.shape
    masks = np.repeat(base.train_masks, n_sets, axis=0)
    rows = np.repeat(np.arange(n_base * n_sets), design.forget_sets.shape[2])
    masks[rows, design.forget_sets.reshape(-1)] = False
    seeds = [model_seed(seed, "ulira_retrain", i) for i in range(len(masks))]
    inputs = torch.from_numpy(dataset.x_train).to(device)
    per_pass = models_per_pass or len(masks)
    parts, seconds, examples = [], 0.0, 0
    for start in range(0, len(masks), per_pass):
        models, stats = fit_many(base.builder(dataset.input_shape, dataset.num_classes), seeds[start:start + per_pass],
                                 inputs, torch.from_numpy(labels).to(device), masks[start:start + per_pass], config,
                                 progress=progress, description="ulira retrain")
        parts.append(predict_logits_many(models, inputs).cpu().numpy())
        seconds, examples = seconds + stats.seconds, examples + stats.examples
    logits = np.concatenate(parts)
    return logits.reshape(n_base, n_sets, *logits.shape[1:]), seconds, examples


def _predicted(spec: MethodSpec, hp: Mapping[str, Any],
               side: Mapping[str, Any]) -> Callable[..., tuple[np.ndarray, float, int]]:
    """A method that predicts outputs: each base model's predicted logits without each forget set."""
    def unlearner(base: ModelBank, design: ShadowDesign, labels: np.ndarray, **_: Any) -> tuple[np.ndarray, float, int]:
        start = time.perf_counter()
        logits = np.stack([np.stack([
            spec.predict(side, hp, RequestContext(forget, labels, {"train": base.logits["train"][index][None]}),
                         {"train": labels})["train"][0] for forget in sets])
            for index, sets in enumerate(design.forget_sets)])
        return logits, time.perf_counter() - start, 0
    return unlearner


def _edited(spec: MethodSpec, hp: Mapping[str, Any],
            side: Mapping[str, Any]) -> Callable[..., tuple[np.ndarray, float, int]]:
    """A method that edits models, applied to each base model for each of its forget sets, every
    shadow a lockstep task (their training loops run as one, `models_per_pass` shadows at most,
    :mod:`unlearnflow.core.lockstep`); a
    source-free one sees the forget samples and the validation split only."""
    def unlearner(base: ModelBank, design: ShadowDesign, dataset: Dataset, labels: np.ndarray, seed: int,
                  device: torch.device, progress: bool, models_per_pass: int = 0,
                  **_: Any) -> tuple[np.ndarray, float, int]:
        inputs = torch.from_numpy(dataset.x_train).to(device)
        label_tensor = torch.tensor(labels, device=device)
        validation = dict(validation_inputs=torch.from_numpy(dataset.x_val).to(device),
                          validation_labels=torch.from_numpy(dataset.y_val).to(device))
        models = [model.to(device) for model in base.load_models(dataset.input_shape, dataset.num_classes)]
        n_base, n_sets, _ = design.forget_sets.shape

        def shadow(index: int, set_index: int) -> tuple[np.ndarray, Any]:
            """Base model `index` unlearning its forget set `set_index`: its logits and cost."""
            forget = design.forget_sets[index][set_index]
            model = copy.deepcopy(models[index])
            context = RequestContext(forget, labels, {"train": base.logits["train"]})
            rows = torch.tensor(forget, device=device)
            training = None if spec.source_free else TrainingRows(
                inputs=inputs, labels=label_tensor, forget=rows,
                retain=torch.tensor(np.setdiff1d(np.flatnonzero(base.train_masks[index]), forget), device=device))
            parts = RequestParts(forget_inputs=inputs[rows], forget_labels=label_tensor[rows],
                                 num_classes=dataset.num_classes, training=training, **validation)
            result = unlearn_request(spec, model, parts, side_inputs(spec, side, hp, context)(index), None, hp,
                                     model_seed(seed, f"ulira/{spec.name}", index * n_sets + set_index))
            bar.update()
            return predict_logits(model, inputs).cpu().numpy(), result.cost

        with progress_bar(n_base * n_sets, f"ulira {spec.name}", progress) as bar:
            shadows = run_lockstep([partial(shadow, index, set_index) for index in range(n_base)
                                    for set_index in range(n_sets)], models_per_pass)
        logits = [shadow_logits for shadow_logits, _ in shadows]
        seconds = sum(cost.seconds for _, cost in shadows)
        examples = sum(cost.examples for _, cost in shadows)
        return np.stack(logits).reshape(n_base, n_sets, *logits[0].shape), seconds, examples
    return unlearner


#: reference method -> function returning (logits (N, n_f, n_train, C), seconds, examples processed)
REFERENCE_UNLEARNERS: Mapping[str, Callable[..., tuple[np.ndarray, float, int]]] = {
    "do_nothing": _do_nothing,
    "retrain": _retrain,
}


def shadow_margin_tables(design: ShadowDesign, base_masks: np.ndarray, unlearned_logits: np.ndarray,
                         labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Margins on pool points of every unlearned model in its two roles, NaN elsewhere.

    Returns (unlearned, never_seen), each (N * n_f, P): a model's margin on a pool point it
    unlearned, and on a pool point its base subset never contained.
    """
    n_base, n_sets, _ = design.forget_sets.shape
    pool_margins = margins(unlearned_logits[:, :, design.pool], labels[design.pool]).reshape(n_base * n_sets, -1)
    forgot = np.zeros((n_base, n_sets, len(labels)), dtype=bool)
    base_index, set_index = np.indices(design.forget_sets.shape[:2])
    forgot[base_index[..., None], set_index[..., None], design.forget_sets] = True
    forgot = forgot[:, :, design.pool].reshape(n_base * n_sets, -1)
    never_seen = np.repeat(~base_masks[:, design.pool], n_sets, axis=0)
    return np.where(forgot, pool_margins, np.nan), np.where(never_seen, pool_margins, np.nan)


def check_design(design: ShadowDesign, base_masks: np.ndarray, labels: np.ndarray, shadow_models: int) -> None:
    """Before any model is unlearned: that the design lets the attack judge some target (a pool
    point with enough shadow margins in both roles, which :func:`ulira_accuracy` needs); else one
    UserError line naming the ``evaluation.ulira`` sizes and what to change. Runs the attack's own
    bookkeeping on margins of 0, so the two cannot disagree."""
    n_base, n_sets, size = design.forget_sets.shape
    no_logits = np.broadcast_to(np.zeros(1, dtype=np.float32), (n_base, n_sets, len(labels), int(labels.max()) + 1))
    unlearned, never_seen = shadow_margin_tables(design, base_masks, no_logits, labels)
    shadows = np.arange(len(unlearned)) < shadow_models * n_sets
    try:
        ulira_accuracy(unlearned[shadows], never_seen[shadows], unlearned[~shadows], never_seen[~shadows])
    except UserError as error:
        raise UserError(f"ulira: {error}, with evaluation.ulira base_models {n_base}, forget_sets_per_model {n_sets}, "
                        f"forget_size {size} over a pool of {len(design.pool)} points; raise base_models or "
                        "forget_sets_per_model, or lower pool_size, so that each pool point is forgotten by at "
                        "least 2 shadow models") from None


def run_ulira(method: str, base: ModelBank, dataset: Dataset, labels: np.ndarray, config: TrainConfig,
              seed: int, forget_sets_per_model: int, forget_size: int, pool_class: int,
              device: torch.device, pool_size: int | None = None, progress: bool = False,
              method_config: Mapping[str, Any] | None = None,
              side: Mapping[str, Any] | None = None, models_per_pass: int = 0) -> dict[str, Any]:
    """U-LiRA accuracy of `method`: shadows from the first half of the base models, targets
    from the second half. `method_config` is the method's config slice (its default
    configuration runs on the shadows); `side` holds the loaded side artifacts it needs;
    retraining trains at most `models_per_pass` models at once (0: all)."""
    summary = {"method": method, "ulira_accuracy": float("nan"), "base_models": len(base),
               "forget_sets_per_model": forget_sets_per_model, "forget_size": forget_size}
    method_config, side = method_config or {}, side or {}
    if method in REFERENCE_UNLEARNERS:
        unlearner = REFERENCE_UNLEARNERS[method]
    else:
        spec = spec_of(method)
        needs = spec.needs_for(method_config)
        if any(not ARTIFACTS[name].for_shadows and not ARTIFACTS[name].build_for_shadows for name in needs):
            return {**summary, "pool_size": 0, "seconds": 0.0}
        side = {**side, **{name: ARTIFACTS[name].build_for_shadows(base, dataset, device) for name in needs
                           if not ARTIFACTS[name].for_shadows}}
        missing = [name for name in needs if name not in side]
        if missing:
            raise UserError(f"ulira: {method} needs {', '.join(missing)}")
        hp = hyperparameters(method, method_config.get("hyperparameters", {}))
        unlearner = (_edited if spec.kind == EDITS_MODEL else _predicted)(spec, hp, side)
    if len(base) < 4:
        raise UserError(f"ulira: needs at least 4 base models, got {len(base)}")
    design = draw_forget_sets(base.train_masks, labels, seed, forget_sets_per_model, forget_size, pool_class,
                              pool_size)
    check_design(design, base.train_masks, labels, len(base) // 2)
    start = time.perf_counter()
    logits, _, _ = unlearner(base, design, dataset=dataset, labels=labels, config=config, seed=seed,
                             device=device, progress=progress, models_per_pass=models_per_pass)
    unlearned, never_seen = shadow_margin_tables(design, base.train_masks, logits, labels)
    shadows = np.arange(len(unlearned)) < (len(base) // 2) * forget_sets_per_model
    accuracy = ulira_accuracy(unlearned[shadows], never_seen[shadows], unlearned[~shadows], never_seen[~shadows])
    return {**summary, "ulira_accuracy": accuracy, "pool_size": len(design.pool),
            "seconds": time.perf_counter() - start}
