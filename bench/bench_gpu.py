"""Benchmark: ResNet-9 models per GPU-hour on CIFAR-shaped data, trained and unlearned vectorised.

The design card's scale (config/cifar10.yaml: ResNet-9 width 64, 50,000 training images of
3x32x32, 24 epochs at batch 512 with crops and flips; 20,000 subset models on 50% subsets) is
priced here from measured step times on the device:

* training: ``fit_many`` of E models (stacked parameters, ``vmap``) against ``fit`` of one model
  at a time, the preset's recipe, ``--steps`` steps each after one warm-up pass; models per hour
  = 3600 / (seconds per step per model x the recipe's steps per model), for full-data models
  (originals, oracles) and 50% subset models;
* unlearning: Oracle Matching's fine-tuning loop (DMM's; the preset's defaults: Adam, batch 256,
  BatchNorm frozen) over the same E models at once through the lockstep
  (:mod:`unlearnflow.core.lockstep`) against one model at a time; requests per hour for the
  preset's largest forget set of 1,000 points (forget x5 + retain x20 per epoch, 8 epochs).

Inputs are random normal images and random labels: step time does not depend on the values.

    python bench/bench_gpu.py [--models 8 16] [--steps 10] [--device cuda] [--quick]

Writes bench/RESULTS.md (section "gpu") only for a CUDA device without ``--quick``; ``--device
cpu --quick`` checks the script on a machine without a GPU (width 8, 2 models, 2 steps).
"""

from __future__ import annotations

import argparse
import copy
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.results import write_section  # noqa: E402
from unlearnflow.core.ensemble import fit_many  # noqa: E402
from unlearnflow.core.lockstep import run_lockstep  # noqa: E402
from unlearnflow.core.models import build_model  # noqa: E402
from unlearnflow.core.recipe import TrainConfig  # noqa: E402
from unlearnflow.core.training import fit, init_model, model_seed  # noqa: E402
from unlearnflow.dmm.oracle_matching import squared_error  # noqa: E402

N_TRAIN, SHAPE, CLASSES = 50_000, (3, 32, 32), 10
RECIPE = dict(lr=0.4, momentum=0.9, weight_decay=5e-4, batch_size=512, schedule="onecycle",
              warmup_fraction=5 / 24, crop_padding=4, flip=True)
EPOCHS = 24
FINE_TUNING = dict(optimizer="adam", lr=5e-4, batch_size=256, schedule="constant", drop_last=False,
                   batchnorm="frozen")
FORGET, FORGET_X, RETAIN_X, OM_EPOCHS = 1000, 5, 20, 8


def synchronise(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(run, device: torch.device) -> float:
    synchronise(device)
    start = time.perf_counter()
    run()
    synchronise(device)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=int, nargs="+", default=[8, 16])
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        sys.exit("bench_gpu: no CUDA GPU here (use --device cpu --quick to check the script)")
    width = 8 if args.quick else 64
    sizes, steps = ([2], 2) if args.quick else (args.models, args.steps)
    build = lambda: build_model("resnet9", SHAPE, CLASSES, width=width)  # noqa: E731
    batch = RECIPE["batch_size"]
    x = torch.randn(batch * steps, *SHAPE, device=device)
    y = torch.randint(0, CLASSES, (len(x),), device=device)
    train_config = TrainConfig(epochs=1, **RECIPE)
    full_steps = EPOCHS * (N_TRAIN // batch)
    subset_steps = EPOCHS * (N_TRAIN // 2 // batch)
    rows = []
    for n_models in sizes:
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        seeds = [model_seed(0, "bench_gpu", i) for i in range(n_models)]
        masks = np.ones((n_models, len(x)), bool)
        fit_many(build, seeds, x, y, masks, train_config)  # warm-up (cuDNN autotuning, allocations)
        vectorised = timed(lambda: fit_many(build, seeds, x, y, masks, train_config), device) / steps
        one = init_model(build, seeds[0]).to(device)
        fit(one, x, y, train_config, seeds[0])
        sequential = n_models * timed(lambda: fit(init_model(build, seeds[0]).to(device), x, y, train_config,
                                                  seeds[0]), device) / steps
        models, _ = fit_many(build, seeds, x, y, masks, train_config)
        # unlearning: Oracle Matching's loop, forget x5 + retain x20 of 1,000 points, per epoch
        om_rows = min(len(x), (FORGET_X + RETAIN_X) * FORGET)
        om_config = TrainConfig(epochs=1, **FINE_TUNING)
        targets = [torch.randn(len(x), CLASSES, device=device) for _ in models]
        rows_per_model = torch.arange(om_rows, device=device)

        def unlearn(copies: list[torch.nn.Module], together: bool) -> None:
            run_lockstep([lambda k=k: fit(copies[k], x, targets[k], om_config, seeds[k], subset=rows_per_model,
                                          loss=squared_error) for k in range(n_models)], 0 if together else 1)

        def copies() -> list[torch.nn.Module]:
            return [copy.deepcopy(model) for model in models]

        unlearn(copies(), True)
        om_steps = math.ceil(om_rows / FINE_TUNING["batch_size"])
        fresh = copies()
        stacked_unlearn = timed(lambda: unlearn(fresh, True), device) / om_steps
        fresh = copies()
        alone_unlearn = timed(lambda: unlearn(fresh, False), device) / om_steps
        request_steps = OM_EPOCHS * math.ceil((FORGET_X + RETAIN_X) * FORGET / FINE_TUNING["batch_size"])
        memory = torch.cuda.max_memory_allocated(device) / 2 ** 30 if device.type == "cuda" else float("nan")
        rows.append((n_models, sequential, vectorised, 3600 / (vectorised / n_models * full_steps),
                     3600 / (vectorised / n_models * subset_steps), alone_unlearn, stacked_unlearn,
                     3600 / (stacked_unlearn / n_models * request_steps), memory))
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    table = ["| models stacked | training s/step sequential (E models) | vectorised | ratio "
             "| full-data models per hour | 50% subset models per hour | OM s/step sequential | vectorised | ratio "
             "| OM requests per hour | peak GiB |", "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for n, seq, vec, full, half, om_seq, om_vec, requests, memory in rows:
        table.append(f"| {n} | {seq:.3f} | {vec:.3f} | {seq / vec:.1f}x | {full:,.0f} | {half:,.0f} | {om_seq:.3f} | "
                     f"{om_vec:.3f} | {om_seq / om_vec:.1f}x | {requests:,.0f} | {memory:.1f} |")
    section = (f"## GPU: ResNet-9 (width {width}) on CIFAR-shaped data, models per hour on {name}\n\n"
               + "\n".join(table) + "\n\n"
               f"Training: config/cifar10.yaml's recipe (SGD, batch 512, crops and flips), {steps} steps after a "
               f"warm-up; full-data models take {full_steps:,} steps, 50% subset models {subset_steps:,}. OM: Oracle "
               f"Matching's fine-tuning (Adam, batch 256, BatchNorm frozen) through the lockstep, a request on 1,000 "
               f"forgotten points takes {request_steps:,} steps per model. torch {torch.__version__}; "
               "`python bench/bench_gpu.py` to rerun.")
    print(section)
    if device.type == "cuda" and not args.quick:
        write_section("gpu", section)


if __name__ == "__main__":
    main()
