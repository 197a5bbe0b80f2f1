"""Workflow configuration: JSON-schema validation with defaults, then the library's own checks.

The Snakefile calls :func:`validate_config` before any rule is defined; every problem becomes
one :class:`~unlearnflow.errors.UserError` line naming the config path of the value, such as
``config: forget_sets.random_10.size: 'ten' is not of type 'integer'`` or
``config: methods.gradient_ascent.grid.lr[1]: -0.1 must be > 0``: values that would only fail
after the expensive stages (a negative size, a learning rate <= 0, too few models for KLOM)
are refused before any rule runs.
"""

from __future__ import annotations

import copy
import functools
import os
import re
from pathlib import Path
from typing import Any, Mapping

import jsonschema
import yaml

from unlearnflow.core.forget_sets import check_spec
from unlearnflow.core.recipe import ARCHITECTURES, DATA_LOADERS, TrainConfig
from unlearnflow.core.stage_table import STAGES, resources_of
from unlearnflow.dmm.dm_direct import OUTPUT_OF
from unlearnflow.dmm.estimators import OUTPUTS, SPLITS, estimator_of, options, split_heldout
from unlearnflow.errors import UserError
from unlearnflow.lazy import check_findable, is_import_path
from unlearnflow.metrics.declarations import MIN_MODELS
from unlearnflow.registry import PREDICTS_OUTPUTS, REFERENCES, check_method_config, configurations, spec_of
from unlearnflow.sourcefree.declarations import check_features_spec, is_linear_recipe, linear_recipe


def _with_defaults(validator_class: type) -> type:
    """A validator that fills in each property's ``default`` before validating it."""
    validate_properties = validator_class.VALIDATORS["properties"]

    def set_defaults(validator, properties, instance, schema):
        if isinstance(instance, dict):
            for name, subschema in properties.items():
                if isinstance(subschema, dict) and "default" in subschema and name not in instance:
                    instance[name] = _copy(subschema["default"])
        yield from validate_properties(validator, properties, instance, schema)

    return jsonschema.validators.extend(validator_class, {"properties": set_defaults})


def _copy(value: Any) -> Any:
    return copy.deepcopy(value)


def load_config_file(path: str | Path) -> dict[str, Any]:
    """A YAML config file as a mapping; a syntax error names the file, line and column."""
    try:
        with open(path) as handle:
            config = yaml.safe_load(handle)
    except OSError as error:
        raise UserError(f"{path}: cannot read the config file ({error.strerror})") from error
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        where = f", line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = " ".join(str(part) for part in (error.context, error.problem) if part)
        raise UserError(f"{path}{where}: YAML syntax error: {problem}") from None
    if not isinstance(config, dict):
        raise UserError(f"{path}: a config file must be a mapping of keys to values, got {type(config).__name__}")
    return config


def load_schema(path: str | Path) -> dict[str, Any]:
    """The config schema, read once per process (with libyaml when PyYAML has it: parsing the
    workflow reads it for every experiment); not to be modified."""
    return _read_schema(Path(path).resolve())


@functools.lru_cache(maxsize=None)
def _read_schema(path: Path) -> dict[str, Any]:
    with open(path) as handle:
        return yaml.load(handle, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))


def validate_config(config: dict[str, Any], schema: Mapping[str, Any]) -> dict[str, Any]:
    """Validate `config` in place (filling defaults) and return it; errors are one line."""
    validator = _with_defaults(jsonschema.Draft202012Validator)(schema)
    error = jsonschema.exceptions.best_match(validator.iter_errors(config))
    if error is not None:
        where = ".".join(str(part) for part in error.absolute_path) or "(top level)"
        raise UserError(f"config: {where}: {error.message}")
    if not config["forget_sets"]:
        raise UserError("config: forget_sets: define at least one forget set")
    if CALIBRATION_SET in config["forget_sets"]:
        raise UserError(f"config: forget_sets: the name {CALIBRATION_SET} is reserved for datamodels.calibration_set")
    _check_banks(config)
    for name, spec in config["forget_sets"].items():
        check_spec(name, spec)
        check_numbers("config", f"forget_sets.{name}", spec, FORGET_SET_MINIMA)
    _check_method_values(config["methods"])
    selection_set = config["evaluation"].get("selection", {}).get("forget_set")
    if selection_set is not None and selection_set not in config["forget_sets"]:
        raise UserError(f"config: evaluation.selection.forget_set: {selection_set!r} is not a forget set of experiment "
                        f"{config['experiment']} ({', '.join(config['forget_sets'])})")
    poison_sets = [name for name, spec in config["forget_sets"].items() if spec["kind"] == "poison"]
    if len(poison_sets) > 1:
        raise UserError(f"config: forget_sets: at most one poison set per experiment "
                        f"(its flipped labels become the experiment's training labels), got {', '.join(poison_sets)}")
    for method, spec in config["methods"].items():
        if method in REFERENCES:
            raise UserError(f"config: methods.{method}: the references do_nothing and retrain always run; remove it")
        try:
            check_method_config(method, spec, config["training"])
        except UserError as error:
            raise UserError(f"config: {error}") from None
        if spec_of(method).linear_models_only and not is_linear_recipe(config["training"]):
            raise UserError(f"config: methods.{method}: unlearns linear models trained to optimum (training: "
                            f"{{optimizer: lbfgs, ...}} on features), not the {config['model']['arch']} this "
                            "experiment trains; run it in a linear experiment (config.yaml's {experiment}_linear)")
        if "paired_targets" in needs(config, method) and config["originals"]["models"] != config["oracles"]["models"]:
            raise UserError(f"config: methods.{method}: targets retrain pairs each original with a retrained model; "
                            "set originals.models equal to oracles.models")
    if any("datamodels" in needs(config, method) for method in config["methods"]):
        _check_datamodels(config)
    unknown_rules = sorted(set(config.get("resources", {})) - {"default", *STAGES})
    if unknown_rules:
        raise UserError(f"config: resources: unknown rule(s) {', '.join(unknown_rules)} "
                        f"(rules: default, {', '.join(STAGES)})")
    _check_imported_originals(config)
    for key, value, known in (("model.arch", config["model"]["arch"], ARCHITECTURES),
                              ("data.loader", config["data"]["loader"], DATA_LOADERS)):
        if is_import_path(value):
            check_findable(value, key)
        elif value not in known:
            raise UserError(f"config: {key}: unknown {value!r} (known: {', '.join(known)}; or your own "
                            "function as 'package.module:function')")
    _check_training(config)
    return config


def _check_imported_originals(config: Mapping[str, Any]) -> None:
    """Imported originals (``originals.state_dicts``): one existing file per model; the oracles
    are always retrained."""
    if "state_dicts" in config["oracles"]:
        raise UserError("config: oracles.state_dicts: only the original models are imported; the oracles are "
                        "retrained (KLOM's reference)")
    files = config["originals"].get("state_dicts")
    if files is None:
        return
    if is_linear_experiment(config):
        raise UserError("config: originals.state_dicts: linear models (optimizer lbfgs) are trained to optimum here, "
                        "not imported")
    if len(files) != config["originals"]["models"]:
        raise UserError(f"config: originals.state_dicts: {len(files)} file(s) for originals.models "
                        f"{config['originals']['models']}: give one per model")
    missing = [path for path in files if not os.path.isfile(path)]
    if missing:
        raise UserError(f"config: originals.state_dicts: no file {missing[0]}")


def _check_training(config: Mapping[str, Any]) -> None:
    """The training recipe: the torch trainer's (TrainConfig), or linear models trained to optimum
    (``optimizer: lbfgs``, source-free unlearning) on extracted features, the same for the oracles."""
    if "features" in config:
        check_features_spec(config["features"])
    if not is_linear_recipe(config["training"]):
        if "features" in config:
            raise UserError("config: features: extracted features are the inputs of linear models trained to "
                            "optimum; set training.optimizer: lbfgs or remove features")
        if is_linear_recipe(oracle_training(config)):
            raise UserError("config: oracles.training: optimizer lbfgs must be the experiment's training recipe")
        TrainConfig.from_mapping(config["training"])
        TrainConfig.from_mapping(oracle_training(config))
        return
    linear_recipe(config["training"])
    if oracle_training(config) != config["training"]:
        raise UserError("config: oracles.training: the oracles of linear models use the experiment's recipe; "
                        "remove oracles.training")
    if config["model"]["arch"] != "linear" or config["model"].get("options", {}).get("bias", False):
        raise UserError("config: model: optimizer lbfgs trains bias-free linear models; "
                        "set model: {arch: linear, options: {bias: false}}")
    if "features" not in config:
        raise UserError("config: features: optimizer lbfgs trains on feature rows of norm <= 1; "
                        "add features: {backbone: identity}")
    mixed = bool(config["features"].get("mixed_linear"))
    if mixed != (config["training"]["loss"] == "mixed_squared"):
        raise UserError("config: training.loss: mixed_squared trains mixed-linear networks, whose rows come from "
                        "features: {backbone: public, mixed_linear: {layers: L}}; use the two together")
    for method in config["methods"]:
        if "datamodels" in needs(config, method):
            raise UserError(f"config: methods.{method}: needs datamodels, fitted on subset models, which a "
                            "linear experiment (optimizer lbfgs) does not train; remove it")


def is_linear_experiment(config: Mapping[str, Any]) -> bool:
    """Whether the experiment trains linear models to optimum on extracted features."""
    return is_linear_recipe(config["training"])


#: Lowest value of the numeric keys of a forget set (``> 0`` for a float budget).
FORGET_SET_MINIMA: dict[str, tuple[str, float]] = {
    "size": (">=", 1), "requests": (">=", 1), "n_clusters": (">=", 1), "components": (">=", 1),
    "cluster": (">=", 0), "class": (">=", 0), "budget": (">", 0),
}
#: Bounds of the hyper-parameters the methods share, in a method's hyperparameters and grid.
HYPERPARAMETER_MINIMA: dict[str, tuple[str, float]] = {
    "lr": (">", 0), "epochs": (">=", 1), "batch_size": (">=", 1), "forget_batch_size": (">=", 1),
    "max_steps": (">=", 1), "momentum": (">=", 0), "weight_decay": (">=", 0),
}


def _check_banks(config: Mapping[str, Any]) -> None:
    """KLOM compares histograms over models: the unlearned banks (as many as the originals, or
    the retrained ones as many as the oracles) need MIN_MODELS, the noise floor twice that."""
    needed = {"originals": MIN_MODELS, "oracles": 2 * MIN_MODELS}
    for bank, minimum in needed.items():
        models = config[bank]["models"]
        if models < minimum:
            why = ("the noise floor compares two halves of the oracles" if bank == "oracles"
                   else "the unlearned banks have as many models")
            raise UserError(f"config: {bank}.models: {models} is too few; KLOM needs at least {MIN_MODELS} models "
                            f"per side and {why}, so set at least {minimum} (50 or more rise above noise)")


def check_numbers(source: str, where: str, values: Mapping[str, Any], minima: Mapping[str, tuple[str, float]]) -> None:
    """Each number of `values` (a value or a list of them) under a key of `minima` respects its
    bound; the error names the file or ``config`` (`source`) and the path (``where.key`` or
    ``where.key[i]``)."""
    for key, (relation, bound) in minima.items():
        value = values.get(key)
        items = list(enumerate(value)) if isinstance(value, list) else [(None, value)]
        for index, item in items:
            if not isinstance(item, (int, float)) or isinstance(item, bool):
                continue  # the schema and the library name wrong types
            if not (item > bound if relation == ">" else item >= bound):
                path = f"{where}.{key}" + ("" if index is None else f"[{index}]")
                raise UserError(f"{source}: {path}: {item!r} must be {relation} {bound:g}")


def _check_method_values(methods: Mapping[str, Any]) -> None:
    """Bounds of the shared hyper-parameters of every method, defaults and grid values alike."""
    for method, spec in methods.items():
        for section in ("hyperparameters", "grid"):
            check_numbers("config", f"methods.{method}.{section}", spec.get(section, {}), HYPERPARAMETER_MINIMA)


def rule_resources(config: Mapping[str, Any], rule: str) -> dict[str, int]:
    """Threads, mem_mb, runtime and gpu of `rule` under `config` (the stage table's
    :func:`~unlearnflow.core.stage_table.resources_of`)."""
    return resources_of(rule, config.get("resources", {}), config["device"] == "cuda")


#: Name of the datamodels' held-out calibration forget set (``datamodels.calibration_set``).
CALIBRATION_SET = "datamodel_calibration"


def _check_datamodels(config: Mapping[str, Any]) -> None:
    spec = config["datamodels"]
    try:
        options(spec["estimator"], spec["options"])
        if estimator_of(spec["estimator"]).regression:  # the others are scored on every subset model
            split_heldout(config["subset_models"]["models"], spec["heldout_models"])
        if "calibration_set" in spec:
            if spec["calibration_set"].get("kind") not in ("random", "class_sample", "cluster"):
                raise UserError("datamodels.calibration_set: kind must be random, class_sample or cluster")
            check_spec(CALIBRATION_SET, spec["calibration_set"])
    except UserError as error:
        raise UserError(f"config: {error}") from None
    fitted = datamodel_outputs(config)
    for method, hp in _datamodel_configurations(config):
        output = OUTPUT_OF[hp["construction"]]
        if output not in fitted:
            fixed = estimator_of(spec["estimator"]).outputs
            where = (f"the {spec['estimator']} estimator fits {' and '.join(fixed)} only" if fixed
                     else f"add {output} to datamodels.outputs")
            raise UserError(f"config: methods.{method}: construction {hp['construction']} needs {output} "
                            f"datamodels; {where}")
        if hp["calibrated"] and "calibration_set" not in spec:
            raise UserError(f"config: methods.{method}: calibrated targets need datamodels.calibration_set")


def _datamodel_configurations(config: Mapping[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """(method, hyper-parameters) of every configuration of the methods that need datamodels."""
    return [(method, found.hyperparameters) for method in sorted(config["methods"])
            if "datamodels" in needs(config, method)
            for found in configurations(method, config["methods"][method])]


def datamodel_outputs(config: Mapping[str, Any]) -> list[str]:
    """The datamodel outputs to fit: ``datamodels.outputs`` if given, else those the configured
    constructions read (margins for margin_shift, logits for logit); an estimator with fixed outputs
    (trak: margins) fits those."""
    spec = config["datamodels"]
    fixed = estimator_of(spec["estimator"]).outputs
    if fixed:
        return list(fixed)
    if "outputs" in spec:
        return list(spec["outputs"])
    used = {OUTPUT_OF[hp["construction"]] for _, hp in _datamodel_configurations(config)}
    return [output for output in OUTPUTS if output in used] or list(OUTPUTS)


def datamodel_splits(config: Mapping[str, Any]) -> list[str]:
    """The splits whose points get datamodels: every split when a configured method predicts
    outputs from them (DM-DIRECT: KLOM on forget, retain and validation points, accuracy and MIA
    on test points), else the training points only (DMM's targets and the calibration read
    nothing else; unlearnflow.dmm.targets)."""
    predicting = any(spec_of(method).kind == PREDICTS_OUTPUTS and "datamodels" in needs(config, method)
                     for method in config["methods"])
    return list(SPLITS) if predicting else ["train"]


def datamodel_fit_jobs(config: Mapping[str, Any]) -> int:
    """Jobs the datamodel fit is scattered over (``datamodels.fit_jobs``; one for an estimator that
    does not scatter, e.g. trak)."""
    spec = config["datamodels"]
    return spec["fit_jobs"] if estimator_of(spec["estimator"]).scatters else 1


def datamodel_spec(config: Mapping[str, Any]) -> dict[str, Any]:
    """What the fit jobs are given: the ``datamodels`` slice without the calibration set, with the
    outputs and splits to fit resolved (a change of either refits)."""
    spec = {key: value for key, value in config["datamodels"].items() if key not in ("calibration_set", "fit_jobs")}
    return {**spec, "outputs": datamodel_outputs(config), "splits": datamodel_splits(config)}


def needs(config: Mapping[str, Any], method: str) -> tuple[str, ...]:
    """The side artifacts a configured method needs (the registry's declaration)."""
    return spec_of(method).needs_for(config["methods"][method])


def uses_calibration(config: Mapping[str, Any]) -> bool:
    """Whether some method needs the datamodels' calibration (then the calibration set's oracles
    are trained)."""
    return any("calibration" in needs(config, method) for method in config["methods"])


def experiments(config: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Experiment name -> its config: the main experiment, then each entry of ``experiments``,
    which is the main config with the entry's top-level sections replacing the main's (so an
    entry names only what differs: its data, model, forget sets or methods). ``{experiment}`` in
    an entry's name stands for the main experiment's name (``{experiment}_linear``), so that
    renaming the main experiment renames its companions."""
    main = {key: value for key, value in config.items() if key != "experiments"}
    main_name = main.get("experiment", "default")
    found = {main_name: _copy(main)}
    for template, sections in (config.get("experiments") or {}).items():
        name = str(template).replace("{experiment}", main_name)
        if not isinstance(sections, Mapping):
            raise UserError(f"config: experiments.{name}: must be a mapping of the sections that differ")
        if name in found:
            raise UserError(f"config: experiments.{name}: an experiment of that name already runs")
        found[name] = _copy({**main, **sections, "experiment": name})
    return found


def validated_experiments(config: Mapping[str, Any], schema: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Every experiment of `config` (:func:`experiments`), each validated with its defaults filled
    in (:func:`validate_config`); an error in an entry of ``experiments:`` names its place there,
    ``config: experiments.KEY.originals.models: ...`` (KEY as the entry is written)."""
    found = experiments(config)
    keys = [None, *(config.get("experiments") or {})]
    for key, experiment in zip(keys, found.values()):
        try:
            validate_config(experiment, schema)
        except UserError as error:
            if key is None:
                raise
            raise UserError(_in_entry(str(error), f"experiments.{key}")) from None
    return found


def _in_entry(message: str, entry: str) -> str:
    """A config error's path moved under an entry: ``config: a.b: m`` -> ``config: ENTRY.a.b: m``."""
    found = re.match(r"config: (\(top level\)|[^:\s]+): (.*)$", message, flags=re.S)
    if found is None:
        return f"config: {entry}: {message.removeprefix('config: ')}"
    where = entry if found.group(1) == "(top level)" else f"{entry}.{found.group(1)}"
    return f"config: {where}: {found.group(2)}"


def oracle_training(config: Mapping[str, Any]) -> dict[str, Any]:
    """The oracles' training recipe: the shared recipe with the oracles' overrides applied."""
    return {**config["training"], **config["oracles"].get("training", {})}


def poison_set(config: Mapping[str, Any]) -> str | None:
    """Name of the experiment's poison forget set, whose labels every model trains on."""
    return next((name for name, spec in config["forget_sets"].items() if spec["kind"] == "poison"), None)
