"""Certificates of a Newton removal: the bounds of Lemma 1 and Theorem 1 (source-free unlearning,
Sec. 4) and Guo et al.'s data-dependent bound, with every quantity that enters them.

Conventions (sum-form objective of :mod:`unlearnflow.sourcefree.linear`, rows ``||x|| <= 1``;
a mixed-linear network's rows [f(x), J(x)] are not normalised, but its loss is quadratic, so
gamma = 0 and C comes from the forget samples: no bound below relies on the row norm there):

- gamma: Lipschitz constant of the loss's second derivative in z = w^T x. Squared loss: 0 (the
  Newton step is exact). Logistic: ``max |sigma''| = 1/(6 sqrt 3) ~= 0.096`` (Guo et al. state
  the looser 1/4). Multinomial: not derived here (None: no gamma-based bound is reported).
- C: bound on a per-sample gradient norm. Logistic: 1 (one-vs-rest: per class row). Multinomial:
  sqrt 2. Squared loss: unbounded in general; the certificate reports the largest per-sample
  gradient norm on the forget samples at W* (``C_source: "forget samples at w*"``).
- Lemma 1 is stated for ``delta ~ N(0, I)``; our perturbations are ``sigma u``, so in the fit's
  units the loss-difference error is ``epsilon / sigma^2`` and the bound on ``||H^ - H_r||_F`` is
  ``2 (epsilon / sigma^2) sqrt(p) / (2 + p)`` with p the block size.
- Theorem 1: ``||grad L(w_u; D_r)|| <= gamma n_r ||H^^-1 grad_F||^2`` (data-dependent; computable
  source-free from the estimate) ``<= 4 gamma C^2 n_F^2 n_r / (lam n_r - 2 eps / (2 + p))^2``
  (worst case; None when the denominator is not positive: the bound is vacuous). The proof bounds
  ``||H^^-1||`` by the *smallest* eigenvalue argument although it writes spectral norms.

Flaws worth knowing, measured in ``bench/bench_sourcefree.py``: Lemma 1's bound is the error of
a constant offset epsilon in every loss difference (tight there) but not a bound for adversarial
bounded errors; and the epsilon between *retain* and *forget* loss differences is not small at
any realistic forget fraction, since dL_r ~= (n_r / n_F) dL_F.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from unlearnflow.sourcefree.linear import LinearObjective

GAMMA = {"squared": 0.0, "mixed_squared": 0.0, "logistic": 1.0 / (6.0 * math.sqrt(3.0)), "multinomial": None}
GRADIENT_BOUND = {"logistic": 1.0, "multinomial": math.sqrt(2.0)}


def lemma1_bound(epsilon: float, size: int, sigma: float = 1.0) -> float:
    """Lemma 1: ``||H^ - H_r||_F <= 2 eps sqrt(d) / (2 + d)``, eps in the fit's units (eps / sigma^2)."""
    return 2.0 * (epsilon / sigma ** 2) * math.sqrt(size) / (2.0 + size)


def theorem1_bound(gamma: float | None, C: float, n: int, n_forget: int, lam: float,
                   hessian_error: float) -> float | None:
    """Theorem 1: ``4 gamma C^2 n_F^2 (n - n_F) / (lam (n - n_F) - err)^2`` with err = Lemma 1's
    bound (0 for the true Hessian); None without gamma or when the denominator is <= 0."""
    denominator = lam * (n - n_forget) - hessian_error
    if gamma is None or denominator <= 0:
        return None
    return 4.0 * gamma * C ** 2 * n_forget ** 2 * (n - n_forget) / denominator ** 2


def data_dependent_bound(gamma: float | None, n_retain: int, step: np.ndarray) -> float | None:
    """Guo et al. Thm. 1 / the first inequality of Theorem 1: ``gamma n_r ||H^-1 grad_F||^2``."""
    return None if gamma is None else gamma * n_retain * float(np.sum(step * step))


def gradient_bound(objective: LinearObjective, W: np.ndarray, x_forget: np.ndarray,
                   y_forget: np.ndarray) -> tuple[float, str]:
    """(C, where it comes from): the loss's constant, or the forget samples' largest gradient norm."""
    if objective.loss in GRADIENT_BOUND:
        return GRADIENT_BOUND[objective.loss], "loss constant"
    return float(objective.per_sample_gradient_norms(W, x_forget, y_forget).max()), "forget samples at w*"


def certificate(method: str, objective: LinearObjective, W: np.ndarray, step: np.ndarray, x_forget: np.ndarray,
                y_forget: np.ndarray, n: int, seconds: float, seed: int, block_size: int,
                residual_gradient_norm: float | None = None, epsilon: float = 0.0, sigma: float = 1.0,
                noise_std: float = 0.0, **extra: Any) -> dict[str, Any]:
    """The certificate dict of one request (JSON-able): the quantities n, n_F, lam, C, gamma, eps,
    d, the Lemma 1 and Theorem 1 bounds, the data-dependent bound and the residual gradient norm
    where it was computable (None for a source-free request), plus `extra` (solver, m, ...)."""
    n_forget = len(x_forget)
    gamma = GAMMA[objective.loss]
    C, C_source = gradient_bound(objective, W, x_forget, y_forget)
    hessian_error = lemma1_bound(epsilon, block_size, sigma)
    return {
        "method": method, "loss": objective.loss, "n": int(n), "n_forget": int(n_forget),
        "n_retain": int(n - n_forget), "lam": float(objective.lam), "C": C, "C_source": C_source,
        "gamma": gamma, "epsilon": float(epsilon), "d": int(block_size), "sigma": float(sigma),
        "max_feature_norm": float(np.linalg.norm(x_forget, axis=1).max()),
        "lemma1_bound": hessian_error,
        "theorem1_bound": theorem1_bound(gamma, C, n, n_forget, objective.lam, hessian_error),
        "data_dependent_bound": data_dependent_bound(gamma, n - n_forget, step),
        "residual_gradient_norm": None if residual_gradient_norm is None else float(residual_gradient_norm),
        "step_norm": float(np.linalg.norm(step)), "noise_std": float(noise_std), "seed": int(seed),
        "seconds": float(seconds), **extra,
    }
