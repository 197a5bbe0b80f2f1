"""JiT (Foster et al. 2024, Lipschitz regularisation around the forget samples) on a small MLP
trained on digits: it is source-free, smooths the model around the forget samples more than
elsewhere, is a function of its seed, and refuses bad hyper-parameters in one line."""

import copy

import numpy as np
import pytest
import torch

from unlearnflow.core.data import load_dataset
from unlearnflow.core.models import build_model
from unlearnflow.core.training import TrainConfig, cross_entropy_loss, fit, init_model, predict_logits
from unlearnflow.errors import UserError
from unlearnflow.methods.jit import lipschitz_loss
from unlearnflow.methods.request import ForgetRequest
from unlearnflow.registry import METHODS, hyperparameters

pytestmark = pytest.mark.usefixtures("one_thread")

#: a local perturbation scale (inputs are standardised pixels) and a step that moves the model
LOCAL = {"lr": 0.03, "sigma": 0.02}


@pytest.fixture(scope="module")
def trained():
    ds = load_dataset({"loader": "digits"})
    x, y = torch.from_numpy(ds.x_train), torch.from_numpy(ds.y_train)
    model = init_model(lambda: build_model("mlp", ds.input_shape, 10, hidden=[32]), 0)
    fit(model, x, y, TrainConfig(lr=0.1, epochs=15, batch_size=32), 0)
    order = np.random.default_rng(0).permutation(len(x))
    forget, retain = (torch.from_numpy(np.sort(part)) for part in (order[:20], order[20:]))
    request = ForgetRequest(forget_inputs=x[forget], forget_labels=y[forget], num_classes=10)
    return model, x, y, forget, retain, request


def run_jit(trained, hp, seed=0):
    model, *_, request = trained
    edited = copy.deepcopy(model)
    result = METHODS["jit"].unlearn(edited, request, hyperparameters("jit", hp), seed)
    return edited, result


def test_jit_is_registered_source_free_and_accounts_its_perturbations(trained):
    assert METHODS["jit"].source_free
    _, result = run_jit(trained, {**LOCAL, "n_perturbations": 5})
    assert result.cost.steps == 20 and result.cost.examples == 20 * (1 + 5)  # batch 1, one epoch


def test_jit_changes_the_outputs_on_forget_samples_more_than_on_retained_ones(trained):
    model, x, y, forget, retain, _ = trained
    edited, _ = run_jit(trained, LOCAL)
    before, after = predict_logits(model, x), predict_logits(edited, x)
    change = (after.softmax(1) - before.softmax(1)).norm(dim=1)
    assert change[forget].mean() > 2 * change[retain].mean()  # measured: 0.032 vs 0.012
    loss = cross_entropy_loss()
    assert loss(after[forget], y[forget]).mean() > loss(before[forget], y[forget]).mean()
    assert (after[retain].argmax(1) == y[retain]).float().mean() >= 0.99  # the rest stays intact
    # the local Lipschitz estimate around the forget samples fell
    noise = 0.02 * torch.randn((25, *x[forget].shape), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert lipschitz_loss(edited, x[forget], noise) < lipschitz_loss(model, x[forget], noise)


def test_jit_is_a_function_of_its_seed(trained):
    same = [run_jit(trained, LOCAL, seed=3)[0] for _ in range(2)]
    other = run_jit(trained, LOCAL, seed=4)[0]
    weights = [dict(model.state_dict()) for model in (*same, other)]
    assert all(torch.equal(weights[0][key], weights[1][key]) for key in weights[0])
    assert not all(torch.equal(weights[0][key], weights[2][key]) for key in weights[0])


@pytest.mark.parametrize("hp, message", [({"sigma": 0.0}, "jit: sigma must be > 0"),
                                         ({"n_perturbations": 0}, "jit: n_perturbations must be >= 1"),
                                         ({"outputs": "margins"}, "jit: outputs must be one of logits")])
def test_jit_refuses_bad_hyperparameters(hp, message):
    with pytest.raises(UserError, match=message):
        hyperparameters("jit", hp)
