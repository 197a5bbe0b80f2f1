"""Linear models on feature vectors, as certified removal needs them (Guo et al. 2020, Sec. 3-4;
source-free unlearning, Sec. 3.2).

A model is a bias-free weight matrix ``W`` (classes K x features d) on rows ``x`` with
``||x|| <= 1``. Its objective on a training set D of n points is, in *sum form* (Sec. 3.2 of the
source-free paper, Guo et al. Eq. (3) with objective perturbation)::

    L(W; D) = sum_i l(W x_i, y_i) + lam * n / 2 * ||W||_F^2 + <b, W>

which has the minimiser of the mean form ``loss + lam/2 ||W||^2 + b^T w / n`` of the issue. The
noise b is drawn per model from its seed (:func:`objective_noise`), so a bank of N models has a
real output distribution. Removing a set F keeps b and the per-point regulariser
``lam / 2 ||W||^2`` of every retained point: the retrained objective is ``L(W; D \\ F)``, and the
forget set's part ``L_F(W) = sum_{i in F} l_i(W) + lam * n_F / 2 ||W||^2`` is what Guo et al.'s
``Delta = lam w* + grad l(x_n)`` differentiates.

Losses (``loss``):

- ``squared``: ``1/2 ||W x - onehot(y)||^2`` (the source-free authors' notebook; the paper's
  experiments use the quadratic loss). Hessian ``I_K (x) sum x x^T``: K identical d x d blocks.
- ``logistic``: one-vs-rest logistic, ``sum_k log(1 + exp(-t_k w_k^T x))`` with ``t_k = +-1``
  (Guo et al.'s multi-class setting). K independent d x d blocks.
- ``multinomial``: ``logsumexp(W x) - (W x)_y``. One full Kd x Kd Hessian
  ``sum (diag p - p p^T) (x) x x^T`` (parameters ordered as ``W.reshape(-1)``, class-major).
- ``mixed_squared``: the quadratic loss of a *mixed-linear network* (source-free unlearning,
  Sec. 3): a network linearised around public weights w0 in its last layers,
  ``f(x; w0 + Delta) ~= f(x; w0) + J(x) Delta`` (:mod:`unlearnflow.sourcefree.mixed_linear`), with
  ``l = 1/2 ||f(x; w0) + J(x) Delta - onehot(y)||^2``. A feature row is
  ``[f(x; w0) (K), J(x).reshape(K P)]`` and the parameters are ``Delta`` as a (1, P) "weight";
  the Hessian is one full block ``sum J^T J`` (P x P). As a model the network is the bias-free
  linear map ``[I_K | I_K (x) Delta^T]`` on those rows (:meth:`LinearObjective.model_weight`),
  so the logits, banks and evaluation of linear models apply unchanged (the weight distance of
  such maps is sqrt(K) ||Delta_u - Delta_r||, the same ratio).

Everything here is float64 numpy. Training (:func:`train`) is the closed-form solve for the
squared loss and L-BFGS (scipy) followed by a few Newton steps otherwise: the certificates assume
the exact optimum, so the trainer polishes until the gradient is at round-off level.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np
import scipy.optimize
import torch

from unlearnflow.core.artifacts import SPLITS, ModelBank
from unlearnflow.core.data import Dataset
from unlearnflow.errors import UserError
from unlearnflow.sourcefree.declarations import check_objective, linear_recipe

#: the state-dict entry of a bias-free ``linear`` model (core.models.LinearClassifier)
WEIGHT = "classifier.weight"


@dataclass(frozen=True)
class BlockHessian:
    """A Hessian of ``W.reshape(-1)`` that is block diagonal: ``blocks[k]`` acts on row k of W
    (``per_class``, blocks (K, d, d)) or one block acts on all of W (``full``, (1, Kd, Kd))."""

    blocks: np.ndarray
    structure: str

    def solve(self, gradient: np.ndarray) -> np.ndarray:
        """``H^-1 g`` for g shaped like W (K, d)."""
        if self.structure == "full":
            return np.linalg.solve(self.blocks[0], gradient.reshape(-1)).reshape(gradient.shape)
        return np.linalg.solve(self.blocks, gradient[:, :, None])[:, :, 0]

    def plus_identity(self, value: float) -> "BlockHessian":
        eye = np.eye(self.blocks.shape[-1])
        return BlockHessian(self.blocks + value * eye, self.structure)

    def scaled(self, factor: float) -> "BlockHessian":
        return BlockHessian(self.blocks * factor, self.structure)

    @property
    def block_size(self) -> int:
        return self.blocks.shape[-1]


@dataclass(frozen=True)
class LinearObjective:
    """The loss and the L2 strength lam of a linear model's objective (module docstring)."""

    loss: str
    lam: float

    def __post_init__(self) -> None:
        check_objective(self.loss, self.lam)

    # ------------------------------------------------------------------ data terms (sum over samples)

    def data_loss(self, W: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """``sum_i l(W x_i, y_i)``; W may carry leading batch axes (..., K, d)."""
        if self.loss == "mixed_squared":
            z0, J = mixed_parts(x, W.shape[-1])
            z = z0 + np.einsum("...p,nkp->...nk", W[..., 0, :], J)
            return 0.5 * ((z - _one_hot(y, z0.shape[1])) ** 2).sum(axis=(-2, -1))
        z = np.einsum("...kd,nd->...nk", W, x)
        K = W.shape[-2]
        if self.loss == "squared":
            return 0.5 * ((z - _one_hot(y, K)) ** 2).sum(axis=(-2, -1))
        if self.loss == "logistic":
            return np.logaddexp(0.0, -_signs(y, K) * z).sum(axis=(-2, -1))
        picked = np.take_along_axis(z, np.broadcast_to(y[:, None], z.shape[:-1] + (1,)), axis=-1)[..., 0]
        return (_logsumexp(z) - picked).sum(axis=-1)

    def data_gradient(self, W: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """``sum_i grad_W l(W x_i, y_i)``, shaped like W (K, d)."""
        if self.loss == "mixed_squared":
            return np.einsum("nk,nkp->p", self.residuals(W, x, y), mixed_parts(x, W.shape[-1])[1])[None, :]
        return self.residuals(W, x, y).T @ x

    def residuals(self, W: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """``dl/dz`` per sample and class (n, K): the per-sample gradient is its outer product with x
        (for ``mixed_squared``, z = f(x; w0) + J(x) Delta and the gradient is ``J(x)^T dl/dz``)."""
        if self.loss == "mixed_squared":
            z0, J = mixed_parts(x, W.shape[-1])
            return z0 + J @ W[0] - _one_hot(y, z0.shape[1])
        z, K = x @ W.T, W.shape[0]
        if self.loss == "squared":
            return z - _one_hot(y, K)
        if self.loss == "logistic":
            t = _signs(y, K)
            return -t * _sigmoid(-t * z)
        return _softmax(z) - _one_hot(y, K)

    def data_hessian(self, W: np.ndarray, x: np.ndarray, y: np.ndarray) -> BlockHessian:
        """``sum_i hess_W l(W x_i, y_i)`` (structure in the module docstring)."""
        if self.loss == "mixed_squared":
            J = mixed_parts(x, W.shape[-1])[1]
            return BlockHessian(np.einsum("nkp,nkq->pq", J, J)[None], "full")
        z, (K, d) = x @ W.T, W.shape
        if self.loss == "squared":
            return BlockHessian(np.broadcast_to(x.T @ x, (K, d, d)).copy(), "per_class")
        if self.loss == "logistic":
            s = _sigmoid(z)
            return BlockHessian(np.einsum("nk,ni,nj->kij", s * (1 - s), x, x), "per_class")
        p = _softmax(z)
        curvature = np.einsum("nk,kl->nkl", p, np.eye(K)) - np.einsum("nk,nl->nkl", p, p)
        return BlockHessian(np.einsum("nkl,ni,nj->kilj", curvature, x, x).reshape(1, K * d, K * d), "full")

    def per_sample_gradient_norms(self, W: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """``||grad_W l(W x_i, y_i)||_F`` per sample: ``||dl/dz|| ||x||``, or ``||J(x)^T dl/dz||`` for
        ``mixed_squared``."""
        if self.loss == "mixed_squared":
            J = mixed_parts(x, W.shape[-1])[1]
            return np.linalg.norm(np.einsum("nk,nkp->np", self.residuals(W, x, y), J), axis=1)
        return np.linalg.norm(self.residuals(W, x, y), axis=1) * np.linalg.norm(x, axis=1)

    # ------------------------------------------------------------------ full objective, sum form

    def value(self, W: np.ndarray, x: np.ndarray, y: np.ndarray, b: np.ndarray | None = None,
              n: int | None = None) -> float:
        """``L(W; D)`` with the regulariser of `n` points (default len(x)) and noise b."""
        n = len(x) if n is None else n
        extra = 0.0 if b is None else float((b * W).sum())
        return float(self.data_loss(W, x, y)) + 0.5 * self.lam * n * float((W * W).sum()) + extra

    def gradient(self, W: np.ndarray, x: np.ndarray, y: np.ndarray, b: np.ndarray | None = None,
                 n: int | None = None) -> np.ndarray:
        """``grad_W L(W; D)`` (sum form; `n` points' regulariser, noise b)."""
        n = len(x) if n is None else n
        return self.data_gradient(W, x, y) + self.lam * n * W + (0.0 if b is None else b)

    def hessian(self, W: np.ndarray, x: np.ndarray, y: np.ndarray, n: int | None = None) -> BlockHessian:
        """``hess_W L(W; D) = sum_i hess l_i + lam n I`` (b is linear: no curvature)."""
        n = len(x) if n is None else n
        return self.data_hessian(W, x, y).plus_identity(self.lam * n)

    # ------------------------------------------------------------------ parameters vs the model's weight

    def parameter_shape(self, num_classes: int, width: int) -> tuple[int, int]:
        """The shape of the parameters (and of b) for rows of `width` features: (K, d), or (1, P)
        for ``mixed_squared`` rows of width K (1 + P)."""
        if self.loss != "mixed_squared":
            return num_classes, width
        P, rest = divmod(width, num_classes)
        if rest or P < 2:
            raise UserError(f"mixed-linear model: feature rows of width {width} are not [f(x) (K={num_classes}), "
                            "J(x) (K x P)]")
        return 1, P - 1

    def parameters(self, weight: np.ndarray) -> np.ndarray:
        """The parameters of a linear model's (K, width) weight: itself, or Delta (1, P) of ``[I | I (x) Delta^T]``."""
        if self.loss != "mixed_squared":
            return weight
        K = weight.shape[0]
        return weight[:1, K:K + self.parameter_shape(K, weight.shape[1])[1]].copy()

    def model_weight(self, parameters: np.ndarray, num_classes: int) -> np.ndarray:
        """The linear model's weight of `parameters` (the inverse of :meth:`parameters`)."""
        if self.loss != "mixed_squared":
            return parameters
        return np.concatenate([np.eye(num_classes), np.kron(np.eye(num_classes), parameters)], axis=1)


def stationarity_noise(objective: LinearObjective, W: np.ndarray, x: np.ndarray,
                       y: np.ndarray) -> tuple[np.ndarray, float]:
    """(b, a bound on its float64 error) of a model W trained to optimum on (x, y): b is not
    stored with the model, but at the optimum ``b = -grad(sum_i l_i + lam n / 2 ||W||^2)(W)``
    (stationarity), exactly for the stored weights (float32 storage makes them the exact optimum
    of this b, within ``H (W_stored - W*)`` of the drawn one)."""
    return -objective.gradient(W, x, y), gradient_rounding_bound(objective, W, x, y)


def gradient_norm(objective: LinearObjective, W: np.ndarray, x: np.ndarray, y: np.ndarray, b: np.ndarray,
                  b_error: float = 0.0) -> tuple[float, float]:
    """(``||grad L(W; x, y)||`` with noise b, measured in float64; a bound on its distance to the
    exact value, counting the measurement's rounding and `b_error`, the error of b itself)."""
    gradient = objective.gradient(W, x, y, b)
    norm = float(np.linalg.norm(gradient))
    error = gradient_rounding_bound(objective, W, x, y, b) + b_error
    return norm, error + _gamma(gradient.size + 1) * (norm + error)


def gradient_rounding_bound(objective: LinearObjective, W: np.ndarray, x: np.ndarray, y: np.ndarray,
                            b: np.ndarray | None = None) -> float:
    """An a-priori bound on ``||fl(g) - g||_F`` for g = :meth:`LinearObjective.gradient` evaluated
    in float64 (Higham, *Accuracy and Stability of Numerical Algorithms*, Sec. 3.1: a sum of N
    products is exact to ``gamma_N = N u / (1 - N u)`` times the sum of their absolute values).

    ``gamma_N || 3 S + lam n |W| + |b| ||_F`` with ``S = sum_i A_i (x) |x_i|`` (for
    ``mixed_squared``, ``sum_i |J_i|^T A_i``), ``A_i = |z_i| + 1`` bounding ``|dl/dz|`` (at most
    |z| + 1 for the squared losses, 1 for the others) and twice the error of dl/dz itself, and
    N = n + width + W.size + 20 over-counting the roundings on each term's path (the inner
    products of z, the loss's own operations, the sum over samples, the regulariser and b).
    """
    n, width = x.shape
    absolute = np.abs(W)
    if objective.loss == "mixed_squared":
        z0, J = mixed_parts(x, W.shape[-1])
        A = np.abs(z0) + np.abs(J) @ absolute[0] + 1.0
        S = np.einsum("nk,nkp->p", A, np.abs(J))[None, :]
    else:
        A = np.abs(x) @ absolute.T + 1.0
        S = A.T @ np.abs(x)
    total = 3.0 * S + objective.lam * n * absolute + (0.0 if b is None else np.abs(b))
    return _gamma(n + width + W.size + 20) * float(np.linalg.norm(total))


def _gamma(count: int) -> float:
    """Higham's ``gamma_N = N u / (1 - N u)``, u the float64 unit round-off."""
    unit = 2.0 ** -53
    return count * unit / (1.0 - count * unit)


def objective_noise(seed: int, num_classes: int, dim: int, std: float) -> np.ndarray:
    """Guo et al.'s objective perturbation b ~ std * N(0, I) (K, d), drawn from the model's seed."""
    return std * np.random.default_rng([int(seed), 7_001]).standard_normal((num_classes, dim))


def train(objective: LinearObjective, x: np.ndarray, y: np.ndarray, num_classes: int,
          b: np.ndarray | None = None, tol: float = 1e-12, max_newton: int = 20) -> np.ndarray:
    """The minimiser of ``L(W; D)`` (float64): a linear solve for the squared losses, else L-BFGS
    to a loose tolerance and Newton steps until ``||grad|| <= tol * max(1, ||grad at 0||)``."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.int64)
    n, d = x.shape
    b = np.zeros(objective.parameter_shape(num_classes, d)) if b is None else b
    if objective.loss == "mixed_squared":
        if objective.lam == 0:  # ReLU units that never fire leave J(x) rank-deficient
            raise UserError("linear model: the mixed_squared loss needs lam > 0 (a network's Jacobian rows J(x) are "
                            "rank-deficient in general, so lam = 0 has no unique minimiser)")
        z0, J = mixed_parts(x, b.shape[1])
        rhs = np.einsum("nk,nkp->p", _one_hot(y, num_classes) - z0, J) - b[0]
        # the quadratic loss's Hessian does not depend on Delta: b only gives it its shape
        return np.linalg.solve(objective.hessian(b, x, y).blocks[0], rhs)[None, :]
    if objective.loss == "squared":
        rhs = _one_hot(y, num_classes).T @ x - b
        try:
            return np.linalg.solve(x.T @ x + objective.lam * n * np.eye(d), rhs.T).T
        except np.linalg.LinAlgError:
            raise UserError(f"linear model: the squared loss with lam = {objective.lam:g} has no unique minimiser: "
                            f"the {n} x {d} features have rank {np.linalg.matrix_rank(x)} < {d}; set lam > 0 or use "
                            "fewer features (e.g. features.pool)") from None
    if objective.lam == 0:
        raise UserError(f"linear model: the {objective.loss} loss needs lam > 0 to have a minimiser")

    def fun(flat: np.ndarray) -> tuple[float, np.ndarray]:
        W = flat.reshape(num_classes, d)
        return objective.value(W, x, y, b) / n, objective.gradient(W, x, y, b).reshape(-1) / n

    result = scipy.optimize.minimize(fun, np.zeros(num_classes * d), jac=True, method="L-BFGS-B",
                                     options={"maxiter": 2000, "gtol": 1e-9})
    W = result.x.reshape(num_classes, d)
    scale = max(1.0, float(np.linalg.norm(objective.gradient(np.zeros_like(W), x, y, b))))
    for _ in range(max_newton):
        gradient = objective.gradient(W, x, y, b)
        if np.linalg.norm(gradient) <= tol * scale:
            break
        W = W - objective.hessian(W, x, y).solve(gradient)
    return W


# ---------------------------------------------------------------------------------------- features


def mixed_parts(x: np.ndarray, P: int) -> tuple[np.ndarray, np.ndarray]:
    """A mixed-linear feature row ``[f(x; w0) (K), J(x) (K x P)]`` split into f (n, K) and J (n, K, P)."""
    n, width = x.shape
    K, rest = divmod(width, P + 1)
    if rest:
        raise UserError(f"mixed-linear model: feature rows of width {width} do not hold K (1 + P) values for P = {P}")
    return x[:, :K], x[:, K:].reshape(n, K, P)


def l2_normalise(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm (zero rows stay zero), flattened to (n, d): ``||x|| <= 1``."""
    flat = np.asarray(x, np.float64).reshape(len(x), -1)
    norms = np.linalg.norm(flat, axis=1, keepdims=True)
    return flat / np.where(norms > 0, norms, 1.0)


def identity_features(dataset: Dataset) -> Dataset:
    """The ``identity`` backbone: every split's inputs flattened and L2-normalised (digits: d = 64),
    float32 like every data set of the package. A feature data set has mean 0 and std 1."""
    splits = {f"x_{split}": l2_normalise(getattr(dataset, f"x_{split}")).astype(np.float32) for split in SPLITS}
    dim = splits["x_train"].shape[1]
    return Dataset(name=f"{dataset.name}/identity", y_train=dataset.y_train, y_val=dataset.y_val,
                   y_test=dataset.y_test, classes=dataset.classes, mean=np.zeros(dim, np.float32),
                   std=np.ones(dim, np.float32), **splits)


# ---------------------------------------------------------------------------------------- banks


def train_linear_bank(features: Dataset, objective: LinearObjective, noise_std: float, seeds: Sequence[int],
                      role: str = "original", labels: np.ndarray | None = None,
                      train_mask: np.ndarray | None = None) -> ModelBank:
    """A bank of N bias-free ``linear`` models, model k trained to optimum on the rows
    `train_mask` of `features` with its own noise ``b_k = objective_noise(seeds[k], ...)``.

    Two banks with the same seeds share each model's b: the retrained model k (mask without the
    forget set) is then what certified removal of model k approximates (Guo et al., Sec. 3).
    The recipe (loss, lam, noise_std, n_train) is recorded in ``attrs["training"]``.
    """
    x = features.x_train.reshape(len(features.x_train), -1).astype(np.float64)
    labels = features.y_train if labels is None else labels
    mask = np.ones(len(x), bool) if train_mask is None else np.asarray(train_mask, bool)
    if objective.loss != "mixed_squared" and np.linalg.norm(x, axis=1).max() > 1 + 1e-5:
        raise UserError("linear bank: feature rows must have L2 norm <= 1 (use l2_normalise)")
    K, d = features.num_classes, x.shape[1]
    shape = objective.parameter_shape(K, d)
    start = time.perf_counter()
    weights = np.stack([objective.model_weight(train(objective, x[mask], labels[mask], K,
                                                     objective_noise(seed, *shape, noise_std)), K)
                        for seed in seeds])
    seconds = time.perf_counter() - start
    logits = {split: np.einsum("ekd,nd->enk", weights, getattr(features, f"x_{split}").astype(np.float64))
              .astype(np.float32) for split in SPLITS}
    n_models = len(seeds)
    return ModelBank(
        weights={WEIGHT: weights.astype(np.float32)}, model_ids=np.arange(n_models, dtype=np.int64),
        seeds=np.asarray(seeds, np.int64), train_masks=np.tile(mask, (n_models, 1)), logits=logits,
        attrs={"role": role, "arch": "linear", "model_options": {"bias": False},
               "training": recipe(objective, noise_std, int(mask.sum())), "train_seconds": seconds,
               "steps_per_model": 0, "examples_per_model": int(mask.sum()), "device": "cpu"})


def train_linear_chunk(features: Dataset, labels: np.ndarray, retain: np.ndarray, training: Mapping, seed: int,
                       role: str, model_ids: Sequence[int]) -> tuple[ModelBank, list[int]]:
    """A workflow chunk of linear models (the config's ``lbfgs`` recipe `training`) with the given
    ids, trained to optimum on the rows `retain` of `features`; returns the bank and the models'
    noise seeds. Each model has its own objective perturbation b (Guo et al., Sec. 3): original k
    and oracle k of every forget set share model k's b, so oracle k is exactly what certified
    removal of the forget set from original k approximates (the weight distance pairs them); the
    ``retrain`` reference draws b of its own role, an independent sample of the retrained
    distribution."""
    from unlearnflow.core.training import model_seed
    objective, noise_std = config_recipe(training)
    base = role.split("/")[0]
    noise_role = "linear" if base in ("original", "oracle") else role
    seeds = [model_seed(seed, noise_role, model_id) for model_id in model_ids]
    bank = train_linear_bank(features, objective, noise_std, seeds, role=role, labels=labels, train_mask=retain)
    return dataclasses.replace(bank, model_ids=np.asarray(model_ids, np.int64)), seeds


def recipe(objective: LinearObjective, noise_std: float, n_train: int) -> dict:
    """A linear bank's training recipe as recorded in its attrs."""
    return {"kind": "linear", "loss": objective.loss, "lam": objective.lam, "noise_std": noise_std,
            "n_train": n_train}


def config_recipe(training: Mapping) -> tuple[LinearObjective, float]:
    """(objective, noise_std) of a config's linear training recipe (:func:`.declarations.linear_recipe`)."""
    loss, lam, noise_std = linear_recipe(training)
    return LinearObjective(loss, lam), noise_std


def recipe_objective(training: Mapping) -> LinearObjective:
    """The objective of a recorded recipe (UserError if the bank is not a linear bank)."""
    if not isinstance(training, Mapping) or training.get("kind") != "linear":
        raise UserError("not a linear bank: its training recipe has no kind 'linear'")
    return LinearObjective(training["loss"], float(training["lam"]))


# ---------------------------------------------------------------------------------------- modules


def parameters_of(model: torch.nn.Module, objective: LinearObjective, method: str) -> np.ndarray:
    """The parameters of `objective` that a bias-free ``linear`` model holds (float64)."""
    return objective.parameters(weight_of(model, method))


def set_parameters(model: torch.nn.Module, objective: LinearObjective, parameters: np.ndarray) -> None:
    """Write `objective`'s parameters into a bias-free ``linear`` model."""
    set_weight(model, objective.model_weight(parameters, model.classifier.weight.shape[0]))


def weight_of(model: torch.nn.Module, method: str) -> np.ndarray:
    """The (K, d) float64 weight of a bias-free ``linear`` model (UserError for any other model)."""
    classifier = getattr(model, "classifier", None)
    if (getattr(model, "arch", None) != "linear" or not isinstance(classifier, torch.nn.Linear)
            or classifier.bias is not None):
        raise UserError(f"{method}: needs a bias-free linear model (model arch 'linear' with bias false)")
    return classifier.weight.detach().cpu().double().numpy().copy()


def set_weight(model: torch.nn.Module, W: np.ndarray) -> None:
    """Write a (K, d) weight into a ``linear`` model, in its dtype and on its device."""
    weight = model.classifier.weight
    with torch.no_grad():
        weight.copy_(torch.from_numpy(W).to(dtype=weight.dtype, device=weight.device))


def as_rows(inputs: torch.Tensor) -> np.ndarray:
    """A request's inputs as float64 feature rows (n, d)."""
    return inputs.detach().cpu().double().reshape(len(inputs), -1).numpy()


# ---------------------------------------------------------------------------------------- helpers


def _one_hot(y: np.ndarray, K: int) -> np.ndarray:
    return np.eye(K)[y]


def _signs(y: np.ndarray, K: int) -> np.ndarray:
    return 2.0 * _one_hot(y, K) - 1.0


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * z))


def _logsumexp(z: np.ndarray) -> np.ndarray:
    top = z.max(axis=-1, keepdims=True)
    return top[..., 0] + np.log(np.exp(z - top).sum(axis=-1))


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)
