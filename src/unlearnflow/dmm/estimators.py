"""The datamodel estimators: one table that the config checks, the rules, the fit stage and the
report read (issue 24), so that nothing else branches on an estimator's name.

An entry declares what the workflow must know before fitting: the estimator's options and their
defaults (config ``datamodels.options``), whether it is a regression on the subset models (the last
``heldout_models`` of them only score it) or only scored on them (TRAK, fitted on none), whether it
reads the original models as checkpoints, whether its fit can be scattered over jobs by points,
which outputs it can fit (None: those configured), and its fit function by import path, loaded on
first use so that reading the table imports nothing heavy. A fit function takes
:class:`~unlearnflow.dmm.datamodel_set.FitInputs` and returns a ``DatamodelSet``. Adding an
estimator is its module and one entry here.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from unlearnflow.errors import UserError
from unlearnflow.lazy import imported

#: The outputs a datamodel can predict of a point.
OUTPUTS = ("margins", "logits")
#: The points of a data set in the datamodels' order; a fit covers a prefix of them (``splits``).
SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class Estimator:
    """One datamodel estimator (module docstring)."""

    name: str
    fit: str
    options: Mapping[str, Any] = field(default_factory=dict)
    regression: bool = True
    checkpoints: bool = False
    scatters: bool = True
    outputs: tuple[str, ...] | None = None

    def load_fit(self) -> Callable[..., Any]:
        """The fit function (``module:function``), imported now."""
        return imported(self.fit)


#: estimator name -> its entry, in the order the config's schema lists them
ESTIMATORS: dict[str, Estimator] = {
    "lasso": Estimator("lasso", "unlearnflow.dmm.datamodel_set:fit_regression",
                       {"n_alphas": 20, "alpha_min_ratio": 0.01, "val_fraction": 0.2, "tol": 1e-4, "max_iter": 1000,
                        "path_tol": 3e-3, "patience": 2}),
    "ridge": Estimator("ridge", "unlearnflow.dmm.datamodel_set:fit_regression",
                       {"alphas": [1e-3, 3e-3, 1e-2, 3e-2, 0.1, 0.3, 1.0, 3.0, 10.0], "val_fraction": 0.2}),
    # TRAK: projected per-example gradients of the original models; scored on every subset model
    "trak": Estimator("trak", "unlearnflow.dmm.datamodel_set:fit_trak",
                      {"checkpoints": 10, "projection_dim": 1024, "damping": 1e-3},
                      regression=False, checkpoints=True, scatters=False, outputs=("margins",)),
}


def estimator_of(name: str) -> Estimator:
    """The entry of estimator `name` (a UserError naming the known ones otherwise)."""
    if name not in ESTIMATORS:
        raise UserError(f"datamodels: unknown estimator {name!r} (known: {', '.join(ESTIMATORS)})")
    return ESTIMATORS[name]


def options(name: str, given: Mapping[str, Any]) -> dict[str, Any]:
    """The estimator's options, `given` over the defaults; unknown ones are a UserError."""
    defaults = estimator_of(name).options
    unknown = sorted(set(given) - set(defaults))
    if unknown:
        raise UserError(f"datamodels: unknown option(s) {', '.join(unknown)} for estimator {name} "
                        f"(known: {', '.join(defaults)})")
    return {**defaults, **given}


def split_heldout(n_models: int, heldout_models: int) -> tuple[slice, slice]:
    """(fitted, held-out) model ranges: the last `heldout_models` models are only scored."""
    if heldout_models < 3 or n_models - heldout_models < 10:
        raise UserError(f"datamodels: {n_models} subset models cannot spare {heldout_models} held-out models "
                        f"(need >= 3 held out and >= 10 to fit)")
    return slice(0, n_models - heldout_models), slice(n_models - heldout_models, n_models)
