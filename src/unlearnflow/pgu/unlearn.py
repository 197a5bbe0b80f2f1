"""Projected-Gradient Unlearning at request time (PGU paper, Sections 3.2.1-3.2.4), source-free.

A request gets the forget samples, the validation split and the model's cached factorisation of
R R^T (:mod:`unlearnflow.pgu.gradient_space`), or, within a sequence of requests, the
factorisation the previous request left. It

1. downdates the factorisation by the forget samples' representations, computed on the model the
   request starts from (Eq. 3; within a sequence that is the previous unlearned model, which
   Eq. 5 says keeps the retain representations), and keeps the first k directions of every
   layer as its core gradient space M (threshold gamma per layer);
2. minimises the unlearning loss (Eq. 1) on the forget samples with plain SGD on the conv and
   linear *weights* only, each gradient projected off the core gradient space (Eq. 4); biases
   and BatchNorm parameters stay fixed and BatchNorm runs in eval mode (Section 4.1); the
   learning rate decays geometrically from ``lr`` to ``lr_end`` over ``epochs`` epochs;
3. stops early (Section 3.2.3) and returns the downdated factorisation as the state the next
   request of a sequence starts from (Section 3.2.4).

Early stopping. ``sample`` (sample removal, the paper's and the reference's rule): stop at the
first epoch where the forget accuracy is at most the validation accuracy, keeping that epoch or
the one before, whichever has the smaller gap. ``sample_class``: the same with the validation
accuracy of the forgotten samples' classes only (a corrected variant beside the paper's): the
paper's rule assumes a well-fit model whose forget points start near 100% accuracy; measured on
the Fashion-MNIST SmallVGG preset (underfit, 34.5% of the forgotten shirts already wrong, forget
accuracy 65.5% below the overall validation accuracy 80.5%) it stops 48 of 50 models before the
first epoch, while a model retrained without the points gets the class about as right as its
held-out points of that class (~40% for shirts). ``class`` (class removal): the reference stops
when the *retain* accuracy drops by more than 5 points, but a source-free request has no retain
data, and measured on digits that rule alone never fires. Our choice: the validation accuracy of
the classes that are not forgotten stands in for the retain accuracy (held-out points of the
same classes); stop when it drops by more than ``max_drop`` points (keeping the epoch before) or
when the forget accuracy reaches 0 (every forgotten-class sample now gets another class, which is
what a model retrained without the class does). ``class_rows``: the same, with the validation
accuracy of the other classes read as the evaluation reads the model, without the forgotten
classes' last-layer rows (Section 4.3; :func:`unlearnflow.metrics.readouts.remove_class_rows`).
Measured on the digits MLP (class 3): with all rows, the other classes' validation accuracy
drops by 5 points after 2-3 epochs at lr 30 (and after 5 at lr 10) while most of the class is still
recognised (~21% forgotten), because other classes' points pass through class 3 on the way;
without the rows it stays within 2 points at lr 10 until the whole class is forgotten.
``validation`` (de-poisoning, Section 4.5): the
paper compares the validation accuracy with the forget accuracy "or with random performance",
but de-poisoning *wants* the forget accuracy (measured on the poisoned labels) to fall to ~0 as
the samples are re-classified, so neither comparison says when to stop. The validation split is
held out and never poisoned, and a source-free request has it, so we keep the epoch with the best
validation accuracy (the starting model included) and stop after ``patience`` epochs without an
improvement. ``none`` runs every epoch.

The loss. Eq. 1 as printed reads sum_c -y_c log(1 - p_c + eps) - lambda p_c log p_c, whose
second term, minimised, would *lower* the entropy for lambda > 0; the text says lambda > 0
raises it (and lambda < 0 lowers it for de-poisoning), and the authors' code adds
+ lambda sum_c p_c log p_c. We follow the text and the code: lambda times the negative entropy.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Mapping

import numpy as np
import torch
from torch import nn

from unlearnflow.core.models import weight_layers
from unlearnflow.core.training import FitStats, PerExampleLoss, clock, fit
from unlearnflow.errors import UserError
from unlearnflow.methods.common import fine_tune_config
from unlearnflow.methods.declarations import resolve
from unlearnflow.methods.request import ForgetRequest, MethodResult
from unlearnflow.pgu.declarations import PGU_DEFAULTS, check_pgu
from unlearnflow.pgu.gradient_space import Factorisation, covariances

#: the rules that stop when the forget accuracy reaches a validation accuracy
SAMPLE_STOPPING = ("sample", "sample_class")


def unlearning_loss(epsilon: float, entropy_weight: float) -> PerExampleLoss:
    """Eq. 1 per forget sample: -log(1 - p_y + eps) + lambda sum_c p_c log p_c (reverse
    cross-entropy with offset, plus lambda times the negative entropy; lambda < 0 de-poisons)."""
    def loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        log_p = nn.functional.log_softmax(logits, dim=1)
        p = log_p.exp()
        p_y = p.gather(1, labels[:, None]).squeeze(1)
        return -torch.log(1 - p_y + epsilon) + entropy_weight * (p * log_p).sum(dim=1)
    return loss


def learning_rate(hp: Mapping[str, Any], epoch: int) -> float:
    """The geometric schedule: lr at epoch 0, lr_end at the last epoch."""
    if hp["epochs"] == 1:
        return hp["lr"]
    return hp["lr"] * (hp["lr_end"] / hp["lr"]) ** (epoch / (hp["epochs"] - 1))


class Projection:
    """Eq. 4 as fit's ``after_backward``: grad_W <- grad_W - grad_W M M^T for every conv/linear
    weight (viewed as (out, d), the columns the representations are ordered like), measuring
    how much of the gradient's norm is kept."""

    def __init__(self, model: nn.Module, bases: Mapping[str, np.ndarray]):
        self.layers = weight_layers(model)
        self.bases = {name: torch.from_numpy(np.ascontiguousarray(bases[name])).to(layer.weight)
                      for name, layer in self.layers}
        self.total = {name: 0.0 for name, _ in self.layers}
        self.kept = {name: 0.0 for name, _ in self.layers}

    def __call__(self, model: nn.Module) -> None:
        for name, layer in self.layers:
            if layer.weight.grad is None:
                continue
            grad = layer.weight.grad.view(layer.weight.shape[0], -1)
            self.total[name] += float(grad.square().sum())
            basis = self.bases[name]
            grad.sub_((grad @ basis) @ basis.T)
            self.kept[name] += float(grad.square().sum())

    def kept_fraction(self, name: str | None = None) -> float:
        """||projected gradient|| / ||gradient|| summed over steps (one layer, or all)."""
        names = [name] if name else list(self.total)
        total = sum(self.total[n] for n in names)
        return math.sqrt(sum(self.kept[n] for n in names) / total) if total > 0 else 0.0


def gammas_of(hp: Mapping[str, Any], names: list[str]) -> dict[str, float]:
    """Layer name -> gamma: ``gammas`` in forward order when given, else ``gamma`` everywhere."""
    if not hp["gammas"]:
        return {name: hp["gamma"] for name in names}
    if len(hp["gammas"]) != len(names):
        raise UserError(f"pgu: gammas has {len(hp['gammas'])} values, the model has {len(names)} conv/linear "
                        f"layers ({', '.join(names)})")
    return dict(zip(names, hp["gammas"]))


class _Stopper:
    """The early-stopping rule of ``stopping`` (module docstring); `done(model)` after an epoch
    says whether to stop, and restores the previous epoch's weights when that one is better."""

    def __init__(self, model: nn.Module, request: ForgetRequest, hp: Mapping[str, Any]):
        self.model, self.request, self.hp = model, request, hp
        self.forget = (request.forget_inputs, request.forget_labels)
        self.validation = (request.validation_inputs, request.validation_labels)
        if hp["stopping"] != "none" and request.validation_inputs is None:
            raise UserError("pgu: early stopping needs the request's validation split (or set stopping: none)")
        self.removed: torch.Tensor | None = None
        if hp["stopping"] in ("class", "class_rows"):
            kept = ~torch.isin(request.validation_labels, request.forget_labels.unique())
            if not bool(kept.any()):
                raise UserError("pgu: class removal needs validation points of some class that is not forgotten")
            self.validation = (request.validation_inputs[kept], request.validation_labels[kept])
            if hp["stopping"] == "class_rows":
                self.removed = request.forget_labels.unique()
        if hp["stopping"] == "sample_class":
            same = torch.isin(request.validation_labels, request.forget_labels.unique())
            if not bool(same.any()):
                raise UserError("pgu: stopping sample_class needs validation points of the forgotten samples' classes")
            self.validation = (request.validation_inputs[same], request.validation_labels[same])
        self.reason = "epochs"
        if hp["stopping"] != "none":  # one forward pass per check: the forget samples, then the validation points
            self.inputs = torch.cat([self.forget[0], self.validation[0]])
            self.labels = torch.cat([self.forget[1], self.validation[1]])
        self.previous: tuple[dict[str, torch.Tensor], float, float] | None = None
        self.forget_accuracy, self.validation_accuracy = self.measure()
        self.start_validation = self.validation_accuracy
        self.epoch = self.best_epoch = 0
        self.best = self.state() if hp["stopping"] == "validation" else None

    def measure(self) -> tuple[float, float]:
        if self.hp["stopping"] == "none":
            return math.nan, math.nan
        with torch.no_grad():
            self.model.eval()
            logits = self.model(self.inputs)
        n_forget = len(self.forget[1])
        if self.removed is not None:  # the validation points' outputs without the forgotten rows
            logits[n_forget:, self.removed] = -math.inf
        correct = (logits.argmax(dim=1) == self.labels).float()
        return float(correct[:n_forget].mean()), float(correct[n_forget:].mean())

    def done_before_training(self) -> bool:
        if self.hp["stopping"] in SAMPLE_STOPPING and self.forget_accuracy <= self.validation_accuracy:
            self.reason = "forget accuracy already at validation accuracy"
            return True
        return False

    def state(self) -> tuple[dict[str, torch.Tensor], float, float]:
        """The trained parameters (conv/linear weights, and TRGP's scale) and their accuracies."""
        weights = {name: p.detach().clone() for name, p in self.model.named_parameters() if p.requires_grad}
        return weights, self.forget_accuracy, self.validation_accuracy

    def snapshot(self) -> None:
        if self.hp["stopping"] != "none":
            self.previous = self.state()

    def restore(self, state: tuple[dict[str, torch.Tensor], float, float] | None = None) -> None:
        weights, self.forget_accuracy, self.validation_accuracy = state or self.previous
        with torch.no_grad():
            for name, p in self.model.named_parameters():
                if name in weights:
                    p.copy_(weights[name])

    def finish(self) -> None:
        """After the last epoch: ``validation`` keeps its best epoch."""
        if self.hp["stopping"] == "validation" and self.best[2] > self.validation_accuracy:
            self.restore(self.best)
            self.reason += f" (kept the best epoch, {self.best_epoch})"

    def done(self) -> bool:
        if self.hp["stopping"] == "none":
            return False
        before = self.previous[1] - self.previous[2]
        self.forget_accuracy, self.validation_accuracy = self.measure()
        self.epoch += 1
        if self.hp["stopping"] == "validation":
            if self.validation_accuracy > self.best[2]:
                self.best, self.best_epoch = self.state(), self.epoch
            elif self.epoch - self.best_epoch >= self.hp["patience"]:
                self.reason = f"no better validation accuracy for {self.hp['patience']} epochs"
                return True
            return False
        if self.hp["stopping"] in SAMPLE_STOPPING:
            if self.forget_accuracy > self.validation_accuracy:
                return False
            self.reason = "forget accuracy reached validation accuracy"
            if abs(before) < abs(self.forget_accuracy - self.validation_accuracy):
                self.restore()
                self.reason += " (kept the epoch before)"
            return True
        if self.start_validation - self.validation_accuracy > self.hp["max_drop"] / 100:
            self.restore()
            self.reason = f"validation accuracy of the other classes dropped by more than {self.hp['max_drop']} " \
                          "points (kept the epoch before)"
            return True
        if self.forget_accuracy == 0:
            self.reason = "forget accuracy reached 0"
            return True
        return False


def unlearn(model: nn.Module, request: ForgetRequest, hp: Mapping[str, Any], seed: int) -> MethodResult:
    """One PGU request (module docstring): downdate (Eq. 3), projected SGD on Eq. 1 (Eq. 4) with
    early stopping; returns the downdated factorisation as the state of the next request."""
    hp = resolve("pgu", PGU_DEFAULTS, hp)
    check_pgu(hp)
    return run(model, request, hp, seed)


def run(model: nn.Module, request: ForgetRequest, hp: Mapping[str, Any], seed: int,
        trust_region: Callable[[nn.Module, Mapping[str, np.ndarray]], Any] | None = None) -> MethodResult:
    """The request of :func:`unlearn` for resolved `hp`. `trust_region(model, bases)`, when given,
    installs a trainable re-parametrisation after the core spaces are known (TRGP,
    :mod:`unlearnflow.pgu.trgp`); it must have ``fold()``, which writes it into the weights and
    removes it, and ``certificate()``."""
    start = clock()
    cached = request.side.get("gradient_space")
    if request.state is not None:  # the previous request's downdated factorisation, as arrays
        cached = Factorisation.from_arrays(request.state)
    if not isinstance(cached, Factorisation):
        raise UserError("pgu: the request carries no gradient space (side input gradient_space)")
    cached.check_model(model)
    retain = cached.downdate(covariances(model, request.forget_inputs))
    names = list(retain.layers)
    gammas = gammas_of(hp, names)
    bases = {name: retain.layers[name].core_basis(gammas[name], hp["criterion"]) for name in names}
    downdate_seconds = clock() - start

    projection = Projection(model, bases)
    weights = {id(layer.weight) for _, layer in weight_layers(model)}
    trainable = {name: p.requires_grad for name, p in model.named_parameters()}
    for p in model.parameters():
        p.requires_grad_(id(p) in weights)
    loss = unlearning_loss(hp["epsilon"], hp["entropy_weight"])
    region = None
    steps = examples = epochs = 0
    try:
        region = trust_region(model, bases) if trust_region is not None else None
        stopper = _Stopper(model, request, hp)
        if not stopper.done_before_training():
            for epoch in range(hp["epochs"]):
                stopper.snapshot()
                config = fine_tune_config(hp, lr=learning_rate(hp, epoch), epochs=1)
                stats = fit(model, request.forget_inputs, request.forget_labels, config, seed + epoch, loss=loss,
                            after_backward=projection)
                steps, examples, epochs = steps + stats.steps, examples + stats.examples, epoch + 1
                if stopper.done():
                    break
            stopper.finish()
    finally:
        if region is not None:
            region.fold()
        for name, p in model.named_parameters():
            p.requires_grad_(trainable[name])
    model.eval()
    certificate = {
        "k": {name: int(basis.shape[1]) for name, basis in bases.items()},
        "dims": {name: retain.layers[name].dim for name in names},
        "kept_gradient_norm": projection.kept_fraction(),
        "kept_gradient_norm_per_layer": {name: projection.kept_fraction(name) for name in names},
        "epochs": epochs, "stopped": stopper.reason, "forget_accuracy": stopper.forget_accuracy,
        "validation_accuracy": stopper.validation_accuracy, "downdate_seconds": downdate_seconds,
        **(region.certificate() if region is not None else {}),
    }
    return MethodResult(FitStats(seconds=clock() - start, steps=steps, examples=examples),
                        certificate=certificate, state=retain.arrays())
