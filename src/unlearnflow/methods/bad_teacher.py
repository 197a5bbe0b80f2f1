"""Bad Teacher (Chundawat et al., AAAI 2023, "Can Bad Teaching Induce Forgetting?", Sec. 3,
Eqs. 2-4): the student, starting as the original model, is distilled from two teachers at once:
the competent teacher (the original model) on retain examples and an incompetent teacher (a
randomly initialised model of the same architecture) on forget examples, minimising
``KL(T(x) || S(x))`` of their softmaxes at the temperature. It trains on the forget set and a
random ``retain_fraction`` of the retain set (the authors' 30%), drawn once per seed. Both
teachers' outputs are computed once before training. The loss is SCRUB's distillation KL
(:func:`unlearnflow.methods.scrub.kl_teacher_student`), which also multiplies by the squared
temperature (1 at the default). Not source-free: it reads the retain set.
"""

from __future__ import annotations

import copy
import math
from typing import Any, Mapping

import torch
from torch import nn

from unlearnflow.core.training import clock, fit, predict_logits
from unlearnflow.methods.common import fine_tune_config, rng, total
from unlearnflow.methods.declarations import BAD_TEACHER_DEFAULTS, check_fraction, resolve
from unlearnflow.methods.request import MethodResult, UnlearningRequest
from unlearnflow.methods.scrub import kl_teacher_student


def randomly_initialised(model: nn.Module, seed: int) -> nn.Module:
    """A copy of `model` with every module's parameters (and BatchNorm statistics) re-initialised,
    the draws made under a generator of the seed's ``bad_teacher`` stream."""
    incompetent = copy.deepcopy(model)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(rng(seed, "bad_teacher").integers(2 ** 62)))
        for module in incompetent.modules():
            if hasattr(module, "reset_parameters"):
                module.reset_parameters()
    return incompetent


def unlearn(model: nn.Module, request: UnlearningRequest, hp: Mapping[str, Any], seed: int) -> MethodResult:
    """Distil from the competent teacher on sampled retain points and the incompetent one on the
    forget set for ``epochs`` epochs (BatchNorm frozen)."""
    hp = resolve("bad_teacher", BAD_TEACHER_DEFAULTS, hp)
    check_fraction("bad_teacher", "retain_fraction")(hp)
    start = clock()
    retain = request.retain.cpu().numpy()
    sampled = rng(seed, "bad_teacher_retain").choice(retain, math.ceil(hp["retain_fraction"] * len(retain)),
                                                      replace=False)
    sampled = torch.from_numpy(sampled).to(request.retain.device)
    teachers = torch.zeros(len(request.inputs), request.num_classes, device=request.inputs.device)
    teachers[sampled] = predict_logits(model, request.inputs[sampled])
    teachers[request.forget] = predict_logits(randomly_initialised(model, seed), request.forget_inputs)
    stats = fit(model, request.inputs, teachers, fine_tune_config(hp), seed,
                subset=torch.cat([request.forget, sampled]),
                loss=lambda logits, target: kl_teacher_student(logits, target, hp["temperature"]))
    return MethodResult(total([stats], start, extra_examples=len(sampled) + len(request.forget)))
