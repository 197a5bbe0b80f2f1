"""Certificates that hold (issue 18): over random problems, no certificate field the project names a
bound is ever below the true quantity it bounds (unlearnflow.evaluation.certificates computes the
truth from the retain data), every such field is declared in
unlearnflow.sourcefree.certificate.BOUNDED_QUANTITIES, newton_certified's (epsilon, delta) follows
Guo et al.'s Thm. 3, and without objective noise nothing is certified."""

import math

import numpy as np
import pytest
import torch
from threadpoolctl import threadpool_limits

from unlearnflow.core.models import build_model
from unlearnflow.errors import UserError
from unlearnflow.evaluation.certificates import model_truths
from unlearnflow.methods.request import ForgetRequest, UnlearningRequest
from unlearnflow.sourcefree.certificate import (
    BOUNDED_QUANTITIES,
    NO_OBJECTIVE_NOISE,
    PAPER_CLAIMS,
    SOURCE_FREE_NOT_CERTIFIED,
    UNKNOWN_OBJECTIVE_NOISE,
    is_bound_field,
)
from unlearnflow.sourcefree.declarations import certified_recipe
from unlearnflow.sourcefree.hessian import VARIANTS
from unlearnflow.sourcefree.identifiability import perturbations_needed
from unlearnflow.sourcefree.linear import (
    LinearObjective,
    l2_normalise,
    objective_noise,
    set_parameters,
    train,
    weight_of,
)
from unlearnflow.sourcefree.newton import newton_certified, newton_source_free

LOSSES = ("squared", "logistic", "multinomial", "mixed_squared")


def case_list() -> list[tuple]:
    """48 problems: (loss, K, width, n, forget fraction, objective noise std, output noise std, seed)."""
    rng = np.random.default_rng(18)
    cases = []
    for index in range(48):
        loss = LOSSES[index % 4]
        K = int(rng.integers(2, 5))
        width = int(rng.integers(3, 9)) if loss != "mixed_squared" else K * (1 + int(rng.integers(2, 7)))
        cases.append((loss, K, width, int(rng.integers(60, 200)), float(rng.choice([0.02, 0.1, 0.3])),
                      float(rng.choice([0.0, 0.1, 1.0])), float(rng.choice([0.0, 0.0, 0.01])), index))
    return cases


def problem(loss, K, width, n, fraction, objective_noise_std, seed):
    """Rows, labels, a forget set and the original model trained to optimum with noise b, stored
    in a float32 torch model as the workflow stores it."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, width))
    x = x if loss == "mixed_squared" else l2_normalise(x)
    y = rng.integers(0, K, n)
    forget = np.sort(rng.choice(n, max(2, int(fraction * n)), replace=False))
    objective = LinearObjective(loss, 1e-2)
    shape = objective.parameter_shape(K, width)
    parameters = train(objective, x, y, K, objective_noise(seed, *shape, objective_noise_std))
    model = build_model("linear", (width,), K, bias=False)
    set_parameters(model, objective, parameters)
    return objective, x, y, forget, model


def extended_precision_norm(objective, x, y, retain, original_weight, weight):
    """The retain gradient norm of the stored weights in x87 extended precision (64-bit mantissa):
    the truth that any float64 measurement, the certificate's or a reviewer's, approximates."""
    x = x.astype(np.float32).astype(np.longdouble)
    W0, W = (objective.parameters(np.asarray(w, np.longdouble)) for w in (original_weight, weight))
    b = -objective.gradient(W0, x, y)
    return float(np.sqrt(np.sum(objective.gradient(W, x[retain], y[retain], b) ** 2)))


def fields(certificate, prefix=""):
    """Every (path, value) of a certificate outside the paper's claims."""
    for key, value in certificate.items():
        if key == PAPER_CLAIMS:
            continue
        yield prefix + key, value
        if isinstance(value, dict):
            yield from fields(value, f"{prefix}{key}.")


def assert_bounds_hold(method, certificate, truths):
    for path, value in fields(certificate):
        if not is_bound_field(path.rsplit(".", 1)[-1]):
            continue
        assert path in BOUNDED_QUANTITIES, f"{method}: field {path!r} is named a bound but bounds nothing declared"
        quantity = BOUNDED_QUANTITIES[path]
        if value is not None:
            truth = truths[quantity]
            assert value >= truth, f"{method}: {path} = {value!r} is below the true {quantity} {truth!r}"


@pytest.mark.parametrize("case", case_list(), ids=lambda case: f"{case[0]}-{case[-1]}")
def test_no_certificate_field_named_a_bound_is_below_the_truth(case):
    loss, K, width, n, fraction, objective_noise_std, output_noise_std, seed = case
    with threadpool_limits(limits=1):
        objective, x, y, forget, model = problem(loss, K, width, n, fraction, objective_noise_std, seed)
        original = weight_of(model, "test")
        retain = np.setdiff1d(np.arange(n), forget)
        retain_mask, everything = np.isin(np.arange(n), retain), np.ones(n, bool)
        hp = {"loss": loss, "lam": objective.lam, "noise_std": output_noise_std}
        certified = build_model("linear", (width,), K, bias=False)
        certified.load_state_dict(model.state_dict())
        request = UnlearningRequest.of_training_set(torch.from_numpy(x).float(), torch.from_numpy(y),
                                                    torch.from_numpy(forget), torch.from_numpy(retain), K)
        result = newton_certified(certified, request, {**hp, "objective_noise_std": objective_noise_std}, seed)
        truths = model_truths(objective, x.astype(np.float32).astype(np.float64), y, everything, retain_mask,
                              original, weight_of(certified, "test"), result.certificate)
        assert_bounds_hold("newton_certified", result.certificate, truths)
        exact = extended_precision_norm(objective, x, y, retain, original, weight_of(certified, "test"))
        assert result.certificate["residual_bound"] >= exact

        source_free = build_model("linear", (width,), K, bias=False)
        source_free.load_state_dict(model.state_dict())
        p = objective.hessian(objective.parameters(original), x[:1], y[:1]).block_size
        variant = VARIANTS[seed % len(VARIANTS)]
        request = ForgetRequest(forget_inputs=torch.from_numpy(x[forget]).float(),
                                forget_labels=torch.from_numpy(y[forget]), num_classes=K)
        result = newton_source_free(source_free, request, {**hp, "n_train": n, "m": 2 * perturbations_needed(p),
                                                           "variant": variant, "max_iters": 500}, seed)
        assert result.certificate["certified"] is False and result.certificate["reason"] == SOURCE_FREE_NOT_CERTIFIED
        truths = model_truths(objective, x.astype(np.float32).astype(np.float64), y, everything, retain_mask,
                              original, weight_of(source_free, "test"), result.certificate)
        assert_bounds_hold("newton_source_free", result.certificate, truths)
        assert math.isfinite(truths["hessian_error"])       # the estimate is stored: the evaluation can judge it


def test_a_sequence_of_certified_removals_keeps_the_models_noise_and_its_bound():
    """Request 2 starts from request 1's released weights, which are not an optimum: b travels in
    the state, and the bound still holds against the truth computed from the original."""
    objective, x, y, forget, model = problem("logistic", 3, 6, 150, 0.2, 0.1, 7)
    original = weight_of(model, "test")
    first, second = forget[: len(forget) // 2], forget[len(forget) // 2:]
    inputs, labels = torch.from_numpy(x).float(), torch.from_numpy(y)
    state = None
    for step, request_forget in enumerate((first, second)):
        gone = forget[: len(first)] if step == 0 else forget
        retain = np.setdiff1d(np.arange(len(x)), gone)
        request = UnlearningRequest.of_training_set(inputs, labels, torch.from_numpy(request_forget),
                                                    torch.from_numpy(retain), 3, state=state, step=step)
        result = newton_certified(model, request, {"loss": "logistic", "lam": objective.lam,
                                                   "objective_noise_std": 0.1}, seed=step)
        state = result.state
        truths = model_truths(objective, x.astype(np.float32).astype(np.float64), y, np.ones(len(x), bool),
                              np.isin(np.arange(len(x)), retain), original, weight_of(model, "test"),
                              result.certificate)
        assert_bounds_hold("newton_certified", result.certificate, truths)
        assert result.certificate["residual_bound"] <= 1.01 * truths["retain_gradient_norm"] + 1e-9
    # a later request whose predecessor carried no b (another method's, in a ledger): nothing is measurable
    request = UnlearningRequest.of_training_set(inputs, labels, torch.from_numpy(second), torch.from_numpy(retain), 3,
                                                state={"n": 100}, step=1)
    result = newton_certified(model, request, {"loss": "logistic", "lam": objective.lam, "objective_noise_std": 0.1}, 0)
    assert result.certificate["certified"] is False and result.certificate["reason"] == UNKNOWN_OBJECTIVE_NOISE
    assert result.certificate["residual_bound"] is None and result.certificate["epsilon"] is None


def test_epsilon_and_delta_follow_guo_et_al_theorem_3_and_no_noise_certifies_nothing():
    objective, x, y, forget, model = problem("squared", 3, 5, 100, 0.1, 0.1, 3)
    retain = np.setdiff1d(np.arange(len(x)), forget)

    def certificate(**hp):
        edited = build_model("linear", (5,), 3, bias=False)
        edited.load_state_dict(model.state_dict())
        request = UnlearningRequest.of_training_set(torch.from_numpy(x).float(), torch.from_numpy(y),
                                                    torch.from_numpy(forget), torch.from_numpy(retain), 3)
        return newton_certified(edited, request, {"loss": "squared", "lam": objective.lam, **hp}, seed=0).certificate

    cert = certificate(objective_noise_std=0.1, delta=1e-5)
    assert cert["certified"] is True and cert["delta"] == 1e-5 and cert["objective_noise_std"] == 0.1
    # Thm. 3: b ~ N(0, sigma_b^2 I) with sigma_b = c eps' / eps gives (eps, delta) with delta = 1.5 exp(-c^2 / 2)
    c = cert["epsilon"] * cert["objective_noise_std"] / cert["residual_bound"]
    assert 1.5 * math.exp(-c * c / 2) == pytest.approx(1e-5, rel=1e-12)
    assert cert["epsilon"] == pytest.approx(math.sqrt(2 * math.log(1.5e5)) * cert["residual_bound"] / 0.1, rel=1e-12)
    # float32 storage leaves a small residual: a small epsilon; a larger delta, a smaller epsilon
    assert 0 < cert["residual_bound"] < 1e-4 and cert["epsilon"] < 1e-2
    assert certificate(objective_noise_std=0.1, delta=1e-2)["epsilon"] < cert["epsilon"]
    for unnoised in (certificate(), certificate(objective_noise_std=0.0, delta=1e-3)):
        assert unnoised["certified"] is False and unnoised["reason"] == NO_OBJECTIVE_NOISE
        assert unnoised["epsilon"] is None and unnoised["residual_bound"] == pytest.approx(cert["residual_bound"])
    with pytest.raises(UserError, match="delta must be in"):
        certificate(objective_noise_std=0.1, delta=1.5)
    # the workflow derives sigma_b from the training recipe, as it does the loss and lam
    assert certified_recipe({"kind": "linear", "loss": "squared", "lam": 1e-3, "noise_std": 0.1, "n_train": 9}) == {
        "loss": "squared", "lam": 1e-3, "objective_noise_std": 0.1}
    assert certified_recipe({"optimizer": "lbfgs", "loss": "logistic", "lam": 0.01})["objective_noise_std"] == 0.0
    assert certified_recipe({"optimizer": "sgd", "lr": 0.1}) == {}


def test_the_true_retain_gradient_is_the_retained_objectives_gradient_by_hand():
    """model_truths against the squared loss's gradient written out: X_r^T (X_r W^T - Y_r) + lam n_r W + b,
    with b from the original's stationarity on all points."""
    objective, x, y, forget, model = problem("squared", 3, 4, 80, 0.1, 0.1, 5)
    x = x.astype(np.float32).astype(np.float64)
    W0 = weight_of(model, "test")
    W = W0 + 0.01
    onehot, retain = np.eye(3)[y], np.setdiff1d(np.arange(80), forget)
    b = -(x.T @ (x @ W0.T - onehot)).T - 1e-2 * 80 * W0
    by_hand = (x[retain].T @ (x[retain] @ W.T - onehot[retain])).T + 1e-2 * len(retain) * W + b
    truths = model_truths(objective, x, y, np.ones(80, bool), np.isin(np.arange(80), retain), W0, W, None)
    assert truths["retain_gradient_norm"] == pytest.approx(np.linalg.norm(by_hand), rel=1e-9)
    assert math.isnan(truths["hessian_error"]) and truths["epsilon_of_retain_gradient_norm"] is None
