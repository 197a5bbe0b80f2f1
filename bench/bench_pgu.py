"""Benchmark: a Projected-Gradient Unlearning request against retraining one model, on digits.

The default digits experiment (config.yaml: MLP with one hidden layer of 64, SGD lr 0.1,
momentum 0.9, weight decay 5e-4, 20 epochs, batch 64, one-cycle): E original models are trained
with the vectorised trainer; per model the benchmark times, with one torch thread,

- retraining one model from scratch without the forget set (``fit``, the sequential trainer;
  the workflow's retrain rule trains many at once, which is faster per model),
- building its gradient-space cache over the whole training set (Eq. 2, once per model),
- one PGU request (downdate, Eq. 3, and projected unlearning with early stopping), for the
  published schedule (``pgu``) and the tuned one (``pgu_tuned``),

on a sample of 30 points of class 0 (the PGU paper's Table 1 setting) and 30 random points.
Times are medians over the models. The second table gives the errors (%) of the original, the
retrained and the unlearned models on the forget set, the retain set and the test set, the
epochs PGU ran and the fraction of the gradient's norm the projection kept.

    python bench/bench_pgu.py [--models 5]

It prints markdown tables and writes them into bench/RESULTS.md (section `pgu`).
"""

from __future__ import annotations

import argparse
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
    parser.add_argument("--models", type=int, default=5)
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

    timing, quality = [], []
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
        rows = {"original": [(model, None) for model in originals], "retrain": [(model, None) for model in retrained]}
        seconds = {}
        for method in METHODS:
            hp = hyperparameters(method, {})
            rows[method], seconds[method] = [], []
            for index, original in enumerate(originals):
                model = build()
                model.load_state_dict(original.state_dict())
                request = ForgetRequest(forget_inputs=x["train"][forget], forget_labels=labels[forget],
                                        num_classes=dataset.num_classes, validation_inputs=x["val"],
                                        validation_labels=torch.from_numpy(dataset.y_val),
                                        side={"gradient_space": caches[index]})
                start = time.perf_counter()
                result = spec_of(method).unlearn(model, request, hp, seeds[index])
                seconds[method].append(time.perf_counter() - start)
                rows[method].append((model, result.certificate))
        retrain = float(np.median(retrain_seconds))
        cache = float(np.median(cache_seconds))
        timing.append(f"| {name} | {retrain:.3f} | {cache:.3f} ({100 * cache / retrain:.0f}%) | " + " | ".join(
            f"{np.median(seconds[m]):.3f} ({100 * np.median(seconds[m]) / retrain:.0f}%)" for m in METHODS) + " |")
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
        f"## PGU request vs retraining one model (digits MLP, {args.models} models, medians, one thread)\n",
        "| forget set | retrain one model (s) | gradient-space cache (s, % of retrain) | "
        + " | ".join(f"{m} request (s, % of retrain)" for m in METHODS) + " |",
        "|---|---|---|" + "---|" * len(METHODS), *timing,
        "\nErrors (%), mean over models:\n",
        "| forget set | models | forget | retain | test | PGU epochs | kept gradient norm |",
        "|---|---|---|---|---|---|---|", *quality,
        f"\n{machine_note(loads)}; `python bench/bench_pgu.py` to rerun."])
    print(section)
    write_section("pgu", section)


if __name__ == "__main__":
    main()
