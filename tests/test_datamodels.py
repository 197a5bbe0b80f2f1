"""Datamodels (DMM paper Sections 2.2, 4.3; Appendix G.2): batched lasso, ridge, diagonal ablation, LDS."""

from __future__ import annotations

import re
import warnings

import numpy as np
import pytest
import torch
from sklearn.linear_model import Lasso, Ridge

from unlearnflow.dmm.datamodel_set import (
    PART_KIND,
    fit_datamodel_set,
    gather_datamodel_sets,
    point_chunks,
    read_datamodels,
    subset_outputs,
    write_datamodels,
)
from unlearnflow.dmm.regression import (
    Datamodels,
    fit_diagonal,
    fit_lasso,
    fit_ridge,
    heldout_r2,
    lambda_path,
    lasso_reference,
    linear_datamodeling_score,
    solve_lasso,
    split_models,
)
from unlearnflow.errors import UserError
from unlearnflow.metrics.margins import margins


def sparse_problem(seed=0, n=60, models=400, targets=30, noise=0.3):
    """50% masks, 3-5 true coefficients per target of size 0.5-1.5, offsets and Gaussian noise."""
    rng = np.random.default_rng(seed)
    masks = rng.random((models, n)) < 0.5
    truth = np.zeros((n, targets))
    for t in range(targets):
        support = rng.choice(n, rng.integers(3, 6), replace=False)
        truth[support, t] = rng.choice([-1.0, 1.0], len(support)) * rng.uniform(0.5, 1.5, len(support))
    offset = rng.normal(0, 3, targets)
    outputs = masks @ truth + offset + rng.normal(0, noise, (models, targets))
    return masks, outputs, truth, offset


def sklearn_lasso(masks, outputs, alphas):
    coefs, intercepts = [], []
    for t in range(outputs.shape[1]):
        model = Lasso(alpha=alphas[t], tol=1e-12, max_iter=100_000).fit(masks.astype(float), outputs[:, t])
        coefs.append(model.coef_)
        intercepts.append(model.intercept_)
    return np.stack(coefs, 1), np.array(intercepts)


@pytest.mark.parametrize("per_target", [False, True])
def test_fixed_alpha_equals_sklearn_lasso(per_target):
    masks, outputs, _, _ = sparse_problem(targets=12)
    alphas = np.linspace(0.01, 0.2, 12) if per_target else np.full(12, 0.05)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # converged: no RuntimeWarning
        fast = solve_lasso(masks, outputs, alphas if per_target else 0.05, tol=1e-9, max_iter=5000)
    coef, intercept = sklearn_lasso(masks, outputs, alphas)
    assert fast.weights.shape == coef.shape and fast.weights.dtype == np.float32
    np.testing.assert_allclose(fast.weights, coef, rtol=0, atol=1e-4 * np.abs(coef).max())
    np.testing.assert_allclose(fast.bias, intercept, rtol=0, atol=1e-4 * np.abs(intercept).max())
    assert np.array_equal(fast.weights != 0, np.abs(coef) > 0)
    np.testing.assert_array_equal(fast.alphas, alphas)


def test_blocks_and_working_set_do_not_change_the_solution():
    """More features than one block (n = 150 > 48) and more points than models."""
    masks, outputs, _, _ = sparse_problem(seed=3, n=150, models=120, targets=6)
    fast = solve_lasso(masks, outputs, 0.02, tol=1e-9, max_iter=20_000)
    coef, _ = sklearn_lasso(masks, outputs, np.full(6, 0.02))
    np.testing.assert_allclose(fast.weights, coef, rtol=0, atol=1e-4 * np.abs(coef).max())


def test_a_target_s_lasso_does_not_depend_on_the_other_targets_of_its_batch():
    """Per-target working sets and the coefficients of the sweep a target converged in: any
    subset of the targets gets the same lasso as in the full batch, up to float32 rounding."""
    masks, outputs, _, _ = sparse_problem(seed=4, n=80, models=300, targets=40, noise=1.0)
    alone = slice(7, 19)
    for fit in (lambda y: solve_lasso(masks, y, 0.02), lambda y: fit_lasso(masks, y, n_alphas=8)):
        full, part = fit(outputs), fit(outputs[:, alone])
        scale = np.abs(full.weights).max()
        np.testing.assert_allclose(part.weights, full.weights[:, alone], rtol=0, atol=1e-5 * scale)
        np.testing.assert_allclose(part.bias, full.bias[alone], rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(part.alphas, full.alphas[alone], rtol=1e-5)


def test_a_fit_streamed_in_blocks_of_targets_equals_the_fit_in_one():
    """Issue 22: the lasso fits `block` targets at a time (its memory is set by the block); the
    blocks' datamodels are those of one fit up to float32 rounding."""
    masks, outputs, _, _ = sparse_problem(seed=5, n=80, models=300, targets=23, noise=1.0)
    whole, streamed = fit_lasso(masks, outputs, block=4096), fit_lasso(masks, outputs, block=5)
    scale = np.abs(whole.weights).max()
    np.testing.assert_allclose(streamed.weights, whole.weights, rtol=0, atol=1e-5 * scale)
    np.testing.assert_allclose(streamed.bias, whole.bias, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(streamed.alphas, whole.alphas, rtol=1e-5)
    assert np.array_equal(streamed.weights != 0, whole.weights != 0)
    with pytest.raises(UserError, match="block must be at least 1"):
        fit_lasso(masks, outputs, block=0)
    logits, labels = np.random.default_rng(0).normal(size=(300, 9, 4)), np.arange(9) % 4
    np.testing.assert_array_equal(subset_outputs(logits, labels, models_per_block=7)["margins"],
                                  margins(logits, labels).astype(np.float32))


def test_a_loose_path_picks_the_lambdas_of_a_tight_one():
    """The path only ranks lambdas by validation MSE: solved to 3e-3 (the default) it picks the
    lambda a path solved to 1e-8 picks for nearly every target, and the refit to `tol` gives
    the same held-out LDS."""
    masks, outputs, _, _ = sparse_problem(seed=6, n=80, models=500, targets=40, noise=1.0)
    held = slice(400, 500)
    tight = fit_lasso(masks[:400], outputs[:400], path_tol=1e-8, tol=1e-8, max_iter=5000)
    loose = fit_lasso(masks[:400], outputs[:400], tol=1e-8, max_iter=5000)
    assert np.mean(tight.alphas == loose.alphas) >= 0.9
    lds = [np.nanmean(linear_datamodeling_score(fit, masks[held], outputs[held])) for fit in (tight, loose)]
    assert abs(lds[0] - lds[1]) < 0.005
    with pytest.raises(UserError, match="need tol > 0"):
        fit_lasso(masks, outputs, path_tol=0.0)


def test_lambda_path_selection_recovers_the_support():
    masks, outputs, truth, offset = sparse_problem(seed=1)
    fit = fit_lasso(masks, outputs)
    assert fit.method == "lasso" and fit.weights.shape == truth.shape
    for t in range(truth.shape[1]):
        true_support = set(np.flatnonzero(truth[:, t]))
        largest = set(np.argsort(-np.abs(fit.weights[:, t]))[: len(true_support)])
        assert largest == true_support
    np.testing.assert_allclose(fit.weights[truth != 0], truth[truth != 0], atol=0.15)
    np.testing.assert_allclose(fit.bias, offset, atol=0.3)
    train, _ = split_models(len(masks), 0.2, 0)
    grid = lambda_path(masks[train], outputs[train])
    assert grid.shape == (20, truth.shape[1])
    assert np.all([fit.alphas[t] in grid[:, t] for t in range(truth.shape[1])])
    assert np.all(fit.alphas < grid[0])  # something was selected for every target


def test_fit_lasso_matches_the_sklearn_reference():
    masks, outputs, _, _ = sparse_problem(seed=2, targets=8)
    train, _ = split_models(len(masks), 0.2, 0)
    grid = lambda_path(masks[train], outputs[train], n_alphas=10, alpha_min_ratio=0.01)
    fast = fit_lasso(masks, outputs, n_alphas=10, alpha_min_ratio=0.01, tol=1e-8, max_iter=5000, path_tol=1e-8)
    reference = lasso_reference(masks, outputs, grid, tol=1e-8, max_iter=100_000, path_tol=1e-8)
    np.testing.assert_array_equal(fast.alphas, reference.alphas)
    np.testing.assert_allclose(fast.weights, reference.weights, rtol=0, atol=1e-4 * np.abs(reference.weights).max())
    np.testing.assert_allclose(fast.bias, reference.bias, rtol=0, atol=1e-4 * np.abs(reference.bias).max())


def test_constant_target_and_constant_point():
    masks, outputs, _, _ = sparse_problem(targets=3)
    masks[:, 0] = True  # a point in every model: no information, coefficient 0
    outputs[:, 1] = 2.5  # a constant target
    fit = fit_lasso(masks, outputs)
    assert np.all(fit.weights[0] == 0)
    assert np.all(fit.weights[:, 1] == 0) and fit.bias[1] == pytest.approx(2.5)


def test_ridge_matches_the_closed_form_and_sklearn():
    masks, outputs, _, _ = sparse_problem(seed=4, targets=10)
    alphas = (1e-3, 1e-2, 0.1, 1.0)
    fit = fit_ridge(masks, outputs, alphas=alphas)
    assert fit.method == "ridge" and set(fit.alphas.tolist()) <= {np.float32(a) for a in alphas}

    def closed_form(x, y, alpha):
        xc, yc = x - x.mean(0), y - y.mean(0)
        return np.linalg.solve(xc.T @ xc / len(x) + alpha * np.eye(x.shape[1]), xc.T @ yc / len(x))

    x = masks.astype(np.float64)
    train, val = split_models(len(masks), 0.2, 0)
    mse = []
    for a in alphas:
        b = closed_form(x[train], outputs[train], a)
        pred = (x[val] - x[train].mean(0)) @ b + outputs[train].mean(0)
        mse.append(((pred - outputs[val]) ** 2).mean(0))
    np.testing.assert_allclose(fit.alphas, np.array(alphas)[np.argmin(mse, 0)], rtol=1e-6)
    for t in range(outputs.shape[1]):
        expected = closed_form(x, outputs[:, t : t + 1], fit.alphas[t])[:, 0]
        np.testing.assert_allclose(fit.weights[:, t], expected, rtol=0, atol=1e-4 * np.abs(expected).max())
        sk = Ridge(alpha=len(x) * fit.alphas[t]).fit(x, outputs[:, t])
        np.testing.assert_allclose(fit.weights[:, t], sk.coef_, rtol=0, atol=1e-4 * np.abs(sk.coef_).max())
        assert fit.bias[t] == pytest.approx(sk.intercept_, abs=1e-4 * abs(sk.intercept_) + 1e-5)


def test_diagonal_ablation_is_a_difference_of_means():
    masks, outputs, _, _ = sparse_problem(seed=5, targets=6)
    points = np.array([3, -1, 0, 59, 3, -1])
    fit = fit_diagonal(masks, outputs, points)
    assert fit.method == "diagonal"
    for t, i in enumerate(points):
        column = fit.weights[:, t]
        if i < 0:
            assert np.all(column == 0) and fit.bias[t] == pytest.approx(outputs[:, t].mean(), rel=1e-6)
            continue
        inside, outside = outputs[masks[:, i], t].mean(), outputs[~masks[:, i], t].mean()
        assert column[i] == pytest.approx(inside - outside, rel=1e-5)
        assert np.count_nonzero(column) == 1 and fit.bias[t] == pytest.approx(outside, rel=1e-5)
        np.testing.assert_allclose(fit.predict(masks[:2])[:, t], np.where(masks[:2, i], inside, outside), rtol=1e-5)


def test_lds_and_r2_of_true_and_random_datamodels():
    masks, outputs, truth, offset = sparse_problem(seed=6, models=600)
    true_model = Datamodels(truth.astype(np.float32), offset.astype(np.float32), np.zeros(30), "truth")
    rng = np.random.default_rng(0)
    random_model = Datamodels(rng.normal(size=truth.shape).astype(np.float32), np.zeros(30, np.float32), np.zeros(30), "random")
    held = slice(400, 600)
    lds_true = linear_datamodeling_score(true_model, masks[held], outputs[held])
    lds_random = linear_datamodeling_score(random_model, masks[held], outputs[held])
    assert lds_true.shape == (30,) and np.nanmean(lds_true) > 0.8
    assert abs(np.nanmean(lds_random)) < 0.05
    fit = fit_lasso(masks[:400], outputs[:400])
    assert np.nanmean(linear_datamodeling_score(fit, masks[held], outputs[held])) > 0.8
    r2 = heldout_r2(true_model, masks[held], outputs[held])
    assert np.all((r2 > 0.7) & (r2 <= 1.0))
    exact = Datamodels(truth.astype(np.float32), offset.astype(np.float32), np.zeros(30), "truth")
    noiseless = masks[held] @ truth + offset
    np.testing.assert_allclose(heldout_r2(exact, masks[held], noiseless), 1.0, atol=1e-5)
    constant = np.ones((200, 30))
    assert np.all(np.isnan(linear_datamodeling_score(true_model, masks[held], constant)))


def test_unconverged_targets_warn():
    masks, outputs, _, _ = sparse_problem(targets=4)
    with pytest.warns(RuntimeWarning, match="not converged after 1 sweeps"):
        solve_lasso(masks, outputs, 0.01, tol=1e-12, max_iter=1)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error raised without CUDA")
def test_cuda_without_cuda_is_a_user_error():
    masks, outputs, _, _ = sparse_problem(targets=2)
    with pytest.raises(UserError, match="CUDA"):
        fit_lasso(masks, outputs, device="cuda")
    with pytest.raises(UserError, match="device"):
        fit_lasso(masks, outputs, device="tpu-9")


def test_user_errors():
    masks, outputs, _, _ = sparse_problem(targets=4)
    with pytest.raises(UserError, match="bool"):
        fit_lasso(masks.astype(int), outputs)
    with pytest.raises(UserError, match="rows"):
        fit_ridge(masks, outputs[:-1])
    with pytest.raises(UserError, match="too few"):
        fit_lasso(masks[:5], outputs[:5])
    with pytest.raises(UserError, match="val_fraction"):
        fit_lasso(masks, outputs, val_fraction=1.5)
    with pytest.raises(UserError, match="finite"):
        fit_ridge(masks, np.where(outputs > 0, np.nan, outputs))
    with pytest.raises(UserError, match="positive"):
        solve_lasso(masks, outputs, 0.0)
    with pytest.raises(UserError, match="positive"):
        fit_ridge(masks, outputs, alphas=(0.1, -1.0))
    with pytest.raises(UserError, match="alpha_min_ratio"):
        fit_lasso(masks, outputs, alpha_min_ratio=0.0)
    with pytest.raises(UserError, match="patience"):
        fit_lasso(masks, outputs, patience=0)
    with pytest.raises(UserError, match="max_iter"):
        solve_lasso(masks, outputs, 0.1, max_iter=0)
    with pytest.raises(UserError, match="grid"):
        lasso_reference(masks, outputs, np.ones((5, 3)))
    with pytest.raises(UserError, match="point_of_target"):
        fit_diagonal(masks, outputs, np.array([0, 1, 60, -1]))
    with pytest.raises(UserError, match="point_of_target"):
        fit_diagonal(masks, outputs, np.array([0, 1]))
    everywhere = masks.copy()
    everywhere[:, 2] = True
    with pytest.raises(UserError, match="every model"):
        fit_diagonal(everywhere, outputs, np.array([2, 1, 0, -1]))
    fit = fit_ridge(masks, outputs)
    with pytest.raises(UserError, match="training points"):
        fit.predict(masks[:, :10])
    with pytest.raises(UserError, match="targets"):
        linear_datamodeling_score(fit, masks, outputs[:, :2])
    with pytest.raises(UserError, match="at least 3"):
        heldout_r2(fit, masks[:2], outputs[:2])


# ----------------------------------------------------------------------------------------------
# the datamodel set scattered over chunks of points, then gathered


def linear_logits(seed=0, n_train=40, n_points=52, classes=3, models=400, noise=0.05):
    """Masks and logits (models, points, classes) exactly linear in the subset, plus noise."""
    rng = np.random.default_rng(seed)
    beta = rng.normal(size=(n_train, n_points, classes)) * (rng.random((n_train, n_points, 1)) < 0.1)
    masks = rng.random((models, n_train)) < 0.5
    logits = rng.normal(size=(n_points, classes)) + np.einsum("mi,ipc->mpc", masks.astype(float), beta)
    logits += noise * rng.normal(size=logits.shape)
    return masks, logits.astype(np.float32), rng.integers(0, classes, n_points)


@pytest.mark.parametrize("estimator", ["lasso", "ridge"])
def test_scattered_fit_equals_the_single_job_fit(estimator, tmp_path):
    masks, logits, labels = linear_logits()
    sizes = {"train": 40, "val": 7, "test": 5}
    common = dict(heldout_models=60, log=lambda _: None, given_options={"n_alphas": 8} if estimator == "lasso" else {})
    whole = fit_datamodel_set(masks, logits, labels, sizes, estimator, **common)
    chunks = point_chunks(52, 3)
    assert chunks == [(0, 17), (17, 34), (34, 52)]
    for index, points in enumerate(chunks):  # each part reads its points alone and goes through its artifact,
        start, stop = points  # as in the workflow
        part = fit_datamodel_set(masks, logits[:, start:stop], labels, sizes, estimator, points=points,
                                 logits_from=start, **common)
        write_datamodels(tmp_path / f"part{index}.h5", part, {}, kind=PART_KIND)
    parts = [read_datamodels(tmp_path / f"part{index}.h5", kind=PART_KIND) for index in (2, 0, 1)]
    gathered = gather_datamodel_sets(parts)
    assert gathered.attrs["fit_jobs"] == 3 and gathered.attrs["points"] == [0, 52]
    assert gathered.fitted_splits == ["train", "val", "test"] and gathered.split_sizes == sizes
    for output in ("margins", "logits"):
        ours, theirs = gathered.datamodels[output], whole.datamodels[output]
        assert ours.weights.shape == theirs.weights.shape == (40, 52 * (3 if output == "logits" else 1))
        np.testing.assert_allclose(ours.weights, theirs.weights, rtol=0, atol=1e-5 * np.abs(theirs.weights).max())
        np.testing.assert_allclose(ours.bias, theirs.bias, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(ours.alphas, theirs.alphas, rtol=1e-5)
        np.testing.assert_allclose(gathered.scores[f"{output}/r2"], whole.scores[f"{output}/r2"], atol=1e-4)
        assert gathered.summary()[f"{output}_lds"] == pytest.approx(whole.summary()[f"{output}_lds"], abs=1e-3)
    assert gathered.summary()["logits_lds"] > 0.9
    fit_seconds = sum(part.attrs["logits_fit_seconds"] for part in parts)
    assert gathered.attrs["logits_fit_seconds"] == pytest.approx(fit_seconds)


def test_train_only_datamodels_serve_dmm_and_refuse_other_splits():
    """Fitting the training points only (no DM-DIRECT configured) gives the train rows of the
    full fit; predicting validation outputs from them is a one-line error."""
    from types import SimpleNamespace

    from unlearnflow.dmm.targets import datamodel_targets, predict_outputs

    masks, logits, labels = linear_logits(n_points=50)
    sizes = {"train": 40, "val": 5, "test": 5}
    whole = fit_datamodel_set(masks, logits, labels, sizes, "ridge", 60, log=lambda _: None)
    train = fit_datamodel_set(masks, logits, labels, sizes, "ridge", 60, log=lambda _: None, splits=["train"],
                              outputs=["logits"])
    assert train.fitted_splits == ["train"] and list(train.datamodels) == ["logits"]
    assert train.weights("logits").shape == (40, 40, 3)
    np.testing.assert_allclose(train.weights("logits"), whole.weights("logits")[:, :40], atol=1e-6)
    originals = {"train": logits[:2, :40], "val": logits[:2, 40:45]}
    context = SimpleNamespace(forget=np.array([1, 4]), original_logits=originals, labels=labels[:40])
    hp = {"construction": "logit", "diagonal_only": False, "scale": 1.0, "calibrated": False}
    ours = datamodel_targets({"datamodels": train}, hp, context)(1)["targets"]
    theirs = datamodel_targets({"datamodels": whole}, hp, context)(1)["targets"]
    np.testing.assert_allclose(ours, theirs, atol=1e-5)
    with pytest.raises(UserError, match="fitted on the train points only, not val"):
        predict_outputs({"datamodels": train}, hp, context, {"train": labels[:40], "val": labels[40:45]})


def test_scatter_errors_are_user_errors():
    masks, logits, labels = linear_logits(n_points=50)
    sizes = {"train": 40, "val": 5, "test": 5}
    with pytest.raises(UserError, match="fit_jobs must lie in"):
        point_chunks(5, 6)
    with pytest.raises(UserError, match="splits must be train"):
        fit_datamodel_set(masks, logits, labels, sizes, "ridge", 60, splits=["val"])
    with pytest.raises(UserError, match="outside the 40 points"):
        fit_datamodel_set(masks, logits, labels, sizes, "ridge", 60, splits=["train"], points=(30, 45))
    with pytest.raises(UserError, match=re.escape("the logits from point 10 on do not cover points [0, 20)")):
        fit_datamodel_set(masks, logits[:, 10:30], labels, sizes, "ridge", 60, points=(0, 20), logits_from=10)
    first, last = (fit_datamodel_set(masks, logits, labels, sizes, "ridge", 60, log=lambda _: None, points=points)
                   for points in ((0, 20), (30, 50)))
    with pytest.raises(UserError, match="do not tile the 50 fitted points"):
        gather_datamodel_sets([first, last])
    other = fit_datamodel_set(masks, logits, labels, sizes, "ridge", 50, log=lambda _: None, points=(20, 50))
    with pytest.raises(UserError, match="heldout_models differ"):
        gather_datamodel_sets([first, other])
    with pytest.raises(UserError, match="no parts"):
        gather_datamodel_sets([])
