"""Command line of unlearnflow: ``python -m unlearnflow COMMAND ...``; the workflow's rules call it.

Config slices arrive as JSON strings, so each command sees only the part of the config it needs.
Commands import their heavy modules (scikit-learn, XGBoost, matplotlib) themselves, which keeps
the start-up of every workflow job short.
A user mistake (:class:`~unlearnflow.errors.UserError`) prints one line and exits with status 2.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
from typing import Any, Sequence

import numpy as np
import torch

from . import __version__
from .artifacts import (SPLITS, ModelBank, concatenate_banks, read_bank, read_dataset, read_forget_set, train_bank,
                        write_bank, write_dataset, write_forget_set)
from .data import load_dataset
from .errors import UserError
from .forget_sets import ForgetSet, build_forget_set
from .models import build_model
from .store import STAGE_VERSIONS, artifact_kind, provenance, read_artifact, read_rows, write_artifact, write_rows
from .training import TrainConfig, model_seed, resolve_device, subset_mask


def _json(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise UserError(f"expected a JSON value, got {text!r} ({error.msg})") from error


def _check_version(stage: str, version: int | None) -> None:
    """Rules pass the stage version they were written for; a mismatch means a stale workflow."""
    if version is not None and version != STAGE_VERSIONS[stage]:
        raise UserError(f"the workflow asks for {stage} stage version {version}, the library writes "
                        f"version {STAGE_VERSIONS[stage]}; update the workflow's rules and the library together")


def experiment_forget_set(path: str, labels_from: str | None) -> ForgetSet:
    """A forget set with the experiment's training labels: in an experiment with a poison set,
    every model trained on its flipped labels, so every forget set is judged against them."""
    forget_set = read_forget_set(path)
    return dataclasses.replace(forget_set, train_labels=read_forget_set(labels_from).train_labels) if labels_from \
        else forget_set


def prepare_data(args: argparse.Namespace) -> None:
    spec = _json(args.spec)
    dataset = load_dataset(spec)
    write_dataset(args.out, dataset, provenance(spec, {"split_seed": spec.get("seed", 0)}))
    print(f"{dataset.name}: train {len(dataset.y_train)}, val {len(dataset.y_val)}, test {len(dataset.y_test)}, "
          f"{dataset.num_classes} classes, input {dataset.input_shape}")


def make_forget_set(args: argparse.Namespace) -> None:
    spec = _json(args.spec)
    dataset = read_dataset(args.data)
    forget_set = build_forget_set(args.name, spec, dataset.x_train, dataset.y_train, args.seed)
    write_forget_set(args.out, forget_set, provenance(spec, {"seed": args.seed}, [args.data]))
    print(f"forget set {args.name}: {forget_set.kind}, {len(forget_set.indices)} points "
          f"in {len(forget_set.requests)} request(s)")


def train(args: argparse.Namespace) -> None:
    use_threads(args.threads)
    dataset = read_dataset(args.data)
    model_spec, config = _json(args.model), TrainConfig.from_mapping(_json(args.training))
    labels = experiment_labels(dataset, args.labels_from)
    n_train = len(dataset.y_train)
    if args.forget_set:
        forget_set = read_forget_set(args.forget_set)
        role = f"{args.role}/{forget_set.name}"
        retain = forget_set.retain_mask(n_train)
    else:
        role, retain = args.role, np.ones(n_train, dtype=bool)
    model_ids = list(range(args.first_id, args.first_id + args.count))
    seeds = [model_seed(args.seed, role, model_id) for model_id in model_ids]
    options = model_spec.get("options", {})
    build = lambda: build_model(model_spec["arch"], dataset.input_shape, dataset.num_classes, **options)  # noqa: E731
    build()  # fail early, with a clear message, on bad model options
    masks = np.tile(retain, (len(model_ids), 1))
    if args.subset_fraction:
        masks &= np.stack([subset_mask(seed, n_train, args.subset_fraction) for seed in seeds])
    bank = train_bank(build, model_spec["arch"], options, role, model_ids, seeds, dataset, labels, masks, config,
                      resolve_device(args.device), progress=args.progress)
    inputs = [args.data] + [p for p in (args.forget_set, args.labels_from) if p]
    write_bank(args.out, bank, provenance({"model": model_spec, "training": config.to_dict()},
                                          {"global_seed": args.seed, "model_seeds": seeds}, inputs))
    accuracy = (bank.logits["test"].argmax(-1) == dataset.y_test).mean()
    print(f"{role}: models {model_ids[0]}..{model_ids[-1]} trained in {bank.attrs['train_seconds']:.1f} s "
          f"on {bank.attrs['device']}; mean test accuracy {accuracy:.4f}")


def unlearn(args: argparse.Namespace) -> None:
    from .methods import DATAMODEL_METHODS, PREDICTORS
    from .unlearning import (configurations, datamodel_targets, oracle_targets, paired_targets, predict_bank,
                             unlearn_bank, write_unlearned)
    use_threads(args.threads)
    spec = _json(args.spec)
    dataset, forget_set = read_dataset(args.data), experiment_forget_set(args.forget_set, args.labels_from)
    originals = read_bank(args.originals, with_weights=args.method not in PREDICTORS)
    configs = configurations(args.method, spec.get("hyperparameters", {}), spec.get("grid", {}))
    given = [name for name in ("oracles", "paired_targets", "datamodels") if getattr(args, name)]
    if len(given) > 1 or (args.calibration and not args.datamodels):
        raise UserError("give at most one target source (--oracles, --paired-targets or --datamodels); "
                        "--calibration goes with --datamodels")
    if (args.method in DATAMODEL_METHODS) != bool(args.datamodels):
        raise UserError(f"--datamodels is for {' and '.join(sorted(DATAMODEL_METHODS))}, which need it; "
                        f"got method {args.method} {'with' if args.datamodels else 'without'} it")
    targets, attrs = None, {}
    if args.oracles:
        targets = oracle_targets(read_bank(args.oracles, with_weights=False))
    if args.paired_targets:
        targets = paired_targets(read_bank(args.paired_targets, with_weights=False), originals)
    if args.datamodels:
        datamodels, calibration = read_datamodel_set(args.datamodels, args.calibration, dataset)
        effects = datamodels.forget_effects(forget_set.indices, calibration)
        attrs = {"precompute_seconds": datamodels.attrs["precompute_seconds"], "datamodels": datamodels.estimator,
                 "calibration": calibration or {}}
        if args.method in PREDICTORS:
            banks = predict_bank(originals, dataset, forget_set, configs, effects, attrs)
        else:
            targets = datamodel_targets(originals, forget_set, effects)
    if args.method not in PREDICTORS:
        banks = unlearn_bank(args.method, originals, dataset, forget_set, configs, args.seed,
                             resolve_device(args.device), targets=targets, progress=args.progress, attrs=attrs)
    inputs = [args.data, args.forget_set, args.originals] + [
        p for p in (args.oracles, args.paired_targets, args.datamodels, args.calibration) if p]
    write_unlearned(args.out, args.method, forget_set.name, banks, provenance(spec, {"seed": args.seed}, inputs))
    for label, bank in banks.items():
        print(f"{args.method} [{label}] on {forget_set.name}: {bank.attrs['unlearn_seconds'] / len(bank):.3f} s "
              f"and {bank.attrs['unlearn_examples_per_model']:.0f} examples per model")


def read_datamodel_set(path: str, calibration_path: str | None, dataset) -> tuple[Any, dict[str, float] | None]:
    """The datamodels (checked against the data set's splits) and their calibrated scales."""
    from .attribution import read_calibration, read_datamodels
    datamodels = read_datamodels(path)
    sizes = {split: len(getattr(dataset, f"y_{split}")) for split in SPLITS}
    if datamodels.split_sizes != sizes:
        raise UserError(f"{path}: datamodels of splits {datamodels.split_sizes}, the data set has {sizes}; "
                        "refit them (fit-datamodels) on this data set")
    return datamodels, read_calibration(calibration_path) if calibration_path else None


def experiment_labels(dataset, labels_from: str | None) -> np.ndarray:
    """The labels every model of the experiment trains on: a poison set's flipped labels, if any."""
    return read_forget_set(labels_from).train_labels if labels_from else dataset.y_train


def fit_datamodels(args: argparse.Namespace) -> None:
    from .attribution import DATAMODEL_DEFAULTS, fit_datamodel_set, trak_datamodel_set, write_datamodels
    use_threads(args.threads)
    spec = {**DATAMODEL_DEFAULTS, **_json(args.spec)}
    dataset = read_dataset(args.data)
    train_labels = experiment_labels(dataset, args.labels_from)
    labels = np.concatenate([train_labels, dataset.y_val, dataset.y_test])
    sizes = {split: len(getattr(dataset, f"y_{split}")) for split in SPLITS}
    subset = concatenate_banks([read_bank(path, with_weights=False) for path in args.subset_models])
    logits = np.concatenate([subset.logits[split] for split in SPLITS], axis=1)
    estimator = spec["estimator"]
    device = resolve_device(args.device)
    if estimator == "trak":  # every subset model scores TRAK's estimate; none is fitted on
        if not args.originals:
            raise UserError("the trak estimator needs --originals (its checkpoints)")
        originals = read_bank(args.originals)
        models = [model.to(device) for model in originals.load_models(dataset.input_shape, dataset.num_classes)]
        x_all = torch.from_numpy(np.concatenate([getattr(dataset, f"x_{split}") for split in SPLITS])).to(device)
        result = trak_datamodel_set(models, x_all[: sizes["train"]], train_labels, x_all, labels, sizes,
                                    subset.train_masks, logits, spec.get("options", {}), args.seed, args.progress)
    else:
        result = fit_datamodel_set(subset.train_masks, logits, labels, sizes, estimator, spec["heldout_models"],
                                   spec.get("options", {}), args.seed, str(device), outputs=spec["outputs"])
    # The one-time cost DMM amortises (the paper does not count it per request): fitting, plus
    # training the subset models for the regression estimators (TRAK's only score it).
    result.attrs["subset_train_seconds"] = subset.attrs["train_seconds"]
    fit_seconds = [value for key, value in result.attrs.items() if key.endswith("_fit_seconds")]
    result.attrs["precompute_seconds"] = sum(fit_seconds)
    if estimator != "trak":
        result.attrs["precompute_seconds"] += subset.attrs["train_seconds"]
    inputs = [args.data, *args.subset_models] + [p for p in (args.labels_from, args.originals) if p]
    write_datamodels(args.out, result, provenance(spec, {"seed": args.seed}, inputs))
    print(f"datamodels ({estimator}) written to {args.out}: " + ", ".join(
        f"{name} {value:.3f}" for name, value in result.summary().items()))


def calibrate_datamodels(args: argparse.Namespace) -> None:
    from .attribution import calibrate, read_datamodels, write_calibration
    datamodels = read_datamodels(args.datamodels)
    forget_set = experiment_forget_set(args.forget_set, args.labels_from)
    originals, oracles = (read_bank(path, with_weights=False) for path in (args.originals, args.oracles))
    scales = calibrate(datamodels, originals.logits["train"], oracles.logits["train"], forget_set.train_labels,
                       forget_set.indices)
    inputs = [args.datamodels, args.forget_set, args.originals, args.oracles]
    write_calibration(args.out, scales, forget_set.name, provenance({}, {}, inputs))
    print(f"datamodel scales calibrated on {forget_set.name} ({len(forget_set.indices)} points): "
          + ", ".join(f"{construction} {scale:.3f}" for construction, scale in scales.items()))


def unlearned_banks(path: str) -> dict[str, ModelBank]:
    """Configuration label -> bank: a plain model bank (references) or an unlearned artifact."""
    if artifact_kind(path) == "unlearned":
        from .unlearning import read_unlearned
        return read_unlearned(path)
    return {"default": read_bank(path, with_weights=False)}


def evaluate_result(args: argparse.Namespace) -> None:
    from .evaluation import ROW_COLUMNS, evaluate
    dataset, forget_set = read_dataset(args.data), experiment_forget_set(args.forget_set, args.labels_from)
    originals, oracles = (read_bank(path, with_weights=False) for path in (args.originals, args.oracles))
    ulira = float(read_rows(args.ulira)[0]["ulira_accuracy"]) if args.ulira else math.nan
    results = [evaluate(dataset, forget_set, originals, oracles, bank, args.method, label, seed=args.seed,
                        ulira_accuracy=ulira, paired_with_originals=not args.from_scratch)
               for label, bank in unlearned_banks(args.unlearned).items()]
    best = min(results, key=lambda result: result.row["selection_score"])
    inputs = [args.data, args.forget_set, args.originals, args.oracles, args.unlearned]
    write_artifact(args.out_h5, "evaluation", best.arrays, provenance_record=provenance({}, {"seed": args.seed}, inputs),
                   attrs={"method": args.method, "config": best.row["config"], "forget_set": forget_set.name})
    write_rows(args.out_csv, [result.row for result in results], ROW_COLUMNS)
    for row in (result.row for result in results):
        print(f"{args.method} [{row['config']}] on {forget_set.name}: KLOM-95 forget {row['klom_forget_p95']:.2f} "
              f"retain {row['klom_retain_p95']:.2f} validation {row['klom_validation_p95']:.2f} "
              f"(noise floor {row['floor_forget_p95']:.2f}/{row['floor_retain_p95']:.2f}/"
              f"{row['floor_validation_p95']:.2f}), selection {row['selection_score']:.2f}, "
              f"test accuracy {row['acc_test']:.4f}")


def ulira(args: argparse.Namespace) -> None:
    from .shadow import run_ulira
    use_threads(args.threads)
    dataset, base = read_dataset(args.data), read_bank(args.base)
    labels = experiment_labels(dataset, args.labels_from)
    spec = _json(args.spec)
    effects_of = None
    if args.datamodels:
        datamodels, calibration = read_datamodel_set(args.datamodels, args.calibration, dataset)
        train_rows = slice(0, len(labels))

        def effects_of(forget: np.ndarray):
            return datamodels.forget_effects(forget, calibration).slice(train_rows)
    result = run_ulira(args.method, base, dataset, labels, TrainConfig.from_mapping(_json(args.training)),
                       args.seed, spec["forget_sets_per_model"], spec["forget_size"], spec["pool_class"],
                       resolve_device(args.device), pool_size=spec.get("pool_size"), progress=args.progress,
                       hyperparameters=_json(args.method_spec).get("hyperparameters", {}),
                       needs_targets="targets" in _json(args.method_spec), effects_of=effects_of)
    write_rows(args.out, [result], list(result))
    print(f"U-LiRA of {args.method}: attacker accuracy {result['ulira_accuracy']:.3f} (0.5 is ideal)")


def make_report(args: argparse.Namespace) -> None:
    from .report import write_report
    datamodels = None
    if args.datamodels:
        from .attribution import read_calibration
        datamodels = dict(read_artifact(args.datamodels, "datamodels", names=()).attrs)
        datamodels["scales"] = read_calibration(args.calibration) if args.calibration else None
    written = write_report(args.csv, args.evaluations, args.out_dir, datamodels)
    print(f"report: wrote {len(written)} files to {args.out_dir}")


def theory(args: argparse.Namespace) -> None:
    from .theory import PAPER_SETTINGS, plot_experiment, run_experiment
    if args.panel not in PAPER_SETTINGS:
        raise UserError(f"unknown panel {args.panel!r} (panels: {', '.join(PAPER_SETTINGS)})")
    setting = PAPER_SETTINGS[args.panel]
    curves = run_experiment(setting)
    plot_experiment(curves, args.out, setting)
    print(f"{args.panel}: " + ", ".join(f"{name} ends at {curve.distance[-1]:.2e}" for name, curve in curves.items()))


def gather(args: argparse.Namespace) -> None:
    bank = concatenate_banks([read_bank(path) for path in args.chunks])
    write_bank(args.out, bank, provenance({"role": bank.attrs["role"]}, {}, args.chunks))
    print(f"{bank.attrs['role']}: gathered {len(bank)} models from {len(args.chunks)} chunk(s)")


def torch_options(sub: argparse.ArgumentParser) -> None:
    """Options of every command that runs models: device, CPU threads, progress bars."""
    sub.add_argument("--device", default="auto", help="auto, cpu or cuda")
    sub.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    sub.add_argument("--progress", action="store_true", help="show progress bars on stderr")


def forget_set_options(sub: argparse.ArgumentParser) -> None:
    """The inputs of every command that works on one forget set of the experiment's originals."""
    sub.add_argument("--data", required=True, help="dataset artifact")
    sub.add_argument("--forget-set", required=True)
    sub.add_argument("--originals", required=True, help="bank of the original models")
    labels_option(sub)


def labels_option(sub: argparse.ArgumentParser) -> None:
    """The option of every command that needs the experiment's training labels."""
    sub.add_argument("--labels-from", help="poison forget set whose labels the experiment trains on")


def use_threads(threads: int) -> None:
    if threads:
        torch.set_num_threads(threads)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="unlearnflow", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=__version__)
    commands = parser.add_subparsers(dest="command", required=True)

    def command(name: str, function, help_text: str, stage: str | None = None) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help_text)
        sub.set_defaults(function=function, stage=stage)
        if stage:
            sub.add_argument("--stage-version", type=int, help="stage version the calling rule expects")
        return sub

    sub = command("prepare-data", prepare_data, "load, split and normalise a data set", "dataset")
    sub.add_argument("--spec", required=True, help="JSON data config slice")
    sub.add_argument("--out", required=True)

    sub = command("forget-set", make_forget_set, "build one named forget set", "forget_set")
    sub.add_argument("--name", required=True)
    sub.add_argument("--spec", required=True, help="JSON forget-set config slice")
    sub.add_argument("--data", required=True, help="dataset artifact")
    sub.add_argument("--seed", type=int, required=True)
    sub.add_argument("--out", required=True)

    sub = command("train", train, "train a chunk of a model bank (vectorised)", "model_bank")
    sub.add_argument("--role", default="original",
                     help="role of the models, seeds depend on it (with --forget-set: ROLE/FORGET_SET)")
    sub.add_argument("--data", required=True, help="dataset artifact")
    sub.add_argument("--forget-set", help="retrain without this forget set (oracles)")
    labels_option(sub)
    sub.add_argument("--model", required=True, help="JSON model config slice")
    sub.add_argument("--training", required=True, help="JSON training config slice")
    sub.add_argument("--seed", type=int, required=True, help="global seed")
    sub.add_argument("--subset-fraction", type=float,
                     help="train each model on a random subset of this fraction (mask drawn from its seed)")
    sub.add_argument("--first-id", type=int, required=True)
    sub.add_argument("--count", type=int, required=True)
    torch_options(sub)
    sub.add_argument("--out", required=True)

    sub = command("evaluate", evaluate_result, "evaluate one unlearned bank against the oracles", "evaluation")
    forget_set_options(sub)
    sub.add_argument("--oracles", required=True)
    sub.add_argument("--unlearned", required=True)
    sub.add_argument("--method", required=True)
    sub.add_argument("--from-scratch", action="store_true",
                     help="the unlearned models were not obtained from the original models (retraining)")
    sub.add_argument("--ulira", help="CSV with the method's U-LiRA accuracy")
    sub.add_argument("--seed", type=int, default=0)
    sub.add_argument("--out-h5", required=True)
    sub.add_argument("--out-csv", required=True)

    sub = command("unlearn", unlearn, "unlearn a forget set from every original model", "unlearned")
    sub.add_argument("--method", required=True)
    forget_set_options(sub)
    sub.add_argument("--oracles", help="oracle bank whose mean logits are the targets (oracle matching check)")
    sub.add_argument("--paired-targets", help="bank retrained without the forget set; model k's logits are original "
                     "model k's targets (oracle matching check)")
    sub.add_argument("--datamodels", help="datamodels artifact (dm_direct predictions, dmm targets)")
    sub.add_argument("--calibration", help="datamodel calibration artifact (scales of calibrated targets)")
    sub.add_argument("--spec", default="{}", help="JSON: hyperparameters (defaults overrides) and grid")
    sub.add_argument("--seed", type=int, required=True)
    torch_options(sub)
    sub.add_argument("--out", required=True)

    sub = command("fit-datamodels", fit_datamodels, "fit the experiment's datamodels", "datamodels")
    sub.add_argument("--data", required=True, help="dataset artifact")
    labels_option(sub)
    sub.add_argument("--subset-models", nargs="+", required=True, help="chunks of the subset-model bank")
    sub.add_argument("--originals", help="original bank (the trak estimator's checkpoints)")
    sub.add_argument("--spec", required=True, help="JSON datamodels config slice")
    sub.add_argument("--seed", type=int, required=True)
    torch_options(sub)
    sub.add_argument("--out", required=True)

    sub = command("calibrate-datamodels", calibrate_datamodels,
                  "fit the datamodels' scale on a held-out forget set's oracles", "datamodel_calibration")
    sub.add_argument("--datamodels", required=True)
    sub.add_argument("--forget-set", required=True, help="the held-out calibration forget set")
    sub.add_argument("--originals", required=True)
    sub.add_argument("--oracles", required=True, help="the calibration forget set's oracles")
    labels_option(sub)
    sub.add_argument("--out", required=True)

    sub = command("ulira", ulira, "U-LiRA attacker accuracy of a method on shadow models")
    sub.add_argument("--method", required=True)
    sub.add_argument("--data", required=True)
    sub.add_argument("--base", required=True, help="bank of base models trained on 50%% subsets")
    labels_option(sub)
    sub.add_argument("--spec", required=True, help="JSON: forget_sets_per_model, forget_size, pool_class[, pool_size]")
    sub.add_argument("--training", required=True, help="JSON training recipe (for retraining)")
    sub.add_argument("--method-spec", default="{}", help="JSON config slice of the method (hyperparameters, targets)")
    sub.add_argument("--datamodels", help="datamodels artifact (dm_direct and dmm shadows' targets)")
    sub.add_argument("--calibration", help="the datamodels' calibration artifact")
    sub.add_argument("--seed", type=int, required=True)
    torch_options(sub)
    sub.add_argument("--out", required=True)

    sub = command("report", make_report, "summary tables and plots of all evaluations")
    sub.add_argument("--out-dir", required=True)
    sub.add_argument("--csv", nargs="+", required=True, help="evaluation CSV rows")
    sub.add_argument("--evaluations", nargs="+", required=True, help="evaluation HDF5 artifacts")
    sub.add_argument("--datamodels", help="datamodels artifact, for a section on their quality and cost")
    sub.add_argument("--calibration", help="the datamodels' calibration artifact")

    sub = command("theory", theory, "ridge-regression oracle-matching experiment (DMM paper, Section 5)")
    sub.add_argument("--panel", required=True, help="figure panel, e.g. fig5a or figE2_sgd_small")
    sub.add_argument("--out", required=True, help="PNG of the relative distance to the optimum")

    sub = command("gather", gather, "concatenate model-bank chunks", "model_bank")
    sub.add_argument("--out", required=True)
    sub.add_argument("chunks", nargs="+")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.stage:
            _check_version(args.stage, args.stage_version)
        args.function(args)
    except UserError as error:
        print(f"unlearnflow: error: {error}", file=sys.stderr)
        return 2
    return 0
