"""Diagnostic: why one model's source-free Newton step misses, in a finished linear or mixed-linear
experiment. For the given models of one forget set it refits the corrected source-free Hessian
(Eq. 3 rescaled by n_r / n_F, the same m, sigma and seed as the run's certificate) from the
stored weights and the forget samples, and compares it with the exact retain Hessian H_r and the
exact forget Hessian rescaled, H_F n_r / n_F: smallest eigenvalue, Newton step norm and weight
distance to the oracle with the same model id. (The stored weights are float32, so the refit's
step is not bit-identical to the run's.)

    python bench/sourcefree_hessian_check.py results/sourcefree-mixed-linear random_176 --models 3 0 \\
        --config ridge=1e-06,variant=corrected
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from unlearnflow.core.artifacts import read_bank, read_dataset, read_forget_set
from unlearnflow.runner import read_unlearned
from unlearnflow.sourcefree.hessian import estimate_retain_hessian, forget_parts
from unlearnflow.sourcefree.linear import WEIGHT, recipe_objective
from unlearnflow.sourcefree.newton import SOURCE_FREE_DEFAULTS


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("results", type=Path, help="results/EXPERIMENT of a finished linear experiment")
    parser.add_argument("forget_set")
    parser.add_argument("--models", type=int, nargs="+", default=[0])
    parser.add_argument("--config", default="variant=corrected", help="the corrected configuration's label (its seeds)")
    args = parser.parse_args()
    features = read_dataset(args.results / "features.h5")
    forget = read_forget_set(args.results / "forget_sets" / f"{args.forget_set}.h5").indices
    originals = read_bank(args.results / "originals.h5")
    oracles = read_bank(args.results / "oracles" / f"{args.forget_set}.h5")
    objective = recipe_objective(originals.attrs["training"])
    corrected = read_unlearned(args.results / "unlearned" / "newton_source_free" / f"{args.forget_set}.h5")
    if args.config not in corrected:
        sys.exit(f"sourcefree_hessian_check: no configuration {args.config!r} (found: {', '.join(corrected)})")
    certificates = corrected[args.config].attrs["certificates"]
    x = features.x_train.reshape(len(features.x_train), -1).astype(np.float64)
    retain = np.ones(len(x), bool)
    retain[forget] = False
    n, n_forget = len(x), len(forget)
    print("| model | Hessian | min eigenvalue | step norm | weight distance |\n|---|---|---:|---:|---:|")
    for k in args.models:
        W = objective.parameters(originals.weights[WEIGHT][k].astype(np.float64))
        W_oracle = objective.parameters(oracles.weights[WEIGHT][k].astype(np.float64))
        grad_f, _ = forget_parts(objective, W, x[forget], features.y_train[forget])
        cert = certificates[k]
        fitted = estimate_retain_hessian(objective, W, x[forget], features.y_train[forget], n, cert["m"],
                                         cert["sigma"], "corrected", cert["solver"], int(cert["seed"]),
                                         SOURCE_FREE_DEFAULTS["max_iters"], SOURCE_FREE_DEFAULTS["tol"]).hessian
        candidates = {"exact H_r": objective.hessian(W, x[retain], features.y_train[retain]),
                      "exact H_F n_r / n_F": objective.hessian(W, x[forget], features.y_train[forget])
                      .scaled((n - n_forget) / n_forget),
                      "fitted (corrected)": fitted}
        for name, hessian in candidates.items():
            step = hessian.solve(grad_f)
            smallest = min(np.linalg.eigvalsh(block).min() for block in hessian.blocks)
            distance = np.linalg.norm(W + step - W_oracle) / np.linalg.norm(W - W_oracle)
            print(f"| {k} | {name} | {smallest:.3g} | {np.linalg.norm(step):.3g} | {distance:.3g} |")


if __name__ == "__main__":
    main()
