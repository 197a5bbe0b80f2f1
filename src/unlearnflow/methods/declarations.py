"""The baselines' hyper-parameters as the config sees them: defaults, grids and checks, without
torch (the workflow reads them when it is parsed; the algorithms in this package's modules
import them).

:func:`resolve` fills a method's defaults under the given values; each method's ``*_DEFAULTS``
and ``*_GRID`` follow, in the order of :mod:`unlearnflow.methods`.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

from unlearnflow.core.recipe import TrainConfig
from unlearnflow.errors import UserError


def resolve(method: str, defaults: Mapping[str, Any], given: Mapping[str, Any]) -> dict[str, Any]:
    """`given` over `defaults`; an unknown key or a value of the wrong type is a one-line UserError."""
    unknown = sorted(set(given) - set(defaults))
    if unknown:
        raise UserError(f"{method}: unknown hyper-parameter(s) {', '.join(map(str, unknown))} "
                        f"(known: {', '.join(sorted(defaults))})")
    for key, value in given.items():
        if not _same_kind(value, defaults[key]):
            raise UserError(f"{method}: hyper-parameter {key} must be {type(defaults[key]).__name__}, "
                            f"got {value!r}")
    return {**defaults, **given}


def _same_kind(value: Any, default: Any) -> bool:
    if isinstance(default, bool) or isinstance(value, bool):
        return isinstance(value, bool) and isinstance(default, bool)
    if isinstance(default, float):
        return isinstance(value, (int, float))
    if isinstance(default, list):
        return isinstance(value, (list, tuple))
    return isinstance(value, type(default))


#: Defaults every fine-tuning method starts from (Appendix D.4 of the DMM paper: plain SGD, as
#: the public baselines build ``SGD(lr=lr)`` without momentum or weight decay; batch 64).
FINE_TUNING = {"lr": 1e-3, "epochs": 5, "batch_size": 64, "optimizer": "sgd", "momentum": 0.0,
               "weight_decay": 0.0}

#: The learning-rate and epoch grids of Appendix D.4 (GA and GD), reused by the other
#: fine-tuning baselines that the paper does not tune.
LR_GRID = [1e-5, 1e-4, 1e-3, 1e-2]
EPOCH_GRID = [1, 3, 5, 7, 10]

#: Gradient ascent; Appendix D.4 (II): lr x total unlearning epochs.
GRADIENT_ASCENT_DEFAULTS = dict(FINE_TUNING)
GRADIENT_ASCENT_GRID = {"lr": LR_GRID, "epochs": EPOCH_GRID}

#: Gradient descent on the retain set; Appendix D.4 (III): lr x total unlearning epochs.
GRADIENT_DESCENT_DEFAULTS = dict(FINE_TUNING)
GRADIENT_DESCENT_GRID = {"lr": LR_GRID, "epochs": EPOCH_GRID}

#: NegGrad+: lr x epochs as GA/GD (Appendix D.4), and the retain weight beta.
NEGGRAD_PLUS_DEFAULTS = {**FINE_TUNING, "beta": 0.99}
NEGGRAD_PLUS_GRID = {"lr": LR_GRID, "epochs": EPOCH_GRID, "beta": [0.9, 0.95, 0.99, 0.999]}

#: Random labels: lr x epochs as GA/GD (Appendix D.4), with and without the retain set.
RANDOM_LABELS_DEFAULTS = {**FINE_TUNING, "with_retain": False}
RANDOM_LABELS_GRID = {"lr": LR_GRID, "epochs": EPOCH_GRID, "with_retain": [False, True]}

#: Random labels, the forget-only form: no retain set to add.
RANDOM_LABELS_FORGET_DEFAULTS = dict(FINE_TUNING)
RANDOM_LABELS_FORGET_GRID = {"lr": LR_GRID, "epochs": EPOCH_GRID}

#: Partial retraining: the training recipe for fewer epochs; Appendix D.4 (I) sweeps the epoch
#: count without listing it.
PARTIAL_RETRAIN_DEFAULTS = {**TrainConfig().to_dict(), "epochs": 5}
PARTIAL_RETRAIN_GRID = {"epochs": [1, 2, 4, 8, 12, 16]}

#: JiT: what f is (logits or softmax probabilities); one epoch with one sample per step.
JIT_OUTPUTS = ("logits", "probabilities")
JIT_DEFAULTS = {"lr": 1e-3, "epochs": 1, "batch_size": 1, "optimizer": "sgd", "momentum": 0.0, "weight_decay": 0.0,
                "sigma": 0.5, "n_perturbations": 25, "outputs": "logits"}
#: lr and noise scale, as Foster et al. tune them per model
JIT_GRID = {"lr": [1e-4, 1e-3, 1e-2], "sigma": [0.1, 0.5, 1.0]}


def check_jit(hp: Mapping[str, Any]) -> None:
    """sigma > 0, at least one perturbation, a known output (one-line UserError otherwise)."""
    if not hp["sigma"] > 0:
        raise UserError(f"jit: sigma must be > 0, got {hp['sigma']!r}")
    if hp["n_perturbations"] < 1:
        raise UserError(f"jit: n_perturbations must be >= 1, got {hp['n_perturbations']!r}")
    if hp["outputs"] not in JIT_OUTPUTS:
        raise UserError(f"jit: outputs must be one of {', '.join(JIT_OUTPUTS)}, got {hp['outputs']!r}")


#: Adversarial: the authors' CIFAR-10 run (run.sh; :mod:`unlearnflow.methods.adversarial`).
ADVERSARIAL_DEFAULTS = {**FINE_TUNING, "lr": 1e-3, "epochs": 1000, "batch_size": 32, "momentum": 0.9,
                        "weight_decay": 1e-4, "adversarial_batch_size": 256, "n_adversarial": 20, "pgd_eps": 4.0,
                        "pgd_step": 0.1, "pgd_steps": 100, "reg_lambda": 1.0}
#: the learning rate around the authors' and the weight of the importance penalty (their code's
#: default 10 beside run.sh's 1)
ADVERSARIAL_GRID = {"lr": [1e-4, 1e-3, 1e-2], "reg_lambda": [1.0, 10.0]}


def check_adversarial(hp: Mapping[str, Any]) -> None:
    """Counts of at least one, a positive radius and step, a non-negative penalty (one-line UserError)."""
    for key in ("n_adversarial", "pgd_steps", "adversarial_batch_size"):
        if hp[key] < 1:
            raise UserError(f"adversarial: {key} must be >= 1, got {hp[key]!r}")
    for key in ("pgd_eps", "pgd_step"):
        if not hp[key] > 0:
            raise UserError(f"adversarial: {key} must be > 0, got {hp[key]!r}")
    if hp["reg_lambda"] < 0:
        raise UserError(f"adversarial: reg_lambda must be >= 0, got {hp['reg_lambda']!r}")


#: SCRUB: the DMM authors' public baseline (:mod:`unlearnflow.methods.scrub`).
SCRUB_DEFAULTS = {**FINE_TUNING, "lr": 3e-3, "epochs": 5, "max_steps": 3, "forget_batch_size": 32,
                  "alpha": 0.1, "gamma": 0.99, "temperature": 4.0, "lr_decay_epochs": [3, 5, 9],
                  "lr_decay_rate": 0.1}
#: Appendix D.4 (IV): lr x max-steps (maximisation epochs) x total epochs x forget batch.
SCRUB_GRID = {"lr": [3e-1, 1e-1, 3e-2, 1e-2, 3e-3, 1e-3, 3e-4, 1e-4, 3e-5, 1e-5, 3e-6, 1e-6],
              "max_steps": [1, 3, 5, 7, 9], "epochs": [5, 7, 10], "forget_batch_size": [32, 64]}


#: l1-sparse (Jia et al. 2023; :mod:`unlearnflow.methods.l1_sparse`): the authors' CIFAR-10 fine-tuning
#: (10 epochs at lr 0.01, SGD with momentum 0.9 and weight decay 5e-4) and penalty 5e-4.
L1_SPARSE_DEFAULTS = {**FINE_TUNING, "lr": 1e-2, "epochs": 10, "momentum": 0.9, "weight_decay": 5e-4, "alpha": 5e-4}
#: the penalty around the paper's (1e-4 is the SalUn authors' script) and the fine-tuning learning rate
L1_SPARSE_GRID = {"alpha": [1e-4, 5e-4, 1e-3], "lr": [1e-3, 1e-2]}

#: SSD (Foster et al. 2024; :mod:`unlearnflow.methods.ssd`): selection weighting alpha 10 and
#: dampening constant lambda 1, the paper's; importances from batches of 64 (ours).
SSD_DEFAULTS = {"alpha": 10.0, "dampening": 1.0, "batch_size": 64}
SSD_GRID = {"alpha": [1.0, 5.0, 10.0, 50.0], "dampening": [0.1, 1.0]}

#: SalUn (Fan et al. 2024; :mod:`unlearnflow.methods.salun`): the authors' CIFAR-10 random-label run
#: (10 epochs at lr 0.013, SGD with momentum 0.9 and weight decay 5e-4) on the half of the weights
#: most salient to the forget loss.
SALUN_DEFAULTS = {**FINE_TUNING, "lr": 0.013, "epochs": 10, "momentum": 0.9, "weight_decay": 5e-4,
                  "salient_fraction": 0.5}
SALUN_GRID = {"lr": [1e-3, 1e-2], "salient_fraction": [0.1, 0.5, 0.9]}

#: Bad Teacher (Chundawat et al. 2023; :mod:`unlearnflow.methods.bad_teacher`): one epoch of Adam at
#: lr 1e-4, KL temperature 1, on the forget set and 30% of the retain set, the authors' defaults.
BAD_TEACHER_DEFAULTS = {**FINE_TUNING, "optimizer": "adam", "lr": 1e-4, "epochs": 1, "temperature": 1.0,
                        "retain_fraction": 0.3}
BAD_TEACHER_GRID = {"lr": [1e-5, 1e-4, 1e-3], "epochs": [1, 3]}

#: Noisy descent (a baseline of the DMM authors' benchmark code; :mod:`unlearnflow.methods.noisy_descent`):
#: gradients clipped to norm 1, Gaussian noise of std 0.01 on each entry.
NOISY_DESCENT_DEFAULTS = {**FINE_TUNING, "max_grad_norm": 1.0, "noise_std": 0.01}
NOISY_DESCENT_GRID = {"lr": LR_GRID, "noise_std": [0.001, 0.01, 0.1]}


def check_fraction(method: str, key: str) -> Callable[[Mapping[str, Any]], None]:
    """A check that ``hp[key]`` lies in (0, 1] (one-line UserError otherwise)."""
    def check(hp: Mapping[str, Any]) -> None:
        if not 0 < hp[key] <= 1:
            raise UserError(f"{method}: {key} must be in (0, 1], got {hp[key]!r}")
    return check


def check_ssd(hp: Mapping[str, Any]) -> None:
    """Positive selection weighting, dampening constant and batch size (one-line UserError)."""
    for key in ("alpha", "dampening", "batch_size"):
        if not hp[key] > 0:
            raise UserError(f"ssd: {key} must be > 0, got {hp[key]!r}")
