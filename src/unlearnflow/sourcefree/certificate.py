"""Certificates of a Newton removal, and which of their fields are bounds.

A field is named a bound (or an epsilon) only if it provably bounds the true quantity under the
assumptions the certificate states; :data:`BOUNDED_QUANTITIES` maps each such field to the true
quantity, which :mod:`unlearnflow.evaluation.certificates` computes from the retain data and the
report prints beside it.

- ``newton_certified``: certified removal by Guo et al. ("Certified Data Removal from Machine
  Learning Models", ICML 2020), Thm. 3. The model minimised ``L_b(w; D)`` (sum form, see
  :mod:`~unlearnflow.sourcefree.linear`) with objective noise ``b ~ N(0, sigma_b^2 I)`` (the
  training recipe's ``noise_std``); if the released weights w^- satisfy
  ``||grad L_b(w^-; D_r)|| <= eps'``, then with ``sigma_b = c eps' / eps`` the removal is
  (eps, delta)-certified for ``delta = 1.5 exp(-c^2 / 2)``, i.e.
  ``eps = sqrt(2 ln(1.5 / delta)) eps' / sigma_b`` (:func:`guo_epsilon`). This method has the
  retain data, so eps' is *measured*, not bounded by a formula: the retain gradient of the
  released weights (after the output noise and the float32 storage of the torch model), in
  float64, plus twice an a-priori bound on that measurement's rounding error, so that it bounds
  the exact value and any float64 recomputation of it (``residual_source`` says so). As in Guo et
  al.'s experiments, eps' is data-dependent. Without objective noise (sigma_b = 0) nothing is
  certified. Guo et al.'s data-dependent bound ``gamma n_r ||H^-1 grad_F||^2`` bounds the residual
  of the exact-arithmetic step, not of the stored weights, so it is not reported.
- ``newton_source_free``: not certified (:data:`SOURCE_FREE_NOT_CERTIFIED`). For
  ``w_u = w* + H^^-1 grad_F`` the residual is ``grad L(w_u; D_r) = (H_r - H^) H^^-1 grad_F`` plus a
  term of order gamma, and no bound on ``H^ - H_r`` is computable without the retain data. The
  paper's Lemma 1 and Theorem 1 expressions are kept under :data:`PAPER_CLAIMS`, with the epsilon
  they are fed and where it comes from (:func:`paper_claims`), never as the certificate; the
  estimated Hessian the step used is stored when small enough (:func:`stored_hessian`) so that
  the evaluation can compare it with the true one.

The paper's conventions (sum-form objective, rows ``||x|| <= 1``; a mixed-linear network's rows
[f(x), J(x)] are not normalised, but its loss is quadratic, so gamma = 0):

- gamma: Lipschitz constant of the loss's second derivative in z = w^T x. Squared loss: 0.
  Logistic: ``max |sigma''| = 1/(6 sqrt 3) ~= 0.096`` (Guo et al. state the looser 1/4).
  Multinomial: not derived (None: no Theorem 1 expression).
- C: bound on a per-sample gradient norm. Logistic: 1 (one-vs-rest: per class row). Multinomial:
  sqrt 2. Squared loss: unbounded in general; the largest per-sample gradient norm on the forget
  samples at W* (``C_source``).
- Lemma 1 is stated for ``dw ~ N(0, I)``; perturbations ``sigma u`` make the loss-difference error
  ``epsilon / sigma^2`` in the fit's units, and the expression ``2 (epsilon / sigma^2) sqrt(p) / (2 + p)``
  with p the block size.
- Theorem 1: ``gamma n_r ||H^^-1 grad_F||^2`` (its first inequality) ``<= 4 gamma C^2 n_F^2 n_r /
  (lam n_r - 2 eps / (2 + p))^2`` (None when the denominator is not positive).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from unlearnflow.sourcefree.linear import BlockHessian, LinearObjective

GAMMA = {"squared": 0.0, "mixed_squared": 0.0, "logistic": 1.0 / (6.0 * math.sqrt(3.0)), "multinomial": None}
GRADIENT_BOUND = {"logistic": 1.0, "multinomial": math.sqrt(2.0)}

#: certificate field -> the true quantity it bounds from above (computed by
#: :func:`unlearnflow.evaluation.certificates.model_truths`); every field named like a bound
#: (:func:`is_bound_field`) outside :data:`PAPER_CLAIMS` must be listed here
BOUNDED_QUANTITIES = {"residual_bound": "retain_gradient_norm", "epsilon": "epsilon_of_retain_gradient_norm"}
#: the sub-dict of the paper's expressions: claims, not bounds
PAPER_CLAIMS = "paper_claims"
#: the most numbers of an estimated Hessian a certificate stores
MAX_STORED_HESSIAN = 50_000
NO_OBJECTIVE_NOISE = "not certified (no objective noise)"
UNKNOWN_OBJECTIVE_NOISE = ("not certified: the request starts from a model that is not the original optimum, and no "
                           "earlier request carried the model's objective noise b, so its retain gradient is unknown")
SOURCE_FREE_NOT_CERTIFIED = (
    "not certified: no bound on ||H^ - H_r|| is computable without the retain data (Lemma 1's epsilon, "
    "max_i |dL_r(w_i) - dL_f(w_i)|, needs the retain losses; Theorem 1's first inequality omits the "
    "(H_r - H^) H^-1 grad_F term of the residual)")
RESIDUAL_SOURCE = ("measured: ||grad L(w_released; D_r)|| with the model's objective noise b (recovered by "
                   "stationarity of the original), in float64 on the released float32 weights, plus twice an "
                   "a-priori bound on the measurement's rounding error")


def is_bound_field(key: str) -> bool:
    """Whether a certificate field is named like a bound or a privacy guarantee."""
    return "bound" in key or "epsilon" in key


def guo_epsilon(residual_bound: float, objective_noise_std: float, delta: float) -> float:
    """Guo et al. Thm. 3 solved for epsilon: ``sqrt(2 ln(1.5 / delta)) eps' / sigma_b``."""
    return math.sqrt(2.0 * math.log(1.5 / delta)) * residual_bound / objective_noise_std


def removal_guarantee(residual: tuple[float, float] | None, objective_noise_std: float,
                      delta: float) -> dict[str, Any]:
    """The (epsilon, delta) of Guo et al. Thm. 3 for a measured retain gradient norm and a bound
    on its distance to the exact value, `residual` (None: not measurable; module docstring)."""
    fields = {"objective_noise_std": objective_noise_std, "delta": delta}
    if residual is None:
        return {"certified": False, "reason": UNKNOWN_OBJECTIVE_NOISE, "epsilon": None, "residual_bound": None,
                **fields}
    bound = residual[0] + 2.0 * residual[1]
    fields.update(residual_bound=bound, residual_source=RESIDUAL_SOURCE)
    if objective_noise_std == 0:
        return {"certified": False, "reason": NO_OBJECTIVE_NOISE, "epsilon": None, **fields}
    return {"certified": True, "reason": "Guo et al. 2020, Thm. 3", "epsilon": guo_epsilon(bound, objective_noise_std,
                                                                                            delta), **fields}


def lemma1_expression(epsilon: float, size: int, sigma: float = 1.0) -> float:
    """Lemma 1's expression ``2 eps sqrt(d) / (2 + d)``, eps in the fit's units (eps / sigma^2)."""
    return 2.0 * (epsilon / sigma ** 2) * math.sqrt(size) / (2.0 + size)


def theorem1_expression(gamma: float | None, C: float, n: int, n_forget: int, lam: float,
                   hessian_error: float) -> float | None:
    """Theorem 1's expression ``4 gamma C^2 n_F^2 (n - n_F) / (lam (n - n_F) - err)^2`` with err =
    Lemma 1's; None without gamma or when the denominator is <= 0."""
    denominator = lam * (n - n_forget) - hessian_error
    if gamma is None or denominator <= 0:
        return None
    return 4.0 * gamma * C ** 2 * n_forget ** 2 * (n - n_forget) / denominator ** 2


def gradient_bound(objective: LinearObjective, W: np.ndarray, x_forget: np.ndarray,
                   y_forget: np.ndarray) -> tuple[float, str]:
    """(C, where it comes from): the loss's constant, or the forget samples' largest gradient norm."""
    if objective.loss in GRADIENT_BOUND:
        return GRADIENT_BOUND[objective.loss], "loss constant"
    return float(objective.per_sample_gradient_norms(W, x_forget, y_forget).max()), "forget samples at w*"


def paper_claims(objective: LinearObjective, W: np.ndarray, step: np.ndarray, x_forget: np.ndarray,
                 y_forget: np.ndarray, n: int, block_size: int, epsilon: float, epsilon_source: str,
                 sigma: float) -> dict[str, Any]:
    """The paper's Lemma 1 and Theorem 1 expressions for one source-free request, with what they
    are fed (module docstring): claims, which the evaluation compares with the truth."""
    n_forget = len(x_forget)
    gamma = GAMMA[objective.loss]
    C, C_source = gradient_bound(objective, W, x_forget, y_forget)
    lemma1 = lemma1_expression(epsilon, block_size, sigma)
    return {"note": "the paper's Lemma 1 and Theorem 1 as printed: claims, not bounds (see 'reason')",
            "epsilon": float(epsilon), "epsilon_source": epsilon_source, "sigma": float(sigma), "d": int(block_size),
            "gamma": gamma, "C": C, "C_source": C_source,
            "max_feature_norm": float(np.linalg.norm(x_forget, axis=1).max()), "lemma1_claim": lemma1,
            "theorem1_first_inequality": None if gamma is None else gamma * (n - n_forget) * float(np.sum(step ** 2)),
            "theorem1_claim": theorem1_expression(gamma, C, n, n_forget, objective.lam, lemma1)}


def stored_hessian(hessian: BlockHessian, shared_by_rows: bool, ridge_added: float) -> dict[str, Any]:
    """The estimated Hessian a step used (ridge included), as certificate fields: its distinct
    blocks (one for the squared loss, whose K row blocks are equal), or None and why when it has
    more than :data:`MAX_STORED_HESSIAN` numbers."""
    blocks = hessian.blocks[:1] if shared_by_rows else hessian.blocks
    if blocks.size > MAX_STORED_HESSIAN:
        return {"estimated_hessian": None,
                "estimated_hessian_note": f"omitted: {blocks.size} numbers (more than {MAX_STORED_HESSIAN})"}
    return {"estimated_hessian": {"blocks": blocks.tolist(), "structure": hessian.structure,
                                  "shared_by_rows": shared_by_rows, "ridge_added": float(ridge_added)}}


def request_fields(method: str, objective: LinearObjective, n: int, n_forget: int, block_size: int,
                   step: np.ndarray, noise_std: float, seconds: float, seed: int) -> dict[str, Any]:
    """What every Newton certificate records of its request."""
    return {"method": method, "loss": objective.loss, "lam": float(objective.lam), "n": int(n),
            "n_forget": int(n_forget), "n_retain": int(n - n_forget), "d": int(block_size),
            "step_norm": float(np.linalg.norm(step)), "noise_std": float(noise_std), "seed": int(seed),
            "seconds": float(seconds)}
