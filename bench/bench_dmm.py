"""Benchmark: Datamodel Matching's fine-tuning time as a fraction of retraining (digits, MLP [64]).

DMM (Georgiev et al., "Attribute-to-Delete") unlearns by fine-tuning each original model towards
the logits that DM-DIRECT predicts for a model retrained without the forget set. The paper counts
only that fine-tuning as unlearning compute; the datamodels are a one-time cost, stated here
separately with the number of unlearning requests after which they are paid back.

Everything runs through the workflow's code, with the default config.yaml: its training recipe
(``TrainConfig.from_mapping(config["training"])``), its three forget sets
(``build_forget_set``, seed 0) and ``methods.dmm.hyperparameters`` (``calibrated`` off: there is
no calibration set here, and the scale does not change the cost). Steps:

1. Originals: N models on all the data with the vectorised trainer (``train_bank``).
2. Datamodels (one-time): S subset models on random halves (``subset_mask``, ``train_bank``),
   per-logit lasso datamodels on their train/val/test logits (``fit_datamodel_set``), the
   config's held-out models scoring the fit. Precompute = subset training + lasso, as the
   workflow's ``precompute_seconds``.
3. Per forget set: retraining from scratch without it, N models, two ways: vectorised
   (``train_bank`` on the retain mask, how the workflow trains its oracles) and sequential
   (``fit`` one model at a time, as one would retrain a single deployed model); then DMM with
   ``dmm.targets.datamodel_targets`` and ``runner.apply_method`` (``unlearn_seconds``, ``unlearn_examples_per_model``).

Seconds are those of the training loops as the library reports them (``FitStats.seconds``:
``fit``/``fit_many``, BatchNorm recalibration included, model construction excluded), per model.
Each measurement is the fastest of ``--repeats`` runs; the sequential time per model is the median
over models of each one's fastest run (robust to other processes on a shared machine). The
DM-DIRECT targets (effects of the forget set plus predicted logits for all N models) are a
per-request cost outside the fine-tuning; they are timed and reported, not added. Examples are
the training examples processed per model; the 5% target asks DMM's to be <= 5% of retraining's.

    python bench/bench_dmm.py [--models 20] [--subset-models 2000] [--repeats 3] [--quick]

``--quick`` (N=8, S=300, one repeat) prints the table without writing bench/RESULTS.md
(section "dmm").
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.results import machine_note, write_section  # noqa: E402
from unlearnflow.core.artifacts import SPLITS, ModelBank, train_bank  # noqa: E402
from unlearnflow.core.data import Dataset, load_dataset  # noqa: E402
from unlearnflow.core.forget_sets import ForgetSet, build_forget_set  # noqa: E402
from unlearnflow.core.models import build_model  # noqa: E402
from unlearnflow.core.training import TrainConfig, fit, init_model, model_seed, subset_mask  # noqa: E402
from unlearnflow.dmm import targets as dmm_targets  # noqa: E402
from unlearnflow.dmm.datamodel_set import DatamodelSet, fit_datamodel_set  # noqa: E402
from unlearnflow.registry import RequestContext, hyperparameters  # noqa: E402
from unlearnflow.runner import apply_method  # noqa: E402

CONFIG_PATH = Path(__file__).resolve().parents[1] / "config.yaml"
COMPUTE_TARGET = 0.05  # DMM examples / retraining examples
CPU = torch.device("cpu")
ARCH, OPTIONS = "mlp", {"hidden": [64]}


@dataclass(frozen=True)
class Row:
    name: str
    forget_size: int
    retrain_vectorised_s: float  # per model
    retrain_sequential_s: float  # per model
    retrain_examples: float  # per model
    dmm_s: float  # per model, fine-tuning only, the bank at once (the workflow's way)
    dmm_alone_s: float  # per model, fine-tuning only, one model after the other
    dmm_examples: float  # per model
    targets_s: float  # DM-DIRECT targets of all N models, per request


def bank(dataset: Dataset, role: str, masks: np.ndarray, config: TrainConfig) -> ModelBank:
    """Models 0..len(masks)-1 of `role`, seeded as the workflow seeds them, trained on `masks`."""
    build = lambda: build_model(ARCH, dataset.input_shape, dataset.num_classes, **OPTIONS)  # noqa: E731
    ids = list(range(len(masks)))
    seeds = [model_seed(0, role, i) for i in ids]
    return train_bank(build, ARCH, OPTIONS, role, ids, seeds, dataset, dataset.y_train, masks, config, CPU, False)


def sequential_retrain_s(dataset: Dataset, forget_set: ForgetSet, config: TrainConfig, models: int) -> np.ndarray:
    """Each model's `fit` seconds when the oracles of `forget_set` are retrained one at a time."""
    build = lambda: build_model(ARCH, dataset.input_shape, dataset.num_classes, **OPTIONS)  # noqa: E731
    x, y = torch.from_numpy(dataset.x_train), torch.from_numpy(dataset.y_train)
    retain = torch.from_numpy(np.flatnonzero(forget_set.retain_mask(len(y))))
    seeds = [model_seed(0, f"oracle/{forget_set.name}", i) for i in range(models)]
    return np.array([fit(init_model(build, seed), x, y, config, seed, subset=retain).seconds for seed in seeds])


def fit_datamodels(dataset: Dataset, config: TrainConfig, subset_models: int,
                   heldout: int) -> tuple[DatamodelSet, float, float]:
    """Fit the per-logit lasso datamodels; returns them and (subset training s, lasso s)."""
    n_train = len(dataset.y_train)
    masks = np.stack([subset_mask(model_seed(0, "subset", i), n_train, 0.5) for i in range(subset_models)])
    subsets = bank(dataset, "subset", masks, config)
    logits = np.concatenate([subsets.logits[split] for split in SPLITS], axis=1)
    labels = np.concatenate([dataset.y_train, dataset.y_val, dataset.y_test])
    sizes = {split: len(getattr(dataset, f"y_{split}")) for split in SPLITS}
    datamodels = fit_datamodel_set(masks, logits, labels, sizes, "lasso", heldout_models=heldout, outputs=["logits"])
    return datamodels, subsets.attrs["train_seconds"], datamodels.attrs["logits_fit_seconds"]


def measure(name: str, spec: dict, dataset: Dataset, originals: ModelBank, datamodels: DatamodelSet,
            config: TrainConfig, dmm_hp: dict, repeats: int) -> Row:
    forget_set = build_forget_set(name, spec, dataset.x_train, dataset.y_train, seed=0)
    n, models = len(dataset.y_train), len(originals)
    retain = np.tile(forget_set.retain_mask(n), (models, 1))
    vectorised = [bank(dataset, f"oracle/{name}", retain, config) for _ in range(repeats)]
    sequential = np.min([sequential_retrain_s(dataset, forget_set, config, models) for _ in range(repeats)], axis=0)
    side = {"datamodels": datamodels}
    start = time.perf_counter()
    context = RequestContext(forget_set.indices, forget_set.train_labels, originals.logits)
    per_model = dmm_targets.datamodel_targets(side, hyperparameters("dmm", dmm_hp), context)
    for index in range(models):
        per_model(index)
    targets_s = time.perf_counter() - start
    dmm = [apply_method("dmm", originals, dataset, forget_set, {"hyperparameters": dmm_hp}, side=side,
                        device=CPU)["default"][0] for _ in range(repeats)]
    alone = [apply_method("dmm", originals, dataset, forget_set, {"hyperparameters": dmm_hp}, side=side,
                          device=CPU, models_per_pass=1)["default"][0] for _ in range(repeats)]
    row = Row(name, len(forget_set.indices), min(b.attrs["train_seconds"] for b in vectorised) / models,
              float(np.median(sequential)), vectorised[0].attrs["examples_per_model"],
              min(b.attrs["unlearn_seconds"] for b in dmm) / models,
              min(b.attrs["unlearn_seconds"] for b in alone) / models, dmm[0].attrs["unlearn_examples_per_model"],
              targets_s)
    print(f"{name}: |F| {row.forget_size}, retrain {row.retrain_vectorised_s:.3f} s/model vectorised, "
          f"{row.retrain_sequential_s:.3f} sequential; DMM {row.dmm_s:.3f} s/model at once, {row.dmm_alone_s:.3f} "
          f"alone, targets {targets_s:.2f} s",
          flush=True)
    return row


def break_even(precompute_s: float, models: int, retrain_s: float, dmm_s: float) -> str:
    """Requests (each unlearning all N models) after which the datamodels are paid back."""
    saving = models * (retrain_s - dmm_s)
    return f"{precompute_s / saving:,.1f}" if saving > 0 else "never"


def markdown(rows: list[Row], args: argparse.Namespace, config: TrainConfig, dmm_hp: dict, precompute: tuple,
             datamodels: DatamodelSet, loads: tuple[float, float], total_s: float) -> str:
    subset_s, lasso_s = precompute
    precompute_s = subset_s + lasso_s
    lines = [
        f"## DMM: fine-tuning cost as a fraction of retraining (digits, MLP [64], N={args.models} models)",
        "",
        "| forget set | \\|F\\| | retrain s/model vectorised | retrain s/model sequential | DMM s/model "
        "(bank at once / one at a time) | DMM / retrain time (vectorised / sequential) | examples DMM / retrain "
        "| <= 5% compute "
        "| DM-DIRECT targets s (all N) | break-even requests (vectorised / sequential) |",
        "|---|---:|---:|---:|---:|---:|---:|---|---:|---:|",
    ]
    for r in rows:
        fraction = r.dmm_examples / r.retrain_examples
        lines.append(
            f"| {r.name} | {r.forget_size} | {r.retrain_vectorised_s:.3f} | {r.retrain_sequential_s:.3f} | "
            f"{r.dmm_s:.3f} / {r.dmm_alone_s:.3f} | {r.dmm_s / r.retrain_vectorised_s:.2f} / "
            f"{r.dmm_s / r.retrain_sequential_s:.3f} | "
            f"{r.dmm_examples:,.0f} / {r.retrain_examples:,.0f} = {fraction:.2%} | "
            f"{'yes' if fraction <= COMPUTE_TARGET else 'no'} | {r.targets_s:.3f} | "
            f"{break_even(precompute_s, args.models, r.retrain_vectorised_s, r.dmm_s)} / "
            f"{break_even(precompute_s, args.models, r.retrain_sequential_s, r.dmm_s)} |")
    fractions = [r.dmm_examples / r.retrain_examples for r in rows]
    vectorised = [r.dmm_s / r.retrain_vectorised_s for r in rows]
    sequential = [r.dmm_s / r.retrain_sequential_s for r in rows]
    met = max(fractions) <= COMPUTE_TARGET
    lines += [
        "",
        f"Datamodel precompute (one-time, not per request): {precompute_s:.1f} s = {args.subset_models:,} subset "
        f"models on random halves, vectorised ({subset_s:.1f} s) + per-logit lasso on "
        f"{datamodels.datamodels['logits'].weights.shape[1]:,} targets, {args.heldout} models held out "
        f"({lasso_s:.1f} s; held-out LDS {datamodels.summary()['logits_lds']:.3f}).",
        "",
        f"Retraining: the config's recipe (SGD lr {config.lr}, momentum {config.momentum}, weight decay "
        f"{config.weight_decay}, batch {config.batch_size}, {config.schedule}, {config.epochs} epochs) on the retain "
        f"set; vectorised = `train_bank` over the N models (the workflow's oracles), sequential = `fit` per model. "
        f"DMM: `apply_method` with the config's hyper-parameters (forget x{dmm_hp['forget_multiplier']}, retain "
        f"x{dmm_hp['retain_multiplier']}, {dmm_hp['epochs']} epochs, batch {dmm_hp['batch_size']}, Adam lr "
        f"{dmm_hp['lr']}), the bank at once through the lockstep as the workflow runs it (and one model after the "
        "other: `apply_method(..., models_per_pass=1)`); DMM / retrain uses the former. Seconds: the training "
        f"loops' own timers, per model; fastest of {args.repeats} runs (sequential: median over models of each one's fastest). Break-even: "
        "precompute / (N x (retrain - DMM) s per model), in requests that each unlearn all N models; DM-DIRECT "
        "targets are a per-request cost outside the fine-tuning, not counted (as in the paper).",
        f"{machine_note(loads)}; whole run {total_s:.0f} s.",
        f"Verdict: the <= {COMPUTE_TARGET:.0%} compute target, counted in training examples as the paper counts "
        f"it, is {'met on every forget set' if met else 'missed on some forget sets'} (DMM processes "
        f"{min(fractions):.1%} to {max(fractions):.1%} of retraining's examples); in wall time DMM's fine-tuning "
        f"takes {min(sequential):.0%} to {max(sequential):.0%} of a sequential retrain and {min(vectorised):.0%} to "
        f"{max(vectorised):.0%} of a vectorised one per model (target, issue 20: <= 25%; "
        f"{'met' if max(vectorised) <= 0.25 else 'missed'}); its batches of {dmm_hp['batch_size']} make "
        f"{config.batch_size / dmm_hp['batch_size']:.0f}x retraining's optimiser steps per example. "
        "`python bench/bench_dmm.py` to rerun.",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=int, default=20, help="N originals (and retrained models per forget set)")
    parser.add_argument("--subset-models", type=int, default=None, help="S (default: the config's, 2000)")
    parser.add_argument("--repeats", type=int, default=3, help="timings per measurement; the fastest is kept")
    parser.add_argument("--quick", action="store_true", help="smoke run (N=8, S=300, 1 repeat); writes nothing")
    args = parser.parse_args()
    torch.set_num_threads(1)
    config_file = yaml.safe_load(CONFIG_PATH.read_text())
    if args.quick:
        args.models, args.subset_models, args.repeats = 8, 300, 1
    args.subset_models = args.subset_models or config_file["subset_models"]["models"]
    args.heldout = min(config_file["datamodels"]["heldout_models"], args.subset_models // 10)

    start, loads = time.perf_counter(), [os.getloadavg()[0]]
    dataset = load_dataset({"loader": "digits"})
    config = TrainConfig.from_mapping(config_file["training"])
    dmm_hp = {**config_file["methods"]["dmm"]["hyperparameters"], "calibrated": False}
    originals = bank(dataset, "original", np.ones((args.models, len(dataset.y_train)), dtype=bool), config)
    datamodels, subset_s, lasso_s = fit_datamodels(dataset, config, args.subset_models, args.heldout)
    print(f"datamodels: {args.subset_models} subset models {subset_s:.1f} s, lasso {lasso_s:.1f} s", flush=True)
    rows = [measure(name, spec, dataset, originals, datamodels, config, dmm_hp, args.repeats)
            for name, spec in config_file["forget_sets"].items()]
    loads.append(os.getloadavg()[0])
    text = markdown(rows, args, config, dmm_hp, (subset_s, lasso_s), datamodels,
                    tuple(loads), time.perf_counter() - start)
    print(text)
    if not args.quick:
        write_section("dmm", text)


if __name__ == "__main__":
    main()
