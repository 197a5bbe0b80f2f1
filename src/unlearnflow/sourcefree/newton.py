"""Newton removal of a forget set from a linear model, Eq. (1) of source-free unlearning (Guo
et al.'s certified removal): ``w_u = w* + H_r^-1 grad_F (+ noise_std * N(0, I))``.

- :func:`newton_certified` ("Unlearned (+)"): H_r is the true retain Hessian. NOT source-free: it
  takes an :class:`~unlearnflow.methods.request.UnlearningRequest` with the training set, and
  certifies (epsilon, delta)-removal by Guo et al.'s Thm. 3 from the measured retain gradient of
  the released weights (b included) and the objective noise's std
  (:func:`~unlearnflow.sourcefree.certificate.removal_guarantee`). The model's objective noise b
  is not stored with the model; it is recovered from the model the first request starts from by
  stationarity (:func:`~unlearnflow.sourcefree.linear.stationarity_noise`) and carried through a
  sequence in the request state.
- :func:`newton_source_free` ("Unlearned (-)"): H_r estimated from the forget samples alone
  (:func:`~unlearnflow.sourcefree.hessian.estimate_retain_hessian`, the reading by ``variant``);
  takes a :class:`~unlearnflow.methods.request.ForgetRequest`. Not certified (its certificate
  says why, and keeps the paper's claims apart).

What the model owner must supply: the objective of the training recipe (hyper-parameters
``loss`` and ``lam``), for the certified method the objective noise's std
(``objective_noise_std``, the recipe's ``noise_std``) and for the source-free method the
training-set size ``n_train``. The registry derives them from the recipe (:func:`certified_recipe`,
:func:`source_free_recipe`: from the config's ``optimizer: lbfgs`` training section, or the
recipe a linear bank records, which ``original_models.h5`` keeps), so a workflow user never
repeats them; called directly, the defaults below apply. The method's own ``noise_std`` is Eq.
(1)'s *output* noise, a different thing. In a request sequence the retained count is carried in
the state, so request r uses ``n_train - (forgotten so far)``.

Both work on the objective's parameters (:meth:`LinearObjective.parameters`): W itself, or for a
mixed-linear network (loss ``mixed_squared``, Sec. 3) the deviation Delta from the public weights,
whose Hessian lives in the parameter dimension P.

Both return ``MethodResult(cost, certificate=...)`` (:mod:`~unlearnflow.sourcefree.certificate`).
"""

from __future__ import annotations

import time
from typing import Any, Mapping, Sequence

import numpy as np
from torch import nn

from unlearnflow.core.training import FitStats
from unlearnflow.errors import UserError
from unlearnflow.methods.common import rng
from unlearnflow.methods.declarations import resolve
from unlearnflow.methods.request import ForgetRequest, MethodResult, UnlearningRequest
from unlearnflow.sourcefree.certificate import (
    SOURCE_FREE_NOT_CERTIFIED,
    paper_claims,
    removal_guarantee,
    request_fields,
    stored_hessian,
)
from unlearnflow.sourcefree.declarations import (
    CERTIFIED_DEFAULTS,
    SOURCE_FREE_DEFAULTS,
    VARIANT_SIGMA,
    check_certified,
    check_source_free,
)
from unlearnflow.sourcefree.hessian import estimate_retain_hessian, forget_parts
from unlearnflow.sourcefree.identifiability import check_configurations
from unlearnflow.sourcefree.linear import (
    BlockHessian,
    LinearObjective,
    as_rows,
    gradient_norm,
    parameters_of,
    set_parameters,
    stationarity_noise,
)


def check_source_free_inputs(configurations: Sequence[Any], input_shape: tuple[int, ...], classes: int) -> list[str]:
    """Every configuration's m against the p(p+1)/2 perturbations that identify a Hessian block of
    this bank (:func:`~unlearnflow.sourcefree.identifiability.check_configurations`)."""
    width = int(np.prod(input_shape))
    return check_configurations([(config.label, config.hyperparameters,
                                  LinearObjective(config.hyperparameters["loss"], config.hyperparameters["lam"])
                                  .parameter_shape(classes, width)) for config in configurations], width)


def _newton_setup(name: str, defaults: Mapping[str, Any], check, given: Mapping[str, Any],
                  model: nn.Module) -> tuple[dict[str, Any], LinearObjective, np.ndarray, float]:
    """What both Newton methods start from: checked hyper-parameters, the objective, the weights, the clock."""
    hp = resolve(name, defaults, given)
    check(hp)
    start = time.perf_counter()
    objective = LinearObjective(hp["loss"], float(hp["lam"]))
    return hp, objective, parameters_of(model, objective, name), start


def newton_certified(model: nn.Module, request: UnlearningRequest, hp: Mapping[str, Any], seed: int) -> MethodResult:
    """Eq. (1) with the true retain Hessian ``H_r = sum_{D_r} hess l + lam n_r I`` (Guo et al., Sec. 3),
    certified by Guo et al.'s Thm. 3 from the released weights' measured retain gradient."""
    hp, objective, W, start = _newton_setup("newton_certified", CERTIFIED_DEFAULTS, check_certified, hp, model)
    x, y = as_rows(request.inputs), request.labels.cpu().numpy()
    retain, forget, trained = (np.sort(index.cpu().numpy()) for index in (request.retain, request.forget,
                                                                          request.trained_on))
    noise = _objective_noise(objective, W, x[trained], y[trained], request)
    grad_f, _ = forget_parts(objective, W, x[forget], y[forget])
    hessian = objective.hessian(W, x[retain], y[retain])
    step = hessian.solve(grad_f)
    set_parameters(model, objective, _with_noise(W + step, hp["noise_std"], seed))
    released = parameters_of(model, objective, "newton_certified")
    residual = None if noise is None else gradient_norm(objective, released, x[retain], y[retain], *noise)
    seconds = time.perf_counter() - start
    cert = {**request_fields("newton_certified", objective, len(trained), len(forget), hessian.block_size, step,
                             hp["noise_std"], seconds, seed),
            **removal_guarantee(residual, hp["objective_noise_std"], hp["delta"]),
            "solver": "exact retain Hessian", "m": 0}
    state = None if noise is None else {"objective_noise": noise[0], "objective_noise_error": np.array(noise[1])}
    return MethodResult(FitStats(seconds, 1, len(trained)), certificate=cert, state=state)


def _objective_noise(objective: LinearObjective, W: np.ndarray, x_trained: np.ndarray, y_trained: np.ndarray,
                     request: UnlearningRequest) -> tuple[np.ndarray, float] | None:
    """(b, a bound on its error) of the model a request starts from: recovered by stationarity from
    the original (the first request), or carried by the state of the previous ``newton_certified``
    request; None when neither (a later request after another method's: W is no optimum)."""
    if isinstance(request.state, Mapping) and "objective_noise" in request.state:
        return request.state["objective_noise"], float(request.state["objective_noise_error"])
    return stationarity_noise(objective, W, x_trained, y_trained) if request.step == 0 else None


def newton_source_free(model: nn.Module, request: ForgetRequest, hp: Mapping[str, Any], seed: int) -> MethodResult:
    """Eq. (1) with the source-free estimate of H_r (Sec. 4, Eq. 3; the reading by ``variant``)."""
    hp, objective, W, start = _newton_setup("newton_source_free", SOURCE_FREE_DEFAULTS, check_source_free, hp, model)
    x_f, y_f = as_rows(request.forget_inputs), request.forget_labels.cpu().numpy()
    n = int(request.state["n"]) if isinstance(request.state, Mapping) and "n" in request.state else int(hp["n_train"])
    if n <= 0:
        raise UserError("newton_source_free: set hyper-parameter n_train (the training-set size of the model)")
    sigma = hp["sigma"] or VARIANT_SIGMA[hp["variant"]]
    estimate = estimate_retain_hessian(objective, W, x_f, y_f, n, hp["m"], sigma, hp["variant"], hp["solver"],
                                       seed, hp["max_iters"], hp["tol"])
    hessian = estimate.hessian.plus_identity(hp["ridge"] * n)
    grad_f, _ = forget_parts(objective, W, x_f, y_f)
    step = _solve(hessian, grad_f)
    set_parameters(model, objective, _with_noise(W + step, hp["noise_std"], seed))
    seconds = time.perf_counter() - start
    fits = estimate.fits
    claims = paper_claims(objective, W, step, x_f, y_f, n, hessian.block_size, estimate.fit_residual,
                          "the PSD fit's largest residual on the forget-set loss differences (the paper's epsilon, "
                          "max_i |dL_r(w_i) - dL_f(w_i)|, needs the retain losses)", sigma)
    cert = {**request_fields("newton_source_free", objective, n, len(x_f), hessian.block_size, step, hp["noise_std"],
                             seconds, seed),
            "certified": False, "reason": SOURCE_FREE_NOT_CERTIFIED,
            **stored_hessian(hessian, objective.loss == "squared", hp["ridge"] * n),
            "solver": hp["solver"], "m": hp["m"], "variant": hp["variant"], "sigma": float(sigma),
            "fit_objective": float(np.mean([fit.objective for fit in fits])),
            "fit_iterations": int(sum(fit.iterations for fit in fits)),
            "fit_status": sorted({fit.status for fit in fits}), "fit_seconds": estimate.seconds,
            "paper_claims": claims}
    return MethodResult(FitStats(seconds, 1, len(x_f) * hp["m"]), certificate=cert, state={"n": n - len(x_f)})


def _solve(hessian: BlockHessian, gradient: np.ndarray) -> np.ndarray:
    try:
        return hessian.solve(gradient)
    except np.linalg.LinAlgError:
        raise UserError("newton_source_free: the estimated retain Hessian is singular (raise ridge)") from None


def _with_noise(W: np.ndarray, noise_std: float, seed: int) -> np.ndarray:
    """Eq. (1)'s ``+ sigma^2 eps`` term: Gaussian noise of standard deviation noise_std."""
    if noise_std == 0:
        return W
    return W + noise_std * rng(seed, "newton/noise").standard_normal(W.shape)
