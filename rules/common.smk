# Config validation and helpers shared by the rules. Validation runs before any rule is
# defined, so an unknown key or a wrong type stops the workflow with one line.

import json
import os
import sys

from unlearnflow.config import load_schema, oracle_training, poison_set, validate_config
from unlearnflow.errors import UserError
from unlearnflow.store import STAGE_VERSIONS

try:
    validate_config(config, load_schema(workflow.source_path("../workflow/schemas/config.schema.yaml")))
except UserError as error:
    sys.exit(f"unlearnflow: error: {error}")

RESULTS = f"results/{config['experiment']}"
FORGET_SETS = list(config["forget_sets"])
POISON_SET = poison_set(config)
PROGRESS = "--progress" if config["progress"] else ""
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
    """Banks a method's targets come from (oracle matching with true oracle targets)."""
    if method_spec(wildcards.method).get("targets") == "oracle":
        return {"oracles": f"{RESULTS}/oracles/{wildcards.forget_set}.h5"}
    return {}


EVALUATIONS = expand(f"{RESULTS}/evaluation/{{method}}/{{forget_set}}", method=METHODS, forget_set=FORGET_SETS)
