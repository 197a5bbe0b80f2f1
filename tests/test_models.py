"""Tests for unlearnflow.core.models: shapes, names, options, vmap compatibility, pretrained loading."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn
from torch.func import functional_call, grad, stack_module_state, vmap

from unlearnflow.core.models import (
    ARCHITECTURES,
    build_model,
    count_parameters,
    load_pretrained,
    penultimate_features,
    weight_layers,
)
from unlearnflow.errors import UserError

IMAGE_SHAPES = [(1, 8, 8), (1, 28, 28), (3, 32, 32)]
CONV_ARCHS = ("smallvgg", "allcnn", "resnet9", "resnet18")

# torchvision.models.resnet18().state_dict().keys(), in order (written out by hand from the
# torchvision structure: 62 parameter tensors + 60 batch-norm buffers = 122 entries).
TORCHVISION_RESNET18_KEYS = [
    "conv1.weight",
    "bn1.weight",
    "bn1.bias",
    "bn1.running_mean",
    "bn1.running_var",
    "bn1.num_batches_tracked",
    "layer1.0.conv1.weight",
    "layer1.0.bn1.weight",
    "layer1.0.bn1.bias",
    "layer1.0.bn1.running_mean",
    "layer1.0.bn1.running_var",
    "layer1.0.bn1.num_batches_tracked",
    "layer1.0.conv2.weight",
    "layer1.0.bn2.weight",
    "layer1.0.bn2.bias",
    "layer1.0.bn2.running_mean",
    "layer1.0.bn2.running_var",
    "layer1.0.bn2.num_batches_tracked",
    "layer1.1.conv1.weight",
    "layer1.1.bn1.weight",
    "layer1.1.bn1.bias",
    "layer1.1.bn1.running_mean",
    "layer1.1.bn1.running_var",
    "layer1.1.bn1.num_batches_tracked",
    "layer1.1.conv2.weight",
    "layer1.1.bn2.weight",
    "layer1.1.bn2.bias",
    "layer1.1.bn2.running_mean",
    "layer1.1.bn2.running_var",
    "layer1.1.bn2.num_batches_tracked",
    "layer2.0.conv1.weight",
    "layer2.0.bn1.weight",
    "layer2.0.bn1.bias",
    "layer2.0.bn1.running_mean",
    "layer2.0.bn1.running_var",
    "layer2.0.bn1.num_batches_tracked",
    "layer2.0.conv2.weight",
    "layer2.0.bn2.weight",
    "layer2.0.bn2.bias",
    "layer2.0.bn2.running_mean",
    "layer2.0.bn2.running_var",
    "layer2.0.bn2.num_batches_tracked",
    "layer2.0.downsample.0.weight",
    "layer2.0.downsample.1.weight",
    "layer2.0.downsample.1.bias",
    "layer2.0.downsample.1.running_mean",
    "layer2.0.downsample.1.running_var",
    "layer2.0.downsample.1.num_batches_tracked",
    "layer2.1.conv1.weight",
    "layer2.1.bn1.weight",
    "layer2.1.bn1.bias",
    "layer2.1.bn1.running_mean",
    "layer2.1.bn1.running_var",
    "layer2.1.bn1.num_batches_tracked",
    "layer2.1.conv2.weight",
    "layer2.1.bn2.weight",
    "layer2.1.bn2.bias",
    "layer2.1.bn2.running_mean",
    "layer2.1.bn2.running_var",
    "layer2.1.bn2.num_batches_tracked",
    "layer3.0.conv1.weight",
    "layer3.0.bn1.weight",
    "layer3.0.bn1.bias",
    "layer3.0.bn1.running_mean",
    "layer3.0.bn1.running_var",
    "layer3.0.bn1.num_batches_tracked",
    "layer3.0.conv2.weight",
    "layer3.0.bn2.weight",
    "layer3.0.bn2.bias",
    "layer3.0.bn2.running_mean",
    "layer3.0.bn2.running_var",
    "layer3.0.bn2.num_batches_tracked",
    "layer3.0.downsample.0.weight",
    "layer3.0.downsample.1.weight",
    "layer3.0.downsample.1.bias",
    "layer3.0.downsample.1.running_mean",
    "layer3.0.downsample.1.running_var",
    "layer3.0.downsample.1.num_batches_tracked",
    "layer3.1.conv1.weight",
    "layer3.1.bn1.weight",
    "layer3.1.bn1.bias",
    "layer3.1.bn1.running_mean",
    "layer3.1.bn1.running_var",
    "layer3.1.bn1.num_batches_tracked",
    "layer3.1.conv2.weight",
    "layer3.1.bn2.weight",
    "layer3.1.bn2.bias",
    "layer3.1.bn2.running_mean",
    "layer3.1.bn2.running_var",
    "layer3.1.bn2.num_batches_tracked",
    "layer4.0.conv1.weight",
    "layer4.0.bn1.weight",
    "layer4.0.bn1.bias",
    "layer4.0.bn1.running_mean",
    "layer4.0.bn1.running_var",
    "layer4.0.bn1.num_batches_tracked",
    "layer4.0.conv2.weight",
    "layer4.0.bn2.weight",
    "layer4.0.bn2.bias",
    "layer4.0.bn2.running_mean",
    "layer4.0.bn2.running_var",
    "layer4.0.bn2.num_batches_tracked",
    "layer4.0.downsample.0.weight",
    "layer4.0.downsample.1.weight",
    "layer4.0.downsample.1.bias",
    "layer4.0.downsample.1.running_mean",
    "layer4.0.downsample.1.running_var",
    "layer4.0.downsample.1.num_batches_tracked",
    "layer4.1.conv1.weight",
    "layer4.1.bn1.weight",
    "layer4.1.bn1.bias",
    "layer4.1.bn1.running_mean",
    "layer4.1.bn1.running_var",
    "layer4.1.bn1.num_batches_tracked",
    "layer4.1.conv2.weight",
    "layer4.1.bn2.weight",
    "layer4.1.bn2.bias",
    "layer4.1.bn2.running_mean",
    "layer4.1.bn2.running_var",
    "layer4.1.bn2.num_batches_tracked",
    "fc.weight",
    "fc.bias",
]


def _small(arch: str) -> dict:
    """Narrow options so the tests stay fast (the structure does not depend on width)."""
    return {"width": 4} if arch in CONV_ARCHS else {}


# --------------------------------------------------------------------------- shapes


@pytest.mark.parametrize("arch", ARCHITECTURES)
@pytest.mark.parametrize("shape", IMAGE_SHAPES)
def test_forward_shapes_on_images(arch, shape):
    torch.manual_seed(0)
    model = build_model(arch, shape, 7).eval()
    x = torch.randn(3, *shape)
    with torch.no_grad():
        out = model(x)
        feats = penultimate_features(model, x)
    assert out.shape == (3, 7)
    assert torch.isfinite(out).all()
    assert feats.shape == (3, model.classifier.in_features)


@pytest.mark.parametrize("arch", ["linear", "mlp"])
def test_forward_shapes_on_feature_vectors(arch):
    model = build_model(arch, (20,), 4)
    assert model(torch.randn(5, 20)).shape == (5, 4)
    assert penultimate_features(model, torch.randn(5, 20)).shape == (5, model.classifier.in_features)


def test_default_widths_and_dimensions():
    assert build_model("linear", (1, 8, 8), 10).classifier.in_features == 64
    mlp = build_model("mlp", (1, 8, 8), 10)
    assert [m.out_features for _, m in weight_layers(mlp)] == [64, 10]
    mlp2 = build_model("mlp", (30,), 3, hidden=[16, 8])
    assert [(m.in_features, m.out_features) for _, m in weight_layers(mlp2)] == [(30, 16), (16, 8), (8, 3)]
    vgg = build_model("smallvgg", (3, 32, 32), 10)
    assert [m.out_channels for _, m in weight_layers(vgg) if isinstance(m, nn.Conv2d)] == [32, 64, 128]
    # as in the PGU code: flatten 4w x 4 x 4 on CIFAR, hidden 4w
    assert weight_layers(vgg)[3][1].in_features == 128 * 16
    assert vgg.classifier.in_features == 128
    allcnn = build_model("allcnn", (3, 32, 32), 10)
    assert [m.out_channels for _, m in weight_layers(allcnn)[:-1]] == [96, 96] + [192] * 6
    r9 = build_model("resnet9", (3, 32, 32), 10)
    assert [m.out_channels for _, m in weight_layers(r9)[:-1]] == [64, 128, 128, 128, 256, 256, 256, 128]
    assert r9.classifier.bias is None and r9.classifier.in_features == 128
    r18 = build_model("resnet18", (3, 32, 32), 10)
    assert r18.layer4[1].conv2.out_channels == 512 and r18.fc.in_features == 512
    assert count_parameters(build_model("smallvgg", (3, 32, 32), 10, width=128)) == 5_681_674


def test_models_have_no_dropout_and_no_inplace_relu():
    for arch in ARCHITECTURES:
        model = build_model(arch, (3, 32, 32), 10, **_small(arch))
        for m in model.modules():
            assert not isinstance(m, nn.modules.dropout._DropoutNd), arch
            if isinstance(m, nn.ReLU):
                assert m.inplace is False, arch


def test_eval_forward_is_deterministic():
    for arch in ARCHITECTURES:
        model = build_model(arch, (1, 8, 8), 3, **_small(arch)).eval()
        x = torch.randn(4, 1, 8, 8)
        assert torch.equal(model(x), model(x)), arch


# --------------------------------------------------------------------------- resnet18 names


def test_resnet18_state_dict_keys_match_torchvision():
    assert len(TORCHVISION_RESNET18_KEYS) == 122
    assert len(set(TORCHVISION_RESNET18_KEYS)) == 122
    model = build_model("resnet18", (3, 224, 224), 1000)
    assert list(model.state_dict().keys()) == TORCHVISION_RESNET18_KEYS
    params = [name for name, _ in model.named_parameters()]
    assert len(params) == 62
    assert params == [k for k in TORCHVISION_RESNET18_KEYS if "running_" not in k and "num_batches" not in k]
    # the ImageNet configuration is torchvision's resnet18 exactly
    assert count_parameters(model) == 11_689_512
    sd = model.state_dict()
    assert sd["conv1.weight"].shape == (64, 3, 7, 7)
    assert sd["layer2.0.downsample.0.weight"].shape == (128, 64, 1, 1)
    assert sd["layer4.1.bn2.running_var"].shape == (512,)
    assert sd["fc.weight"].shape == (1000, 512)
    assert model.options["cifar_stem"] is False
    assert isinstance(model.maxpool, nn.MaxPool2d)


def test_resnet18_stem_option():
    cifar = build_model("resnet18", (3, 32, 32), 10, width=4)
    assert cifar.options["cifar_stem"] is True
    assert cifar.conv1.kernel_size == (3, 3) and cifar.conv1.stride == (1, 1)
    assert isinstance(cifar.maxpool, nn.Identity)
    assert list(cifar.state_dict()) == TORCHVISION_RESNET18_KEYS  # same names with the CIFAR stem
    imnet = build_model("resnet18", (3, 32, 32), 10, width=4, cifar_stem=False)
    assert imnet.conv1.kernel_size == (7, 7) and imnet.conv1.stride == (2, 2)
    assert imnet(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    assert build_model("resnet18", (1, 8, 8), 2, width=4, cifar_stem=False)(torch.randn(2, 1, 8, 8)).shape == (2, 2)
    assert build_model("resnet18", (3, 64, 64), 2, width=4).options["cifar_stem"] is True
    assert build_model("resnet18", (3, 96, 96), 2, width=4).options["cifar_stem"] is False


def test_resnet18_classifier_alias():
    model = build_model("resnet18", (1, 8, 8), 3, width=4)
    assert model.classifier is model.fc
    assert not any(name.startswith("classifier") for name in model.state_dict())


# --------------------------------------------------------------------------- linear bias


def test_linear_without_bias():
    model = build_model("linear", (5,), 3, bias=False)
    assert model.classifier.bias is None
    assert list(model.state_dict()) == ["classifier.weight"]
    assert torch.equal(model(torch.zeros(2, 5)), torch.zeros(2, 3))
    assert build_model("linear", (5,), 3).classifier.bias is not None


# --------------------------------------------------------------------------- weight layers


EXPECTED_WEIGHT_LAYERS = {
    "linear": ["classifier"],
    "mlp": ["features.1", "classifier"],
    "smallvgg": ["features.0", "features.4", "features.8", "features.14", "classifier"],
    "allcnn": [f"features.{i}.0" for i in range(8)] + ["classifier"],
    "resnet9": [
        "features.0.0", "features.1.0", "features.2.body.0.0", "features.2.body.1.0",
        "features.3.0", "features.5.body.0.0", "features.5.body.1.0", "features.6.0", "classifier",
    ],
    "resnet18": ["conv1"] + [
        name
        for layer in range(1, 5)
        for block in range(2)
        for name in (
            [f"layer{layer}.{block}.conv1", f"layer{layer}.{block}.conv2"]
            + ([f"layer{layer}.{block}.downsample.0"] if layer > 1 and block == 0 else [])
        )
    ] + ["fc"],
}


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_weight_layers_names_and_forward_order(arch):
    model = build_model(arch, (3, 32, 32), 5, **_small(arch))
    layers = weight_layers(model)
    names = [name for name, _ in layers]
    assert names == EXPECTED_WEIGHT_LAYERS[arch]
    assert all(isinstance(m, (nn.Conv2d, nn.Linear)) for _, m in layers)
    assert dict(model.named_modules())[names[-1]] is model.classifier
    # hooks fire in the listed order and see each layer's input (what PGU records)
    calls: list[str] = []
    inputs: dict[str, torch.Tensor] = {}

    def hook(name):
        def fn(module, inp, out):
            calls.append(name)
            inputs[name] = inp[0]
        return fn

    handles = [m.register_forward_hook(hook(n)) for n, m in layers]
    model.eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        model(x)
        feats = penultimate_features(model, x)
    for h in handles:
        h.remove()
    assert calls[: len(names)] == names
    assert torch.allclose(inputs[names[-1]], feats)


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_penultimate_features_feed_the_classifier(arch):
    model = build_model(arch, (1, 28, 28), 6, **_small(arch)).eval()
    x = torch.randn(3, 1, 28, 28)
    with torch.no_grad():
        feats = penultimate_features(model, x)
        assert feats.shape == (3, model.classifier.in_features)
        logits = model.classifier(feats) * getattr(model, "logit_scale", 1.0)
        assert torch.allclose(logits, model(x), atol=1e-6)


def test_penultimate_features_of_a_foreign_module():
    net = nn.Sequential(nn.Flatten(), nn.Linear(12, 5), nn.ReLU(), nn.Linear(5, 2))
    x = torch.randn(4, 3, 4)
    assert torch.allclose(penultimate_features(net, x), net[2](net[1](net[0](x))))


# --------------------------------------------------------------------------- options


@pytest.mark.parametrize(
    "arch, shape, classes, options, fragment",
    [
        ("vgg16", (3, 32, 32), 10, {}, "unknown model architecture"),
        ("linear", (5,), 3, {"bias": "no"}, "bias"),
        ("linear", (5,), 3, {"bias": 1}, "bias"),
        ("linear", (5,), 3, {"width": 4}, "unknown option"),
        ("mlp", (5,), 3, {"hidden": 64}, "hidden"),
        ("mlp", (5,), 3, {"hidden": [64, 0]}, "hidden"),
        ("mlp", (5,), 3, {"hidden": [True]}, "hidden"),
        ("smallvgg", (3, 32, 32), 10, {"width": 0}, "width"),
        ("smallvgg", (3, 32, 32), 10, {"width": "32"}, "width"),
        ("smallvgg", (3, 32, 32), 10, {"dropout": 0.5}, "unknown option"),
        ("allcnn", (3, 32, 32), 10, {"batchnorm": "yes"}, "batchnorm"),
        ("resnet9", (3, 32, 32), 10, {"width": 2.5}, "width"),
        ("resnet18", (3, 32, 32), 10, {"cifar_stem": 1}, "cifar_stem"),
        ("resnet18", (3, 32, 32), 10, {"batchnorm": False}, "unknown option"),
        ("resnet18", (3, 7, 7), 10, {}, "at least 8x8"),
        ("allcnn", (10,), 10, {}, "(C, H, W)"),
        ("resnet9", (3, 32), 10, {}, "(C, H, W)"),
        ("linear", (0,), 3, {}, "input_shape"),
        ("linear", "abc", 3, {}, "input_shape"),
        ("linear", (5,), 0, {}, "num_classes"),
    ],
)
def test_bad_options_raise_one_line_user_error(arch, shape, classes, options, fragment):
    with pytest.raises(UserError) as info:
        build_model(arch, shape, classes, **options)
    message = str(info.value)
    assert fragment in message
    assert "\n" not in message


def test_options_are_recorded():
    model = build_model("smallvgg", (1, 8, 8), 3, width=8, batchnorm=False)
    assert model.arch == "smallvgg" and model.input_shape == (1, 8, 8) and model.num_classes == 3
    assert model.options == {"width": 8, "batchnorm": False}
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())
    rebuilt = build_model(model.arch, model.input_shape, model.num_classes, **model.options)
    assert list(rebuilt.state_dict()) == list(model.state_dict())
    assert build_model("mlp", (4,), 2).options == {"hidden": [64]}


# --------------------------------------------------------------------------- vmap


def _drop_running_stats(model: nn.Module) -> nn.Module:
    """What the vectorised trainer does: batch statistics only, no running buffers."""
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.track_running_stats = False
            m.running_mean = None
            m.running_var = None
            m.num_batches_tracked = None
    return model


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_vmap_forward_and_grad_match_each_model(arch):
    # float64: batch norm over 4 tiny maps amplifies float32 summation-order noise past 1e-4 on
    # some CPUs; in double precision any difference left is vmap computing something else
    torch.manual_seed(1)
    shape, n_models, batch = (1, 8, 8), 3, 4
    models = [_drop_running_stats(build_model(arch, shape, 3, **_small(arch))).double().train()
              for _ in range(n_models)]
    params, buffers = stack_module_state(models)
    assert not buffers or all(v is not None for v in buffers.values())
    base = copy.deepcopy(models[0]).to("meta")

    def forward(p, b, x):
        return functional_call(base, (p, b), (x,))

    xs = torch.randn(n_models, batch, *shape, dtype=torch.float64)
    ys = torch.randint(0, 3, (n_models, batch))
    out = vmap(forward)(params, buffers, xs)
    assert out.shape == (n_models, batch, 3)
    for i, model in enumerate(models):
        assert torch.allclose(out[i], model(xs[i]), atol=1e-5, rtol=1e-4), (arch, i)

    def loss(p, b, x, y):
        return nn.functional.cross_entropy(forward(p, b, x), y)

    grads = vmap(grad(loss))(params, buffers, xs, ys)
    for i, model in enumerate(models):
        model.zero_grad()
        nn.functional.cross_entropy(model(xs[i]), ys[i]).backward()
        for name, p in model.named_parameters():
            assert torch.allclose(grads[name][i], p.grad, atol=1e-5, rtol=1e-4), (arch, name)


# --------------------------------------------------------------------------- load_pretrained


def _fill(model: nn.Module, value: float) -> nn.Module:
    with torch.no_grad():
        for t in model.state_dict().values():
            if t.is_floating_point():
                t.fill_(value)
    return model


def _assert_same_weights(a: nn.Module, b: nn.Module, skip=()):
    sa, sb = a.state_dict(), b.state_dict()
    assert list(sa) == list(sb)
    for k in sa:
        if k not in skip:
            assert torch.equal(sa[k], sb[k]), k


def test_load_pretrained_round_trip(tmp_path):
    torch.manual_seed(0)
    src = build_model("resnet18", (3, 32, 32), 10, width=4)
    src.train()(torch.randn(4, 3, 32, 32))  # non-trivial running statistics
    path = tmp_path / "weights.pt"
    torch.save(src.state_dict(), path)
    dst = _fill(build_model("resnet18", (3, 32, 32), 10, width=4), 0.5)
    report = load_pretrained(dst, path)
    _assert_same_weights(src, dst)
    assert report.kept_fresh == ()
    assert len(report.loaded) == 122
    assert str(path) in str(report) and "\n" not in str(report)
    src.eval(), dst.eval()
    x = torch.randn(2, 3, 32, 32)
    assert torch.equal(src(x), dst(x))


@pytest.mark.parametrize("wrap", ["state_dict", "model", "module_prefix", "no_batch_counters"])
def test_load_pretrained_wrapped_and_prefixed(tmp_path, wrap):
    src = build_model("resnet18", (1, 8, 8), 4, width=4)
    sd = src.state_dict()
    if wrap == "state_dict":
        obj = {"state_dict": sd, "epoch": 3}
    elif wrap == "model":
        obj = {"model": sd, "optimizer": {}}
    elif wrap == "module_prefix":
        obj = {"state_dict": {f"module.{k}": v for k, v in sd.items()}}
    else:
        obj = {k: v for k, v in sd.items() if not k.endswith("num_batches_tracked")}
    path = tmp_path / "ckpt.pth"
    torch.save(obj, path)
    dst = _fill(build_model("resnet18", (1, 8, 8), 4, width=4), 0.25)
    load_pretrained(dst, path)
    _assert_same_weights(src, dst, skip={k for k in sd if k.endswith("num_batches_tracked")})


def test_load_pretrained_keeps_fresh_fc_when_classes_differ(tmp_path):
    src = build_model("resnet18", (3, 32, 32), 1000, width=4)
    path = tmp_path / "imagenet.pt"
    torch.save(src.state_dict(), path)
    dst = build_model("resnet18", (3, 32, 32), 10, width=4)
    fresh_fc = copy.deepcopy(dst.fc.state_dict())
    report = load_pretrained(dst, path)
    assert set(report.kept_fresh) == {"fc.weight", "fc.bias"}
    assert "fc" in report.message and "(1000, 32)" in report.message and "(10, 32)" in report.message
    assert "fc.weight" not in report.loaded and len(report.loaded) == 120
    _assert_same_weights(src, dst, skip={"fc.weight", "fc.bias"})
    assert torch.equal(dst.fc.weight, fresh_fc["weight"]) and torch.equal(dst.fc.bias, fresh_fc["bias"])


def test_load_pretrained_other_architecture(tmp_path):
    src = build_model("smallvgg", (1, 8, 8), 10, width=4)
    path = tmp_path / "vgg.pt"
    torch.save(src.state_dict(), path)
    dst = build_model("smallvgg", (1, 8, 8), 3, width=4)
    report = load_pretrained(dst, path)
    assert set(report.kept_fresh) == {"classifier.weight", "classifier.bias"}
    _assert_same_weights(src, dst, skip=set(report.kept_fresh))


def _error(model, path) -> str:
    with pytest.raises(UserError) as info:
        load_pretrained(model, path)
    message = str(info.value)
    assert "\n" not in message
    assert str(path) in message
    return message


def test_load_pretrained_errors(tmp_path):
    model = build_model("resnet18", (3, 32, 32), 10, width=4)
    sd = model.state_dict()
    before = copy.deepcopy(sd)

    assert "not found" in _error(model, tmp_path / "missing.pt")

    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"this is not a checkpoint")
    assert "cannot read" in _error(model, corrupt)

    not_a_dict = tmp_path / "list.pt"
    torch.save([1, 2, 3], not_a_dict)
    assert "not a state dict" in _error(model, not_a_dict)

    renamed = tmp_path / "renamed.pt"
    torch.save({(k.replace("fc.", "head.") if k.startswith("fc.") else k): v for k, v in sd.items()}, renamed)
    message = _error(model, renamed)
    assert "missing keys: fc.weight, fc.bias" in message
    assert "unexpected keys: head.weight, head.bias" in message

    many_missing = tmp_path / "truncated.pt"
    torch.save({k: v for k, v in sd.items() if not k.startswith("layer")}, many_missing)
    message = _error(model, many_missing)
    assert "missing keys: layer1.0.conv1.weight" in message and "more)" in message

    imagenet_stem = tmp_path / "stem.pt"
    torch.save(build_model("resnet18", (3, 32, 32), 10, width=4, cifar_stem=False).state_dict(), imagenet_stem)
    message = _error(model, imagenet_stem)
    assert "shape mismatch: conv1.weight (4, 3, 7, 7) vs (4, 3, 3, 3)" in message

    for k, v in model.state_dict().items():  # failed loads leave the model untouched
        assert torch.equal(v, before[k])
