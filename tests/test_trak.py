"""TRAK margin datamodels (unlearnflow.dmm.trak): exactness of the projection, leave-one-out agreement, contract."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from scipy.stats import pearsonr, spearmanr
from sklearn.datasets import load_digits
from sklearn.decomposition import PCA
from torch import nn

from unlearnflow.core.models import build_model, count_parameters
from unlearnflow.dmm.trak import trak_margin_datamodels
from unlearnflow.errors import UserError
from unlearnflow.metrics.margins import margins

pytestmark = pytest.mark.usefixtures("one_thread")


def unprojected_reference(model, x_train, y_train, x_eval, y_eval):
    """``tau = diag(1 - p) G G_eval^+ ...``: the undamped, unprojected TRAK estimate of one model.

    Exact per-example margin gradients by an autograd loop in eval mode (G: n_train x d, G_eval:
    n_eval x d), ``tau[i, x] = (1 - p_i) (G_eval G^+)[x, i]``: the limit of ``G_eval (G^T G +
    lambda I)^{-1} G^T`` as lambda -> 0. All in float64 (a float32 G has rounding noise along the
    flat directions, which the pseudo-inverse would blow up).
    """
    model = copy.deepcopy(model).double().eval()
    x_train, x_eval = x_train.double(), x_eval.double()

    def gradients(x, y):
        rows = []
        for xi, yi in zip(x, y):
            logits = model(xi[None])[0]
            margin = logits[yi] - torch.logsumexp(torch.cat([logits[:yi], logits[yi + 1:]]), 0)
            rows.append(torch.cat([g.flatten() for g in torch.autograd.grad(margin, list(model.parameters()))]))
        return torch.stack(rows).double()

    with torch.no_grad():
        correct = torch.softmax(model(x_train).double(), 1)[torch.arange(len(y_train)), y_train]
    scores = torch.linalg.pinv(gradients(x_train, y_train)).T @ gradients(x_eval, y_eval).T
    return ((1 - correct)[:, None] * scores).numpy()


def bn_mlp(dtype):
    """Linear -> BatchNorm (non-trivial running statistics) -> ReLU -> Linear, left in train mode."""
    torch.manual_seed(3)
    model = nn.Sequential(nn.Linear(5, 8, bias=False), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 3)).to(dtype)
    model[1].running_mean.uniform_(-0.3, 0.3)
    model[1].running_var.uniform_(0.5, 2.0)
    return model.train()


# ---------------------------------------------------------------------------------------------
# 1. the random projection is exact when p >= d
#
# With P (d x p) of full row rank, Phi = G P and M = P P^T, the push-through identity gives
# Phi_eval (Phi^T Phi + lambda I)^{-1} Phi^T = G_eval (G^T G + lambda M^{-1})^{-1} G^T: the
# projection only changes the damping. As lambda -> 0 this tends to G_eval G^+, independent of P,
# when every null direction of G is also one of G_eval (true here: the null directions are exact
# symmetries of the model, softmax shifts and ReLU/batch-norm rescalings, and n_train > d).
# With p < rank(G) the result genuinely depends on P (the negative control below).


@pytest.mark.parametrize("case", ["linear-float32", "linear-float64", "bn-mlp-float64"])
def test_projection_is_exact_when_p_exceeds_parameter_count(case):
    dtype = torch.float64 if case.endswith("float64") else torch.float32
    torch.manual_seed(0)
    if case.startswith("linear"):
        model = build_model("linear", (5,), 3).to(dtype)
        with torch.no_grad():
            model.classifier.weight.mul_(3)
    else:
        model = bn_mlp(dtype)
    x_train, y_train = torch.randn(150, 5, dtype=dtype), torch.randint(0, 3, (150,))
    x_eval, y_eval = torch.randn(12, 5, dtype=dtype), torch.randint(0, 3, (12,))
    d = count_parameters(model)
    # float32 gradients carry rounding noise along the flat directions; damping must dominate it
    damping, tolerance = (1e-6, 1e-4) if dtype == torch.float32 else (1e-10, 1e-6)
    reference = unprojected_reference(model, x_train, y_train, x_eval, y_eval)
    scale = np.abs(reference).max()
    for projection_dim in (d, 3 * d):
        result = trak_margin_datamodels([model], x_train, y_train, x_eval, y_eval, projection_dim, damping=damping)
        assert result.weights.shape == reference.shape
        assert np.abs(result.weights - reference).max() <= tolerance * scale, projection_dim
    assert model.training  # the mode is restored
    coarse = trak_margin_datamodels([model], x_train, y_train, x_eval, y_eval, projection_dim=4, damping=damping)
    assert np.abs(coarse.weights - reference).max() > 1e-2 * scale


def test_batchnorm_runs_in_eval_mode_and_is_left_untouched():
    model = bn_mlp(torch.float32)
    before = copy.deepcopy(model.state_dict())
    x, y = torch.randn(40, 5), torch.randint(0, 3, (40,))
    in_train_mode = trak_margin_datamodels([model], x, y, x[:7], y[:7], projection_dim=32)
    assert model.training
    for name, value in model.state_dict().items():
        assert torch.equal(value, before[name]), name
    in_eval_mode = trak_margin_datamodels([model.eval()], x, y, x[:7], y[:7], projection_dim=32)
    np.testing.assert_array_equal(in_train_mode.weights, in_eval_mode.weights)
    with torch.no_grad():
        np.testing.assert_allclose(in_train_mode.bias, margins(model(x[:7]).numpy(), y[:7].numpy()), atol=1e-5)


# ---------------------------------------------------------------------------------------------
# 2. leave-one-out effects of an L2-regularised multinomial logistic regression
#
# Measured (500 digits, 20 PCA dims, 30 removed points, 10 eval points, default projection and
# damping): self-influence Spearman 0.975 (0.97-0.99 over three data seeds), every TRAK
# self-influence positive; cross-influence (removed point -> eval point, 300 pairs pooled)
# Spearman 0.39 (0.30-0.39), and the signs of the 10% largest true cross effects agree 87% of the
# time (73-87%). The exact influence function (true Hessian with the L2 term) exceeds 0.99 for
# both on this problem, so the weak cross-influence is TRAK's kernel (Gauss-Newton without the
# p(1 - p) weights and without the regulariser), not the retraining or the projection; a larger
# damping (0.1) raises the pooled cross-influence correlation to about 0.5.

N_TRAIN, REMOVED, L2 = 500, 30, 1e-2


def fit_logistic(model, x, y, n_total):
    """Minimise ``sum CE / n_total + L2/2 |W|^2`` to convergence with L-BFGS (float64, deterministic)."""
    optimizer = torch.optim.LBFGS(model.parameters(), lr=1, max_iter=1000, tolerance_grad=1e-10,
                                  tolerance_change=1e-14, history_size=50, line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        loss = nn.functional.cross_entropy(model(x), y, reduction="sum") / n_total + L2 / 2 * model.weight.pow(2).sum()
        loss.backward()
        return loss

    for _ in range(3):
        optimizer.step(closure)
    return model


@pytest.fixture(scope="module")
def leave_one_out():
    features, labels = load_digits(return_X_y=True)
    rng = np.random.default_rng(0)
    order = rng.permutation(len(features))
    train, evaluation = order[:N_TRAIN], order[N_TRAIN:N_TRAIN + 10]
    z = PCA(20, random_state=0).fit(features[train]).transform(features)
    z /= z[train].std()
    x, y = torch.tensor(z[train]), torch.tensor(labels[train])
    x_eval, y_eval = torch.tensor(z[evaluation]), torch.tensor(labels[evaluation])
    torch.manual_seed(0)
    full = fit_logistic(nn.Linear(20, 10).double(), x, y, N_TRAIN)

    def margin_of(model, inputs, targets):
        with torch.no_grad():
            return margins(model(inputs).numpy(), targets.numpy())

    removed = rng.choice(N_TRAIN, REMOVED, replace=False)
    self_effects, cross_effects = [], []
    for i in removed:
        keep = torch.arange(N_TRAIN) != i
        without = fit_logistic(copy.deepcopy(full), x[keep], y[keep], N_TRAIN)  # warm start
        self_effects.append(margin_of(full, x[i:i + 1], y[i:i + 1])[0] - margin_of(without, x[i:i + 1], y[i:i + 1])[0])
        cross_effects.append(margin_of(full, x_eval, y_eval) - margin_of(without, x_eval, y_eval))
    model = nn.Linear(20, 10)
    model.load_state_dict({name: value.float() for name, value in full.state_dict().items()})
    result = trak_margin_datamodels([model], x.float(), y, torch.cat([x, x_eval]).float(), torch.cat([y, y_eval]))
    return result, removed, np.array(self_effects), np.array(cross_effects)


def test_self_influence_ranks_like_leave_one_out(leave_one_out):
    result, removed, self_effects, _ = leave_one_out
    estimate = result.weights[removed, removed]
    assert np.all(self_effects > 0)
    assert np.all(estimate > 0)
    assert spearmanr(estimate, self_effects)[0] > 0.9


def test_cross_influence_agrees_with_leave_one_out(leave_one_out):
    result, removed, _, cross_effects = leave_one_out
    estimate = result.weights[removed][:, N_TRAIN:].ravel()
    truth = cross_effects.ravel()
    assert spearmanr(estimate, truth)[0] > 0.2
    largest = np.abs(truth) >= np.quantile(np.abs(truth), 0.9)
    assert np.mean(np.sign(estimate[largest]) == np.sign(truth[largest])) >= 0.7


# ---------------------------------------------------------------------------------------------
# 3. contract: shapes, dtypes, bias, determinism, seeds, input checks


@pytest.fixture(scope="module")
def mlps():
    models = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        models.append(build_model("mlp", (8,), 3, hidden=[16]))
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(130, 8, generator=generator)
    y = torch.randint(0, 3, (130,), generator=generator)
    return models, x[:100], y[:100], x[100:], y[100:]


def test_shapes_dtypes_bias_and_determinism(mlps):
    models, x, y, x_eval, y_eval = mlps
    result = trak_margin_datamodels(models, x, y, x_eval, y_eval, projection_dim=64, batch_size=32, progress=True)
    assert result.method == "trak"
    assert result.weights.shape == (100, 30) and result.weights.dtype == np.float32
    assert result.bias.shape == (30,) and result.bias.dtype == np.float32
    np.testing.assert_array_equal(result.alphas, np.zeros(30, dtype=np.float32))
    with torch.no_grad():
        expected = np.mean([margins(m(x_eval).numpy(), y_eval.numpy()) for m in models], axis=0)
    np.testing.assert_allclose(result.bias, expected, atol=1e-5)
    again = trak_margin_datamodels(models, x, y, x_eval, y_eval, projection_dim=64, batch_size=50)
    np.testing.assert_allclose(again.weights, result.weights, rtol=1e-4, atol=1e-6 * np.abs(result.weights).max())
    same = trak_margin_datamodels(models, x, y, x_eval, y_eval, projection_dim=64, batch_size=32)
    np.testing.assert_array_equal(same.weights, result.weights)


def test_another_seed_gives_a_different_but_correlated_estimate(mlps):
    # Johnson-Lindenstrauss: estimates from independent projections converge as p grows. Measured
    # Pearson correlation between seeds 0 and 1 here (d = 195 parameters): 0.48 at p = 64, 0.83 at
    # p = 256, 0.96 at p = 1024.
    models, x, y, x_eval, y_eval = mlps

    def correlation(projection_dim):
        first, second = (trak_margin_datamodels(models, x, y, x_eval, y_eval, projection_dim, seed=seed).weights
                         for seed in (0, 1))
        assert not np.array_equal(first, second)
        return pearsonr(first.ravel(), second.ravel())[0]

    fine = correlation(1024)
    assert fine > 0.9
    assert correlation(64) < fine


@pytest.mark.parametrize("change, message", [
    ({"models": []}, "no models"),
    ({"y": torch.zeros(99, dtype=torch.long)}, "same positive number"),
    ({"x_eval": torch.zeros(0, 8), "y_eval": torch.zeros(0, dtype=torch.long)}, "same positive number"),
    ({"y_eval": torch.full((30,), 3)}, r"\[0, 3\)"),
    ({"y": -torch.ones(100, dtype=torch.long)}, r"\[0, 3\)"),
    ({"y": torch.zeros(100)}, "integer labels"),
    ({"x": torch.full((100, 8), float("nan"))}, "finite"),
    ({"projection_dim": 0}, "projection_dim"),
    ({"batch_size": 0}, "batch_size"),
    ({"damping": -1.0}, "damping"),
    ({"damping": float("inf")}, "damping"),
])
def test_bad_inputs_raise_user_errors(mlps, change, message):
    models, x, y, x_eval, y_eval = mlps
    arguments = {"models": models, "x": x, "y": y, "x_eval": x_eval, "y_eval": y_eval, "projection_dim": 16,
                 "damping": 1e-3, "batch_size": 64} | change
    with pytest.raises(UserError, match=message):
        trak_margin_datamodels(arguments["models"], arguments["x"], arguments["y"], arguments["x_eval"],
                               arguments["y_eval"], arguments["projection_dim"], damping=arguments["damping"],
                               batch_size=arguments["batch_size"])


def test_non_finite_model_outputs_raise_a_user_error(mlps):
    models, x, y, x_eval, y_eval = mlps
    broken = copy.deepcopy(models[0])
    with torch.no_grad():
        broken.classifier.bias.fill_(float("nan"))
    with pytest.raises(UserError, match="model 1 gives non-finite"):
        trak_margin_datamodels([models[0], broken], x, y, x_eval, y_eval, projection_dim=16)
