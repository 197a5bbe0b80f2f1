"""Benchmark: source-free certified unlearning of linear models on digits (identity features, d = 64).

Part 1, unlearning quality through the runner: N noisy linear models (squared loss, lam 1e-3,
objective noise 0.1) and N models retrained with the same noise without a random forget set
(10% and 15%); Newton (+) with the true retain Hessian and the source-free Newton step in its
three variants (paper, corrected, notebook) with m perturbations. Reported per method: the
weight distance ``||w_u - w_retrain|| / ||w_0 - w_retrain||`` (median over models), test accuracy
and its gap to retraining, and the seconds per request. Newton (+) on one-vs-rest logistic too.

Part 2, solve time of Eq. (3): cvxpy/Clarabel against the first-order solver on a noisy
quadratic fit with a binding PSD constraint, m = 2 d(d+1)/2, objective values compared.

Prints a markdown table (does not write bench/RESULTS.md):

    OMP_NUM_THREADS=1 python bench/bench_sourcefree.py [--models 3] [--dims 32,64,128] [--cvxpy-max-d 64]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.results import machine_note, write_section  # noqa: E402
from unlearnflow.core.data import load_dataset  # noqa: E402
from unlearnflow.core.forget_sets import build_forget_set  # noqa: E402
from unlearnflow.runner import apply_method  # noqa: E402
from unlearnflow.sourcefree.hessian import fit_psd, identifiable_m  # noqa: E402
from unlearnflow.sourcefree.linear import WEIGHT, LinearObjective, identity_features, train_linear_bank  # noqa: E402


def quality(models: int, fractions: list[float], m: int) -> list[str]:
    features = identity_features(load_dataset({"loader": "digits"}))
    n = len(features.y_train)
    rows = ["| loss | forget | method | distance to retrain | test acc | gap to retrain (points) | s / request |",
            "|---|---|---|---|---|---|---|"]
    for loss, fraction in [("squared", f) for f in fractions] + [("logistic", fractions[0])]:
        forget_set = build_forget_set("r", {"kind": "random", "size": int(round(fraction * n))}, features.x_train,
                                      features.y_train, seed=0)
        objective = LinearObjective(loss, 1e-3)
        seeds = list(range(100, 100 + models))
        originals = train_linear_bank(features, objective, 0.1, seeds)
        retrained = train_linear_bank(features, objective, 0.1, seeds, role="retrain",
                                      train_mask=forget_set.retain_mask(n))
        W0, Wr = originals.weights[WEIGHT].astype(float), retrained.weights[WEIGHT].astype(float)
        retrain_acc = float((retrained.logits["test"].argmax(-1) == features.y_test).mean())
        hp = {"loss": loss, "lam": 1e-3}
        runs = [("newton_certified", {"hyperparameters": hp})]
        if loss == "squared":
            runs.append(("newton_source_free", {"hyperparameters": {**hp, "n_train": n, "m": m},
                                                "grid": {"variant": ["corrected", "notebook"]}}))
        rows.append(f"| {loss} | {fraction:.0%} | retrain | 0 | {retrain_acc:.3f} | 0 | |")
        for method, config in runs:
            for label, banks in apply_method(method, originals, features, forget_set, config).items():
                bank = banks[-1]
                Wu = bank.weights[WEIGHT].astype(float)
                distance = np.median(np.linalg.norm(Wu - Wr, axis=(1, 2)) / np.linalg.norm(W0 - Wr, axis=(1, 2)))
                acc = float((bank.logits["test"].argmax(-1) == features.y_test).mean())
                name = method if label == "default" and method == "newton_certified" else (
                    f"{method} ({bank.attrs['hyperparameters']['variant']})")
                rows.append(f"| {loss} | {fraction:.0%} | {name} | {distance:.3g} | {acc:.3f} | "
                            f"{100 * (acc - retrain_acc):+.1f} | {bank.attrs['unlearn_seconds'] / models:.2f} |")
    return rows


def solve_times(dims: list[int], cvxpy_max_d: int) -> list[str]:
    rows = ["| d | m | scalable s | scalable objective | clarabel s | clarabel objective | speed-up | objective diff |",
            "|---|---|---|---|---|---|---|---|"]
    for d in dims:
        rng = np.random.default_rng(d)
        B = rng.standard_normal((d, d)) / np.sqrt(d)
        m = 2 * identifiable_m(d)
        U = rng.standard_normal((m, d))
        c = 0.5 * np.einsum("mi,ij,mj->m", U, B + B.T, U) + rng.uniform(-0.1, 0.1, m)
        fast = fit_psd(U, c, solver="scalable", max_iters=2000, tol=1e-7)
        if d <= cvxpy_max_d:
            slow = fit_psd(U, c, solver="clarabel")
            rows.append(f"| {d} | {m} | {fast.seconds:.2f} | {fast.objective:.6g} | {slow.seconds:.2f} | "
                        f"{slow.objective:.6g} | {slow.seconds / fast.seconds:.1f}x | "
                        f"{(fast.objective - slow.objective) / slow.objective:+.2%} |")
        else:
            rows.append(f"| {d} | {m} | {fast.seconds:.2f} | {fast.objective:.6g} | (skipped) | | | |")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=int, default=3)
    parser.add_argument("--fractions", default="0.10,0.15")
    parser.add_argument("--m", type=int, default=2 * identifiable_m(64))
    parser.add_argument("--dims", default="32,64,128")
    parser.add_argument("--cvxpy-max-d", type=int, default=64)
    args = parser.parse_args()
    torch.set_num_threads(1)
    start, loads = time.perf_counter(), [os.getloadavg()[0]]
    section = "\n".join([
        f"## Source-free Newton on digits (identity features, d = 64, m = {args.m}, {args.models} models)\n",
        *quality(args.models, [float(f) for f in args.fractions.split(",")], args.m),
        "\nEq. (3) solve time, Clarabel vs the first-order solver (m = d(d+1)):\n",
        *solve_times([int(d) for d in args.dims.split(",")], args.cvxpy_max_d)])
    loads.append(os.getloadavg()[0])
    section += (f"\n\nTotal {time.perf_counter() - start:.0f} s. {machine_note(loads)}; "
                "`python bench/bench_sourcefree.py` to rerun.")
    print(section)
    write_section("sourcefree", section)


if __name__ == "__main__":
    main()
