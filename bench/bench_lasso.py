"""Benchmark: batched datamodel lasso (and ridge) against scikit-learn, at equal held-out LDS.

Realistic synthetic problem sized like digits: the 1,797 sklearn digits split 1,258 train /
539 other points; each "model" is a kernel soft-nearest-neighbour classifier on a random 50%
subset of the train points (logit of class c at x = log sum over the subset's class-c points of
a Gaussian kernel, centred over classes) plus N(0, 0.1^2) training noise, so its outputs depend
on the subset non-linearly and mostly through nearby points. Targets = every point x class
(17,970). Models are trained on independent 50% subsets; 200 more models are held out for LDS.

Lasso: :func:`fit_lasso` on all targets against :func:`lasso_reference` (a scikit-learn ``Lasso``
loop, warm-started along each target's path) with the same lambda grid, split, validation rule
and tolerance; the loop is timed on a random subset of targets and extrapolated linearly to all
(its cost per target does not depend on the number of targets). Ridge: :func:`fit_ridge`
against scikit-learn ``Ridge`` (one multi-target fit per alpha, the refit grouped by chosen
alpha), same selection. Both sides get the same number of threads. Writes section "lasso".

``--sizes``: the batched lasso's cost per target at several sizes (fitted models x features,
the features being the training points of the soft-kNN problem), against per-target loops of
scikit-learn's and skglm's ``Lasso`` (skglm: Anderson-accelerated working-set coordinate
descent, among the fastest single-target lasso solvers; skipped with a note when it is not
installed) on the same lambda grid, split and selection, timed on a few targets and compared at
held-out LDS on those targets. Writes section "lasso_sizes".

``--at-4000 RESULTS``: issue 22's target, on real subset models. RESULTS is an experiment's
results folder holding the default plan's 2,000 subset models on a 4,000-point set (e.g. kept by
``bench/bench_default_run.py --at-4000 --keep DIR``: ``DIR/this/results/digits``). The solver
of commit 7f17e80 (``git show``; the path solved to tol 1e-4, patience 3) and today's (path to
3e-3, patience 2, chosen on 204 random points of this set) fit the same per-logit and margin
targets of other points, drawn at random, on the first 1,800 models; LDS on the last 200.
Writes section "lasso_4000".

    python bench/bench_lasso.py [--quick] [--threads 1]
    python bench/bench_lasso.py --sizes [--threads 1]
    python bench/bench_lasso.py --at-4000 RESULTS [--points 300]
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from sklearn.datasets import load_digits
from sklearn.linear_model import Ridge
from threadpoolctl import threadpool_limits

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.results import machine_note, publish, write_section  # noqa: E402
from unlearnflow.dmm.regression import (  # noqa: E402
    DEFAULT_RIDGE_ALPHAS,
    Datamodels,
    fit_lasso,
    fit_ridge,
    lambda_path,
    lasso_reference,
    linear_datamodeling_score,
    split_models,
)

N_TRAIN = 1258
HELD_OUT = 200


def soft_knn_outputs(models: int, noise: float, seed: int, n_train: int = N_TRAIN) -> tuple[np.ndarray, np.ndarray]:
    """Masks (models x n_train) and outputs (models x 17,970) of subset-trained soft-kNN classifiers."""
    rng = np.random.default_rng(seed)
    x, y = load_digits(return_X_y=True)
    x = x / 16.0
    train = rng.permutation(len(x))[:n_train]
    sq = np.maximum((x * x).sum(1)[:, None] + (x[train] * x[train]).sum(1)[None, :] - 2 * x @ x[train].T, 0.0)
    kernel = np.exp(-sq / np.median(np.sort(sq, 1)[:, 1:6])).astype(np.float32)
    masks = np.argsort(rng.random((models, n_train)), 1) < n_train // 2
    mass = np.stack([kernel[:, y[train] == c] @ masks[:, y[train] == c].T.astype(np.float32) for c in range(10)], -1)
    logits = np.log(mass + 1e-3)
    logits -= logits.mean(-1, keepdims=True)
    logits += noise * rng.normal(size=logits.shape).astype(np.float32)
    return masks, logits.transpose(1, 0, 2).reshape(models, -1)


def ridge_sklearn(masks: np.ndarray, outputs: np.ndarray, alphas: tuple[float, ...], seed: int) -> Datamodels:
    """fit_ridge's selection with scikit-learn Ridge: one fit per alpha, refit grouped by alpha."""
    train, val = split_models(len(masks), 0.2, seed)
    x = masks.astype(np.float64)
    mse = []
    for a in alphas:
        model = Ridge(alpha=len(train) * a).fit(x[train], outputs[train])
        mse.append(((model.predict(x[val]) - outputs[val]) ** 2).mean(0))
    chosen = np.asarray(alphas)[np.argmin(mse, 0)]
    weights, bias = np.zeros((masks.shape[1], outputs.shape[1])), np.zeros(outputs.shape[1])
    for a in np.unique(chosen):
        cols = chosen == a
        model = Ridge(alpha=len(x) * a).fit(x, outputs[:, cols])
        weights[:, cols], bias[cols] = np.atleast_2d(model.coef_).T, model.intercept_
    return Datamodels(weights.astype(np.float32), bias.astype(np.float32), chosen, "ridge")


def timed(fn, *args, **kwargs):
    start = time.perf_counter()
    result = fn(*args, **kwargs)
    return time.perf_counter() - start, result


def lds(model: Datamodels, masks: np.ndarray, outputs: np.ndarray) -> float:
    return float(np.nanmean(linear_datamodeling_score(model, masks, outputs)))


def sub(model: Datamodels, cols: np.ndarray) -> Datamodels:
    return Datamodels(model.weights[:, cols], model.bias[cols], model.alphas[cols], model.method)


def bench_lasso(args: argparse.Namespace) -> tuple[list[str], str]:
    masks, outputs = soft_knn_outputs(args.models + HELD_OUT, 0.1, args.seed)
    fit_m, fit_y = masks[: args.models], outputs[: args.models, : args.targets]
    held_m, held_y = masks[args.models :], outputs[args.models :, : args.targets]
    fast_s, fast = timed(fit_lasso, fit_m, fit_y)
    train, _ = split_models(args.models, 0.2, 0)
    grid = lambda_path(fit_m[train], fit_y[train])
    cols = np.sort(np.random.default_rng(args.seed).choice(args.targets, args.ref_targets, replace=False))
    ref_s, ref = timed(lasso_reference, fit_m, fit_y[:, cols], grid[:, cols])
    ref_total = ref_s * args.targets / len(cols)
    lds_fast, lds_ref = lds(sub(fast, cols), held_m, held_y[:, cols]), lds(ref, held_m, held_y[:, cols])
    same = float(np.mean(fast.alphas[cols] == ref.alphas))
    diff = float(np.abs(fast.weights[:, cols] - ref.weights).max())
    nnz = float(np.mean(fast.weights != 0) * N_TRAIN)
    row = (
        f"| lasso | {args.models} | {args.targets:,} | {ref_s / len(cols) * 1e3:.0f} | {fast_s / args.targets * 1e3:.2f} | "
        f"{ref_total:,.0f} (est.) | {fast_s:,.0f} | {ref_total / fast_s:.1f}x | {lds_ref:.4f} | {lds_fast:.4f} |"
    )
    note = (
        f"Lasso: 20 lambdas per target from lambda_max down to 0.01 lambda_max, 20% of the models for validation, "
        f"path stopped after 2 non-improving lambdas, tol 3e-3 along the path and 1e-4 for the refit on all models (duality gap / (||y||^2/m)). "
        f"scikit-learn timed on {len(cols)} random targets ({ref_s:.1f} s) and extrapolated linearly to {args.targets:,}; "
        f"LDS (mean Spearman over targets, {HELD_OUT} held-out models) compared on those targets "
        f"(difference {abs(lds_fast - lds_ref):.4f}; same lambda chosen for {same:.0%} of them; max coefficient "
        f"difference {diff:.1e}). Batched LDS over all {args.targets:,} targets: {lds(fast, held_m, held_y):.4f}; "
        f"{nnz:.0f} nonzero coefficients per target on average."
    )
    if abs(lds_fast - lds_ref) > 0.01:
        raise SystemExit(f"held-out LDS differs: batched {lds_fast:.4f}, scikit-learn {lds_ref:.4f}")
    return [row], note


def bench_ridge(args: argparse.Namespace) -> tuple[list[str], str]:
    masks, outputs = soft_knn_outputs(args.ridge_models + HELD_OUT, 0.1, args.seed + 1)
    fit_m, fit_y = masks[: args.ridge_models], outputs[: args.ridge_models, : args.targets]
    held_m, held_y = masks[args.ridge_models :], outputs[args.ridge_models :, : args.targets]
    fast_s, fast = timed(fit_ridge, fit_m, fit_y)
    ref_s, ref = timed(ridge_sklearn, fit_m, fit_y, DEFAULT_RIDGE_ALPHAS, 0)
    lds_fast, lds_ref = lds(fast, held_m, held_y), lds(ref, held_m, held_y)
    row = (
        f"| ridge | {args.ridge_models:,} | {args.targets:,} | {ref_s / args.targets * 1e3:.2f} | {fast_s / args.targets * 1e3:.2f} | "
        f"{ref_s:,.1f} | {fast_s:,.1f} | {ref_s / fast_s:.1f}x | {lds_ref:.4f} | {lds_fast:.4f} |"
    )
    note = (
        f"Ridge: {len(DEFAULT_RIDGE_ALPHAS)} alphas ({DEFAULT_RIDGE_ALPHAS[0]:g} to {DEFAULT_RIDGE_ALPHAS[-1]:g}), same split "
        f"and selection, both on all targets; same alpha chosen for {np.mean(np.isclose(fast.alphas, ref.alphas)):.0%} "
        f"of the targets."
    )
    if abs(lds_fast - lds_ref) > 0.01:
        raise SystemExit(f"held-out ridge LDS differs: batched {lds_fast:.4f}, scikit-learn {lds_ref:.4f}")
    return [row], note


#: (fitted models, features) of the --sizes benchmark: small, medium, digits-sized.
SIZES = ((500, 300), (1000, 600), (2000, 1258))


def skglm_lasso():
    """A factory of warm-started skglm lassos with scikit-learn's objective, or None without skglm."""
    try:
        from skglm import Lasso
    except ImportError:
        return None

    def make(alpha: float, tol: float):
        return Lasso(alpha=alpha, tol=tol, warm_start=True)

    return make


def bench_sizes(args: argparse.Namespace) -> str:
    """Cost per target of the batched lasso at each size, against per-target library loops."""
    make_skglm = skglm_lasso()
    if make_skglm is not None:  # compile skglm's numba kernels before timing
        masks, outputs = soft_knn_outputs(60, 0.1, 0, 40)
        lasso_reference(masks, outputs[:, :2], np.full((2, 2), 0.05), estimator=make_skglm)
    rows = []
    for models, features in SIZES:
        masks, outputs = soft_knn_outputs(models + HELD_OUT, 0.1, args.seed, features)
        cols = np.random.default_rng(args.seed).permutation(outputs.shape[1])[: args.size_targets]
        fit_m, fit_y = masks[:models], outputs[:models][:, cols]
        held_m, held_y = masks[models:], outputs[models:][:, cols]
        fast_s, fast = timed(fit_lasso, fit_m, fit_y)
        train, _ = split_models(models, 0.2, 0)
        grid = lambda_path(fit_m[train], fit_y[train])
        few = np.arange(args.ref_targets)
        lds_fast = lds(sub(fast, few), held_m, held_y[:, few])
        cells = [f"{models:,}", f"{features:,}", f"{fast_s / len(cols) * 1e3:.2f}",
                 f"{lds(fast, held_m, held_y):.4f}", f"{lds_fast:.4f}"]
        libraries = {"scikit-learn": None, "skglm": make_skglm or False}
        for name, estimator in libraries.items():
            if estimator is False:
                cells += ["not installed", ""]
                continue
            ref_s, ref = timed(lasso_reference, fit_m, fit_y[:, few], grid[:, few], estimator=estimator)
            cells += [f"{ref_s / len(few) * 1e3:.1f} ({ref_s / len(few) / (fast_s / len(cols)):.0f}x)",
                      f"{lds(ref, held_m, held_y[:, few]):.4f}"]
        rows.append("| " + " | ".join(cells) + " |")
        print(rows[-1], flush=True)
    return "\n".join([
        "## Datamodels: the batched lasso's cost per target by size, against per-target library loops",
        "",
        f"Soft-kNN outputs on digits (the `lasso` section's problem) with as many training points as features; "
        f"{args.size_targets:,} random targets (point x class) for the batched lasso, the first {args.ref_targets} "
        f"of them for the per-target loops (timed and compared on those); {HELD_OUT} held-out models for the LDS. "
        "Every solver walks the same 20-lambda grid with the same split, validation rule (2 non-improving "
        "lambdas stop a path) and refit; tol 3e-3 along the path, 1e-4 for the refit (scikit-learn and ours: "
        "duality gap relative to ||y||^2/m; "
        "skglm: its own optimality criterion). ms/target: wall time over targets; the ratio is the loop's cost "
        "per target over the batched one's.",
        "",
        "| models | features | batched ms/target | batched LDS (all) | batched LDS (loop targets) | "
        "scikit-learn ms/target | scikit-learn LDS | skglm ms/target | skglm LDS |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        *rows,
        "",
        "skglm was slower than scikit-learn here (not profiled; likely its per-call set-up on these small "
        "dense problems walked one lambda at a time, and its own stopping criterion). With other jobs on "
        "the machine the absolute times inflate with the load (see the load averages); the ratios compare "
        "solvers timed in the same run.",
        "",
        f"{args.threads} thread(s) for torch and BLAS. `python bench/bench_lasso.py --sizes` to rerun.",
    ])


#: the solver before issue 22 (its module at that commit) and the points its new defaults were chosen on
BEFORE_COMMIT = "7f17e80"
SELECTION_POINTS = 204
LASSO_TARGET_MS = 10.0


def solver_at(commit: str):
    """The regression module of `commit`, imported from ``git show`` (its own copy)."""
    repo = Path(__file__).resolve().parents[1]
    source = subprocess.run(["git", "-C", str(repo), "show", f"{commit}:src/unlearnflow/dmm/regression.py"],
                            capture_output=True, text=True, check=True).stdout
    path = Path(tempfile.mkdtemp()) / f"regression_{commit}.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def bench_at_4000(args: argparse.Namespace) -> str:
    """Section "lasso_4000" (module docstring): ms per target and LDS, before and now."""
    from unlearnflow.core.artifacts import concatenate_banks, read_bank, read_dataset
    from unlearnflow.dmm.datamodel_set import subset_outputs

    results = Path(args.at_4000)
    chunks = sorted(results.glob("subset_models/chunk_*.h5"))
    if not chunks or not (results / "data.h5").is_file():
        raise SystemExit(f"{results}: no data.h5 and subset_models/ (run bench/bench_default_run.py --at-4000 --keep DIR)")
    dataset = read_dataset(results / "data.h5")
    bank = concatenate_banks([read_bank(path, with_weights=False, role="subset") for path in chunks])
    logits = np.concatenate([bank.logits[split] for split in ("train", "val", "test")], axis=1)
    labels = np.concatenate([dataset.y_train, dataset.y_val, dataset.y_test])
    masks, n_points = bank.train_masks, logits.shape[1]
    chosen_on = np.random.default_rng(0).permutation(n_points)[:SELECTION_POINTS]
    others = np.setdiff1d(np.arange(n_points), chosen_on)
    points = np.sort(np.random.default_rng(args.seed + 1).choice(others, args.points, replace=False))
    fitted, held = slice(0, len(masks) - HELD_OUT), slice(len(masks) - HELD_OUT, len(masks))
    before = solver_at(BEFORE_COMMIT)
    rows, per_logit = [], {}
    for output in ("logits", "margins"):
        y = subset_outputs(logits[:, points], labels[points])[output]
        cells, fits = {}, {}
        for label, fit in (("before", before.fit_lasso), ("now", fit_lasso)):
            seconds, fits[label] = timed(fit, masks[fitted], y[fitted])
            cells[label] = (seconds / y.shape[1] * 1e3, lds(fits[label], masks[held], y[held]))
            print(f"{output} {label}: {cells[label][0]:.1f} ms/target, LDS {cells[label][1]:.4f}", flush=True)
        same = float(np.mean(np.isclose(fits["before"].alphas, fits["now"].alphas, rtol=1e-5)))
        rows.append(f"| {output} | {y.shape[1]:,} | {cells['before'][0]:.1f} | {cells['now'][0]:.1f} | "
                    f"{cells['before'][0] / cells['now'][0]:.2f}x | {cells['before'][1]:.4f} | {cells['now'][1]:.4f} | "
                    f"{same:.0%} |")
        if output == "logits":
            per_logit = {"ms": cells["now"][0], "ratio": cells["before"][0] / cells["now"][0]}
    return "\n".join([
        "## Datamodels: the lasso at 4,000 points, before and now (issue 22)",
        "",
        "| targets | count | ms/target before | ms/target now | ratio | LDS before | LDS now | same lambda |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
        *rows,
        "",
        f"Per-logit target: {per_logit['ms']:.1f} ms (target <= {LASSO_TARGET_MS:.0f} ms: "
        f"{'met' if per_logit['ms'] <= LASSO_TARGET_MS else 'missed'}), {per_logit['ratio']:.2f}x the solver of "
        f"{BEFORE_COMMIT} (target 3x: {'met' if per_logit['ratio'] >= 3 else 'missed'}). "
        f"{len(masks):,} subset models of the default plan on {n_points:,} points ({masks.shape[1]:,} training "
        f"points), {len(masks) - HELD_OUT:,} fitted, the last {HELD_OUT} for the LDS; {args.points} random points "
        f"(none of the {SELECTION_POINTS} the new defaults were chosen on), all their classes for the per-logit "
        f"targets. Before: the path solved to tol 1e-4 with patience 3; now: the path to 3e-3 with patience 2, "
        f"each lambda starting from the last one's residual correlations, targets in blocks of 4,096; both "
        f"refit to 1e-4. {args.threads} torch/BLAS thread(s).",
    ])


def run_section(name: str, bench, args: argparse.Namespace) -> None:
    """Run `bench(args)` at `args.threads` threads and write its markdown as section `name`."""
    start_load = os.getloadavg()[0]
    torch.set_num_threads(args.threads)
    with threadpool_limits(args.threads):
        markdown = bench(args)
    publish(name, markdown + " " + machine_note([start_load, os.getloadavg()[0]]) + ".")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2,000 targets, 10 reference targets, 1,000 ridge models")
    parser.add_argument("--models", type=int, default=800, help="models for the lasso (plus 200 held out)")
    parser.add_argument("--targets", type=int, default=17_970)
    parser.add_argument("--ref-targets", type=int, default=50, help="targets on which the scikit-learn lasso loop is timed")
    parser.add_argument("--ridge-models", type=int, default=4_000)
    parser.add_argument("--threads", type=int, default=1, help="torch and BLAS threads for both sides")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--sizes", action="store_true", help="cost per target at several sizes vs skglm (section lasso_sizes)")
    parser.add_argument("--size-targets", type=int, default=1_000, help="targets of the batched lasso with --sizes")
    parser.add_argument("--at-4000", metavar="RESULTS", help="issue 22's lasso at 4,000 points (section lasso_4000)")
    parser.add_argument("--points", type=int, default=300, help="points whose targets --at-4000 fits")
    args = parser.parse_args()
    if args.quick:
        args.targets, args.ref_targets, args.ridge_models = 2_000, 10, 1_000
    if args.at_4000:
        return run_section("lasso_4000", bench_at_4000, args)
    if args.sizes:
        args.ref_targets = min(args.ref_targets, 20)
        return run_section("lasso_sizes", bench_sizes, args)

    load = os.getloadavg()[0]
    torch.set_num_threads(args.threads)
    with threadpool_limits(args.threads):
        lasso_rows, lasso_note = bench_lasso(args)
        print(*lasso_rows, lasso_note, sep="\n", flush=True)
        ridge_rows, ridge_note = bench_ridge(args)
    load_end = os.getloadavg()[0]

    markdown = "\n".join(
        [
            f"## Datamodels: batched lasso / ridge vs scikit-learn (digits-sized, {N_TRAIN:,} train points)",
            "",
            "| fit | models | targets | sklearn ms/target | batched ms/target | sklearn s | batched s | ratio | LDS sklearn | LDS batched |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
            *lasso_rows,
            *ridge_rows,
            "",
            lasso_note,
            ridge_note,
            f"Data: soft-kNN classifiers on sklearn digits (see the script's docstring). {args.threads} thread(s) for torch "
            f"and BLAS on both sides (the scikit-learn lasso loop is single-threaded anyway; with other jobs on the "
            f"machine, two torch threads made a sweep 10-30x slower, the small operations stalling on a descheduled "
            f"thread); machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs shared "
            f"with other jobs (1-min load average {load:.2f} at the start, {load_end:.2f} at the end), torch "
            f"{torch.__version__}; `python bench/bench_lasso.py` to rerun (`--quick` for a smaller run).",
        ]
    )
    print(markdown)
    write_section("lasso", markdown)


if __name__ == "__main__":
    main()
