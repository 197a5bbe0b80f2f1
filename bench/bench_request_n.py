"""Benchmark: a source-free request's time when the training set doubles, the forget set fixed.

A source-free method's request holds the forget samples and the validation split, never the
training set, so its cost should not grow with the training set. Here the same 30 forget samples
(the first 30 training points) are unlearned from banks trained on the first n and the first 2n
points of digits (n = 600; validation and test splits unchanged), with the cached artifacts built
beforehand and not timed: PGU and its tuned variant (MLP [64] originals and their gradient
spaces), gradient ascent (the same MLPs) and Newton with the estimated Hessian
(``newton_source_free``, linear models on the default run's 2x2-pooled features). Timed: the
request as the unlearn job runs it (``runner.unlearn_bank`` on the forget samples alone, every
model of the bank, the method's default configuration), median of 3 runs after one untimed
warm-up run, one torch thread.

    python bench/bench_request_n.py [--models 10] [--n 600]

Writes bench/RESULTS.md (section "request_n"). Target (issue 22): time(2n) / time(n) <= 1.2.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.results import machine_note, write_section  # noqa: E402
from unlearnflow.core.artifacts import train_bank  # noqa: E402
from unlearnflow.core.data import Dataset, load_dataset  # noqa: E402
from unlearnflow.core.forget_sets import ForgetSamples, build_forget_set  # noqa: E402
from unlearnflow.core.models import build_model  # noqa: E402
from unlearnflow.core.training import TrainConfig, model_seed  # noqa: E402
from unlearnflow.pgu.gradient_space import compute_gradient_space  # noqa: E402
from unlearnflow.registry import configurations, spec_of  # noqa: E402
from unlearnflow.runner import RequestSource, unlearn_bank  # noqa: E402
from unlearnflow.sourcefree.features import average_pool  # noqa: E402
from unlearnflow.sourcefree.linear import LinearObjective, identity_features, train_linear_bank  # noqa: E402

FORGET = 30
TARGET = 1.2
RECIPE = TrainConfig(lr=0.1, momentum=0.9, weight_decay=5e-4, epochs=20, batch_size=64, schedule="onecycle")


def first_points(dataset: Dataset, n: int) -> Dataset:
    return dataclasses.replace(dataset, x_train=dataset.x_train[:n], y_train=dataset.y_train[:n])


def request_seconds(method: str, bank, dataset: Dataset, side: dict, repeats: int) -> float:
    """Median seconds of the method's default request on every model of `bank`, forget samples alone."""
    forget_set = build_forget_set("first", {"kind": "indices", "indices": list(range(FORGET))}, dataset.x_train,
                                  dataset.y_train, seed=0)
    samples = ForgetSamples.of(forget_set, dataset.x_train, dataset.x_val, dataset.y_val, dataset.num_classes)
    spec = spec_of(method)
    configs = configurations(method, {}, bank.attrs.get("training"))[:1]
    unlearn_bank(spec, configs, bank, RequestSource(samples), [side], 0, torch.device("cpu"))  # warm-up
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        unlearn_bank(spec, configs, bank, RequestSource(samples), [side], 0, torch.device("cpu"))
        seconds.append(time.perf_counter() - start)
    return float(np.median(seconds))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=int, default=10)
    parser.add_argument("--n", type=int, default=600)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    load = os.getloadavg()[0]
    full = load_dataset({"loader": "digits"})
    if 2 * args.n > len(full.y_train):
        sys.exit(f"bench_request_n: digits has {len(full.y_train)} training points, fewer than 2n = {2 * args.n}")
    times: dict[str, dict[int, float]] = {}
    for n in (args.n, 2 * args.n):
        dataset = first_points(full, n)
        seeds = [model_seed(0, "original", i) for i in range(args.models)]
        mlps = train_bank(lambda: build_model("mlp", dataset.input_shape, dataset.num_classes, hidden=[64]), "mlp",
                          {"hidden": [64]}, "original", range(args.models), seeds, dataset, dataset.y_train,
                          np.ones((args.models, n), bool), RECIPE, torch.device("cpu"), False)
        space = compute_gradient_space(mlps.load_models(dataset.input_shape, dataset.num_classes),
                                       torch.from_numpy(dataset.x_train), mlps.model_ids)
        features = identity_features(average_pool(dataset, 2))
        linear = train_linear_bank(features, LinearObjective("squared", 1e-3), 0.1, seeds)
        for method, bank, data, side in (("pgu", mlps, dataset, {"gradient_space": space}),
                                         ("pgu_tuned", mlps, dataset, {"gradient_space": space}),
                                         ("gradient_ascent", mlps, dataset, {}),
                                         ("newton_source_free", linear, features, {})):
            times.setdefault(method, {})[n] = request_seconds(method, bank, data, side, args.repeats)
            print(f"n = {n}: {method} {times[method][n]:.3f} s", file=sys.stderr)
    rows = ["| method | n | 2n | time(2n) / time(n) | <= 1.2 |", "|---|---:|---:|---:|---|"]
    for method, by_n in times.items():
        ratio = by_n[2 * args.n] / by_n[args.n]
        rows.append(f"| {method} | {by_n[args.n]:.3f} s | {by_n[2 * args.n]:.3f} s | {ratio:.2f} | "
                    f"{'yes' if ratio <= TARGET else 'no'} |")
    section = (f"## Source-free requests when the training set doubles (digits, n = {args.n} -> {2 * args.n})\n\n"
               + "\n".join(rows) + "\n\n"
               f"{FORGET} fixed forget samples (the first training points), {args.models} models per bank, the "
               "default configuration's request on every model (`runner.unlearn_bank` on the forget samples and the "
               "validation split alone, as the unlearn job runs it), median of "
               f"{args.repeats} runs after a warm-up run; the banks, PGU's gradient spaces and the linear models' "
               f"features built beforehand, not timed. {machine_note((load, os.getloadavg()[0]))}; "
               "`python bench/bench_request_n.py` to rerun.")
    print(section)
    write_section("request_n", section)


if __name__ == "__main__":
    main()
