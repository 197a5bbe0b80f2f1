"""The orchestrator: one function per workflow stage, reading its input artifacts, calling the
library and writing its outputs. The CLI (:mod:`unlearnflow.cli`) only parses options into the
keyword arguments of these functions; the workflow's rules call the CLI.

Config slices arrive as mappings, so each stage sees only the part of the config it needs.
Each stage checks that what it reads is what it expects (:func:`unlearnflow.core.store.expect`):
the role of every model bank (``original``, ``oracle/<set>``, ``retrain/<set>``, ``subset``,
``ulira_base``) and the lineage recorded in its provenance, the checksums of the data set,
forget set and poisoned labels it was made from, against the files the stage reads with it;
what it writes records its own lineage in turn.
Stages import their heavy modules (scikit-learn, XGBoost, matplotlib) themselves, which keeps
the start-up of every workflow job short. A user mistake is a
:class:`~unlearnflow.errors.UserError`, printed by the CLI as one line.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections import defaultdict
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from unlearnflow.core.artifacts import (
    SPLITS,
    ModelBank,
    concatenate_banks,
    import_bank,
    read_bank,
    read_dataset,
    read_forget_samples,
    read_forget_set,
    train_bank,
    weights_only,
    write_bank,
    write_dataset,
    write_forget_samples,
    write_forget_set,
)
from unlearnflow.core.data import Dataset, load_dataset
from unlearnflow.core.forget_sets import ForgetSamples, ForgetSet, build_forget_set, split_step_name
from unlearnflow.core.models import build_model
from unlearnflow.core.stage_table import STAGES
from unlearnflow.core.store import (
    artifact_kind,
    expect,
    lineage_of,
    provenance,
    read_artifact,
    read_rows,
    write_artifact,
    write_rows,
    write_text,
)
from unlearnflow.core.training import (
    TrainConfig,
    model_seed,
    resolve_device,
    subset_mask,
)
from unlearnflow.errors import UserError
from unlearnflow.metrics.declarations import MAX_ABS_LOGIT


def use_threads(threads: int) -> None:
    if threads:
        torch.set_num_threads(threads)


def experiment_forget_set(path: str, labels_from: str | None, requests: int | None = None,
                          data_lineage: dict[str, str] | None = None) -> ForgetSet:
    """A forget set with the experiment's training labels (in an experiment with a poison set,
    every model trained on its flipped labels, so every forget set is judged against them);
    with `requests`, only its first `requests` requests (a prefix of a sequence). With
    `data_lineage` (:func:`lineage_of` the data set), both must be drawn from that data set."""
    forget_set = read_forget_set(path, data_lineage)
    if labels_from:
        poisoned = read_forget_set(labels_from, data_lineage).train_labels
        forget_set = dataclasses.replace(forget_set, train_labels=poisoned)
    return forget_set.prefix(requests) if requests else forget_set


def experiment_labels(dataset: Dataset, labels_from: str | None,
                      data_lineage: dict[str, str] | None = None) -> np.ndarray:
    """The labels every model of the experiment trains on: a poison set's flipped labels, if any."""
    return read_forget_set(labels_from, data_lineage).train_labels if labels_from else dataset.y_train


def recorded_lineage(path: str, kind: str) -> dict[str, str]:
    """The lineage an artifact records (empty for one written before lineage was recorded)."""
    return dict(read_artifact(path, kind, names=()).provenance.get("lineage") or {})


def model_lineage(data: str, labels_from: str | None, forget_set: str | None = None) -> dict[str, str]:
    """The lineage of models trained on `data` (with the poisoned labels of `labels_from`),
    without `forget_set` when given: what a bank of them must record."""
    return lineage_of(data=data, forget_set=forget_set, labels=labels_from)


def prepare_data(*, spec: Mapping[str, Any], out: str) -> None:
    dataset = load_dataset(spec)
    write_dataset(out, dataset, provenance(spec, {"split_seed": spec.get("seed", 0)}))
    print(f"{dataset.name}: train {len(dataset.y_train)}, val {len(dataset.y_val)}, test {len(dataset.y_test)}, "
          f"{dataset.num_classes} classes, input {dataset.input_shape}")


def extract_features(*, data: str, spec: Mapping[str, Any], out: str, threads: int = 0) -> None:
    """The features of a linear experiment: every split through the backbone, rows of norm <= 1
    (a dataset artifact with the data set's lineage; later stages read it in place of the data)."""
    from unlearnflow.sourcefree.features import extract_features as extract
    use_threads(threads)
    dataset = read_dataset(data)
    features = extract(dataset, spec)
    seeds: dict[str, Any] = {}
    if spec.get("backbone") == "public":
        from unlearnflow.sourcefree.features import backbone_split
        public, private = backbone_split(spec, len(dataset.y_train))
        seeds = {"seed": int(spec.get("seed", 0)), "public_size": len(public), "public_indices": public.tolist(),
                 "private_indices": private.tolist()}
    write_dataset(out, features, provenance(spec, seeds, [data], lineage_of(data=data)))
    print(f"{features.name}: {features.x_train.shape[1]} features, train {len(features.y_train)}, "
          f"val {len(features.y_val)}, test {len(features.y_test)}")


def make_forget_set(*, name: str, spec: Mapping[str, Any], data: str, seed: int, out: str) -> None:
    dataset = read_dataset(data)
    forget_set = build_forget_set(name, spec, dataset.x_train, dataset.y_train, seed)
    write_forget_set(out, forget_set, provenance(spec, {"seed": seed}, [data], lineage_of(data=data)))
    print(f"forget set {name}: {forget_set.kind}, {len(forget_set.indices)} points "
          f"in {len(forget_set.requests)} request(s)")


def make_forget_samples(*, data: str, forget_set: str, labels_from: str | None, out: str) -> None:
    """The forget samples of a forget set and the validation split: a source-free method's input."""
    dataset = read_dataset(data)
    chosen = experiment_forget_set(forget_set, labels_from, data_lineage=lineage_of(data=data))
    samples = ForgetSamples.of(chosen, dataset.x_train, dataset.x_val, dataset.y_val, dataset.num_classes)
    inputs = [data, forget_set] + ([labels_from] if labels_from else [])
    write_forget_samples(out, samples, provenance({}, {}, inputs, model_lineage(data, labels_from, forget_set)))
    print(f"forget samples of {chosen.name}: {len(samples.labels)} in {samples.n_requests} request(s), "
          f"{len(samples.y_val)} validation points")


def train(*, data: str, role: str, model: Mapping[str, Any], training: Mapping[str, Any], seed: int, first_id: int,
          count: int, out: str, forget_set: str | None = None, requests: int | None = None,
          labels_from: str | None = None, subset_fraction: float | None = None, device: str = "auto",
          threads: int = 0, progress: bool = False, models_per_pass: int = 0, state_dicts: Sequence[str] = (),
          store_weights: bool = True) -> None:
    """Train models ``first_id .. first_id + count - 1`` of a role into one bank chunk; with
    `state_dicts` (one file per model), import models trained elsewhere instead
    (:func:`~unlearnflow.core.artifacts.import_bank`; the config's ``originals.state_dicts``).

    The vectorised trainer holds every model of a pass on the device at once; `models_per_pass`
    (0: all) splits the chunk into passes of at most that many models, trained one after the
    other, so that a job of many large models (retraining 100 ResNet-9s) fits on one GPU. A
    model does not depend on the models trained with it, so the bank is the same either way.
    Without `store_weights` the chunk keeps the models' masks and logits alone (subset models:
    the datamodels read nothing else; ``subset_models.store_weights``).
    Linear models of the ``lbfgs`` recipe are trained to optimum one by one
    (:func:`~unlearnflow.sourcefree.linear.train_linear_chunk`).
    """
    from unlearnflow.sourcefree.declarations import is_linear_recipe
    from unlearnflow.sourcefree.linear import train_linear_chunk
    use_threads(threads)
    if models_per_pass < 0:
        raise UserError(f"train: --models-per-pass must be >= 0 (0: all models at once), got {models_per_pass}")
    dataset = read_dataset(data)
    linear = is_linear_recipe(training)
    config = None if linear else TrainConfig.from_mapping(training)
    labels = experiment_labels(dataset, labels_from, lineage_of(data=data))
    n_train = len(dataset.y_train)
    if forget_set:
        without = read_forget_set(forget_set, lineage_of(data=data))
        without = without.prefix(requests) if requests else without
        role, retain = f"{role}/{without.name}", without.retain_mask(n_train)
    else:
        retain = np.ones(n_train, dtype=bool)
    model_ids = list(range(first_id, first_id + count))
    if state_dicts and linear:
        raise UserError("train: linear models (optimizer lbfgs) are trained here, not imported")
    if state_dicts and len(state_dicts) != count:
        raise UserError(f"train: {len(state_dicts)} state dict(s) for {count} model(s)")
    seeds = [model_seed(seed, role, model_id) for model_id in model_ids]
    options = model.get("options", {})
    build = lambda: build_model(model["arch"], dataset.input_shape, dataset.num_classes, **options)  # noqa: E731
    if linear:
        if subset_fraction:
            raise UserError("linear models (optimizer lbfgs) are not trained on subsets")
        bank, seeds = train_linear_chunk(dataset, labels, retain, training, seed, role, model_ids)
    elif state_dicts:
        bank = import_bank(build, model["arch"], options, role, model_ids, seeds, dataset, state_dicts,
                           np.tile(retain, (count, 1)))
    else:
        build()  # fail early, with a clear message, on bad model options
        masks = np.tile(retain, (len(model_ids), 1))
        if subset_fraction:
            masks &= np.stack([subset_mask(model_seed_, n_train, subset_fraction) for model_seed_ in seeds])
        per_pass = models_per_pass or len(model_ids)
        passes = [slice(start, start + per_pass) for start in range(0, len(model_ids), per_pass)]
        banks = [train_bank(build, model["arch"], options, role, model_ids[part], seeds[part], dataset, labels,
                            masks[part], config, resolve_device(device), progress=progress) for part in passes]
        bank = banks[0] if len(banks) == 1 else concatenate_banks(banks)
    if not store_weights:
        bank = dataclasses.replace(bank, weights={})
    inputs = [data] + [path for path in (forget_set, labels_from) if path] + list(state_dicts)
    write_bank(out, bank, provenance({"model": model, "training": dict(training) if linear else config.to_dict()},
                                     {"global_seed": seed, "model_seeds": seeds}, inputs,
                                     model_lineage(data, labels_from, forget_set)))
    accuracy = (bank.logits["test"].argmax(-1) == dataset.y_test).mean()
    print(f"{role}: models {model_ids[0]}..{model_ids[-1]} " + (f"imported from {len(state_dicts)} file(s)" if state_dicts
          else f"trained in {bank.attrs['train_seconds']:.1f} s on {bank.attrs['device']}")
          + f"; mean test accuracy {accuracy:.4f}")


def import_originals(*, data: str, model: Mapping[str, Any], state_dicts: Sequence[str], out: str,
                     weights_out: str | None = None, labels_from: str | None = None, seed: int = 0) -> None:
    """``unlearnflow import-bank``: the original bank of models trained elsewhere, model i from
    ``state_dicts[i]``, and with `weights_out` the models alone, as ``gather_originals`` writes
    them (the config's ``originals.state_dicts`` does the same inside the workflow)."""
    train(data=data, role="original", model=model, training={}, seed=seed, first_id=0, count=len(state_dicts),
          out=out, labels_from=labels_from, state_dicts=state_dicts)
    if weights_out:
        bank = read_bank(out)
        write_bank(weights_out, weights_only(bank), provenance({"role": bank.attrs["role"]}, {}, [out], bank.lineage))


def gather(*, chunks: Sequence[str], out: str, weights_out: str | None = None) -> None:
    """One bank from its chunks; with `weights_out`, also the models alone (no logits, no
    training masks), the bank a source-free method may read."""
    bank = concatenate_banks([read_bank(path) for path in chunks])
    record = provenance({"role": bank.attrs["role"]}, {}, chunks, bank.lineage)
    write_bank(out, bank, record)
    if weights_out:
        write_bank(weights_out, weights_only(bank), record)
    print(f"{bank.attrs['role']}: gathered {len(bank)} models from {len(chunks)} chunk(s)")


def check_side_lineage(side_paths: Mapping[str, Sequence[str]], lineage: Mapping[str, str],
                       originals_lineage: Mapping[str, str]) -> None:
    """Side artifacts made from the roots of this job (issue 19): one of a forget set from the
    forget set's (`lineage`), a shared one (datamodels, PGU's gradient space) from the originals'
    data and labels, else one UserError line naming the file; one that records no lineage passes."""
    from unlearnflow.registry import ARTIFACTS
    for name, paths in side_paths.items():
        artifact = ARTIFACTS[name]
        expected = lineage if "{forget_set}" in artifact.path else originals_lineage
        for path in paths:
            expect(read_artifact(path, STAGES[artifact.stage].kind, names=()), lineage=expected or None)


def parse_side(side: Sequence[str]) -> dict[str, list[str]]:
    """``NAME=PATH`` options -> name -> paths in the order given (one per step of a sequence)."""
    paths: dict[str, list[str]] = defaultdict(list)
    for item in side:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise UserError(f"--side takes NAME=PATH, got {item!r}")
        paths[name].append(path)
    return dict(paths)


def unlearn(*, method: str, method_config: Mapping[str, Any], originals: str, seed: int, out: str,
            data: str | None = None, forget_set: str | None = None, forget_samples: str | None = None,
            labels_from: str | None = None, side: Sequence[str] = (), device: str = "auto", threads: int = 0,
            progress: bool = False, models_per_pass: int = 0) -> None:
    """Unlearn a forget set from every original model, for every configuration of a method and
    every request; a source-free method reads the forget samples, every other one the data. The
    bank's training loops run as one (:mod:`unlearnflow.core.lockstep`), at most `models_per_pass`
    models at once (0: all; 1: one model after the other)."""
    from unlearnflow.registry import EDITS_MODEL, configurations, spec_of
    from unlearnflow.runner import (
        RequestSource,
        load_side,
        precompute_seconds,
        unlearn_bank,
        write_unlearned,
    )
    use_threads(threads)
    spec = spec_of(method)
    side_paths = parse_side(side)
    needed = set(spec.needs_for(method_config))
    if set(side_paths) != needed:
        raise UserError(f"{method} needs the side artifacts {sorted(needed) or 'none'}, "
                        f"got {sorted(side_paths) or 'none'}")
    if spec.source_free:
        if data or forget_set or not forget_samples:
            raise UserError(f"{method} is source-free: give it --forget-samples, not --data or --forget-set")
        source = RequestSource(read_forget_samples(forget_samples))
        lineage = recorded_lineage(forget_samples, "forget_samples")
    else:
        if not (data and forget_set):
            raise UserError(f"{method} needs --data and --forget-set")
        lineage = model_lineage(data, labels_from, forget_set)
        dataset = read_dataset(data)
        chosen = experiment_forget_set(forget_set, labels_from, data_lineage=lineage_of(data=data))
        samples = ForgetSamples.of(chosen, dataset.x_train, dataset.x_val, dataset.y_val, dataset.num_classes)
        source = RequestSource(samples, dataset, chosen)
    originals_lineage = {key: value for key, value in lineage.items() if key != "forget_set"}
    bank = read_bank(originals, with_weights=spec.kind == EDITS_MODEL, role="original",
                     lineage=originals_lineage if lineage else None)
    # hyper-parameters that must equal the models' training recipe come from the bank's record
    configs = configurations(method, method_config, bank.attrs.get("training"))
    check_side_lineage(side_paths, lineage, originals_lineage)
    side_by_step = load_side(side_paths)
    results = unlearn_bank(spec, configs, bank, source, side_by_step, seed, resolve_device(device), progress,
                           models_per_pass)
    inputs = [path for path in (data, forget_set, forget_samples, originals) if path] + [
        path for paths in side_paths.values() for path in paths]
    write_unlearned(out, method, source.samples.name, bank, configs, results,
                    {"precompute_seconds": precompute_seconds(side_by_step[0])},
                    provenance(method_config, {"seed": seed}, inputs, lineage or None))
    for label, steps in results.items():
        for step, result in enumerate(steps):
            where = f" request {step + 1}/{len(steps)}" if len(steps) > 1 else ""
            print(f"{method} [{label}] on {source.samples.name}{where}: {result.seconds / len(bank):.3f} s and "
                  f"{result.examples / result.n_models:.0f} examples per model")


def gradient_space(*, data: str, originals: str, out: str, batch_size: int = 256, device: str = "auto",
                   threads: int = 0, progress: bool = False) -> None:
    """PGU's cache: the factorisation of R R^T of every conv/linear layer of every original model
    over the whole training set (PGU paper, Eq. 2)."""
    from unlearnflow.pgu.gradient_space import compute_gradient_space, write_gradient_space
    use_threads(threads)
    dataset, bank = read_dataset(data), read_bank(originals)
    torch_device = resolve_device(device)
    models = [model.to(torch_device) for model in bank.load_models(dataset.input_shape, dataset.num_classes)]
    space = compute_gradient_space(models, torch.from_numpy(dataset.x_train).to(torch_device), bank.model_ids,
                                   batch_size, progress)
    write_gradient_space(out, space, provenance({"batch_size": batch_size}, {}, [data, originals], bank.lineage))
    print(f"gradient space of {len(space)} models over {len(dataset.x_train)} training points: layers "
          + ", ".join(f"{name} (d={dim})" for name, dim in zip(space.attrs["layers"], space.attrs["dims"]))
          + f"; {space.attrs['precompute_seconds']:.2f} s")


def unlearned_banks(path: str, dataset: Dataset, requests: int | None, device: torch.device, method: str,
                    forget_set: str, lineage: dict[str, str], with_weights: bool = False) -> dict[str, ModelBank]:
    """Configuration label -> bank with logits: a plain model bank (the references: do_nothing's
    originals, retrain's ``retrain/<forget_set>`` bank) or the result of `method` on
    `forget_set` after request `requests` (1-based; the last by default) of an unlearned
    artifact, made from the roots of `lineage`."""
    if artifact_kind(path) == "unlearned":
        from unlearnflow.runner import read_unlearned, with_logits
        expect(read_artifact(path, "unlearned", names=()), lineage=lineage, method=method,
               forget_set=split_step_name(forget_set)[0])
        banks = read_unlearned(path, None if requests is None else requests - 1)
        return {label: with_logits(bank, dataset, device) for label, bank in banks.items()}
    if method == "do_nothing":
        role, lineage = "original", {key: value for key, value in lineage.items() if key != "forget_set"}
    else:
        role = f"{method}/{forget_set}"
    return {"default": read_bank(path, with_weights=with_weights, role=role, lineage=lineage)}


def evaluate(*, data: str, forget_set: str, originals: str, oracles: str, method: Sequence[str],
             unlearned: Sequence[str], out_h5: Sequence[str], out_csv: Sequence[str], ulira: Sequence[str] = (),
             from_scratch: Sequence[str] = (), requests: int | None = None, labels_from: str | None = None,
             seed: int = 0, threads: int = 0, max_abs_logit: float = MAX_ABS_LOGIT) -> None:
    """Every metric of every configuration of each method on one forget set (or prefix of a
    sequence): the data, the references and the oracles are read once for all of them.

    `method`, `unlearned`, `out_h5`, `out_csv` (and `ulira`, when given) are parallel lists, one
    entry per method; `from_scratch` names the methods whose models were not obtained from the
    originals (retraining), whose KLOM is not paired with them; a configuration with an output
    beyond ``±max_abs_logit`` diverged."""
    from unlearnflow.evaluation.evaluate import references
    per_method = [method, unlearned, out_h5, out_csv] + ([ulira] if ulira else [])
    if len({len(paths) for paths in per_method}) != 1:
        raise UserError("evaluate: give one --unlearned, --out-h5, --out-csv (and --ulira, if any) per --method")
    use_threads(threads)
    lineage = model_lineage(data, labels_from, forget_set)
    dataset = read_dataset(data)
    chosen = experiment_forget_set(forget_set, labels_from, requests, lineage_of(data=data))
    # linear models are small, and their weights give the weight distance to the oracles
    linear = read_artifact(originals, "model_bank", names=()).attrs.get("arch") == "linear"
    originals_bank = read_bank(originals, with_weights=linear, role="original",
                               lineage={key: value for key, value in lineage.items() if key != "forget_set"})
    oracles_bank = read_bank(oracles, with_weights=linear, role=f"oracle/{chosen.name}", lineage=lineage)
    shared = references(dataset, chosen, originals_bank, oracles_bank, seed)
    for index, name in enumerate(method):
        banks = unlearned_banks(unlearned[index], dataset, requests, torch.device("cpu"), name, chosen.name, lineage,
                                with_weights=linear)
        _evaluate_method(name, banks, dataset, chosen, originals_bank, oracles_bank, shared,
                         ulira=ulira[index] if ulira else None, from_scratch=name in from_scratch, seed=seed,
                         out_h5=out_h5[index], out_csv=out_csv[index], lineage=lineage,
                         inputs=[data, forget_set, originals, oracles, unlearned[index]], max_abs_logit=max_abs_logit)


def _evaluate_method(method: str, banks: Mapping[str, ModelBank], dataset: Dataset, chosen: ForgetSet,
                     originals_bank: ModelBank, oracles_bank: ModelBank, shared: Any, *, ulira: str | None,
                     from_scratch: bool, seed: int, out_h5: str, out_csv: str, lineage: dict[str, str],
                     inputs: list[str], max_abs_logit: float = MAX_ABS_LOGIT) -> None:
    """Read -> evaluate every configuration (unlearnflow.evaluation.evaluate.evaluate_method) -> write
    the rows and the arrays (the report selects which configuration it shows, from the rows of
    every forget set: unlearnflow.evaluation.selection)."""
    from unlearnflow.evaluation.evaluate import evaluate_method
    from unlearnflow.evaluation.rows import ROW_COLUMNS
    from unlearnflow.evaluation.selection import DEFAULT_CONFIG
    # U-LiRA's shadows run the method's default hyper-parameters
    ulira_accuracy = float(read_rows(ulira)[0]["ulira_accuracy"]) if ulira else math.nan
    results, arrays = evaluate_method(dataset, chosen, originals_bank, oracles_bank, banks, method, shared, seed,
                                      ulira_accuracy, DEFAULT_CONFIG if ulira else "", not from_scratch, max_abs_logit)
    rows = [result.row for result in results]
    write_artifact(out_h5, "evaluation", arrays, provenance_record=provenance({}, {"seed": seed}, inputs, lineage),
                   attrs={"method": method, "forget_set": chosen.name, "configs": [row["config"] for row in rows],
                          "seed": seed})
    write_rows(out_csv, rows, ROW_COLUMNS)
    for result, row in zip(results, rows):
        if result.diverged:
            print(f"{method} [{row['config']}] on {chosen.name}: diverged ({result.diverged}), excluded from selection")
            continue
        print(f"{method} [{row['config']}] on {chosen.name}: KLOM-95 forget {row['klom_forget_p95']:.2f} "
              f"retain {row['klom_retain_p95']:.2f} validation {row['klom_validation_p95']:.2f} "
              f"(noise floor {row['floor_forget_p95']:.2f}/{row['floor_retain_p95']:.2f}/"
              f"{row['floor_validation_p95']:.2f}), W1 selection score {row['selection_score']:.2f} "
              f"(noise floor {row['floor_selection_score']:.2f}), "
              f"test accuracy {row['acc_test']:.4f}")


def ulira(*, method: str, data: str, base: str, spec: Mapping[str, Any], training: Mapping[str, Any],
          method_config: Mapping[str, Any], seed: int, out: str, labels_from: str | None = None,
          side: Sequence[str] = (), device: str = "auto", threads: int = 0, progress: bool = False,
          models_per_pass: int = 0) -> None:
    from unlearnflow.evaluation.ulira import run_ulira
    from unlearnflow.runner import load_side
    use_threads(threads)
    dataset = read_dataset(data)
    base_bank = read_bank(base, role="ulira_base", lineage=model_lineage(data, labels_from))
    labels = experiment_labels(dataset, labels_from, lineage_of(data=data))
    result = run_ulira(method, base_bank, dataset, labels, TrainConfig.from_mapping(training), seed,
                       spec["forget_sets_per_model"], spec["forget_size"], spec["pool_class"], resolve_device(device),
                       pool_size=spec.get("pool_size"), progress=progress, method_config=method_config,
                       side=load_side(parse_side(side))[0], models_per_pass=models_per_pass)
    write_rows(out, [result], list(result))
    print(f"U-LiRA of {method}: attacker accuracy {result['ulira_accuracy']:.3f} (0.5 is ideal)")


def fit_datamodels(*, data: str, subset_models: Sequence[str], spec: Mapping[str, Any], seed: int, out: str,
                   originals: str | None = None, labels_from: str | None = None, device: str = "auto",
                   threads: int = 0, progress: bool = False, chunk: int | None = None, chunks: int = 1) -> None:
    """Fit the datamodels of ``spec["splits"]``' points; with `chunk`, only the `chunk`-th of
    `chunks` contiguous ranges of them, written as a part for :func:`gather_datamodels`."""
    from unlearnflow.dmm.datamodel_set import (
        DATAMODEL_DEFAULTS,
        PART_KIND,
        FitInputs,
        check_splits,
        point_chunks,
        write_datamodels,
    )
    from unlearnflow.dmm.estimators import estimator_of
    use_threads(threads)
    spec = {**DATAMODEL_DEFAULTS, **spec}
    estimator = estimator_of(spec["estimator"])
    dataset = read_dataset(data)
    lineage = model_lineage(data, labels_from)
    train_labels = experiment_labels(dataset, labels_from, lineage_of(data=data))
    labels = np.concatenate([train_labels, dataset.y_val, dataset.y_test])
    sizes = {split: len(getattr(dataset, f"y_{split}")) for split in SPLITS}
    splits = check_splits(spec["splits"])
    if chunk is not None and not 0 <= chunk < chunks:
        raise UserError(f"datamodels: chunk {chunk} is not one of the {chunks} chunks (0 to {chunks - 1})")
    if chunks != 1 and not estimator.scatters:
        raise UserError(f"the {estimator.name} estimator is one job: it cannot be scattered over chunks")
    n_points = sum(sizes[split] for split in splits)
    points = None if chunk is None else point_chunks(n_points, chunks)[chunk]
    # a regression reads the logits of its points alone (every split's points in order)
    read_points = None if points is None or not estimator.regression else _split_parts(sizes, points)
    subset = concatenate_banks([read_bank(path, with_weights=False, role="subset", lineage=lineage,
                                          points=read_points) for path in subset_models])
    torch_device = resolve_device(device)
    checkpoints, point_inputs = (), None
    if estimator.checkpoints:  # the original models, e.g. TRAK's ensemble
        if not originals:
            raise UserError(f"the {estimator.name} estimator needs --originals (its checkpoints)")
        bank = read_bank(originals, role="original", lineage=lineage)
        checkpoints = [model.to(torch_device) for model in bank.load_models(dataset.input_shape, dataset.num_classes)]
        point_inputs = torch.from_numpy(np.concatenate([getattr(dataset, f"x_{split}") for split in SPLITS]))
        point_inputs = point_inputs.to(torch_device)
    logits = np.concatenate([subset.logits[split] for split in SPLITS], axis=1)
    fit_inputs = FitInputs(masks=subset.train_masks, logits=logits, labels=labels, split_sizes=sizes, splits=splits,
                           logits_from=0 if read_points is None else points[0],
                           heldout_models=spec["heldout_models"], outputs=spec["outputs"], seed=seed,
                           device=str(torch_device), points=points, checkpoints=checkpoints, inputs=point_inputs,
                           progress=progress)
    result = estimator.load_fit()(estimator.name, spec.get("options", {}), fit_inputs)
    # The one-time cost DMM amortises (the paper does not count it per request): fitting, plus
    # training the subset models for a regression estimator (they only score the others).
    result.attrs["subset_train_seconds"] = subset.attrs["train_seconds"]
    inputs = [data, *subset_models] + [path for path in (labels_from, originals) if path]
    record = provenance(spec, {"seed": seed}, inputs, lineage)
    if chunk is not None:
        write_datamodels(out, result, record, kind=PART_KIND)
        print(f"datamodels ({estimator.name}) of points {points[0]} to {points[1] - 1} (chunk {chunk} of {chunks}) "
              f"written to {out}: " + ", ".join(f"{name} {value:.3f}" for name, value in result.summary().items()))
        return
    _write_gathered(out, [result], record)


def _split_parts(sizes: Mapping[str, int], points: tuple[int, int]) -> dict[str, slice]:
    """The slice of each split's points (train, val, test in order) inside `points` = (start, stop)."""
    parts, first = {}, 0
    for split in SPLITS:
        parts[split] = slice(min(max(points[0] - first, 0), sizes[split]), min(max(points[1] - first, 0), sizes[split]))
        first += sizes[split]
    return parts


def gather_datamodels(*, parts: Sequence[str], out: str) -> None:
    """The datamodels of every fitted point from the parts of a scattered fit (one artifact)."""
    from unlearnflow.dmm.datamodel_set import PART_KIND, read_datamodels
    records = [read_artifact(path, PART_KIND, names=()).provenance for path in parts]
    if any(record.get("lineage") != records[0].get("lineage") for record in records):
        raise UserError("datamodels: the parts were fitted on different data or labels; refit them")
    first = records[0]
    record = provenance(first.get("config"), first.get("seeds"), parts, first.get("lineage"))
    _write_gathered(out, [read_datamodels(path, kind=PART_KIND) for path in parts], record)


def _write_gathered(out: str, parts: Sequence[Any], record: Mapping[str, Any]) -> None:
    from unlearnflow.dmm.datamodel_set import gather_datamodel_sets, write_datamodels
    from unlearnflow.dmm.estimators import estimator_of
    result = gather_datamodel_sets(parts)
    fit_seconds = [value for key, value in result.attrs.items() if key.endswith("_fit_seconds")]
    result.attrs["precompute_seconds"] = sum(fit_seconds)
    if estimator_of(result.estimator).regression:
        result.attrs["precompute_seconds"] += result.attrs["subset_train_seconds"]
    write_datamodels(out, result, record)
    print(f"datamodels ({result.estimator}) of {result.attrs['points'][1]} points from {len(parts)} job(s) written "
          f"to {out}: " + ", ".join(f"{name} {value:.3f}" for name, value in result.summary().items()))


def calibrate_datamodels(*, datamodels: str, forget_set: str, originals: str, oracles: str, out: str,
                         labels_from: str | None = None) -> None:
    from unlearnflow.dmm.datamodel_set import (
        calibrate,
        read_datamodels,
        write_calibration,
    )
    roots = recorded_lineage(forget_set, "forget_set") or None  # the data set it was drawn from
    chosen = experiment_forget_set(forget_set, labels_from, data_lineage=roots)
    lineage = roots and {**roots, **lineage_of(labels=labels_from)}
    expect(read_artifact(datamodels, "datamodels", names=()), lineage=lineage)
    fitted = read_datamodels(datamodels)
    originals_bank = read_bank(originals, with_weights=False, role="original", lineage=lineage)
    oracles_bank = read_bank(oracles, with_weights=False, role=f"oracle/{chosen.name}",
                             lineage=lineage and {**lineage, **lineage_of(forget_set=forget_set)})
    scales = calibrate(fitted, originals_bank.logits["train"], oracles_bank.logits["train"], chosen.train_labels,
                       chosen.indices)
    inputs = [datamodels, forget_set, originals, oracles]
    write_calibration(out, scales, chosen.name, provenance({}, {}, inputs))
    print(f"datamodel scales calibrated on {chosen.name} ({len(chosen.indices)} points): "
          + ", ".join(f"{construction} {scale:.3f}" for construction, scale in scales.items()))


def make_report(*, out_dir: str, csv: Sequence[str], evaluations: Sequence[str], side: Sequence[str] = (),
                accuracy_guard: float | None = None, selection_set: str | None = None, threads: int = 1) -> None:
    """The summary tables and figures; the shared side artifacts of the methods (the datamodels
    and their calibration) get a section on their quality and one-time cost, and every side
    artifact that records its ``precompute_seconds`` (PGU's gradient space) a line on its cost.
    Each method's configuration shown per forget set is chosen without that set's oracles
    (:mod:`unlearnflow.evaluation.selection`: `accuracy_guard`, default half a point, and the
    optional `selection_set`); the bootstrap intervals the report computes run `threads` at a time."""
    from unlearnflow.evaluation.selection import DEFAULT_ACCURACY_GUARD
    from unlearnflow.registry import ARTIFACTS
    from unlearnflow.report.summary import write_report
    side_paths = {name: paths[0] for name, paths in parse_side(side).items()}
    one_time = {}
    for name, path in side_paths.items():
        attrs = read_artifact(path, artifact_kind(path), names=()).attrs
        if "precompute_seconds" in attrs:
            description = ARTIFACTS[name].description if name in ARTIFACTS else name
            one_time[name] = {"description": description, **{key: attrs[key] for key in (
                "precompute_seconds", "seconds_per_model") if key in attrs}}
    datamodels = None
    if "datamodels" in side_paths:
        from unlearnflow.dmm.datamodel_set import read_calibration
        datamodels = dict(read_artifact(side_paths["datamodels"], "datamodels", names=()).attrs)
        calibration = side_paths.get("calibration")
        datamodels["scales"] = read_calibration(calibration) if calibration else None
    guard = DEFAULT_ACCURACY_GUARD if accuracy_guard is None else accuracy_guard
    written = write_report(csv, evaluations, out_dir, datamodels, one_time, accuracy_guard=guard,
                           selection_set=selection_set, threads=threads)
    print(f"report: wrote {len(written)} files to {out_dir}")


def pgu_table(*, summaries: Sequence[str], acceptance: str | None = None, configurations: bool = False,
              out: str | None = None) -> None:
    """The PGU paper's Tables 1-4 (:mod:`unlearnflow.report.pgu_tables`) from finished reports."""
    from unlearnflow.report.pgu_tables import pgu_tables, read_summaries
    _write_or_print(pgu_tables(read_summaries(summaries), acceptance, configurations), out)


def sourcefree_table(*, summaries: Sequence[str], out: str | None = None) -> None:
    """The source-free paper's tables (:mod:`unlearnflow.report.sourcefree_tables`) from finished reports."""
    from unlearnflow.report.sourcefree_tables import sourcefree_tables
    _write_or_print(sourcefree_tables(summaries), out)


def snapshot(*, name: str, summary: str, config: str, run_command: str | None = None, machine: str | None = None,
             commit: str | None = None, root: str = ".") -> None:
    """A results snapshot under docs/results/ (:mod:`unlearnflow.report.published`) from a finished report."""
    from unlearnflow.report.published import make_snapshot
    directory = make_snapshot(name=name, summary=summary, config=config, command=run_command, machine=machine,
                              commit=commit, root=root)
    print(f"wrote {directory}")


def tables(*, root: str = ".", check: bool = False) -> int:
    """Render README.md's and docs' table blocks from their snapshots (:mod:`unlearnflow.report.published`);
    with `check`, write nothing and return 1 when a block's committed text differs."""
    from unlearnflow.report.published import publish
    blocks, differing = publish(root, check)
    for line in differing:
        print(line)
    if check and differing:
        print(f"{len(differing)} of {blocks} table(s) differ from their snapshots; "
              "python -m unlearnflow tables rewrites them")
        return 1
    print(f"{blocks} table(s) {'agree with their snapshots' if check else f'rendered, {len(differing)} rewritten'}")
    return 0


def _write_or_print(text: str, out: str | None) -> None:
    """A printed table to `out`, or to standard output without one."""
    if out:
        Path(out).write_text(text + "\n")
    else:
        print(text)


def make_request_samples(*, request: str, data: str, out: str, labels_from: str | None = None) -> None:
    """A deletion request's samples under the experiment's labels, and the validation split: what
    the request's job reads when its method is source-free (this is the request's one job that
    reads the data set)."""
    from unlearnflow.ops.ledger import request_samples, write_request_samples
    from unlearnflow.ops.requests import read_request
    asked = read_request(request)
    dataset = read_dataset(data)
    samples = request_samples(asked, dataset, experiment_labels(dataset, labels_from, lineage_of(data=data)))
    inputs = [data, request] + ([labels_from] if labels_from else [])
    write_request_samples(out, samples, asked, provenance({}, {}, inputs, model_lineage(data, labels_from)))
    print(f"request {asked['name']}: {len(samples.labels)} samples and {len(samples.y_val)} validation points")


def deletion_request(*, request: str, models: str, ledger_dir: str, samples: str | None = None,
                     data: str | None = None, labels_from: str | None = None, side: Sequence[str] = (),
                     device: str = "cpu", threads: int = 0, receipt: str | None = None) -> None:
    """One deletion request against a model's ledger: the new head model and its certificate, then
    its `receipt` (the workflow's output of the job; a rerun of a processed request writes it alone).
    A source-free method reads the request's extracted samples (`samples`), any other the data set."""
    from unlearnflow.ops.ledger import process_request, read_request_samples, request_samples
    from unlearnflow.ops.requests import read_request, request_hash
    use_threads(threads)
    if bool(samples) == bool(data) or (samples and labels_from):
        raise UserError("deletion-request: give either --samples (the request's extracted samples) or --data "
                        "(with --labels-from in an experiment with a poison set)")
    asked = read_request(request)
    training_set = None
    if samples:
        request_set, lineage = read_request_samples(samples, asked)
    else:
        dataset = read_dataset(data)
        labels = experiment_labels(dataset, labels_from, lineage_of(data=data))
        request_set, training_set = request_samples(asked, dataset, labels), (dataset.x_train, labels)
        lineage = model_lineage(data, labels_from)
    certificate = process_request(request=request, models=models, ledger_dir=ledger_dir, samples=request_set,
                                  training_set=training_set, lineage=lineage, device=str(resolve_device(device)),
                                  side_paths={name: paths[0] for name, paths in parse_side(side).items()})
    if receipt:
        write_text(receipt, json.dumps({"request": asked["name"], "model": asked["model"],
                                        "request_hash": request_hash(asked),
                                        "certificate": str(Path(ledger_dir) / f"{asked['name']}.json")}, indent=2))
    measured = certificate["measured"]
    print(f"request {certificate['request']}: {certificate['method']} forgot {len(certificate['samples'])} "
          f"sample(s) of model {certificate['model']} in {certificate['wall_seconds']:.2f} s; forget accuracy "
          f"{measured['before']['forget']['accuracy']:.3f} -> {measured['after']['forget']['accuracy']:.3f}, "
          f"validation {measured['before']['validation']['accuracy']:.3f} -> "
          f"{measured['after']['validation']['accuracy']:.3f}")


def check_config(*, config_file: str, schema: str | None = None) -> None:
    """Validate a config file as the workflow does, every experiment of it (Snakemake itself reports
    a YAML syntax error in a --configfile without its place; this names the line and column)."""
    from unlearnflow.config import load_config_file, load_schema, validated_experiments
    schema = schema or str(Path(__file__).resolve().parents[2] / "workflow" / "schemas" / "config.schema.yaml")
    if not Path(schema).is_file():
        raise UserError(f"{schema}: no config schema here; give --schema workflow/schemas/config.schema.yaml")
    for config in validated_experiments(load_config_file(config_file), load_schema(schema)).values():
        print(f"{config_file}: valid (experiment {config['experiment']}, forget sets "
              f"{', '.join(config['forget_sets'])}, methods {', '.join(config['methods']) or 'references only'})")


def estimate(*, measured: str, planned: str, directory: str = ".", planned_data: str | None = None,
             speedup: float = 1.0, snakefile: str | None = None) -> None:
    """Print the planned config's predicted core-hours, GPU-hours and disk per stage, scaled from
    the benchmark files of the measured config's finished run (:mod:`unlearnflow.ops.estimate`)."""
    from unlearnflow.ops.estimate import estimate as predict_cost
    _, table = predict_cost(measured, planned, directory=directory, planned_data=planned_data, speedup=speedup,
                            snakefile=snakefile)
    print(table)


def theory(*, panel: str, out: str) -> None:
    from unlearnflow.dmm.ridge_theory import (
        PAPER_SETTINGS,
        plot_experiment,
        run_experiment,
    )
    if panel not in PAPER_SETTINGS:
        raise UserError(f"unknown panel {panel!r} (panels: {', '.join(PAPER_SETTINGS)})")
    setting = PAPER_SETTINGS[panel]
    curves = run_experiment(setting)
    plot_experiment(curves, out, setting)
    print(f"{panel}: " + ", ".join(f"{name} ends at {curve.distance[-1]:.2e}" for name, curve in curves.items()))
