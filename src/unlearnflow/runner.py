"""The runner: a registered method over a whole bank, for every configuration and every request.

For one forget set, the runner applies a method (:mod:`unlearnflow.registry`) to each of the N
original models, under the method's default configuration and each configuration of its grid.
A forget set of R requests (``incremental``) is a *sequence*: request r starts from the model
and the state that request r - 1 left, and the result after every request is kept, so that each
prefix can be judged against oracles retrained without it (PGU paper, Section 3.2.4; Table 3).

What a request holds depends on the method: a source-free method gets
:class:`~unlearnflow.methods.request.ForgetRequest` built from the forget samples alone
(:class:`RequestSource` over :class:`~unlearnflow.core.forget_sets.ForgetSamples`); every other
method gets the training set too. :func:`unlearn_request` is the one place a request is built and
applied: the runner, U-LiRA's shadows (:mod:`unlearnflow.evaluation.ulira`) and the deletion
ledger (:mod:`unlearnflow.ops.ledger`) all call it, and it refuses to hand a source-free method
the training set. The side inputs a method declares (``needs``) are loaded by name and turned into
per-model side inputs by the method's ``prepare`` (:func:`side_inputs`).

The result is one ``unlearned`` artifact per (method, forget set): per configuration and step,
the unlearned models' weights (methods that edit models) or predicted logits (methods that
predict outputs), what the step cost and the certificates the method returned. Evaluation
computes the logits of stored weights itself, so that a source-free job never needs the data.
"""

from __future__ import annotations

import copy
import json
import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch

from unlearnflow.core.artifacts import SPLITS, ModelBank
from unlearnflow.core.data import Dataset
from unlearnflow.core.ensemble import predict_logits_many
from unlearnflow.core.forget_sets import ForgetSamples, ForgetSet
from unlearnflow.core.lockstep import run_lockstep
from unlearnflow.core.store import read_artifact, write_artifact
from unlearnflow.core.training import model_seed, progress_bar
from unlearnflow.errors import UserError
from unlearnflow.methods.request import ForgetRequest, UnlearningRequest
from unlearnflow.registry import (
    ARTIFACTS,
    EDITS_MODEL,
    Configuration,
    MethodSpec,
    RequestContext,
)


@dataclass(frozen=True)
class RequestSource:
    """Where a bank's requests come from: the forget samples (every method) and, for a method
    that is not source-free, the training set with the forget set's indices."""

    samples: ForgetSamples
    dataset: Dataset | None = None
    forget_set: ForgetSet | None = None

    @property
    def n_requests(self) -> int:
        return self.samples.n_requests

    def context(self, step: int, original_logits: Mapping[str, np.ndarray]) -> RequestContext:
        """What prepare/predict know at `step`: the indices forgotten so far (None when
        source-free), the training labels and the original models' logits."""
        if self.forget_set is None:
            return RequestContext(forget=None, labels=None, original_logits={})
        return RequestContext(forget=self.forget_set.prefix(step + 1).indices, labels=self.forget_set.train_labels,
                              original_logits=original_logits)

    def parts(self, step: int, device: torch.device) -> RequestParts:
        """What every model's request of `step` holds: the request's forget samples and the
        validation split and, for a method that is not source-free, the training set with the
        request's forget rows and the rows kept after it."""
        forget_inputs, forget_labels = self.samples.request(step)
        training = None
        if self.forget_set is not None:
            n_train = len(self.forget_set.train_labels)
            training = TrainingRows(
                inputs=torch.from_numpy(self.dataset.x_train).to(device),
                labels=torch.tensor(self.forget_set.train_labels, device=device),
                forget=torch.tensor(self.forget_set.requests[step], device=device),
                retain=torch.from_numpy(np.flatnonzero(self.forget_set.retain_mask(n_train, upto_request=step))).to(device))
        return RequestParts(forget_inputs=torch.from_numpy(forget_inputs).to(device),
                            forget_labels=torch.from_numpy(forget_labels).to(device),
                            num_classes=self.samples.num_classes, step=step,
                            validation_inputs=torch.from_numpy(self.samples.x_val).to(device),
                            validation_labels=torch.from_numpy(self.samples.y_val).to(device), training=training)


@dataclass(frozen=True)
class TrainingRows:
    """The training set a request of a method that is not source-free holds: every input and
    label, the request's forget rows and the rows the model keeps after it."""

    inputs: torch.Tensor
    labels: torch.Tensor
    forget: torch.Tensor
    retain: torch.Tensor


@dataclass(frozen=True)
class RequestParts:
    """What one request is built from (:func:`unlearn_request`), tensors on the model's device:
    the forget samples, the validation split, the step of a sequence, and `training`, the training
    set, only for a method that is not source-free."""

    forget_inputs: torch.Tensor
    forget_labels: torch.Tensor
    num_classes: int
    validation_inputs: torch.Tensor | None = None
    validation_labels: torch.Tensor | None = None
    step: int = 0
    training: TrainingRows | None = None


def side_inputs(spec: MethodSpec, loaded: Mapping[str, Any], hp: Mapping[str, Any],
                context: RequestContext) -> Callable[[int], Mapping[str, Any]]:
    """Model index -> the method's side inputs: its ``prepare`` over the loaded side artifacts
    (what `context` lets it know), or none."""
    return spec.prepare(loaded, hp, context) if spec.prepare else (lambda index: {})


def unlearn_request(spec: MethodSpec, model: torch.nn.Module, parts: RequestParts, side: Mapping[str, Any],
                    state: Any, hp: Mapping[str, Any], seed: int) -> Any:
    """The one request path, shared by the runner, U-LiRA's shadows and the deletion ledger: build
    the request and apply `spec` to `model` (in place), returning its ``MethodResult``.

    A source-free method gets a :class:`~unlearnflow.methods.request.ForgetRequest` of the forget
    samples, the validation split, its side inputs and state; `parts` carrying the training set for
    it is a UserError, so no caller can hand it retain data. Any other method gets an
    :class:`~unlearnflow.methods.request.UnlearningRequest` and needs the training set."""
    device = parts.forget_inputs.device
    common = dict(num_classes=parts.num_classes, validation_inputs=parts.validation_inputs,
                  validation_labels=parts.validation_labels, side=side_tensors(side, device), state=state,
                  step=parts.step)
    if spec.source_free:
        if parts.training is not None:
            raise UserError(f"{spec.name} is source-free: its request takes the forget samples alone, "
                            "not the training set")
        request = ForgetRequest(forget_inputs=parts.forget_inputs, forget_labels=parts.forget_labels, **common)
    else:
        if parts.training is None:
            raise UserError(f"{spec.name} is not source-free: its request needs the training set")
        rows = parts.training
        request = UnlearningRequest.of_training_set(rows.inputs, rows.labels, rows.forget, rows.retain, **common)
    return spec.unlearn(model, request, hp, seed)


@dataclass
class StepResult:
    """The bank after one request, under one configuration: the unlearned models' weights
    (stacked state dicts) or predicted logits, what the step cost and the certificates."""

    weights: dict[str, np.ndarray] = field(default_factory=dict)
    logits: dict[str, np.ndarray] = field(default_factory=dict)
    seconds: float = 0.0
    examples: float = 0.0
    n_models: int = 1
    certificates: list[dict[str, Any]] | None = None


def load_side(side_paths: Mapping[str, Sequence[str]]) -> list[dict[str, Any]]:
    """The side artifacts of every step: name -> loaded artifact. A per-forget-set artifact has
    one path per step of a sequence, a shared one a single path."""
    loaded = {name: [ARTIFACTS[name].load(path) for path in paths] for name, paths in side_paths.items()}
    steps = max((len(paths) for paths in loaded.values()), default=1)
    return [{name: values[min(step, len(values) - 1)] for name, values in loaded.items()} for step in range(steps)]


def precompute_seconds(side: Mapping[str, Any]) -> float:
    """The one-time cost behind the side artifacts a method amortises over requests (the
    datamodels: subset models and fitting), stated apart as the DMM paper does."""
    return float(sum(getattr(value, "attrs", {}).get("precompute_seconds", 0.0) for value in side.values()))


def unlearn_bank(spec: MethodSpec, configs: Sequence[Configuration], originals: ModelBank, source: RequestSource,
                 side_by_step: Sequence[Mapping[str, Any]], seed: int, device: torch.device,
                 progress: bool = False, models_per_pass: int = 0) -> dict[str, list[StepResult]]:
    """Apply `spec` to every original model, under each configuration, request after request,
    after the method's input check (``check_inputs``: its warnings printed, a UserError raised).
    The models' training loops run as one (:mod:`unlearnflow.core.lockstep`), by passes of at most
    `models_per_pass` models (0: all at once; 1: one model after the other).

    Returns configuration label -> one :class:`StepResult` per request.
    """
    if len(side_by_step) not in (1, source.n_requests):
        raise UserError(f"{spec.name}: side artifacts for {len(side_by_step)} steps, the forget set has "
                        f"{source.n_requests} requests")
    sides = [side_by_step[min(step, len(side_by_step) - 1)] for step in range(source.n_requests)]
    if spec.check_inputs:
        for line in spec.check_inputs(configs, tuple(source.samples.inputs.shape[1:]), source.samples.num_classes):
            print(f"warning: {line}")
    if spec.kind == EDITS_MODEL:
        return _edit_models(spec, configs, originals, source, sides, seed, device, progress, models_per_pass)
    return _predict_outputs(spec, configs, originals, source, sides)


def _edit_models(spec: MethodSpec, configs: Sequence[Configuration], originals: ModelBank, source: RequestSource,
                 sides: Sequence[Mapping[str, Any]], seed: int, device: torch.device,
                 progress: bool, models_per_pass: int) -> dict[str, list[StepResult]]:
    """Per configuration, every model's requests as one lockstep task (:mod:`unlearnflow.core.lockstep`):
    the method runs per model, its training loops over the whole bank at once."""
    shape, num_classes = tuple(source.samples.inputs.shape[1:]), source.samples.num_classes
    models = [model.to(device) for model in originals.load_models(shape, num_classes)]
    parts = [source.parts(step, device) for step in range(source.n_requests)]
    results = {}
    total = len(configs) * len(models) * source.n_requests
    with progress_bar(total, f"{spec.name} on {source.samples.name}", progress) as bar:
        for config in configs:
            prepared = [side_inputs(spec, sides[step], config.hyperparameters, source.context(step, originals.logits))
                        for step in range(source.n_requests)]

            def requests_of(index: int, model_id: int, original: torch.nn.Module) -> list[tuple[Any, dict]]:
                """One model's requests in order: each one's result and the weights it left."""
                model, state, done = copy.deepcopy(original), None, []
                for step, step_parts in enumerate(parts):
                    stream = f"unlearn/{spec.name}" + (f"/step{step}" if step else "")
                    result = unlearn_request(spec, model, step_parts, prepared[step](index), state,
                                             config.hyperparameters, model_seed(seed, stream, model_id))
                    state = result.state
                    done.append((result, {name: value.detach().cpu().clone()
                                          for name, value in model.state_dict().items()}))
                    bar.update()
                return done

            per_model = run_lockstep([partial(requests_of, index, int(model_id), original) for index, (model_id, original)
                                      in enumerate(zip(originals.model_ids, models))], models_per_pass)
            steps = []
            for step in range(source.n_requests):
                outcomes = [done[step] for done in per_model]
                certificates = [dict(result.certificate) for result, _ in outcomes if result.certificate is not None]
                steps.append(StepResult(
                    weights={name: torch.stack([weights[name] for _, weights in outcomes]).numpy()
                             for name in outcomes[0][1]},
                    seconds=sum(result.cost.seconds for result, _ in outcomes),
                    examples=sum(result.cost.examples for result, _ in outcomes), n_models=len(models),
                    certificates=certificates or None))
            results[config.label] = steps
    return results


def _predict_outputs(spec: MethodSpec, configs: Sequence[Configuration], originals: ModelBank,
                     source: RequestSource, sides: Sequence[Mapping[str, Any]]) -> dict[str, list[StepResult]]:
    if source.forget_set is None:
        raise UserError(f"{spec.name}: a method that predicts outputs needs the training set")
    labels = {"train": source.forget_set.train_labels, "val": source.dataset.y_val, "test": source.dataset.y_test}
    results = {}
    for config in configs:
        steps = []
        for step in range(source.n_requests):
            start = time.perf_counter()
            logits = spec.predict(sides[step], config.hyperparameters, source.context(step, originals.logits), labels)
            steps.append(StepResult(logits=logits, seconds=time.perf_counter() - start))
        results[config.label] = steps
    return results


def side_tensors(side: Mapping[str, Any], device: torch.device) -> dict[str, Any]:
    """Array side inputs as float32 tensors on the model's device; others as they are."""
    return {name: torch.from_numpy(np.ascontiguousarray(value, dtype=np.float32)).to(device)
            if isinstance(value, np.ndarray) else value for name, value in side.items()}


def step_bank(originals: ModelBank, step: StepResult, attrs: Mapping[str, Any]) -> ModelBank:
    """The bank of one configuration after one request: its models' weights or predicted logits."""
    return ModelBank(weights=step.weights, model_ids=originals.model_ids, seeds=originals.seeds,
                     train_masks=np.zeros((0, 0), dtype=bool), logits=dict(step.logits),
                     attrs={"arch": originals.attrs.get("arch"), "model_options": originals.attrs.get("model_options"),
                            "unlearn_seconds": step.seconds,
                            "unlearn_examples_per_model": step.examples / step.n_models,
                            "certificates": step.certificates, **attrs})


def apply_method(method: str, originals: ModelBank, dataset: Dataset, forget_set: ForgetSet,
                 method_config: Mapping[str, Any] | None = None, side: Mapping[str, Any] | None = None,
                 seed: int = 0, device: torch.device = torch.device("cpu"),
                 progress: bool = False, models_per_pass: int = 0) -> dict[str, list[ModelBank]]:
    """The library's way to unlearn in memory: configuration label -> the bank after each request,
    with logits on every split. `side` holds the loaded side artifacts the method needs; a
    source-free method is given the forget samples only, as in the workflow. Hyper-parameters a
    method derives from the training recipe come from the bank's recorded one."""
    from unlearnflow.registry import configurations, spec_of
    spec = spec_of(method)
    configs = configurations(method, method_config or {}, originals.attrs.get("training"))
    samples = ForgetSamples.of(forget_set, dataset.x_train, dataset.x_val, dataset.y_val, dataset.num_classes)
    source = RequestSource(samples) if spec.source_free else RequestSource(samples, dataset, forget_set)
    results = unlearn_bank(spec, configs, originals, source, [dict(side or {})], seed, device, progress,
                           models_per_pass)
    return {config.label: [with_logits(step_bank(originals, step, {"method": method, "config": config.label,
                                                                    "hyperparameters": config.hyperparameters,
                                                                    "step": index}), dataset, device)
                           for index, step in enumerate(results[config.label])] for config in configs}


def write_unlearned(path: str | Path, method: str, forget_set: str, originals: ModelBank,
                    configs: Sequence[Configuration], results: Mapping[str, Sequence[StepResult]],
                    attrs: Mapping[str, Any], provenance: Mapping[str, Any]) -> Path:
    """One artifact: per configuration k and step r, ``config_<k>/step_<r>/weights/<name>`` or
    ``.../logits/<split>``, and ``.../certificates`` (JSON) when the method returned some."""
    arrays: dict[str, Any] = {"model_ids": originals.model_ids, "seeds": originals.seeds}
    entries = []
    for k, config in enumerate(configs):
        steps = results[config.label]
        for r, step in enumerate(steps):
            prefix = f"config_{k}/step_{r}"
            arrays.update({f"{prefix}/weights/{name}": value for name, value in step.weights.items()})
            arrays.update({f"{prefix}/logits/{split}": value for split, value in step.logits.items()})
            if step.certificates is not None:
                arrays[f"{prefix}/certificates"] = np.array(json.dumps(step.certificates))
        entries.append({"label": config.label, "hyperparameters": config.hyperparameters,
                        "steps": [{"unlearn_seconds": s.seconds, "unlearn_examples_per_model": s.examples / s.n_models}
                                  for s in steps]})
    model = {key: originals.attrs[key] for key in ("arch", "model_options")}
    return write_artifact(path, "unlearned", arrays, provenance_record=provenance,
                          attrs={"method": method, "forget_set": forget_set, "n_steps": len(entries[0]["steps"]),
                                 "configs": json.dumps(entries), **model, **attrs})


def read_unlearned(path: str | Path, step: int | None = None) -> dict[str, ModelBank]:
    """Configuration label -> the bank after request `step` (0-based; the last by default):
    weights or logits as written, the cost of that step and its certificates in attrs."""
    header = read_artifact(path, "unlearned", names=())
    n_steps, n_configs = header.attrs["n_steps"], len(json.loads(header.attrs["configs"]))
    step = n_steps - 1 if step is None else step
    if not 0 <= step < n_steps:
        raise UserError(f"{path}: unlearned artifact has steps 0..{n_steps - 1}, not {step}")
    other_steps = [f"config_{k}/step_{r}" for k in range(n_configs) for r in range(n_steps) if r != step]
    artifact = read_artifact(path, "unlearned", skip_groups=other_steps)
    shared = {key: value for key, value in artifact.attrs.items() if key not in ("configs", "n_steps")}
    banks = {}
    for k, entry in enumerate(json.loads(artifact.attrs["configs"])):
        prefix = f"config_{k}/step_{step}/"
        group = {name[len(prefix):]: value for name, value in artifact.arrays.items() if name.startswith(prefix)}
        certificates = json.loads(str(group["certificates"])) if "certificates" in group else None
        banks[entry["label"]] = ModelBank(
            weights={name[len("weights/"):]: value for name, value in group.items() if name.startswith("weights/")},
            model_ids=artifact["model_ids"], seeds=artifact["seeds"], train_masks=np.zeros((0, 0), dtype=bool),
            logits={name[len("logits/"):]: value for name, value in group.items() if name.startswith("logits/")},
            attrs={**shared, "role": f"unlearned/{shared['method']}", "config": entry["label"],
                   "hyperparameters": entry["hyperparameters"], "step": step, "certificates": certificates,
                   **entry["steps"][step]})
    if not banks:
        raise UserError(f"{path}: unlearned artifact holds no configuration")
    return banks


def with_logits(bank: ModelBank, dataset: Dataset, device: torch.device) -> ModelBank:
    """`bank` with its models' logits on every split, computed from its weights if it has none."""
    if bank.logits:
        return bank
    models = [model.to(device) for model in bank.load_models(dataset.input_shape, dataset.num_classes)]
    bank.logits = {split: predict_logits_many(models, torch.from_numpy(getattr(dataset, f"x_{split}")).to(device))
                   .cpu().numpy() for split in SPLITS}
    return bank

