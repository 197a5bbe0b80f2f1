"""Benchmark: a Projected-Gradient Unlearning request against retraining one model, on digits.

The default digits experiment (config.yaml: MLP with one hidden layer of 64, SGD lr 0.1,
momentum 0.9, weight decay 5e-4, 20 epochs, batch 64, one-cycle): E original models are trained
with the vectorised trainer; per model the benchmark times, with one torch thread,

- retraining from scratch without the forget set, one model (``fit``) and the whole bank at once
  (``train_bank``, as the workflow's retrain rule does), per model,
- building its gradient-space cache over the whole training set (Eq. 2, once per model),
- one PGU request (downdate, Eq. 3, and projected unlearning with early stopping), for the
  published schedule (``pgu``) and the tuned one (``pgu_tuned``), one model after the other and
  the bank at once (the lockstep, as the workflow's unlearn jobs run),

on a sample of 30 points of class 0 (the PGU paper's Table 1 setting) and 30 random points. The
second table gives the errors (%) of the original, the retrained and the unlearned models on the
forget set, the retain set and the test set, the epochs PGU ran and the fraction of the gradient's
norm the projection kept.

    python bench/bench_pgu.py [--models 50]

It prints markdown tables and writes them into bench/RESULTS.md (section `pgu`).
"""

from __future__ import annotations

import argparse
import copy
import sys
import time
from pathlib import Path

import numpy as np
import torch
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.results import machine_note, write_section  # noqa: E402
from unlearnflow.core.artifacts import train_bank  # noqa: E402
from unlearnflow.core.data import load_dataset  # noqa: E402
from unlearnflow.core.forget_sets import build_forget_set  # noqa: E402
from unlearnflow.core.lockstep import run_lockstep  # noqa: E402
from unlearnflow.core.models import build_model  # noqa: E402
from unlearnflow.core.training import TrainConfig, fit, init_model, model_seed, predict_logits  # noqa: E402
from unlearnflow.methods.request import ForgetRequest  # noqa: E402
from unlearnflow.pgu.gradient_space import Factorisation  # noqa: E402
from unlearnflow.registry import hyperparameters, spec_of  # noqa: E402

CONFIG = Path(__file__).resolve().parents[1] / "config.yaml"
FORGET_SETS = {"class_sample_0 (30)": {"kind": "class_sample", "class": 0, "size": 30},
               "random (30)": {"kind": "random", "size": 30}}
METHODS = ("pgu", "pgu_tuned")


def error(logits: torch.Tensor, labels: np.ndarray) -> float:
    return 100 * float((logits.argmax(1).numpy() != labels).mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=int, default=50)
    args = parser.parse_args()
    torch.set_num_threads(1)
    loads = [float(open("/proc/loadavg").read().split()[0])]
    config = yaml.safe_load(CONFIG.read_text())
    dataset = load_dataset(config["data"])
    recipe = TrainConfig.from_mapping(config["training"])
    options = config["model"]["options"]
    build = lambda: build_model(config["model"]["arch"], dataset.input_shape, dataset.num_classes, **options)  # noqa: E731
    n_train = len(dataset.y_train)
    seeds = [model_seed(0, "original", i) for i in range(args.models)]
    bank = train_bank(build, config["model"]["arch"], options, "original", range(args.models), seeds, dataset,
                      dataset.y_train, np.ones((args.models, n_train), bool), recipe, torch.device("cpu"), False)
    originals = bank.load_models(dataset.input_shape, dataset.num_classes)
    x = {split: torch.from_numpy(getattr(dataset, f"x_{split}")) for split in ("train", "val", "test")}
    labels = torch.from_numpy(dataset.y_train)
    caches, cache_seconds = [], []
    for model in originals:
        start = time.perf_counter()
        caches.append(Factorisation.of(model, x["train"]))
        cache_seconds.append(time.perf_counter() - start)

    timing, quality, ratios = [], [], []
    for name, spec in FORGET_SETS.items():
        forget_set = build_forget_set(name.split()[0], spec, dataset.x_train, dataset.y_train, seed=0)
        forget, retain = forget_set.indices, np.flatnonzero(forget_set.retain_mask(n_train))
        retrain_seconds, retrained = [], []
        for seed in seeds:
            start = time.perf_counter()
            model = init_model(build, model_seed(0, f"retrain/{name}", seed % 1000))
            fit(model, x["train"], labels, recipe, seed, subset=torch.from_numpy(retain))
            retrain_seconds.append(time.perf_counter() - start)
            retrained.append(model)
        start = time.perf_counter()
        train_bank(build, config["model"]["arch"], options, f"retrain/{name}", range(args.models), seeds, dataset,
                   dataset.y_train, np.tile(forget_set.retain_mask(n_train), (args.models, 1)), recipe,
                   torch.device("cpu"), False)
        retrain_vectorised = (time.perf_counter() - start) / args.models
        rows = {"original": [(model, None) for model in originals], "retrain": [(model, None) for model in retrained]}
        seconds = {}
        for method in METHODS:
            hp = hyperparameters(method, {})
            request = [ForgetRequest(forget_inputs=x["train"][forget], forget_labels=labels[forget],
                                     num_classes=dataset.num_classes, validation_inputs=x["val"],
                                     validation_labels=torch.from_numpy(dataset.y_val),
                                     side={"gradient_space": cache}) for cache in caches]
            for together in (False, True):  # one model after the other, then the bank at once (the workflow's way)
                models = [copy.deepcopy(original) for original in originals]
                start = time.perf_counter()
                results = run_lockstep([lambda k=k: spec_of(method).unlearn(models[k], request[k], hp, seeds[k])
                                        for k in range(len(models))], 0 if together else 1)
                seconds[method, together] = (time.perf_counter() - start) / len(models)
            rows[method] = list(zip(models, [result.certificate for result in results]))
        retrain = float(np.median(retrain_seconds))
        cache = float(np.median(cache_seconds))
        timing.append(f"| {name} | {retrain:.3f} | {retrain_vectorised:.3f} | {cache:.3f} | " + " | ".join(
            f"{seconds[m, False]:.3f} / {seconds[m, True]:.3f} ({100 * seconds[m, True] / retrain_vectorised:.0f}%)"
            for m in METHODS) + " |")
        ratios += [seconds["pgu_tuned", True] / retrain_vectorised]
        for label, models in rows.items():
            logits = {split: [predict_logits(model, x[split]) for model, _ in models] for split in ("train", "test")}
            errors = [np.mean([error(lg[rows_], dataset.y_train[rows_]) for lg in logits["train"]])
                      for rows_ in (forget, retain)]
            test = np.mean([error(lg, dataset.y_test) for lg in logits["test"]])
            certificates = [c for _, c in models if c]
            extra = (f"{np.mean([c['epochs'] for c in certificates]):.1f} | "
                     f"{np.mean([c['kept_gradient_norm'] for c in certificates]):.3f}") if certificates else "- | -"
            quality.append(f"| {name} | {label} | {errors[0]:.2f} | {errors[1]:.2f} | {test:.2f} | {extra} |")
    loads.append(float(open("/proc/loadavg").read().split()[0]))
    section = "\n".join([
        f"## PGU request vs retraining (digits MLP, {args.models} models, seconds per model, one thread)\n",
        "| forget set | retrain sequential | retrain vectorised | gradient-space cache | "
        + " | ".join(f"{m} request one at a time / bank at once (% of vectorised retrain)" for m in METHODS) + " |",
        "|---|---|---|---|" + "---|" * len(METHODS), *timing,
        f"\nRetrain sequential: `fit` of one model, median over models; vectorised: `train_bank` of all {args.models} "
        "models on the retain set (the workflow's retrain and oracle jobs), wall time / models. PGU requests: wall "
        "time of all models' requests / models, one model after the other or the bank at once through the lockstep "
        "(the workflow's unlearn jobs). Target (issue 20): a PGU request <= 10% of vectorised retraining per model; "
        f"pgu_tuned (the workflow's tuned variant) at once: {min(ratios):.0%} to {max(ratios):.0%} "
        f"({'met' if max(ratios) <= 0.10 else 'missed'}).",
        "\nErrors (%), mean over models:\n",
        "| forget set | models | forget | retain | test | PGU epochs | kept gradient norm |",
        "|---|---|---|---|---|---|---|", *quality,
        f"\n{machine_note(loads)}; `python bench/bench_pgu.py` to rerun."])
    print(section)
    write_section("pgu", section)


if __name__ == "__main__":
    main()
