"""The source-free paper's config as the workflow checks it when it is parsed, without torch or
scipy: the linear training recipe, the feature backbones, and the Newton methods'
hyper-parameters (defaults, grids, checks, what they take from the recipe). The algorithms are in
:mod:`.linear`, :mod:`.features`, :mod:`.hessian` and :mod:`.newton`.
"""

from __future__ import annotations

from typing import Any, Mapping

from unlearnflow.core.recipe import TrainConfig
from unlearnflow.errors import UserError

# --------------------------------------------------------------------------- the linear recipe

#: the losses of a linear model's objective (:class:`~unlearnflow.sourcefree.linear.LinearObjective`)
LOSSES = ("squared", "logistic", "multinomial", "mixed_squared")
#: the keys of a linear training recipe in the config (``training: {optimizer: lbfgs, ...}``)
CONFIG_RECIPE_KEYS = ("optimizer", "loss", "lam", "noise_std")


def check_objective(loss: str, lam: float) -> None:
    """A known loss and lam >= 0 (one-line UserError otherwise)."""
    if loss not in LOSSES:
        raise UserError(f"linear model: unknown loss {loss!r} (known: {', '.join(LOSSES)})")
    if not lam >= 0:
        raise UserError(f"linear model: lam must be >= 0, got {lam!r}")


def is_linear_recipe(training: Mapping) -> bool:
    """Whether a config's training section asks for linear models trained to optimum (``optimizer: lbfgs``)."""
    return isinstance(training, Mapping) and training.get("optimizer") == "lbfgs"


def linear_recipe(training: Mapping) -> tuple[str, float, float]:
    """(loss, lam, noise_std) of a config's linear training recipe (one-line UserError if it is not
    one): ``loss`` and ``lam`` are required, ``noise_std`` (the std of b) defaults to 0."""
    unknown = sorted(set(training) - set(CONFIG_RECIPE_KEYS))
    if unknown:
        raise UserError(f"config: training: optimizer lbfgs trains linear models to optimum and takes "
                        f"{', '.join(CONFIG_RECIPE_KEYS[1:])}, not {', '.join(unknown)}")
    missing = [key for key in ("loss", "lam") if key not in training]
    if missing:
        raise UserError(f"config: training: optimizer lbfgs needs {' and '.join(missing)}")
    noise_std = float(training.get("noise_std", 0.0))
    if not noise_std >= 0:
        raise UserError(f"config: training.noise_std: must be >= 0, got {noise_std!r}")
    try:
        check_objective(training["loss"], float(training["lam"]))
    except UserError as error:
        raise UserError(f"config: training: {error}") from None
    return training["loss"], float(training["lam"]), noise_std


# --------------------------------------------------------------------------- feature backbones

BACKBONES = ("identity", "public", "resnet18")
#: keys each backbone takes besides ``backbone``
BACKBONE_KEYS = {"identity": ("pool", "side"), "resnet18": ("weights", "options", "batch_size"),
                 "public": ("public_fraction", "seed", "arch", "options", "training", "batch_size", "mixed_linear")}
#: architectures a public backbone may train (a penultimate layer feeding an nn.Linear classifier)
PUBLIC_ARCHS = ("mlp", "smallvgg", "allcnn", "resnet9", "resnet18")


def check_features_spec(spec: Mapping[str, Any]) -> None:
    """The backbone is known and takes the given keys (one-line UserError otherwise)."""
    backbone = spec.get("backbone")
    if backbone not in BACKBONES:
        raise UserError(f"config: features.backbone: unknown backbone {backbone!r} (known: {', '.join(BACKBONES)})")
    unknown = sorted(set(spec) - {"backbone", *BACKBONE_KEYS[backbone]})
    if unknown:
        allowed = ", ".join(BACKBONE_KEYS[backbone]) or "no other keys"
        raise UserError(f"config: features: backbone {backbone} takes {allowed}, not {', '.join(unknown)}")
    if backbone == "identity" and "pool" in spec and "side" in spec:
        raise UserError("config: features: give pool (a factor) or side (the pooled images' side), not both")
    if backbone == "resnet18" and not spec.get("weights"):
        raise UserError("config: features.weights: the resnet18 backbone needs a local state-dict file")
    if backbone == "public":
        fraction = spec.get("public_fraction")
        if not isinstance(fraction, (int, float)) or not 0 < fraction < 1:
            raise UserError(f"config: features.public_fraction: the public backbone needs a fraction in (0, 1), "
                            f"got {fraction!r}")
        if spec.get("arch", "mlp") not in PUBLIC_ARCHS:
            raise UserError(f"config: features.arch: the public backbone trains one of {', '.join(PUBLIC_ARCHS)}, "
                            f"not {spec.get('arch')!r}")
        mixed = spec.get("mixed_linear")
        if mixed is not None and (not isinstance(mixed, Mapping) or set(mixed) != {"layers"}
                                  or not isinstance(mixed["layers"], int) or isinstance(mixed["layers"], bool)
                                  or mixed["layers"] < 1):
            raise UserError(f"config: features.mixed_linear: takes {{layers: L}} with L >= 1 (the linearised "
                            f"last layers), got {mixed!r}")
        try:
            TrainConfig.from_mapping(spec.get("training"))
        except UserError as error:
            raise UserError(f"config: features.{error}") from None




# --------------------------------------------------------------------------- the Newton methods

#: variant -> the perturbations' own scale sigma (:mod:`.hessian`'s docstring)
VARIANT_SIGMA = {"paper": 1.0, "paper_taylor": 0.01, "corrected": 0.01, "notebook": 0.01}
VARIANTS = tuple(VARIANT_SIGMA)
SOLVERS = ("scalable", "clarabel", "scs")

#: the objective (from the training recipe) and Eq. (1)'s output noise
OBJECTIVE_DEFAULTS = {"loss": "squared", "lam": 1e-3, "noise_std": 0.0}
#: ``objective_noise_std`` is the std of the objective noise b the model was trained with (from
#: the recipe); ``delta`` is Guo et al.'s delta of (epsilon, delta)-certified removal
CERTIFIED_DEFAULTS = {**OBJECTIVE_DEFAULTS, "objective_noise_std": 0.0, "delta": 1e-5}

#: m = 500 perturbations as in the paper's Table 1 / the authors' notebook; ``sigma`` 0 means the
#: variant's own scale (:data:`VARIANT_SIGMA`: 1 for ``paper`` as
#: Lemma 1 states, 0.01 for the others as the notebook); variant ``paper`` (Eq. 3 as printed) is
#: the default, the grid adds the other readings so that every run reports them side by side.
#: ``ridge`` is added as ``ridge * n * I`` (mean-form units) before inverting, as the notebook does.
SOURCE_FREE_DEFAULTS = {**OBJECTIVE_DEFAULTS, "n_train": 0, "m": 500, "sigma": 0.0, "variant": "paper",
                        "solver": "scalable", "max_iters": 2000, "tol": 1e-7, "ridge": 1e-6}
CERTIFIED_GRID: dict[str, list] = {}
SOURCE_FREE_GRID = {"variant": ["paper_taylor", "corrected", "notebook"]}


def _objective_recipe(recipe: Mapping[str, Any]) -> dict[str, Any]:
    """``loss`` and ``lam`` of a linear training recipe (the config's ``optimizer: lbfgs`` section or
    a bank's recorded recipe); nothing for any other recipe. Eq. (1)'s H_r and grad_F are those of
    the objective the model minimised, so these must equal the recipe's."""
    if recipe.get("optimizer") != "lbfgs" and recipe.get("kind") != "linear":
        return {}
    return {"loss": recipe["loss"], "lam": float(recipe["lam"])}


def certified_recipe(recipe: Mapping[str, Any]) -> dict[str, Any]:
    """The objective of a linear recipe and ``objective_noise_std``, its ``noise_std`` (the std of
    b; 0 when the config's section leaves it out): Thm. 3's sigma_b."""
    derived = _objective_recipe(recipe)
    if derived:
        derived["objective_noise_std"] = float(recipe.get("noise_std", 0.0))
    return derived


def source_free_recipe(recipe: Mapping[str, Any]) -> dict[str, Any]:
    """The objective of a linear recipe and, from a bank's recorded recipe, ``n_train`` (the
    training-set size n, which the model owner knows; the corrected variant's n_r / n_F needs it)."""
    derived = _objective_recipe(recipe)
    if derived and "n_train" in recipe:
        derived["n_train"] = int(recipe["n_train"])
    return derived


def _check_objective(name: str, hp: Mapping[str, Any]) -> None:
    check_objective(hp["loss"], float(hp["lam"]))
    if hp["noise_std"] < 0:
        raise UserError(f"{name}: noise_std must be >= 0, got {hp['noise_std']}")


def check_certified(hp: Mapping[str, Any]) -> None:
    """The objective, the noises and delta are valid (UserError otherwise)."""
    _check_objective("newton_certified", hp)
    if hp["objective_noise_std"] < 0:
        raise UserError(f"newton_certified: objective_noise_std must be >= 0, got {hp['objective_noise_std']}")
    if not 0 < hp["delta"] < 1:
        raise UserError(f"newton_certified: delta must be in (0, 1), got {hp['delta']}")


def check_source_free(hp: Mapping[str, Any]) -> None:
    """The objective and the choices (n_train is checked per request: the defaults must resolve)."""
    _check_objective("newton_source_free", hp)
    for name, known in (("variant", VARIANTS), ("solver", SOLVERS)):
        if hp[name] not in known:
            raise UserError(f"newton_source_free: unknown {name} {hp[name]!r} (known: {', '.join(known)})")
    if hp["sigma"] < 0:
        raise UserError(f"newton_source_free: sigma must be >= 0 (0: the variant's own), got {hp['sigma']}")
