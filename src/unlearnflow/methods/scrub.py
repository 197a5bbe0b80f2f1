"""SCRUB (Kurmanji et al., NeurIPS 2023), the DMM paper's main baseline (Appendix D.4, IV).

The student starts as the original model; the teacher is the original model, frozen. Epoch
``e = 1..epochs``: if ``e <= max_steps``, a *max-step* pass over forget batches maximises
``KL(teacher || student)`` (minimises its negative); then a *min-step* pass over retain batches
minimises ``alpha * KL(teacher || student) + gamma * CE``. KL is taken between softmaxes at
temperature ``temperature`` and scaled by its square. The learning rate is multiplied by
``lr_decay_rate`` once per milestone in ``lr_decay_epochs`` that the epoch is past. Defaults
(alpha 0.1, gamma 0.99, temperature 4, milestones 3/5/9, rate 0.1, plain SGD, forget batch 32,
retain batch 64) are those of the DMM authors' public SCRUB baseline.

That baseline builds its optimizer over the *teacher's* parameters, so its student never
changes; here only the student is optimised. The teacher's logits are computed once, before
the first step, and carried in the targets tensor (fine-tuning has no augmentation and the
teacher is in eval mode, so they are exactly what the teacher would output per batch).

Each pass is one call of :func:`~unlearnflow.core.training.fit`, which builds its optimizer per
call: optimizer state does not carry over between passes. With the default plain SGD (no
momentum, no weight decay, as in the public code) the optimizer has no state and this is
exact; with momentum or Adam the state restarts every pass. Each pass draws its batch order
from its own seed (``model_seed(seed, "scrub/<phase>", epoch)``). The paper's "momentum
parameter beta = 0.999" has no counterpart in the public code and is not used.

The student starts *at* the teacher, where ``KL(teacher || student)`` is minimal and its
gradient is zero: the first max-step does nothing, and the ascent grows only from where the
min-steps have moved the student. The public code's student runs in train mode, so its
BatchNorm batch statistics already separate it from the eval-mode teacher; here BatchNorm is
frozen as in every fine-tuning method, so small learning rates with plain SGD barely unlearn
(Adam, whose steps do not shrink with the gradient, escapes at once).
"""

from __future__ import annotations

from typing import Any, Mapping

import torch
from torch import nn

from unlearnflow.core.training import (
    FitStats,
    PerExampleLoss,
    clock,
    cross_entropy_loss,
    fit,
    model_seed,
)
from unlearnflow.methods.common import fine_tune_config, split_labels, total, with_labels
from unlearnflow.methods.declarations import SCRUB_DEFAULTS, resolve
from unlearnflow.methods.request import MethodResult, UnlearningRequest

_CROSS_ENTROPY = cross_entropy_loss()


@torch.no_grad()
def teacher_targets(teacher: nn.Module, request: UnlearningRequest, batch_size: int = 1024) -> torch.Tensor:
    """(n, C + 1): the teacher's eval-mode logits and the label on every trained-on row (zero
    logits elsewhere, never visited)."""
    teacher.eval()
    logits = torch.zeros(len(request.inputs), request.num_classes, device=request.inputs.device)
    for rows in request.trained_on.split(batch_size):
        logits[rows] = teacher(request.inputs.index_select(0, rows))
    return with_labels(logits, request.labels)


def kl_teacher_student(student_logits: torch.Tensor, teacher_logits: torch.Tensor,
                       temperature: float) -> torch.Tensor:
    """Per-example KL(teacher || student) of the softmaxes at `temperature`, times its square
    (Hinton et al.'s distillation loss, as SCRUB uses it)."""
    log_student = nn.functional.log_softmax(student_logits / temperature, dim=1)
    log_teacher = nn.functional.log_softmax(teacher_logits / temperature, dim=1)
    return (log_teacher.exp() * (log_teacher - log_student)).sum(dim=1) * temperature ** 2


def max_step_loss(temperature: float) -> PerExampleLoss:
    """Per-example ``-KL(teacher || student)``: ascent away from the teacher on forget points."""
    def loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        teacher, _ = split_labels(targets)
        return -kl_teacher_student(logits, teacher, temperature)
    return loss


def min_step_loss(temperature: float, alpha: float, gamma: float) -> PerExampleLoss:
    """Per-example ``alpha * KL(teacher || student) + gamma * CE``: stay close on retain points."""
    def loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        teacher, labels = split_labels(targets)
        return alpha * kl_teacher_student(logits, teacher, temperature) + gamma * _CROSS_ENTROPY(logits, labels)
    return loss


def epoch_lr(hp: Mapping[str, Any], epoch: int) -> float:
    """Step decay of the public code: lr * rate ** (milestones passed by this 1-based epoch)."""
    return hp["lr"] * hp["lr_decay_rate"] ** sum(epoch > milestone for milestone in hp["lr_decay_epochs"])


def scrub(student: nn.Module, teacher: nn.Module, request: UnlearningRequest, hp: Mapping[str, Any],
          seed: int) -> FitStats:
    """Run SCRUB on `student` in place; `teacher` is only evaluated, once, before the first step
    (so it may be the student itself). The cost counts the teacher's forward passes as examples."""
    hp = resolve("scrub", SCRUB_DEFAULTS, hp)
    start = clock()
    targets = teacher_targets(teacher, request)
    max_loss = max_step_loss(hp["temperature"])
    min_loss = min_step_loss(hp["temperature"], hp["alpha"], hp["gamma"])
    stats = []
    for epoch in range(1, hp["epochs"] + 1):
        lr = epoch_lr(hp, epoch)
        if epoch <= hp["max_steps"]:
            config = fine_tune_config(hp, lr=lr, epochs=1, batch_size=hp["forget_batch_size"])
            stats.append(fit(student, request.inputs, targets, config, model_seed(seed, "scrub/max", epoch),
                             subset=request.forget, loss=max_loss))
        config = fine_tune_config(hp, lr=lr, epochs=1)
        stats.append(fit(student, request.inputs, targets, config, model_seed(seed, "scrub/min", epoch),
                         subset=request.retain, loss=min_loss))
    return total(stats, start, extra_examples=len(request.trained_on))


def unlearn(model: nn.Module, request: UnlearningRequest, hp: Mapping[str, Any], seed: int) -> MethodResult:
    """SCRUB with the original model (read before it moves) as the frozen teacher."""
    return MethodResult(scrub(model, model, request, hp, seed))
