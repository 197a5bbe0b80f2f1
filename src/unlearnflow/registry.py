"""The method registry: every unlearning method, what it needs and how it is tuned, in one place.

Each method has one :class:`MethodSpec` entry in :data:`METHODS`. The workflow's rules (which
artifacts an ``unlearn`` job takes), the config checks, the runner, the U-LiRA shadows and the
report read these entries; nothing outside a method's own module branches on its name.

A spec says

- what the method *is*: its paper and section, and its kind, :data:`EDITS_MODEL` (``unlearn``
  edits a model in place, see :mod:`unlearnflow.methods.request`) or :data:`PREDICTS_OUTPUTS`
  (``predict`` turns the original models' outputs into unlearned outputs, training nothing);
- what it *needs*: cached artifacts by name (:data:`ARTIFACTS`), possibly depending on its config
  (``needs(method_config, configurations)``), and how they become a request's side inputs
  (``prepare``);
- whether it is **source-free**: then its requests are :class:`~unlearnflow.methods.request.ForgetRequest`
  (no retain data), and its ``unlearn`` job reads the forget samples' artifact instead of the
  data set;
- its defaults and grid, and the extra config keys (``options``) it accepts.

The registry declares without importing: defaults, grids and checks come from each package's
torch-free ``declarations`` module, and implementations (``unlearn``, ``predict``, ``prepare``, an
artifact's ``load``) are named by import path (:class:`~unlearnflow.lazy.Lazy`) and imported on
first use, so that parsing the workflow (every SLURM job does) imports no torch, scipy or
scikit-learn. Adding a method is its module, its defaults in its package's ``declarations`` and
one :func:`register` call here (README, "Adding a method").
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from unlearnflow.core.stage_table import output_template
from unlearnflow.dmm import declarations as dmm
from unlearnflow.dmm import dm_direct
from unlearnflow.errors import UserError
from unlearnflow.lazy import Lazy
from unlearnflow.methods import declarations as baselines
from unlearnflow.methods.declarations import resolve
from unlearnflow.pgu import declarations as pgu
from unlearnflow.sourcefree import declarations as sourcefree

EDITS_MODEL = "edits_model"
PREDICTS_OUTPUTS = "predicts_outputs"


@dataclass(frozen=True)
class ArtifactSpec:
    """A cached artifact a method can need, by name.

    It is the `output` of the stage table's `stage` (:mod:`unlearnflow.core.stage_table`); a
    ``{forget_set}`` in its :attr:`path` makes the artifact one per forget set (one per step of a
    request sequence). `contains_retain_data` marks what
    a source-free method may never take; `for_shadows` says whether the experiment's artifact
    also serves U-LiRA's shadow models (subset models with no oracles). `build_for_shadows`,
    when given, makes the artifact for the shadows' base bank instead, in the U-LiRA job:
    ``(base bank, data set, device) -> the loaded artifact``. `load` reads it for the runner.
    """

    stage: str
    output: str
    load: Callable[[str], Any]
    contains_retain_data: bool
    for_shadows: bool
    description: str
    build_for_shadows: Callable[[Any, Any, Any], Any] | None = None

    @property
    def path(self) -> str:
        """Its path template relative to ``results/{experiment}``."""
        return output_template(self.stage, self.output)


#: artifact name -> what it is and where the workflow writes it
ARTIFACTS: dict[str, ArtifactSpec] = {
    "oracle_targets": ArtifactSpec("gather_oracles", "bank", Lazy("unlearnflow.core.artifacts:read_bank_logits"),
                                   True, False, "the forget set's oracles (their mean logits are the targets)"),
    "paired_targets": ArtifactSpec("retrain", "", Lazy("unlearnflow.core.artifacts:read_bank_logits"), True, False,
                                   "an independently retrained bank (model k's logits are original k's targets)"),
    "datamodels": ArtifactSpec("gather_datamodels", "", Lazy("unlearnflow.dmm.datamodel_set:read_datamodels"),
                               True, True, "datamodels of every point, fitted on subset models"),
    "calibration": ArtifactSpec("calibrate_datamodels", "", Lazy("unlearnflow.dmm.datamodel_set:read_calibration"),
                                False, True, "the datamodels' scales, fitted on a held-out forget set"),
    "gradient_space": ArtifactSpec("gradient_space", "", Lazy("unlearnflow.pgu.gradient_space:read_gradient_space"),
                                   False, False,
                                   "PGU's factorisation of R R^T per layer and model (aggregates, no samples)",
                                   build_for_shadows=Lazy("unlearnflow.pgu.gradient_space:shadow_gradient_space")),
}


@dataclass(frozen=True)
class RequestContext:
    """What ``prepare`` and ``predict`` know of a batch of requests against a bank of models:
    the forgotten training indices (all requests up to this one), the experiment's training
    labels and the original models' logits per split, (models, points, classes)."""

    forget: np.ndarray
    labels: np.ndarray
    original_logits: Mapping[str, np.ndarray]


#: (loaded side artifacts, hyper-parameters, context) -> model index -> side inputs of its request
Prepare = Callable[[Mapping[str, Any], Mapping[str, Any], RequestContext], Callable[[int], Mapping[str, Any]]]
#: (loaded side artifacts, hyper-parameters, context, labels per split) -> unlearned logits per split
Predict = Callable[[Mapping[str, Any], Mapping[str, Any], RequestContext, Mapping[str, np.ndarray]],
                   dict[str, np.ndarray]]
Needs = Callable[[Mapping[str, Any], Sequence[Mapping[str, Any]]], tuple[str, ...]]


@dataclass(frozen=True)
class MethodSpec:
    """One registered method (see the module docstring)."""

    name: str
    paper: str
    kind: str
    defaults: Mapping[str, Any]
    grid: Mapping[str, Sequence[Any]]
    unlearn: Callable[..., Any] | None = None
    predict: Predict | None = None
    needs: Needs | tuple[str, ...] = ()
    prepare: Prepare | None = None
    source_free: bool = False
    #: config keys besides hyperparameters and grid -> allowed values (the first is not a default:
    #: every option must be set)
    options: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    #: extra check of one resolved configuration (UserError if it is not valid)
    check: Callable[[Mapping[str, Any]], None] | None = None
    #: check of every configuration against the bank's inputs before any work, (configurations,
    #: input shape, classes) -> a warning line per configuration that runs but cannot be trusted;
    #: a UserError when none can run
    check_inputs: Callable[[Sequence["Configuration"], tuple[int, ...], int], list[str]] | None = None
    #: hyper-parameters that must equal the bank's training recipe (a linear model's objective):
    #: recipe (the config's training section, or the one a bank records) -> their values; the
    #: user does not repeat them, and a configuration that sets them otherwise is refused
    from_recipe: Callable[[Mapping[str, Any]], Mapping[str, Any]] | None = None
    #: whether it unlearns only linear models trained to optimum (``training.optimizer: lbfgs``)
    linear_models_only: bool = False
    #: whether `prepare` reads the original bank's logits (``RequestContext.original_logits``), which
    #: an evaluation's bank has and a deletion request's single head model does not
    prepare_reads_logits: bool = False

    def needs_for(self, method_config: Mapping[str, Any]) -> tuple[str, ...]:
        """The artifact names this method needs under `method_config` (its slice of the config)."""
        if callable(self.needs):
            return self.needs(method_config, [c.hyperparameters for c in configurations(self.name, method_config)])
        return tuple(self.needs)


#: method name -> spec, in the order methods are listed in tables
METHODS: dict[str, MethodSpec] = {}


def register(spec: MethodSpec) -> MethodSpec:
    """Add a method to the registry (a test may register its own)."""
    if spec.kind not in (EDITS_MODEL, PREDICTS_OUTPUTS):
        raise ValueError(f"{spec.name}: kind must be {EDITS_MODEL} or {PREDICTS_OUTPUTS}")
    if (spec.kind == EDITS_MODEL) != (spec.unlearn is not None) or (spec.kind == PREDICTS_OUTPUTS) != (
            spec.predict is not None):
        raise ValueError(f"{spec.name}: a method that edits models has unlearn, one that predicts has predict")
    unknown = [name for name in _static_needs(spec) if name not in ARTIFACTS]
    if unknown:
        raise ValueError(f"{spec.name}: needs unknown artifact(s) {', '.join(unknown)}")
    if spec.source_free and any(ARTIFACTS[name].contains_retain_data for name in _static_needs(spec)):
        raise ValueError(f"{spec.name}: a source-free method cannot need artifacts that contain retain data")
    METHODS[spec.name] = spec
    return spec


def _static_needs(spec: MethodSpec) -> tuple[str, ...]:
    return () if callable(spec.needs) else tuple(spec.needs)


#: The references every table shows; they are not methods of the registry: do_nothing is the
#: original bank itself, retrain a bank trained from scratch without the forget set.
REFERENCES = ("do_nothing", "retrain")


def spec_of(method: str) -> MethodSpec:
    """The registered spec of `method` (a one-line UserError naming the known ones)."""
    if method not in METHODS:
        raise UserError(f"unknown unlearning method {method!r} (known: {', '.join(METHODS)})")
    return METHODS[method]


def hyperparameters(method: str, given: Mapping[str, Any]) -> dict[str, Any]:
    """The full hyper-parameters of `method`: `given` over its defaults, checked."""
    spec = spec_of(method)
    resolved = resolve(method, spec.defaults, given)
    if spec.check:
        spec.check(resolved)
    return resolved


@dataclass(frozen=True)
class Configuration:
    """One hyper-parameter configuration of a method and its label in tables."""

    label: str
    hyperparameters: dict[str, Any]


def configurations(method: str, method_config: Mapping[str, Any],
                   recipe: Mapping[str, Any] | None = None) -> list[Configuration]:
    """The default configuration (defaults with the config's ``hyperparameters``) and every point
    of its ``grid``; a grid point changes only the grid's keys and is labelled by them
    (``lr=0.001,epochs=3``). A grid point whose hyper-parameters equal an earlier configuration's
    (e.g. the default's own value of a gridded key) is left out: a method's result depends only on
    its hyper-parameters and the model's seed, so it would repeat that configuration's work. With
    the training `recipe`, the hyper-parameters the method derives from it (``from_recipe``) are
    filled in; setting one otherwise is a UserError."""
    overrides, grid = method_config.get("hyperparameters", {}), method_config.get("grid", {})
    overrides = {**recipe_hyperparameters(method, overrides, grid, recipe), **overrides}
    found = [Configuration("default", hyperparameters(method, overrides))]
    keys = list(grid)
    if not keys:
        return found
    for values in itertools.product(*(grid[key] for key in keys)):
        changed = dict(zip(keys, values))
        resolved = hyperparameters(method, {**overrides, **changed})
        if any(resolved == earlier.hyperparameters for earlier in found):
            continue
        found.append(Configuration(",".join(f"{key}={value}" for key, value in changed.items()), resolved))
    return found


def recipe_hyperparameters(method: str, overrides: Mapping[str, Any], grid: Mapping[str, Any],
                           recipe: Mapping[str, Any] | None) -> dict[str, Any]:
    """What `method` derives from the training `recipe` (nothing without one), checked against
    the configured `overrides` and `grid`."""
    spec = spec_of(method)
    derived = dict(spec.from_recipe(recipe)) if spec.from_recipe and recipe else {}
    for key, value in derived.items():
        if key in grid or (key in overrides and overrides[key] != value):
            raise UserError(f"methods.{method}: {key} comes from the training recipe ({value!r}); "
                            f"remove it from hyperparameters and grid")
    return derived


def check_method_config(method: str, method_config: Mapping[str, Any],
                        recipe: Mapping[str, Any] | None = None) -> None:
    """Every configuration resolves, the options are the declared ones, the needs are known."""
    spec = spec_of(method)
    for key in set(method_config) - {"hyperparameters", "grid"}:
        if key not in spec.options:
            declared = f"its options are {', '.join(spec.options)}" if spec.options else "it takes no options"
            raise UserError(f"methods.{method}: unknown key {key!r} ({declared})")
        if method_config[key] not in spec.options[key]:
            raise UserError(f"methods.{method}.{key}: must be one of {', '.join(spec.options[key])}")
    for key in spec.options:
        if key not in method_config:
            raise UserError(f"methods.{method}: set {key} ({' or '.join(spec.options[key])})")
    configurations(method, method_config, recipe)
    unknown = [name for name in spec.needs_for(method_config) if name not in ARTIFACTS]
    if unknown:
        raise UserError(f"methods.{method}: needs unknown artifact(s) {', '.join(unknown)}")


def _datamodel_needs(method_config: Mapping[str, Any], hps: Sequence[Mapping[str, Any]]) -> tuple[str, ...]:
    """The datamodels, and their calibration when a configuration asks for calibrated targets."""
    return ("datamodels", "calibration") if any(hp["calibrated"] for hp in hps) else ("datamodels",)


def _oracle_matching_needs(method_config: Mapping[str, Any], hps: Sequence[Mapping[str, Any]]) -> tuple[str, ...]:
    return ("oracle_targets",) if method_config["targets"] == "oracle" else ("paired_targets",)


def _own_gradient_space(side: Mapping[str, Any], hp: Mapping[str, Any],
                         context: RequestContext) -> Callable[[int], Mapping[str, Any]]:
    """PGU: each original model gets its own cached factorisation."""
    return lambda index: {"gradient_space": side["gradient_space"].model(index)}


def _check_prediction(hp: Mapping[str, Any]) -> None:
    dm_direct.hyperparameters(dm_direct.prediction_hyperparameters(hp))




def _implementation(name: str) -> Lazy:
    """A method's implementation by its path under :mod:`unlearnflow` (``"methods.jit:unlearn"``),
    imported on first use (module docstring)."""
    return Lazy(f"unlearnflow.{name}")


register(MethodSpec("gradient_ascent", "DMM paper, Appendix D.4 (II)", EDITS_MODEL,
                    baselines.GRADIENT_ASCENT_DEFAULTS, baselines.GRADIENT_ASCENT_GRID,
                    unlearn=_implementation("methods.gradient_ascent:unlearn"), source_free=True))
register(MethodSpec("jit", "Foster et al. 2024, zero-shot unlearning by Lipschitz regularisation (JiT)", EDITS_MODEL,
                    baselines.JIT_DEFAULTS, baselines.JIT_GRID, unlearn=_implementation("methods.jit:unlearn"),
                    source_free=True, check=baselines.check_jit))
register(MethodSpec("gradient_descent", "DMM paper, Appendix D.4 (III)", EDITS_MODEL,
                    baselines.GRADIENT_DESCENT_DEFAULTS, baselines.GRADIENT_DESCENT_GRID,
                    unlearn=_implementation("methods.gradient_descent:unlearn")))
register(MethodSpec("neggrad_plus", "Kurmanji et al. 2023 (NegGrad+)", EDITS_MODEL, baselines.NEGGRAD_PLUS_DEFAULTS,
                    baselines.NEGGRAD_PLUS_GRID, unlearn=_implementation("methods.neggrad_plus:unlearn")))
register(MethodSpec("random_labels", "random relabelling of the forget set", EDITS_MODEL,
                    baselines.RANDOM_LABELS_DEFAULTS, baselines.RANDOM_LABELS_GRID,
                    unlearn=_implementation("methods.random_labels:unlearn")))
register(MethodSpec("random_labels_forget", "random relabelling of the forget samples alone (source-free paper, "
                    "Table 5's Random Labels)", EDITS_MODEL, baselines.RANDOM_LABELS_FORGET_DEFAULTS,
                    baselines.RANDOM_LABELS_FORGET_GRID,
                    unlearn=_implementation("methods.random_labels:unlearn_forget_only"), source_free=True))
register(MethodSpec("adversarial", "Cha et al. 2024, Learning to Unlearn: adversarial anchors and weight importance "
                    "(source-free paper, Table 5's Adversarial)", EDITS_MODEL, baselines.ADVERSARIAL_DEFAULTS,
                    baselines.ADVERSARIAL_GRID, unlearn=_implementation("methods.adversarial:unlearn"),
                    source_free=True, check=baselines.check_adversarial))
register(MethodSpec("scrub", "Kurmanji et al. 2023; DMM paper, Appendix D.4 (IV)", EDITS_MODEL,
                    baselines.SCRUB_DEFAULTS, baselines.SCRUB_GRID,
                    unlearn=_implementation("methods.scrub:unlearn")))
register(MethodSpec("partial_retrain", "DMM paper, Appendix D.4 (I)", EDITS_MODEL,
                    baselines.PARTIAL_RETRAIN_DEFAULTS, baselines.PARTIAL_RETRAIN_GRID,
                    unlearn=_implementation("methods.partial_retrain:unlearn")))
register(MethodSpec("l1_sparse", "Jia et al. 2023, Model Sparsity Can Simplify Machine Unlearning (l1-sparse)",
                    EDITS_MODEL, baselines.L1_SPARSE_DEFAULTS, baselines.L1_SPARSE_GRID,
                    unlearn=_implementation("methods.l1_sparse:unlearn")))
register(MethodSpec("ssd", "Foster et al. 2024, Selective Synaptic Dampening (SSD)", EDITS_MODEL,
                    baselines.SSD_DEFAULTS, baselines.SSD_GRID, unlearn=_implementation("methods.ssd:unlearn"),
                    check=baselines.check_ssd))
register(MethodSpec("salun", "Fan et al. 2024, SalUn: weight saliency and random labels", EDITS_MODEL,
                    baselines.SALUN_DEFAULTS, baselines.SALUN_GRID, unlearn=_implementation("methods.salun:unlearn"),
                    check=baselines.check_fraction("salun", "salient_fraction")))
register(MethodSpec("bad_teacher", "Chundawat et al. 2023, Can Bad Teaching Induce Forgetting? (Bad Teacher)",
                    EDITS_MODEL, baselines.BAD_TEACHER_DEFAULTS, baselines.BAD_TEACHER_GRID,
                    unlearn=_implementation("methods.bad_teacher:unlearn"),
                    check=baselines.check_fraction("bad_teacher", "retain_fraction")))
register(MethodSpec("noisy_descent", "the DMM authors' benchmark code (noisy descent: clipped, noised retain "
                    "fine-tuning)", EDITS_MODEL, baselines.NOISY_DESCENT_DEFAULTS, baselines.NOISY_DESCENT_GRID,
                    unlearn=_implementation("methods.noisy_descent:unlearn")))
register(MethodSpec("oracle_matching", "DMM paper, Algorithm C.1", EDITS_MODEL, dmm.ORACLE_MATCHING_DEFAULTS,
                    dmm.ORACLE_MATCHING_GRID, unlearn=_implementation("dmm.oracle_matching:unlearn"),
                    needs=_oracle_matching_needs, prepare=_implementation("dmm.targets:true_targets"),
                    options={"targets": ("oracle", "retrain")}))
register(MethodSpec("dmm", "DMM paper, Algorithm C.3", EDITS_MODEL, dmm.DMM_DEFAULTS, dmm.DMM_GRID,
                    unlearn=_implementation("dmm.datamodel_matching:unlearn"), needs=_datamodel_needs,
                    prepare=_implementation("dmm.targets:datamodel_targets"), check=_check_prediction,
                    prepare_reads_logits=True))
register(MethodSpec("dm_direct", "DMM paper, Algorithm C.2", PREDICTS_OUTPUTS, dm_direct.DEFAULTS, dm_direct.GRID,
                    predict=_implementation("dmm.targets:predict_outputs"), needs=_datamodel_needs,
                    check=_check_prediction))
register(MethodSpec("pgu", "PGU paper (Hoang et al. 2024), Section 3.2, published schedule", EDITS_MODEL,
                    pgu.PGU_DEFAULTS, pgu.PGU_GRID, unlearn=_implementation("pgu.unlearn:unlearn"),
                    needs=("gradient_space",), prepare=_own_gradient_space, source_free=True, check=pgu.check_pgu))
register(MethodSpec("pgu_tuned", "PGU paper, Section 3.2, with a tuned learning rate (issue 10)", EDITS_MODEL,
                    pgu.PGU_TUNED_DEFAULTS, pgu.PGU_TUNED_GRID, unlearn=_implementation("pgu.unlearn:unlearn"),
                    needs=("gradient_space",), prepare=_own_gradient_space, source_free=True, check=pgu.check_pgu))
register(MethodSpec("pgu_depoison", "PGU paper, Sections 3.2.1 and 4.5: de-poisoning with lambda < 0", EDITS_MODEL,
                    pgu.PGU_DEPOISON_DEFAULTS, pgu.PGU_DEPOISON_GRID, unlearn=_implementation("pgu.unlearn:unlearn"),
                    needs=("gradient_space",), prepare=_own_gradient_space, source_free=True, check=pgu.check_pgu))
register(MethodSpec("pgu_trgp", "PGU paper, Sections 3.2.3 and 4.5, with TRGP (Lin et al. 2022) on the last layer",
                    EDITS_MODEL, pgu.TRGP_DEFAULTS, pgu.TRGP_GRID, unlearn=_implementation("pgu.trgp:unlearn"),
                    needs=("gradient_space",), prepare=_own_gradient_space, source_free=True, check=pgu.check_trgp))
register(MethodSpec("newton_certified", "Guo et al. 2020, Certified Data Removal (Unlearned (+))", EDITS_MODEL,
                    sourcefree.CERTIFIED_DEFAULTS, sourcefree.CERTIFIED_GRID,
                    unlearn=_implementation("sourcefree.newton:newton_certified"), check=sourcefree.check_certified,
                    from_recipe=sourcefree.certified_recipe, linear_models_only=True))
register(MethodSpec("newton_source_free", "Ahmed et al., Source-Free Unlearning, Eq. 1 and 3 (Unlearned (-))",
                    EDITS_MODEL, sourcefree.SOURCE_FREE_DEFAULTS, sourcefree.SOURCE_FREE_GRID,
                    unlearn=_implementation("sourcefree.newton:newton_source_free"), source_free=True,
                    check=sourcefree.check_source_free,
                    check_inputs=_implementation("sourcefree.newton:check_source_free_inputs"),
                    from_recipe=sourcefree.source_free_recipe, linear_models_only=True))
