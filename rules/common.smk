# Config validation and helpers shared by the rules. Validation runs before any rule is
# defined, so an unknown key or a wrong type stops the workflow with one line.

import json
import os
import sys

from unlearnflow.config import (
    CALIBRATION_SET,
    load_schema,
    oracle_training,
    poison_set,
    uses_calibration,
    validate_config,
)
from unlearnflow.errors import UserError
from unlearnflow.methods import DATAMODEL_METHODS
from unlearnflow.store import STAGE_VERSIONS

try:
    validate_config(config, load_schema(workflow.source_path("../workflow/schemas/config.schema.yaml")))
except UserError as error:
    sys.exit(f"unlearnflow: error: {error}")

RESULTS = f"results/{config['experiment']}"
FORGET_SETS = list(config["forget_sets"])
POISON_SET = poison_set(config)
PROGRESS = "--progress" if config["progress"] else ""
# A held-out forget set whose oracles calibrate the datamodels' scale (DMM paper, Appendix G.2),
# built when some configuration asks for calibrated targets.
CALIBRATED = uses_calibration(config)
# Reference methods, always evaluated so that every table shows its bounds.
REFERENCE_METHODS = ["do_nothing", "retrain"]
METHODS = REFERENCE_METHODS + list(config["methods"])


def as_json(value):
    """A config slice as compact JSON for a rule's shell command (quote it with :q)."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def chunk_ids(bank):
    """Chunks of config[bank]['models'] models, chunk_size per job, named by their model-id
    range ("0-24"), so that growing a bank adds chunks and keeps the complete ones."""
    size, total = config[bank]["chunk_size"], config[bank]["models"]
    return [f"{first}-{min(first + size, total) - 1}" for first in range(0, total, size)]


def chunk_models(chunk):
    """(first model id, number of models) of a chunk named "first-last"."""
    first, last = map(int, chunk.split("-"))
    return first, last - first + 1


def labels_flag(wildcards, input):
    """--labels-from the poison set, for rules whose input has `labels` (poisoned_labels())."""
    return f"--labels-from {input.labels}" if input.labels else ""


def forget_set_spec(name):
    """The config of a named forget set; the datamodels' held-out calibration set is one too."""
    if name == CALIBRATION_SET:
        return config["datamodels"]["calibration_set"]
    return config["forget_sets"][name]


def poisoned_labels():
    """The poison forget set whose flipped labels every model of the experiment trains on."""
    return [f"{RESULTS}/forget_sets/{POISON_SET}.h5"] if POISON_SET else []


def unlearned_bank(wildcards):
    """The bank a method produced for a forget set (do_nothing: the original models)."""
    if wildcards.method == "do_nothing":
        return f"{RESULTS}/originals.h5"
    return f"{RESULTS}/unlearned/{wildcards.method}/{wildcards.forget_set}.h5"


def method_spec(method):
    """A method's config slice (hyper-parameter overrides, grid, targets)."""
    return config["methods"].get(method, {})


def target_banks(wildcards):
    """Artifacts a method's targets come from: the forget set's oracles (their mean) or the
    independent retrained bank (paired per model) for oracle matching with true targets, or
    the experiment's datamodels (DM-DIRECT, DMM)."""
    if method_spec(wildcards.method).get("targets") == "oracle":
        return {"oracles": f"{RESULTS}/oracles/{wildcards.forget_set}.h5"}
    if method_spec(wildcards.method).get("targets") == "retrain":
        return {"paired_targets": f"{RESULTS}/unlearned/retrain/{wildcards.forget_set}.h5"}
    if wildcards.method in DATAMODEL_METHODS:
        return datamodel_artifacts(wildcards)
    return {}


def trak_checkpoints(wildcards):
    """The trak estimator takes its checkpoints from the original models."""
    return {"originals": f"{RESULTS}/originals.h5"} if config["datamodels"]["estimator"] == "trak" else {}


def datamodel_artifacts(wildcards):
    """The datamodels (and their calibration) when a method of the experiment uses them."""
    if not DATAMODEL_METHODS & set(config["methods"]):
        return {}
    calibration = {"calibration": f"{RESULTS}/datamodel_calibration.h5"} if CALIBRATED else {}
    return {"datamodels": f"{RESULTS}/datamodels.h5", **calibration}


def artifact_flags(wildcards, input):
    """Options naming the optional artifacts of target_banks / datamodel_artifacts in a rule's
    input (--oracles, --paired-targets, --datamodels, --calibration)."""
    names = ("oracles", "paired_targets", "datamodels", "calibration")
    return " ".join(f"--{name.replace('_', '-')} {input[name]}" for name in names if name in input.keys())


EVALUATIONS = expand(f"{RESULTS}/evaluation/{{method}}/{{forget_set}}", method=METHODS, forget_set=FORGET_SETS)


def train_params(training, first_id, n_models, role="original", subset_fraction=None):
    """Params of every rule that trains a bank with `python -m unlearnflow train`.

    `first_id` and `n_models` are numbers or functions of the wildcards; the forget set to
    retrain without and the poisoned labels come from the rule's input when it has them.
    """

    def flags(wildcards, input):
        parts = [f"--role {role}"]
        if "forget_set" in input.keys():
            parts.append(f"--forget-set {input.forget_set}")
        if subset_fraction:
            parts.append(f"--subset-fraction {subset_fraction}")
        if input.labels:
            parts.append(f"--labels-from {input.labels}")
        return " ".join(parts)

    return dict(model=as_json(config["model"]), training=as_json(training), seed=config["seed"],
                first_id=first_id, n_models=n_models, flags=flags, device=config["device"],
                progress=PROGRESS, version=STAGE_VERSIONS["model_bank"])


def chunk_first_id(wildcards):
    return chunk_models(wildcards.chunk)[0]


def chunk_size(wildcards):
    return chunk_models(wildcards.chunk)[1]
