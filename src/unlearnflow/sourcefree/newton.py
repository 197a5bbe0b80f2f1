"""Newton removal of a forget set from a linear model, Eq. (1) of source-free unlearning (Guo
et al.'s certified removal): ``w_u = w* + H_r^-1 grad_F (+ noise_std * N(0, I))``.

- :func:`newton_certified` ("Unlearned (+)"): H_r is the true retain Hessian. NOT source-free: it
  takes an :class:`~unlearnflow.methods.request.UnlearningRequest` with the training set, and
  reports the residual gradient ``||grad L(w_u; D_r)||`` of the retained objective (b included).
  The model's objective noise b is not stored with the model; at the optimum it is
  ``b = -grad(sum_i l_i + lam n / 2 ||W||^2)(W*)`` (stationarity), which is how it is recovered here.
- :func:`newton_source_free` ("Unlearned (-)"): H_r estimated from the forget samples alone
  (:func:`~unlearnflow.sourcefree.hessian.estimate_retain_hessian`); takes a
  :class:`~unlearnflow.methods.request.ForgetRequest`.

What the model owner must supply: the objective of the training recipe (hyper-parameters
``loss`` and ``lam``) and, for the source-free method, the training-set size ``n_train``. The
registry derives them from the recipe (:func:`certified_recipe`, :func:`source_free_recipe`:
``loss`` and ``lam`` from the config's ``optimizer: lbfgs`` training section, all three from the
recipe a linear bank records, which ``original_models.h5`` keeps), so a workflow user never
repeats them; called directly, the defaults below apply.
In a request sequence the retained count is carried in the state, so request r uses
``n_train - (forgotten so far)``.

Both work on the objective's parameters (:meth:`LinearObjective.parameters`): W itself, or for a
mixed-linear network (loss ``mixed_squared``, Sec. 3) the deviation Delta from the public weights,
whose Hessian lives in the parameter dimension P.

Both return ``MethodResult(cost, certificate=...)`` (:mod:`~unlearnflow.sourcefree.certificate`).
"""

from __future__ import annotations

import time
from typing import Any, Mapping

import numpy as np
from torch import nn

from unlearnflow.core.training import FitStats
from unlearnflow.errors import UserError
from unlearnflow.methods.common import resolve, rng
from unlearnflow.methods.request import ForgetRequest, MethodResult, UnlearningRequest
from unlearnflow.sourcefree.certificate import certificate
from unlearnflow.sourcefree.hessian import GRADIENT_TERMS, SOLVERS, VARIANTS, estimate_retain_hessian, forget_parts
from unlearnflow.sourcefree.linear import BlockHessian, LinearObjective, as_rows, parameters_of, set_parameters

CERTIFIED_DEFAULTS = {"loss": "squared", "lam": 1e-3, "noise_std": 0.0}

#: m = 500 perturbations and sigma = 0.01 as in the paper's Table 1 / the authors' notebook;
#: variant ``paper`` (Eq. 3 as written) is the default, the grid adds the corrected and notebook
#: variants so that every run reports them side by side. ``ridge`` is added as ``ridge * n * I``
#: (mean-form units) before inverting, as the notebook does.
SOURCE_FREE_DEFAULTS = {**CERTIFIED_DEFAULTS, "n_train": 0, "m": 500, "sigma": 0.01, "variant": "paper",
                        "solver": "scalable", "gradient_term": "taylor", "max_iters": 2000, "tol": 1e-7,
                        "ridge": 1e-6}
CERTIFIED_GRID: dict[str, list] = {}
SOURCE_FREE_GRID = {"variant": ["corrected", "notebook"]}


def certified_recipe(recipe: Mapping[str, Any]) -> dict[str, Any]:
    """``loss`` and ``lam`` of a linear training recipe (the config's ``optimizer: lbfgs`` section or
    a bank's recorded recipe); nothing for any other recipe. Eq. (1)'s H_r and grad_F are those of
    the objective the model minimised, so these must equal the recipe's."""
    if recipe.get("optimizer") != "lbfgs" and recipe.get("kind") != "linear":
        return {}
    return {"loss": recipe["loss"], "lam": float(recipe["lam"])}


def source_free_recipe(recipe: Mapping[str, Any]) -> dict[str, Any]:
    """:func:`certified_recipe` and, from a bank's recorded recipe, ``n_train`` (the training-set
    size n, which the model owner knows; the corrected variant's n_r / n_F needs it)."""
    derived = certified_recipe(recipe)
    if derived and "n_train" in recipe:
        derived["n_train"] = int(recipe["n_train"])
    return derived


def check_certified(hp: Mapping[str, Any]) -> None:
    """The objective is valid (UserError otherwise)."""
    LinearObjective(hp["loss"], float(hp["lam"]))
    if hp["noise_std"] < 0:
        raise UserError(f"newton: noise_std must be >= 0, got {hp['noise_std']}")


def check_source_free(hp: Mapping[str, Any]) -> None:
    """The objective and the choices (n_train is checked per request: the defaults must resolve)."""
    check_certified(hp)
    for name, known in (("variant", VARIANTS), ("solver", SOLVERS), ("gradient_term", GRADIENT_TERMS)):
        if hp[name] not in known:
            raise UserError(f"newton_source_free: unknown {name} {hp[name]!r} (known: {', '.join(known)})")


def _newton_setup(name: str, defaults: Mapping[str, Any], check, given: Mapping[str, Any],
                  model: nn.Module) -> tuple[dict[str, Any], LinearObjective, np.ndarray, float]:
    """What both Newton methods start from: checked hyper-parameters, the objective, the weights, the clock."""
    hp = resolve(name, defaults, given)
    check(hp)
    start = time.perf_counter()
    objective = LinearObjective(hp["loss"], float(hp["lam"]))
    return hp, objective, parameters_of(model, objective, name), start


def newton_certified(model: nn.Module, request: UnlearningRequest, hp: Mapping[str, Any], seed: int) -> MethodResult:
    """Eq. (1) with the true retain Hessian ``H_r = sum_{D_r} hess l + lam n_r I`` (Guo et al., Sec. 3)."""
    hp, objective, W, start = _newton_setup("newton_certified", CERTIFIED_DEFAULTS, check_certified, hp, model)
    x, y = as_rows(request.inputs), request.labels.cpu().numpy()
    retain, forget, trained = (index.cpu().numpy() for index in (request.retain, request.forget, request.trained_on))
    b = -objective.gradient(W, x[trained], y[trained])
    grad_f, _ = forget_parts(objective, W, x[forget], y[forget])
    hessian = objective.hessian(W, x[retain], y[retain])
    step = hessian.solve(grad_f)
    residual = np.linalg.norm(objective.gradient(W + step, x[retain], y[retain], b))
    W_u = _with_noise(W + step, hp["noise_std"], seed)
    set_parameters(model, objective, W_u)
    seconds = time.perf_counter() - start
    cert = certificate("newton_certified", objective, W, step, x[forget], y[forget], len(trained), seconds, seed,
                       hessian.block_size, residual_gradient_norm=residual, noise_std=hp["noise_std"],
                       solver="exact retain Hessian", m=0)
    return MethodResult(FitStats(seconds, 1, len(trained)), certificate=cert)


def newton_source_free(model: nn.Module, request: ForgetRequest, hp: Mapping[str, Any], seed: int) -> MethodResult:
    """Eq. (1) with the source-free estimate of H_r (Sec. 4, Eq. 3; the variant by ``variant``)."""
    hp, objective, W, start = _newton_setup("newton_source_free", SOURCE_FREE_DEFAULTS, check_source_free, hp, model)
    x_f, y_f = as_rows(request.forget_inputs), request.forget_labels.cpu().numpy()
    n = int(request.state["n"]) if request.state else int(hp["n_train"])
    if n <= 0:
        raise UserError("newton_source_free: set hyper-parameter n_train (the training-set size of the model)")
    estimate = estimate_retain_hessian(objective, W, x_f, y_f, n, hp["m"], hp["sigma"], hp["variant"], hp["solver"],
                                       seed, hp["gradient_term"], hp["max_iters"], hp["tol"])
    hessian = estimate.hessian.plus_identity(hp["ridge"] * n)
    grad_f, _ = forget_parts(objective, W, x_f, y_f)
    step = _solve(hessian, grad_f)
    set_parameters(model, objective, _with_noise(W + step, hp["noise_std"], seed))
    seconds = time.perf_counter() - start
    fits = estimate.fits
    cert = certificate("newton_source_free", objective, W, step, x_f, y_f, n, seconds, seed, hessian.block_size,
                       epsilon=estimate.epsilon_proxy, sigma=hp["sigma"], noise_std=hp["noise_std"],
                       epsilon_source="max fit residual (a proxy: the true epsilon needs the retain losses)",
                       solver=hp["solver"], m=hp["m"], variant=hp["variant"], gradient_term=hp["gradient_term"],
                       fit_objective=float(np.mean([fit.objective for fit in fits])),
                       fit_iterations=int(sum(fit.iterations for fit in fits)),
                       fit_status=sorted({fit.status for fit in fits}), fit_seconds=estimate.seconds)
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
