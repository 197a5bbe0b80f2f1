"""The training loop and the vectorised trainer: schedules, determinism, and equality."""

import numpy as np
import pytest
import torch
from torch import nn
from torch.func import stack_module_state

from unlearnflow.core.ensemble import _ensemble_forward, _layer_chain, fit_many, predict_logits_many
from unlearnflow.core.models import build_model
from unlearnflow.core.training import (
    TrainConfig,
    augment,
    cross_entropy_loss,
    fit,
    init_model,
    make_optimizer,
    model_seed,
    predict_logits,
    set_lr,
    subset_mask,
    use_batch_statistics,
)
from unlearnflow.errors import UserError


def _blobs(n=96, classes=3, shape=(1, 6, 6), seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, classes, n)
    centres = rng.normal(size=(classes, *shape))
    x = centres[y] + 0.5 * rng.normal(size=(n, *shape))
    return torch.tensor(x, dtype=torch.float32), torch.tensor(y)


def _mlp():
    return nn.Sequential(nn.Flatten(), nn.Linear(36, 16), nn.ReLU(), nn.Linear(16, 3))


def _cnn():
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(16, 3))


def _classifier_mlp():  # a Classifier: trained by the stacked Linear-chain forward
    return build_model("mlp", (1, 6, 6), 3, hidden=[16])


def _tanh_mlp():  # not a plain Linear/ReLU chain: trained through vmap
    return nn.Sequential(nn.Flatten(), nn.Linear(36, 16), nn.Tanh(), nn.Linear(16, 3))


@pytest.mark.parametrize("build, config, min_accuracy", [
    (_mlp, TrainConfig(optimizer="sgd", lr=0.05, epochs=3, batch_size=16, schedule="onecycle"), 0.6),
    (_mlp, TrainConfig(optimizer="adam", lr=1e-2, epochs=2, batch_size=10, schedule="exponential",
                       drop_last=False, weight_decay=1e-4), 0.6),
    (_cnn, TrainConfig(optimizer="sgd", lr=0.1, epochs=6, batch_size=16, crop_padding=1, flip=True,
                       label_smoothing=0.1, nesterov=True), 0.5),
    (_classifier_mlp, TrainConfig(optimizer="sgd", lr=0.1, epochs=6, batch_size=16, crop_padding=1, flip=True,
                                  label_smoothing=0.1), 0.6),
    (_tanh_mlp, TrainConfig(optimizer="adam", lr=1e-2, epochs=2, batch_size=10, drop_last=False), 0.6),
])
def test_vectorised_equals_sequential(build, config, min_accuracy):
    x, y = _blobs()
    seeds = [model_seed(0, "test", i) for i in range(4)]
    masks = np.stack([subset_mask(s, len(x), 0.5) for s in seeds])
    masks[0] = masks[1]  # two models on the same subset still differ by seed
    models, stats = fit_many(build, seeds, x, y, masks, config)
    assert stats.steps == config.epochs * config.steps_per_epoch(int(masks[0].sum()))
    for model, seed, mask in zip(models, seeds, masks):
        alone = init_model(build, seed)
        fit(alone, x, y, config, seed, subset=torch.from_numpy(np.flatnonzero(mask)))
        for (name, a), b in zip(alone.state_dict().items(), model.state_dict().values()):
            assert torch.allclose(a.float(), b.float(), atol=1e-5, rtol=1e-4), name
    stacked = predict_logits_many(models, x)
    separate = torch.stack([predict_logits(m, x) for m in models])
    assert torch.allclose(stacked, separate, atol=1e-5)
    # the models really trained and really differ from each other
    assert not torch.allclose(stacked[0], stacked[1])
    assert (stacked.argmax(-1) == y).float().mean() > min_accuracy


def test_vectorised_equals_sequential_smallvgg():
    """The real conv architecture (Conv/MaxPool/BatchNorm2d/BatchNorm1d) over a few steps; longer runs
    drift apart as max-pool ties amplify rounding differences of vmap's grouped convolutions."""
    x, y = _blobs(n=64, shape=(1, 8, 8))
    config = TrainConfig(lr=0.1, epochs=2, batch_size=16)
    def build():
        return build_model("smallvgg", (1, 8, 8), 3, width=4)
    seeds = [model_seed(0, "vgg", i) for i in range(3)]
    masks = np.stack([subset_mask(s, len(x), 0.5) for s in seeds])
    models, _ = fit_many(build, seeds, x, y, masks, config)
    for model, seed, mask in zip(models, seeds, masks):
        alone = init_model(build, seed)
        fit(alone, x, y, config, seed, subset=torch.from_numpy(np.flatnonzero(mask)))
        for (name, a), b in zip(alone.state_dict().items(), model.state_dict().values()):
            assert torch.allclose(a.float(), b.float(), atol=1e-5, rtol=1e-4), name


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_vectorised_models_do_not_depend_on_chunking(optimizer):
    """A model's weights depend on its seed and subset only, not on the models stacked with it."""
    x, y = _blobs()
    config = TrainConfig(optimizer=optimizer, lr=0.05 if optimizer == "sgd" else 1e-2, epochs=2, batch_size=16)
    seeds = [model_seed(0, "chunks", i) for i in range(4)]
    masks = np.stack([subset_mask(s, len(x), 0.5) for s in seeds])
    everything, _ = fit_many(_classifier_mlp, seeds, x, y, masks, config)
    middle, _ = fit_many(_classifier_mlp, seeds[1:3], x, y, masks[1:3], config)
    for a, b in zip(everything[1:3], middle):
        assert all(torch.equal(p, q) for p, q in zip(a.state_dict().values(), b.state_dict().values()))


def test_layer_chain_detection():
    assert [type(m) for _, m in _layer_chain(_mlp())] == [nn.Flatten, nn.Linear, nn.ReLU, nn.Linear]
    assert [name for name, _ in _layer_chain(_classifier_mlp())] == ["features.0", "features.1", "features.2",
                                                                      "classifier"]
    assert [name for name, _ in _layer_chain(build_model("linear", (5,), 2))] == ["features.0", "classifier"]
    linear = nn.Linear(3, 2)
    assert _layer_chain(linear) == [("", linear)]
    assert _layer_chain(_tanh_mlp()) is None
    assert _layer_chain(_cnn()) is None
    assert _layer_chain(build_model("resnet9", (3, 8, 8), 2, width=4)) is None


@pytest.mark.parametrize("build, shape", [
    (lambda: nn.Linear(6, 3), (5, 6)),  # a bare layer: parameters named "weight", "bias"
    (lambda: nn.Sequential(nn.Linear(6, 4), nn.ReLU(), nn.Flatten(), nn.Linear(24, 3, bias=False)), (5, 1, 6, 6)),
    (_cnn, (5, 1, 6, 6)),  # the vmap path
])
def test_ensemble_forward_matches_each_model(build, shape):
    models = [init_model(build, seed) for seed in range(3)]
    for model in models:
        use_batch_statistics(model)  # as fit_many does
    params, buffers = stack_module_state(models)
    x = torch.randn(3, *shape)
    stacked = _ensemble_forward(models[0])(params, buffers, x)
    assert torch.allclose(stacked, torch.stack([model(xi) for model, xi in zip(models, x)]), atol=1e-6)


@pytest.mark.parametrize("label_smoothing", [0.0, 0.2])
def test_cross_entropy_matches_torch(label_smoothing):
    logits = torch.randn(50, 7, dtype=torch.float64, requires_grad=True)
    labels = torch.randint(0, 7, (50,))
    ours = cross_entropy_loss(label_smoothing)(logits, labels)
    theirs = nn.functional.cross_entropy(logits, labels, reduction="none", label_smoothing=label_smoothing)
    assert torch.allclose(ours, theirs, atol=1e-12)
    ours_grad, = torch.autograd.grad(ours.sum(), logits)
    theirs_grad, = torch.autograd.grad(theirs.sum(), logits)
    assert torch.allclose(ours_grad, theirs_grad, atol=1e-12)


def test_training_is_deterministic_and_learns():
    x, y = _blobs()
    config = TrainConfig(lr=0.05, epochs=5, batch_size=16)
    runs = []
    for _ in range(2):
        model = init_model(_cnn, 7)
        fit(model, x, y, config, seed=7)
        runs.append(predict_logits(model, x))
    assert torch.equal(runs[0], runs[1])
    assert (runs[0].argmax(1) == y).float().mean() > 0.9


def test_schedules():
    onecycle = TrainConfig(lr=0.4, epochs=10, schedule="onecycle", warmup_fraction=0.2)
    lrs = [onecycle.lr_at(t, 10) for t in range(100)]
    assert max(lrs) == pytest.approx(0.4) and np.argmax(lrs) == 19
    assert lrs[-1] == pytest.approx(0.0) and lrs[0] == pytest.approx(0.4 / 20)
    exponential = TrainConfig(lr=0.05, schedule="exponential", gamma=0.5)
    assert [exponential.lr_at(t, 3) for t in (0, 2, 3, 7)] == pytest.approx([0.05, 0.05, 0.025, 0.0125])


def test_augment_crops_and_flips_per_example():
    images = torch.arange(2 * 1 * 3 * 3, dtype=torch.float32).view(2, 1, 3, 3)
    offsets = torch.tensor([[1, 1], [0, 2]])  # first: identity; second: shifted up-left by pad 1
    flips = torch.tensor([False, True])
    out = augment(images, offsets, flips, padding=1)
    assert torch.equal(out[0], images[0])
    shifted = torch.nn.functional.pad(images[1], (1, 1, 1, 1))[:, 0:3, 2:5]
    assert torch.equal(out[1], shifted.flip(-1))


def test_model_seed_depends_on_role_and_id_only():
    assert model_seed(0, "original", 3) == model_seed(0, "original", 3)
    assert len({model_seed(0, "original", 3), model_seed(0, "original", 4), model_seed(0, "oracle/a", 3),
                model_seed(1, "original", 3)}) == 4


def test_config_errors_are_user_errors():
    with pytest.raises(UserError, match="unknown key"):
        TrainConfig.from_mapping({"lr": 0.1, "epoch": 3})
    with pytest.raises(UserError, match="optimizer"):
        TrainConfig(optimizer="rmsprop")
    with pytest.raises(UserError, match="fewer than one batch"):
        TrainConfig(batch_size=64).steps_per_epoch(10)


def test_unequal_subsets_rejected():
    x, y = _blobs(n=20)
    masks = np.ones((2, 20), dtype=bool)
    masks[1, 0] = False
    with pytest.raises(UserError, match="equal training-set sizes"):
        fit_many(_mlp, [1, 2], x, y, masks, TrainConfig(batch_size=4, epochs=1))


@pytest.mark.parametrize("config", [
    TrainConfig(optimizer="sgd", lr=0.1, momentum=0.9, weight_decay=5e-4),
    TrainConfig(optimizer="sgd", lr=0.05, momentum=0.9, nesterov=True),
    TrainConfig(optimizer="sgd", lr=0.1, momentum=0.0, weight_decay=0.0),
    TrainConfig(optimizer="adam", lr=1e-2, weight_decay=1e-4),
])
def test_the_optimizer_steps_bitwise_as_torch_optim(config):
    """make_optimizer's SGD and Adam equal torch.optim's foreach SGD and Adam step for step,
    including a learning-rate change and a parameter without a gradient on some steps."""
    torch.manual_seed(0)
    ours = [torch.randn(7, 5), torch.randn(5), torch.randn(3)]
    theirs, initial = [p.clone() for p in ours], [p.clone() for p in ours]
    optimizer = make_optimizer(ours, config)
    reference = (torch.optim.SGD(theirs, lr=config.lr, momentum=config.momentum, nesterov=config.nesterov,
                                 weight_decay=config.weight_decay, foreach=True) if config.optimizer == "sgd" else
                 torch.optim.Adam(theirs, lr=config.lr, weight_decay=config.weight_decay, foreach=True))
    for step in range(6):
        gradients = [torch.randn_like(p) for p in ours]
        for group in (ours, theirs):
            for index, (p, g) in enumerate(zip(group, gradients)):
                p.grad = None if (index == 2 and step % 3 == 1) else g.clone()
        set_lr(optimizer, config.lr / (step + 1))
        for group in reference.param_groups:
            group["lr"] = config.lr / (step + 1)
        optimizer.step()
        reference.step()
        assert all(torch.equal(a, b) for a, b in zip(ours, theirs)), step
    assert all(not torch.equal(p, q) for p, q in zip(ours, initial))
