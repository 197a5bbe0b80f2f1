"""Plain-torch classifier architectures used by the unlearning papers this package reproduces.

=============  ==============================================================  ===============
``arch``       where it comes from                                             parameters
=============  ==============================================================  ===============
``linear``     source-free certified unlearning (Sec. 5, "Implementation        ``D * K``
               details"): a linear classifier on fixed features, ``bias=False``
``mlp``        a small fully connected baseline (not from a paper)              ~5e3 - 2e5
``smallvgg``   Projected-Gradient Unlearning (PGU, Sec. 4.1): "a small          ~3.6e5 (width 32)
               variation of VGG of 3 convolutional layers and 2 linear          ~5.7e6 (width 128)
               layers"; layout as in the authors' ``backbone/small_vgg.py``
``allcnn``     PGU (Sec. 4.1), All-CNN of Springenberg et al. 2015 with batch   ~1.6e6 (width 96)
               norm, as in the PGU / Golatkar et al. source code
``resnet9``    Datamodel Matching (DMM, Sec. 4 and App. D.1, footnote 6): the   ~2.3e6 (width 64)
               DAWNBench / ffcv CIFAR-10 ResNet-9 (wbaek/torchskeleton)
``resnet18``   PGU (TinyImageNet), DMM (Living-17), source-free unlearning      ~1.1e7 (width 64)
               (feature extractor); He et al. 2016, torchvision-compatible
=============  ==============================================================  ===============

Every model built here is a :class:`Classifier`: ``model(x) == model.classifier(model.features(x))``
(ResNet-9 additionally multiplies its logits by a fixed 0.2, like its reference), where
``features`` returns the flattened input of the final :class:`torch.nn.Linear` layer and
``classifier`` is that layer. Models never use dropout or any other randomness in ``forward``,
every weight layer is an ``nn.Conv2d``/``nn.Linear`` module (so forward hooks see its input, as
Projected-Gradient Unlearning needs), activations are ``nn.ReLU(inplace=False)``, and residual
additions are out of place, so ``torch.func.stack_module_state`` + ``functional_call`` + ``vmap``
reproduce each model's own forward exactly (with batch norm in train mode when
``track_running_stats`` is off and the running buffers are ``None``).

Image inputs are ``(C, H, W)`` with ``H, W >= 8`` (sklearn digits 8x8, Fashion-MNIST 28x28,
CIFAR 32x32, TinyImageNet 64x64, ImageNet-size); conv nets end in adaptive pooling and never
pool a feature map below 1x1. ``linear`` and ``mlp`` flatten any input shape, ``(D,)`` included.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from torch import nn

from unlearnflow.core.recipe import ARCHITECTURES
from unlearnflow.errors import UserError
from unlearnflow.lazy import is_import_path, user_function

__all__ = [
    "ARCHITECTURES",
    "Classifier",
    "LoadReport",
    "build_model",
    "count_parameters",
    "load_pretrained",
    "penultimate_features",
    "weight_layers",
]

#: Smallest image side the conv nets accept.
MIN_IMAGE_SIDE = 8


# --------------------------------------------------------------------------- base class


class Classifier(nn.Module):
    """Base of every model here: ``forward(x) = classifier(features(x))``.

    Subclasses provide ``features`` (a module or method returning a ``(N, F)`` tensor) and
    ``classifier`` (the final ``nn.Linear(F, num_classes)``). ``arch``, ``input_shape``,
    ``num_classes`` and ``options`` (the resolved options, defaults filled in) record how the
    model was built, so ``build_model(m.arch, m.input_shape, m.num_classes, **m.options)``
    rebuilds the same architecture.
    """

    arch: str = ""

    def __init__(self, input_shape: tuple[int, ...], num_classes: int, options: dict[str, Any]):
        super().__init__()
        self.input_shape = tuple(input_shape)
        self.num_classes = num_classes
        self.options = dict(options)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))

    def extra_repr(self) -> str:
        opts = ", ".join(f"{k}={v!r}" for k, v in self.options.items())
        return f"input_shape={self.input_shape}, num_classes={self.num_classes}" + (
            f", {opts}" if opts else ""
        )


# --------------------------------------------------------------------------- linear / mlp


class LinearClassifier(Classifier):
    """Multinomial linear model ``W x (+ b)`` on the flattened input.

    Source: source-free certified unlearning (Sec. 5, "Implementation details"): a linear
    classifier trained on fixed (e.g. ResNet-18) features and unlearned with a Newton step;
    the source-free method uses ``bias=False``. Any input shape; ``D * K (+ K)`` parameters.
    """

    arch = "linear"

    def __init__(self, input_shape, num_classes, *, bias: bool = True):
        super().__init__(input_shape, num_classes, {"bias": bias})
        self.features = nn.Sequential(nn.Flatten())
        self.classifier = nn.Linear(math.prod(input_shape), num_classes, bias=bias)


class MLP(Classifier):
    """Fully connected ReLU network on the flattened input: ``Linear -> ReLU`` per hidden width.

    Not from a paper: a cheap nonlinear baseline for feature vectors and tiny images. Any input
    shape; ``D*h + h*K`` weights for one hidden layer: ~5e3 for 8x8 digits, ~5e4 for 28x28 and
    ~2e5 for 32x32x3 inputs at the default ``hidden=[64]``.
    """

    arch = "mlp"

    def __init__(self, input_shape, num_classes, *, hidden: tuple[int, ...] = (64,)):
        super().__init__(input_shape, num_classes, {"hidden": list(hidden)})
        layers: list[nn.Module] = [nn.Flatten()]
        width = math.prod(input_shape)
        for h in hidden:
            layers += [nn.Linear(width, h), nn.ReLU(inplace=False)]
            width = h
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(width, num_classes)


# --------------------------------------------------------------------------- SmallVGG


class SmallVGG(Classifier):
    """SmallVGG of Projected-Gradient Unlearning (Hoang et al., WACV 2024, Sec. 4.1).

    "A small variation of VGG of 3 convolutional layers and 2 linear layers", with the layout of
    the authors' ``backbone/small_vgg.py``::

        [Conv3x3(w) ReLU MaxPool2 BN] [Conv3x3(2w) ReLU MaxPool2 BN] [Conv3x3(4w) ReLU BN MaxPool2]
        AdaptiveAvgPool(<= 4x4) Flatten  Linear(4w) ReLU BN1d  | classifier Linear(K)

    The authors use ``w = 128`` (128/256/512 channels, hidden 512, ~5.7e6 parameters on CIFAR)
    and dropout (off by default there, absent here). The default here is ``width=32``
    (32/64/128 channels, hidden 128, ~3.6e5 parameters on CIFAR). After three 2x2 max-pools the
    map is ``H//8 x W//8``; it is average-pooled to at most 4x4, which is the identity for
    32x32 CIFAR inputs (as in the original, flatten ``4w * 16``), gives 3x3 for 28x28 and 1x1
    for 8x8. Inputs ``H, W >= 8``. Conv layers keep their biases like the original.
    """

    arch = "smallvgg"

    def __init__(self, input_shape, num_classes, *, width: int = 32, batchnorm: bool = True):
        super().__init__(input_shape, num_classes, {"width": width, "batchnorm": batchnorm})
        c, h, w = input_shape
        c1, c2, c3, hidden = width, 2 * width, 4 * width, 4 * width

        def bn2d(ch: int) -> list[nn.Module]:
            return [nn.BatchNorm2d(ch)] if batchnorm else []

        out_h, out_w = min(h // 8, 4), min(w // 8, 4)
        self.features = nn.Sequential(
            nn.Conv2d(c, c1, kernel_size=3, padding=1),
            nn.ReLU(inplace=False),
            nn.MaxPool2d(kernel_size=2, stride=2),
            *bn2d(c1),
            nn.Conv2d(c1, c2, kernel_size=3, padding=1),
            nn.ReLU(inplace=False),
            nn.MaxPool2d(kernel_size=2, stride=2),
            *bn2d(c2),
            nn.Conv2d(c2, c3, kernel_size=3, padding=1),
            nn.ReLU(inplace=False),
            *bn2d(c3),
            nn.MaxPool2d(kernel_size=2, stride=2),
            nn.AdaptiveAvgPool2d((out_h, out_w)),
            nn.Flatten(),
            nn.Linear(c3 * out_h * out_w, hidden),
            nn.ReLU(inplace=False),
            *([nn.BatchNorm1d(hidden)] if batchnorm else []),
        )
        self.classifier = nn.Linear(hidden, num_classes)


# --------------------------------------------------------------------------- All-CNN


def _conv_bn_relu(
    cin: int, cout: int, kernel_size: int = 3, stride: int = 1, padding: int | None = None,
    batchnorm: bool = True,
) -> nn.Sequential:
    """``Conv2d -> [BatchNorm2d] -> ReLU``; the conv has a bias only without batch norm."""
    if padding is None:
        padding = (kernel_size - 1) // 2
    layers: list[nn.Module] = [
        nn.Conv2d(cin, cout, kernel_size, stride=stride, padding=padding, bias=not batchnorm)
    ]
    if batchnorm:
        layers.append(nn.BatchNorm2d(cout))
    layers.append(nn.ReLU(inplace=False))
    return nn.Sequential(*layers)


class AllCNN(Classifier):
    """All-CNN (Springenberg et al., ICLR-W 2015) as used by Projected-Gradient Unlearning (Sec. 4.1).

    Layout of the PGU / Golatkar et al. ("Eternal Sunshine") code, batch norm on, dropout off::

        conv3x3(w) conv3x3(w) conv3x3/2(2w) conv3x3(2w) conv3x3(2w) conv3x3/2(2w)
        conv3x3(2w) conv1x1(2w) AdaptiveAvgPool(1) Flatten | classifier Linear(K)

    each conv followed by BN and ReLU. Default ``width=96`` (96/192 channels, the paper's
    ``filters_percentage=1``), ~1.6e6 parameters. The original's ``AvgPool2d(8)`` is an adaptive
    average pool here (identical on 32x32 inputs, whose final map is 8x8); 8x8 inputs end at 2x2.
    Inputs ``H, W >= 8``.
    """

    arch = "allcnn"

    def __init__(self, input_shape, num_classes, *, width: int = 96, batchnorm: bool = True):
        super().__init__(input_shape, num_classes, {"width": width, "batchnorm": batchnorm})
        c = input_shape[0]
        f1, f2 = width, 2 * width
        bn = batchnorm
        self.features = nn.Sequential(
            _conv_bn_relu(c, f1, 3, batchnorm=bn),
            _conv_bn_relu(f1, f1, 3, batchnorm=bn),
            _conv_bn_relu(f1, f2, 3, stride=2, padding=1, batchnorm=bn),
            _conv_bn_relu(f2, f2, 3, batchnorm=bn),
            _conv_bn_relu(f2, f2, 3, batchnorm=bn),
            _conv_bn_relu(f2, f2, 3, stride=2, padding=1, batchnorm=bn),
            _conv_bn_relu(f2, f2, 3, batchnorm=bn),
            _conv_bn_relu(f2, f2, 1, batchnorm=bn),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )
        self.classifier = nn.Linear(f2, num_classes)


# --------------------------------------------------------------------------- ResNet-9


class Residual(nn.Module):
    """``x + body(x)`` (out of place)."""

    def __init__(self, body: nn.Module):
        super().__init__()
        self.body = body

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class ResNet9(Classifier):
    """ResNet-9 of Datamodel Matching (Georgiev et al., Sec. 4 and App. D.1, footnote 6).

    The CIFAR-10 DAWNBench / ffcv network the paper cites (wbaek/torchskeleton
    ``bin/dawnbench/cifar10.py``)::

        conv3x3(w) conv5x5/2(2w) Residual[conv3x3(2w) conv3x3(2w)]
        conv3x3(4w) MaxPool2 Residual[conv3x3(4w) conv3x3(4w)]
        conv3x3(2w, padding 0) AdaptiveMaxPool(1) Flatten | classifier Linear(K, bias=False), x0.2

    each conv followed by BN and ReLU (convs have no bias with BN). Default ``width=64``
    (64/128/256/128 channels), ~2.3e6 parameters. The fixed logit scale 0.2 (``logit_scale``) is
    applied after ``classifier``, as in the reference. The last conv is unpadded as in the
    reference when its input map is at least 3x3 (inputs >= 12x12), and padded otherwise so
    8x8 inputs still work (8 -> 4 -> 2 -> 2 -> 1). Inputs ``H, W >= 8``.
    """

    arch = "resnet9"

    def __init__(self, input_shape, num_classes, *, width: int = 64, batchnorm: bool = True):
        super().__init__(input_shape, num_classes, {"width": width, "batchnorm": batchnorm})
        c, h, w = input_shape
        bn = batchnorm
        after_pool = min((h + 1) // 2 // 2, (w + 1) // 2 // 2)  # after the /2 conv and MaxPool2
        last_padding = 0 if after_pool >= 3 else 1
        self.logit_scale = 0.2
        self.features = nn.Sequential(
            _conv_bn_relu(c, width, 3, batchnorm=bn),
            _conv_bn_relu(width, 2 * width, 5, stride=2, padding=2, batchnorm=bn),
            Residual(nn.Sequential(
                _conv_bn_relu(2 * width, 2 * width, 3, batchnorm=bn),
                _conv_bn_relu(2 * width, 2 * width, 3, batchnorm=bn),
            )),
            _conv_bn_relu(2 * width, 4 * width, 3, batchnorm=bn),
            nn.MaxPool2d(2),
            Residual(nn.Sequential(
                _conv_bn_relu(4 * width, 4 * width, 3, batchnorm=bn),
                _conv_bn_relu(4 * width, 4 * width, 3, batchnorm=bn),
            )),
            _conv_bn_relu(4 * width, 2 * width, 3, padding=last_padding, batchnorm=bn),
            nn.AdaptiveMaxPool2d(1),
            nn.Flatten(),
        )
        self.classifier = nn.Linear(2 * width, num_classes, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x)) * self.logit_scale


# --------------------------------------------------------------------------- ResNet-18


class BasicBlock(nn.Module):
    """torchvision's ``BasicBlock`` (same attribute names), ReLU not in place, no in-place add."""

    def __init__(self, cin: int, cout: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=False)
        self.conv2 = nn.Conv2d(cout, cout, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample: nn.Module | None = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm2d(cout)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        identity = x if self.downsample is None else self.downsample(x)
        return self.relu(out + identity)


class ResNet18(Classifier):
    """ResNet-18 (He et al., CVPR 2016) with torchvision's parameter and buffer names.

    Used by Projected-Gradient Unlearning (Sec. 4.1, TinyImageNet), Datamodel Matching (Sec. 4,
    Living-17) and source-free certified unlearning (Sec. 5, ImageNet-pretrained feature
    extractor). ``state_dict()`` keys equal torchvision ``resnet18()``'s (122 entries, 62
    parameter tensors), so torchvision weights load with ``strict=True`` when the stem and
    ``fc`` shapes agree (see :func:`load_pretrained`). ``classifier`` is an alias of ``fc``.

    ``cifar_stem=True`` (default when ``max(H, W) <= 64``): conv1 is 3x3 stride 1 and the max
    pool is skipped, the usual CIFAR variant; ``False``: 7x7 stride-2 conv1 + 3x3/2 max pool as on
    ImageNet. Stages have ``w, 2w, 4w, 8w`` channels (default ``width=64``: 64..512,
    ~1.1e7 parameters); the final map is average-pooled to 1x1 (8x8 inputs with the CIFAR stem:
    8 -> 4 -> 2 -> 1). Inputs ``H, W >= 8``. Initialisation follows torchvision (Kaiming-normal
    convs, BN weight 1 / bias 0).
    """

    arch = "resnet18"

    def __init__(self, input_shape, num_classes, *, width: int = 64, cifar_stem: bool | None = None):
        c, h, w = input_shape
        if cifar_stem is None:
            cifar_stem = max(h, w) <= 64
        super().__init__(input_shape, num_classes, {"width": width, "cifar_stem": cifar_stem})
        if cifar_stem:
            self.conv1 = nn.Conv2d(c, width, kernel_size=3, stride=1, padding=1, bias=False)
        else:
            self.conv1 = nn.Conv2d(c, width, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=False)
        self.maxpool: nn.Module = (
            nn.Identity() if cifar_stem else nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        )
        widths = (width, 2 * width, 4 * width, 8 * width)
        cin = width
        for i, cout in enumerate(widths):
            stride = 1 if i == 0 else 2
            self.add_module(f"layer{i + 1}", nn.Sequential(BasicBlock(cin, cout, stride), BasicBlock(cout, cout)))
            cin = cout
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(cin, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    @property
    def classifier(self) -> nn.Linear:
        return self.fc

    def features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return torch.flatten(self.avgpool(x), 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x))


# --------------------------------------------------------------------------- building


def _check_bool(arch: str, name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise UserError(f"model {arch!r}: option {name!r} must be true or false, got {value!r}")
    return value


def _check_width(arch: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise UserError(f"model {arch!r}: option 'width' must be a positive integer, got {value!r}")
    return value


def _check_hidden(arch: str, value: Any) -> tuple[int, ...]:
    if not isinstance(value, (list, tuple)) or any(
        isinstance(h, bool) or not isinstance(h, int) or h < 1 for h in value
    ):
        raise UserError(
            f"model {arch!r}: option 'hidden' must be a list of positive integers, got {value!r}"
        )
    return tuple(value)


# option name -> validator(arch, value) -> cleaned value
_OPTIONS: dict[str, dict[str, Callable[[str, Any], Any]]] = {
    "linear": {"bias": lambda a, v: _check_bool(a, "bias", v)},
    "mlp": {"hidden": _check_hidden},
    "smallvgg": {"width": _check_width, "batchnorm": lambda a, v: _check_bool(a, "batchnorm", v)},
    "allcnn": {"width": _check_width, "batchnorm": lambda a, v: _check_bool(a, "batchnorm", v)},
    "resnet9": {"width": _check_width, "batchnorm": lambda a, v: _check_bool(a, "batchnorm", v)},
    "resnet18": {
        "width": _check_width,
        "cifar_stem": lambda a, v: None if v is None else _check_bool(a, "cifar_stem", v),
    },
}

_CLASSES: dict[str, type[Classifier]] = {
    "linear": LinearClassifier,
    "mlp": MLP,
    "smallvgg": SmallVGG,
    "allcnn": AllCNN,
    "resnet9": ResNet9,
    "resnet18": ResNet18,
}


def _check_shape(arch: str, input_shape: Any) -> tuple[int, ...]:
    try:
        shape = tuple(input_shape)
    except TypeError:
        shape = None
    if (
        shape is None
        or len(shape) not in (1, 2, 3)
        or any(isinstance(s, bool) or not isinstance(s, int) or s < 1 for s in shape)
    ):
        raise UserError(
            f"model {arch!r}: input_shape must be (C, H, W) or (D,) of positive integers, "
            f"got {input_shape!r}"
        )
    if arch in ("linear", "mlp"):
        return shape
    if len(shape) != 3:
        raise UserError(
            f"model {arch!r} needs image inputs of shape (C, H, W), got {shape}; "
            "use 'linear' or 'mlp' for feature vectors"
        )
    if min(shape[1:]) < MIN_IMAGE_SIDE:
        raise UserError(
            f"model {arch!r} needs images of at least {MIN_IMAGE_SIDE}x{MIN_IMAGE_SIDE}, got {shape}"
        )
    return shape


def build_model(arch: str, input_shape: tuple[int, ...], num_classes: int, **options: Any) -> nn.Module:
    """Build a freshly initialised classifier (uses the global torch RNG for initialisation).

    Args:
        arch: one of :data:`ARCHITECTURES`, or a user's factory ``package.module:function``
            called as ``function(input_shape, num_classes, **options)`` (:func:`user_model`).
        input_shape: ``(C, H, W)`` for images (``H, W >= 8`` for conv nets) or ``(D,)``
            (``linear``/``mlp`` only).
        num_classes: number of output logits (>= 1).
        options: ``linear``: ``bias`` (bool, True). ``mlp``: ``hidden`` (list of ints, [64]).
            ``smallvgg``: ``width`` (32), ``batchnorm`` (True). ``allcnn``: ``width`` (96),
            ``batchnorm`` (True). ``resnet9``: ``width`` (64), ``batchnorm`` (True).
            ``resnet18``: ``width`` (64), ``cifar_stem`` (True when ``max(H, W) <= 64``).

    Raises:
        UserError: unknown architecture, bad shape or class count, unknown option or bad value.
    """
    if is_import_path(arch):
        return user_model(arch, input_shape, num_classes, **options)
    if arch not in _CLASSES:
        raise UserError(f"unknown model architecture {arch!r}; choose one of {', '.join(ARCHITECTURES)}")
    shape = _check_shape(arch, input_shape)
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise UserError(f"model {arch!r}: num_classes must be a positive integer, got {num_classes!r}")
    allowed = _OPTIONS[arch]
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        known = ", ".join(sorted(allowed)) or "none"
        raise UserError(f"model {arch!r}: unknown option(s) {', '.join(unknown)} (known: {known})")
    cleaned = {name: allowed[name](arch, value) for name, value in options.items()}
    return _CLASSES[arch](shape, num_classes, **cleaned)


def user_model(factory: str, input_shape: tuple[int, ...], num_classes: int, **options: Any) -> nn.Module:
    """The model of a user's factory (``model.arch: package.module:function``), recording how it
    was built as a :class:`Classifier` does (``arch``, ``input_shape``, ``num_classes``,
    ``options``); a one-line UserError naming ``model.arch`` when it returns no module."""
    model = user_function(factory, "model.arch")(tuple(input_shape), num_classes, **options)
    if not isinstance(model, nn.Module):
        raise UserError(f"config: model.arch: {factory} returned {type(model).__name__}, not a torch.nn.Module")
    model.arch, model.input_shape, model.num_classes, model.options = factory, tuple(input_shape), num_classes, options
    return model


# --------------------------------------------------------------------------- introspection


def weight_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The ``nn.Conv2d`` and ``nn.Linear`` modules of ``model`` with their qualified names.

    Listed in registration order, which for every model here is the order ``forward`` calls
    them (a ResNet block's ``downsample`` shortcut comes after its ``conv2``, as torchvision
    evaluates it); the final classifier is last. These are the layers whose weights
    Projected-Gradient Unlearning updates (it leaves batch-norm weights and biases alone).
    """
    return [
        (name, module)
        for name, module in model.named_modules()
        if isinstance(module, (nn.Conv2d, nn.Linear))
    ]


def count_parameters(model: nn.Module) -> int:
    """Number of scalar parameters (buffers excluded)."""
    return sum(p.numel() for p in model.parameters())


def penultimate_features(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The input of the final classifier ``nn.Linear`` for the batch ``x``, as ``(N, F)``.

    Uses the model's ``features`` for models built here; for any other module, captures the
    input of its last ``nn.Linear`` with a forward hook. Runs in the model's current mode (call
    ``model.eval()`` first for deterministic batch-norm behaviour) and keeps autograd unless the
    caller disables it.
    """
    if callable(getattr(model, "features", None)) and isinstance(getattr(model, "classifier", None), nn.Linear):
        return torch.flatten(model.features(x), 1)
    linears = [m for _, m in weight_layers(model) if isinstance(m, nn.Linear)]
    if not linears:
        raise TypeError(f"{type(model).__name__} has no nn.Linear classifier layer")
    captured: list[torch.Tensor] = []
    handle = linears[-1].register_forward_hook(lambda mod, inp, out: captured.append(inp[0]))
    try:
        model(x)
    finally:
        handle.remove()
    return torch.flatten(captured[-1], 1)


# --------------------------------------------------------------------------- pretrained weights


@dataclass(frozen=True)
class LoadReport:
    """What :func:`load_pretrained` did. ``str(report)`` is a one-line summary."""

    path: str
    loaded: tuple[str, ...]
    kept_fresh: tuple[str, ...] = ()
    message: str = field(default="")

    def __str__(self) -> str:
        return self.message


_WRAPPER_KEYS = ("state_dict", "model", "model_state_dict", "net")
_PREFIXES = ("module.", "_orig_mod.")


def _shorten(items: list[str], limit: int = 4) -> str:
    shown = ", ".join(items[:limit])
    return shown + (f", ... (+{len(items) - limit} more)" if len(items) > limit else "")


def _unwrap_state_dict(obj: Any, path: str) -> dict[str, torch.Tensor]:
    for _ in range(3):
        if isinstance(obj, dict) and not any(isinstance(v, torch.Tensor) for v in obj.values()):
            inner = next((obj[k] for k in _WRAPPER_KEYS if isinstance(obj.get(k), dict)), None)
            if inner is None:
                break
            obj = inner
    if not isinstance(obj, dict) or not obj or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items()
    ):
        raise UserError(f"{path}: not a state dict (expected a mapping of parameter names to tensors)")
    state = dict(obj)
    for prefix in _PREFIXES:
        if all(k.startswith(prefix) for k in state):
            state = {k[len(prefix):]: v for k, v in state.items()}
    return state


def load_pretrained(model: nn.Module, path: str | os.PathLike) -> LoadReport:
    """Load a local ``.pt``/``.pth`` state dict into ``model`` (in place) and report what happened.

    Accepts a plain state dict or one wrapped as ``{"state_dict": ...}`` / ``{"model": ...}``, and
    strips a ``module.`` (DataParallel) or ``_orig_mod.`` (torch.compile) prefix. Keys must match
    the model's exactly (a missing ``num_batches_tracked`` is tolerated), and so must shapes,
    except the final classifier (``fc`` for ResNet-18): if its shape differs because of
    ``num_classes`` everything else is loaded and the freshly initialised classifier is kept,
    which the returned :class:`LoadReport` says. A torchvision ``resnet18`` checkpoint fits
    ``build_model("resnet18", (3, H, W), K, cifar_stem=False)``.

    Raises:
        UserError: missing or unreadable file, not a state dict, or mismatched keys/shapes (one
            line naming the path and the first few offending keys).
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise UserError(f"{path}: pretrained weights file not found")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle/zip errors come in many types
        detail = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise UserError(f"{path}: cannot read pretrained weights ({type(exc).__name__}: {detail[:200]})") from None
    state = _unwrap_state_dict(obj, path)

    expected = model.state_dict()
    classifier = getattr(model, "classifier", None)
    head_prefix = None
    if isinstance(classifier, nn.Module):
        head_prefix = next((n for n, m in model.named_modules() if m is classifier), None)
    head_keys = {
        k for k in expected if head_prefix is not None and k.rsplit(".", 1)[0] == head_prefix
    }

    missing = [k for k in expected if k not in state and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state if k not in expected]
    wrong_shape = [
        k for k in expected if k in state and state[k].shape != expected[k].shape and k not in head_keys
    ]
    head_mismatch = sorted(k for k in head_keys if k in state and state[k].shape != expected[k].shape)
    problems = []
    if missing:
        problems.append(f"missing keys: {_shorten(missing)}")
    if unexpected:
        problems.append(f"unexpected keys: {_shorten(unexpected)}")
    if wrong_shape:
        problems.append(
            "shape mismatch: "
            + _shorten([f"{k} {tuple(state[k].shape)} vs {tuple(expected[k].shape)}" for k in wrong_shape])
        )
    if problems:
        raise UserError(f"{path}: weights do not fit the {type(model).__name__} model; " + "; ".join(problems))

    kept = tuple(sorted(head_keys)) if head_mismatch else ()
    to_load = {k: v for k, v in state.items() if k not in kept}
    result = model.load_state_dict(to_load, strict=False)
    leftover = [k for k in result.missing_keys if k not in kept and not k.endswith("num_batches_tracked")]
    if leftover or result.unexpected_keys:  # pragma: no cover - guarded by the checks above
        raise UserError(f"{path}: weights do not fit the model; missing keys: {_shorten(leftover)}")
    loaded = tuple(k for k in expected if k in to_load)
    message = f"loaded {len(loaded)} tensors from {path}"
    if kept:
        k = next((k for k in head_mismatch if k.endswith(".weight")), head_mismatch[0])
        message += (
            f"; kept the freshly initialised classifier {head_prefix!r} because its shape differs "
            f"({k} is {tuple(state[k].shape)} in the file, {tuple(expected[k].shape)} in the model)"
        )
    return LoadReport(path=path, loaded=loaded, kept_fresh=kept, message=message)
