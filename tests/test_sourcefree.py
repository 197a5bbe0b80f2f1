"""Source-free certified unlearning of linear models: Newton removal against retraining, the
certificates and the truth the evaluation puts beside them, Eq. (3) as printed and its other
readings, the PSD fit and its solvers, and the runner round trip."""

import dataclasses

import numpy as np
import pytest
import torch

from unlearnflow.core.data import load_dataset
from unlearnflow.core.forget_sets import ForgetSamples, build_forget_set
from unlearnflow.core.models import build_model
from unlearnflow.errors import UserError
from unlearnflow.evaluation.certificates import certificate_columns
from unlearnflow.methods.request import ForgetRequest, UnlearningRequest
from unlearnflow.registry import configurations, spec_of
from unlearnflow.runner import RequestSource, apply_method, read_unlearned, unlearn_bank, write_unlearned
from unlearnflow.sourcefree.certificate import SOURCE_FREE_NOT_CERTIFIED, lemma1_expression
from unlearnflow.sourcefree.hessian import (
    VARIANT_SIGMA,
    estimate_retain_hessian,
    fit_psd,
    forget_parts,
)
from unlearnflow.sourcefree.identifiability import perturbations_needed
from unlearnflow.sourcefree.linear import (
    WEIGHT,
    LinearObjective,
    identity_features,
    l2_normalise,
    objective_noise,
    set_weight,
    train,
    train_linear_bank,
)
from unlearnflow.sourcefree.newton import newton_certified, newton_source_free

K, D, N = 3, 6, 120


@pytest.fixture(scope="module")
def toy():
    rng = np.random.default_rng(0)
    x = l2_normalise(rng.standard_normal((N, D)))
    y = rng.integers(0, K, N)
    forget = np.sort(rng.choice(N, 12, replace=False))
    retain = np.setdiff1d(np.arange(N), forget)
    return x, y, forget, retain


def linear_model(W):
    model = build_model("linear", (W.shape[1],), W.shape[0], bias=False).double()
    set_weight(model, W)
    return model


def certified(objective, x, y, forget, retain, W):
    model = linear_model(W)
    request = UnlearningRequest.of_training_set(torch.from_numpy(x), torch.from_numpy(y), torch.from_numpy(forget),
                                                torch.from_numpy(retain), K)
    hp = {"loss": objective.loss, "lam": objective.lam, "objective_noise_std": 0.1}
    result = newton_certified(model, request, hp, seed=0)
    return model.classifier.weight.detach().numpy(), result.certificate


def test_newton_on_ridge_regression_equals_retraining(toy):
    x, y, forget, retain = toy
    objective, b = LinearObjective("squared", 1e-3), objective_noise(5, K, D, 0.1)
    W0, Wr = train(objective, x, y, K, b), train(objective, x[retain], y[retain], K, b)
    Wu, cert = certified(objective, x, y, forget, retain, W0)
    assert np.linalg.norm(Wu - Wr) <= 1e-8 * np.linalg.norm(Wr)
    assert np.linalg.norm(W0 - Wr) > 1e-2 * np.linalg.norm(Wr)      # the removal moved the model
    # a float64 model: the residual is round-off, and so is epsilon
    assert cert["certified"] and cert["residual_bound"] < 1e-9 and cert["epsilon"] < 1e-7
    assert (cert["n"], cert["n_forget"], cert["d"]) == (N, 12, D)


def test_newton_on_logistic_regression_certifies_the_measured_residual(toy):
    x, y, forget, retain = toy
    objective, b = LinearObjective("logistic", 1e-2), objective_noise(6, K, D, 0.1)
    W0, Wr = train(objective, x, y, K, b), train(objective, x[retain], y[retain], K, b)
    Wu, cert = certified(objective, x, y, forget, retain, W0)
    true_residual = np.linalg.norm(objective.gradient(Wu, x[retain], y[retain], b))
    assert true_residual <= cert["residual_bound"] == pytest.approx(true_residual, rel=1e-6)
    assert cert["epsilon"] == pytest.approx(np.sqrt(2 * np.log(1.5e5)) * cert["residual_bound"] / 0.1)
    assert np.linalg.norm(Wu - Wr) <= 0.05 * np.linalg.norm(W0 - Wr)


@pytest.mark.parametrize("solver", ["scalable", "clarabel"])
def test_psd_fit_recovers_a_known_matrix_from_exact_quadratic_differences(solver):
    rng = np.random.default_rng(1)
    p = 5
    A = rng.standard_normal((p, p - 2))
    H = A @ A.T                                                # PSD, rank deficient: the constraint touches
    U = rng.standard_normal((2 * perturbations_needed(p), p))
    fit = fit_psd(U, 0.5 * np.einsum("mi,ij,mj->m", U, H, U), solver=solver)
    assert np.linalg.norm(fit.X - H) <= 1e-4 * np.linalg.norm(H)
    assert fit.objective < 1e-8


def test_psd_fit_stays_within_lemma1_under_bounded_noise():
    rng = np.random.default_rng(2)
    p, epsilon = 6, 0.05
    A = rng.standard_normal((p, p))
    H = A @ A.T / p + np.eye(p)                                # well inside the PSD cone
    U = rng.standard_normal((4000, p))
    exact = 0.5 * np.einsum("mi,ij,mj->m", U, H, U)
    bound = lemma1_expression(epsilon, p)
    uniform = fit_psd(U, exact + rng.uniform(-epsilon, epsilon, len(U)))
    assert np.linalg.norm(uniform.X - H) <= bound
    offset = fit_psd(U, exact + epsilon)                       # a constant error: the bound is attained
    assert 0.8 * bound <= np.linalg.norm(offset.X - H) <= 1.2 * bound


def test_scalable_solver_matches_cvxpy_objective():
    rng = np.random.default_rng(3)
    p = 8
    B = rng.standard_normal((p, p))
    U = rng.standard_normal((3 * perturbations_needed(p), p))
    c = 0.5 * np.einsum("mi,ij,mj->m", U, B + B.T, U) + rng.uniform(-1, 1, len(U))   # indefinite: X >= 0 binds
    scalable, clarabel = fit_psd(U, c, solver="scalable"), fit_psd(U, c, solver="clarabel")
    assert abs(scalable.objective - clarabel.objective) <= 0.01 * clarabel.objective
    assert np.linalg.eigvalsh(scalable.X).min() >= -1e-9


def test_the_taylor_reading_recovers_the_forget_hessian_and_corrected_rescales_it(toy):
    x, y, forget, retain = toy
    objective = LinearObjective("squared", 1e-3)
    W0 = train(objective, x, y, K, objective_noise(7, K, D, 0.1))
    _, hess_f = forget_parts(objective, W0, x[forget], y[forget])
    kwargs = dict(m=2 * perturbations_needed(D), seed=0)
    taylor = estimate_retain_hessian(objective, W0, x[forget], y[forget], N, variant="paper_taylor", **kwargs)
    corrected = estimate_retain_hessian(objective, W0, x[forget], y[forget], N, variant="corrected", **kwargs)
    assert np.linalg.norm(taylor.hessian.blocks - hess_f.blocks) <= 1e-5 * np.linalg.norm(hess_f.blocks)
    assert np.allclose(corrected.hessian.blocks, taylor.hessian.blocks * (N - 12) / 12)
    assert taylor.sigma == corrected.sigma == 0.01


def test_the_paper_variant_fits_eq3_as_printed(toy):
    """variant paper minimises the printed 1/m sum (1/2 dw^T X dw - grad_f^T dw - dL_f(w_i))^2 over
    X >= 0 with dw ~ N(0, I) (Lemma 1), and takes H_r ~= X: the fit's objective is the printed one
    at its X (the perturbations are the estimate's seeded stream), and no PSD matrix does better."""
    x, y, forget, retain = toy
    objective = LinearObjective("squared", 1e-3)
    W0 = train(objective, x, y, K, objective_noise(8, K, D, 0.1))
    grad_f, _ = forget_parts(objective, W0, x[forget], y[forget])
    m = 2 * perturbations_needed(D)
    estimate = estimate_retain_hessian(objective, W0, x[forget], y[forget], N, m, variant="paper", seed=3)
    assert estimate.sigma == VARIANT_SIGMA["paper"] == 1.0
    U = np.random.default_rng([3, 7_002]).standard_normal((m, D))       # dw_i, shared by the K rows
    dW = np.broadcast_to(U[:, None, :], (m, K, D))
    dL_f = np.array([objective.value(W0 + dw, x[forget], y[forget]) for dw in dW]) - objective.value(
        W0, x[forget], y[forget])
    X = estimate.fits[0].X                                            # the fit of all K rows: K blocks' sum

    def printed(X):
        return np.mean((0.5 * np.einsum("mi,ij,mj->m", U, X, U) - np.einsum("mkd,kd->m", dW, grad_f) - dL_f) ** 2)

    assert estimate.fits[0].objective == pytest.approx(printed(X), rel=1e-9)
    assert np.allclose(estimate.hessian.blocks, X / K)
    # f~_i = 0 <=> 1/2 dw^T X dw = grad_f^T dw + dL_f: the conic solver on the printed data
    conic = fit_psd(U, np.einsum("mkd,kd->m", dW, grad_f) + dL_f, solver="clarabel")
    assert printed(X) <= printed(conic.X) * (1 + 1e-4)
    # the Taylor reading's data differ by the odd part 2 grad_F^T dw, which no quadratic form explains
    taylor = estimate_retain_hessian(objective, W0, x[forget], y[forget], N, m, sigma=1.0, variant="paper_taylor",
                                     seed=3)
    assert taylor.fits[0].objective < 1e-12 < estimate.fits[0].objective


def test_source_free_method_checks_its_inputs(toy):
    x, y, forget, _ = toy
    request = ForgetRequest(forget_inputs=torch.from_numpy(x[forget]), forget_labels=torch.from_numpy(y[forget]),
                            num_classes=K)
    with pytest.raises(UserError, match="n_train"):
        newton_source_free(linear_model(np.zeros((K, D))), request, {}, seed=0)
    with pytest.raises(UserError, match="bias-free linear model"):
        newton_source_free(build_model("mlp", (D,), K).double(), request, {"n_train": N}, seed=0)
    assert spec_of("newton_source_free").source_free and not spec_of("newton_certified").source_free


@pytest.fixture(scope="module")
def digits(one_thread):
    features = identity_features(load_dataset({"loader": "digits", "max_train": 600}))
    n = len(features.y_train)
    forget_set = build_forget_set("r", {"kind": "random", "size": n // 8}, features.x_train, features.y_train, seed=0)
    objective = LinearObjective("squared", 1e-3)
    seeds = [11, 12]
    originals = train_linear_bank(features, objective, 0.1, seeds)
    retrained = train_linear_bank(features, objective, 0.1, seeds, role="retrain", train_mask=forget_set.retain_mask(n))
    return features, forget_set, originals, retrained


def test_certificate_round_trips_through_the_unlearned_artifact(digits, tmp_path):
    features, forget_set, originals, _ = digits
    spec = spec_of("newton_certified")
    configs = configurations("newton_certified", {}, originals.attrs["training"])   # sigma_b from the recipe
    samples = ForgetSamples.of(forget_set, features.x_train, features.x_val, features.y_val, features.num_classes)
    results = unlearn_bank(spec, configs, originals, RequestSource(samples, features, forget_set), [{}], seed=0,
                           device=torch.device("cpu"))
    path = write_unlearned(tmp_path / "u.h5", "newton_certified", "r", originals, configs, results, {}, {})
    certificates = read_unlearned(path)["default"].attrs["certificates"]
    assert certificates == results["default"][0].certificates and len(certificates) == 2
    assert certificates[0]["n_forget"] == len(forget_set.indices) and certificates[0]["objective_noise_std"] == 0.1
    assert certificates[0]["certified"] and certificates[0]["epsilon"] < 1e-2 and certificates[0]["delta"] == 1e-5


@pytest.fixture(scope="module")
def source_free_banks(digits):
    """Eq. 3 as printed (default) and the corrected reading on the digits banks, at m = 2 d(d+1)/2."""
    features, forget_set, originals, _ = digits
    config = {"hyperparameters": {"m": 2 * perturbations_needed(64), "max_iters": 300}, "grid": {"variant": ["corrected"]}}
    return apply_method("newton_source_free", originals, features, forget_set, config)


def test_corrected_source_free_is_closer_to_retraining_than_the_paper_on_digits(digits, source_free_banks):
    _, _, originals, retrained = digits
    W0, Wr = originals.weights[WEIGHT], retrained.weights[WEIGHT]

    def distance(label):
        Wu = source_free_banks[label][-1].weights[WEIGHT]
        return np.median(np.linalg.norm(Wu - Wr, axis=(1, 2)) / np.linalg.norm(W0 - Wr, axis=(1, 2)))

    printed, corrected = distance("default"), distance("variant=corrected")
    assert printed > 1.0                                    # the paper's step overshoots past the original
    assert corrected < 0.7 and corrected < 0.5 * printed
    certificate = source_free_banks["variant=corrected"][-1].attrs["certificates"][0]
    assert certificate["variant"] == "corrected" and certificate["certified"] is False
    assert certificate["reason"] == SOURCE_FREE_NOT_CERTIFIED and "residual_bound" not in certificate
    assert np.shape(certificate["estimated_hessian"]["blocks"]) == (1, 64, 64)   # the squared loss's shared block
    assert certificate["paper_claims"]["theorem1_claim"] == 0.0                # gamma = 0: the paper claims exactness


def test_the_evaluation_puts_each_claim_beside_the_truth(digits, source_free_banks):
    features, forget_set, originals, _ = digits
    certified = apply_method("newton_certified", originals, features, forget_set, {})["default"][-1]
    columns = certificate_columns(features, forget_set, originals, certified)
    assert columns["cert_certified"] == 1.0 and columns["cert_delta"] == 1e-5 and columns["cert_epsilon"] < 1e-2
    assert columns["cert_residual_bound"] >= columns["true_retain_gradient_norm"] > 0    # float32 storage
    assert columns["cert_residual_bound_violated"] == 0.0 and np.isnan(columns["paper_lemma1_claim"])

    source_free = source_free_banks["variant=corrected"][-1]
    columns = certificate_columns(features, forget_set, originals, source_free)
    assert columns["cert_certified"] == 0.0 and np.isnan(columns["cert_epsilon"])
    assert np.isnan(columns["cert_residual_bound"]) and columns["true_retain_gradient_norm"] > 0.1
    # the paper's claims beside the truth: Theorem 1 says 0 (gamma = 0), Lemma 1 a tiny error
    assert columns["paper_theorem1_claim"] == 0.0 and columns["paper_theorem1_violated"] == 1.0
    assert columns["paper_lemma1_claim"] < columns["true_hessian_error"] and columns["paper_lemma1_violated"] == 1.0
    # the true Hessian error by hand: H_r = X_r^T X_r + lam n_r I against the stored block, model 0
    x = features.x_train.astype(np.float64)[forget_set.retain_mask(len(features.y_train))]
    errors = [np.linalg.norm(np.asarray(c["estimated_hessian"]["blocks"][0]) - x.T @ x - 1e-3 * len(x) * np.eye(64))
              for c in source_free.attrs["certificates"]]
    assert columns["true_hessian_error"] == pytest.approx(np.mean(errors), rel=1e-9)
    # do_nothing: no certificate; its retain gradient is -grad_F at the original (the whole objective's is 0)
    untouched = certificate_columns(features, forget_set, originals, originals)
    forget = forget_set.indices
    gradients = [forget_parts(LinearObjective("squared", 1e-3), W.astype(np.float64),
                              features.x_train[forget].astype(np.float64), features.y_train[forget])[0]
                 for W in originals.weights[WEIGHT]]
    assert untouched["true_retain_gradient_norm"] == pytest.approx(np.mean(np.linalg.norm(gradients, axis=(1, 2))),
                                                                   rel=1e-6)
    assert np.isnan(untouched["cert_certified"]) and np.isnan(untouched["paper_lemma1_claim"])
    mlp = dataclasses.replace(originals, attrs={**originals.attrs, "arch": "mlp"})
    assert all(np.isnan(value) for value in certificate_columns(features, forget_set, mlp, certified).values())


def test_weight_distance_is_0_for_exact_removal_1_for_the_original_and_nan_for_other_models(digits):
    from unlearnflow.evaluation.evaluate import weight_distance
    features, forget_set, originals, retrained = digits
    banks = apply_method("newton_certified", originals, features, forget_set, {})
    unlearned = banks["default"][-1]
    assert weight_distance(originals, retrained, originals) == 1.0
    assert weight_distance(originals, retrained, unlearned) < 1e-3    # float32 weights; exact in float64
    assert np.isnan(weight_distance(originals, retrained, dataclasses.replace(unlearned, weights={})))
    mlp = dataclasses.replace(originals, attrs={**originals.attrs, "arch": "mlp"})
    assert np.isnan(weight_distance(mlp, retrained, unlearned))


def test_the_squared_loss_without_ridge_on_rank_deficient_features_is_one_line():
    """digits' identity features have two always-blank pixels: with lam = 0 X^T X is singular."""
    x = np.random.default_rng(0).standard_normal((30, 4))
    x[:, 2] = 0.0
    y = np.arange(30) % 3
    with pytest.raises(UserError) as error:
        train(LinearObjective("squared", 0.0), x, y, 3)
    assert str(error.value) == ("linear model: the squared loss with lam = 0 has no unique minimiser: the 30 x 4 "
                                "features have rank 3 < 4; set lam > 0 or use fewer features (e.g. features.pool)")
    # full rank: the least-squares solution, gradient zero
    x[:, 2] = 1.0 + x[:, 0] ** 2
    W = train(LinearObjective("squared", 0.0), x, y, 3)
    assert np.linalg.norm(LinearObjective("squared", 0.0).gradient(W, x, y)) < 1e-10
