# Config validation and helpers shared by the rules. Validation runs before any rule is
# defined, so an unknown key or a wrong type stops the workflow with one line. What a method
# needs comes from the method registry (unlearnflow.registry), never from its name.

import json
import os
import sys

from unlearnflow.config import (
    CALIBRATION_SET,
    datamodel_fit_jobs,
    datamodel_spec,
    is_linear_experiment,
    load_schema,
    oracle_training,
    poison_set,
    rule_resources,
    uses_calibration,
    validate_config,
)
from unlearnflow.core.forget_sets import split_step_name, step_name
from unlearnflow.core.stage_table import STAGE_VERSIONS, output_template, stage, version_of
from unlearnflow.core.store import check_writable_directory
from unlearnflow.dmm.estimators import estimator_of
from unlearnflow.errors import UserError, report_failed_jobs
from unlearnflow.registry import ARTIFACTS, REFERENCES, spec_of

try:
    validate_config(config, load_schema(workflow.source_path("../workflow/schemas/config.schema.yaml")))
except UserError as error:
    sys.exit(f"unlearnflow: error: {error}")

RESULTS = f"results/{config['experiment']}"


def path_of(rule, output="", **fixed):
    """The path of `rule`'s `output` in this experiment (the stage table), the wildcards in `fixed`
    filled in and the others left for Snakemake."""
    return f"{RESULTS}/{output_template(rule, output, **fixed)}"


# A linear experiment (training optimizer lbfgs) trains on the features of rules/sourcefree.smk:
# features.h5 is then the data set of every stage after prepare_data and extract_features.
LINEAR = is_linear_experiment(config)
DATA = path_of("extract_features") if "features" in config else path_of("prepare_data")
try:  # the results and, when they exist already, the folders of the jobs' logs and benchmarks
    for directory in (RESULTS, f"{RESULTS}/logs", f"{RESULTS}/benchmarks"):
        check_writable_directory(directory)
except UserError as error:
    sys.exit(f"unlearnflow: error: {error}")
FORGET_SETS = list(config["forget_sets"])
POISON_SET = poison_set(config)
PROGRESS = "--progress" if config["progress"] else ""
# A held-out forget set whose oracles calibrate the datamodels' scale (DMM paper, Appendix G.2),
# built when some configuration asks for calibrated targets.
CALIBRATED = uses_calibration(config)
# Jobs the datamodel fit is scattered over (chunks of points), gathered into datamodels.h5.
FIT_JOBS = datamodel_fit_jobs(config)
# Reference methods, always evaluated so that every table shows its bounds.
METHODS = list(REFERENCES) + list(config["methods"])
# Rules run in the CUDA environment when the experiment runs on a GPU.
ENV = "../envs/gpu.yaml" if config["device"] == "cuda" else "../envs/cpu.yaml"


def evaluated_sets(name):
    """What is evaluated of a forget set: itself, or each prefix NAME@1..NAME@R of a sequence of
    R requests (each judged against oracles retrained without its first r requests)."""
    spec = config["forget_sets"][name]
    if spec["kind"] != "incremental":
        return [name]
    return [step_name(name, requests) for requests in range(1, spec["requests"] + 1)]


EVALUATED_SETS = [evaluated for name in FORGET_SETS for evaluated in evaluated_sets(name)]


def as_json(value):
    """A config slice as compact JSON for a rule's shell command (quote it with :q)."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def threads_of(rule):
    return rule_resources(config, rule)["threads"]


def mem_mb_of(rule):
    return rule_resources(config, rule)["mem_mb"]


def runtime_of(rule):
    return rule_resources(config, rule)["runtime"]


def gpu_of(rule):
    return rule_resources(config, rule)["gpu"]


def priority_of(rule):
    return stage(rule).priority


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
    return f"--labels-from {input.labels}" if "labels" in input.keys() and input.labels else ""


def forget_set_spec(name):
    """The config of a named forget set; the datamodels' held-out calibration set is one too."""
    if name == CALIBRATION_SET:
        return config["datamodels"]["calibration_set"]
    return config["forget_sets"][name]


def index_file(wildcards):
    """The file of indices of an ``indices`` forget set given by file (an input of its rule)."""
    return [forget_set_spec(wildcards.forget_set)["file"]] if "file" in forget_set_spec(wildcards.forget_set) else []


def forget_set_file(wildcards):
    """The forget set artifact behind a (possibly prefixed, NAME@R) forget set name."""
    return path_of("forget_sets", forget_set=split_step_name(wildcards.forget_set)[0])


def requests_flag(wildcards):
    """--requests R for the prefix NAME@R of a sequence."""
    requests = split_step_name(wildcards.forget_set)[1]
    return f"--requests {requests}" if requests else ""


def poisoned_labels():
    """The poison forget set whose flipped labels every model of the experiment trains on."""
    return [path_of("forget_sets", forget_set=POISON_SET)] if POISON_SET else []


def method_config(method):
    """A method's config slice (hyper-parameter overrides, grid, options)."""
    return config["methods"].get(method, {})


def needs(method):
    return spec_of(method).needs_for(method_config(method))


def side_paths(name, forget_set=None):
    """The paths of a side artifact: one, or per forget set one per evaluated prefix."""
    template = path_of(ARTIFACTS[name].stage, ARTIFACTS[name].output)
    if "{forget_set}" not in template:
        return [template]
    return [template.format(forget_set=evaluated) for evaluated in evaluated_sets(forget_set)]


def side_inputs(method, forget_set=None, shared_only=False, for_shadows=False):
    """Input entries side_<name> of the side artifacts a method declares in the registry."""
    chosen = {}
    for name in needs(method):
        per_forget_set = "{forget_set}" in ARTIFACTS[name].path
        if (shared_only and per_forget_set) or (for_shadows and not ARTIFACTS[name].for_shadows):
            continue
        chosen[f"side_{name}"] = side_paths(name, forget_set)
    return chosen


def side_flags(wildcards, input):
    """--side NAME=PATH for every side_<name> input, in step order."""
    return " ".join(f"--side {key[len('side_'):]}={path}" for key in input.keys() if key.startswith("side_")
                    for path in input[key])


def unlearn_inputs(wildcards):
    """A source-free method reads the forget samples and the models alone; any other method the
    data set, the forget set and the original bank (with the experiment's labels)."""
    if spec_of(wildcards.method).source_free:
        inputs = {"forget_samples": path_of("forget_samples", forget_set=wildcards.forget_set),
                  "originals": path_of("gather_originals", "models")}
    else:
        inputs = {"data": DATA, "forget_set": path_of("forget_sets", forget_set=wildcards.forget_set),
                  "originals": path_of("gather_originals", "bank"), "labels": poisoned_labels()}
    return {**inputs, **side_inputs(wildcards.method, wildcards.forget_set)}


def input_flags(*names):
    """A params function: --NAME PATH for each of `names` present in the rule's input."""

    def flags(wildcards, input):
        return " ".join(f"--{name.replace('_', '-')} {input[name]}" for name in names
                        if name in input.keys() and input[name])

    return flags


def unlearned_bank(method, forget_set):
    """The bank a method produced for a forget set (do_nothing: the original models; a method's
    result holds every request of a sequence)."""
    if method == "do_nothing":
        return path_of("gather_originals", "bank")
    if method == "retrain":
        return path_of("retrain", forget_set=forget_set)
    return path_of("unlearn", method=method, forget_set=split_step_name(forget_set)[0])


def evaluated_banks(wildcards):
    """The bank of every method on a forget set, in METHODS order."""
    return [unlearned_bank(method, wildcards.forget_set) for method in METHODS]


def per_method_flags(wildcards, input, output):
    """--method, --unlearned, --out-h5, --out-csv (and --ulira: linear experiments have none, their
    weight distance and certificates measure them instead) for each method, in METHODS order."""
    flags = []
    for index, method in enumerate(METHODS):
        flags += [f"--method {method} --unlearned {input.unlearned[index]} --out-h5 {output.h5[index]} "
                  f"--out-csv {output.csv[index]}"]
        flags += [f"--ulira {input.ulira[index]}"] if input.ulira else []
    return " ".join(flags)


def estimator_checkpoints(wildcards):
    """An estimator that reads checkpoints (trak) takes them from the original models."""
    return {"originals": path_of("gather_originals", "bank")} if estimator_of(config["datamodels"]["estimator"]).checkpoints else {}


def request_samples_file(request):
    """The samples a request's extraction job writes (temporary: removed once its request is processed)."""
    return path_of("request_samples", request=request)


def deletion_request_inputs(wildcards):
    """A deletion request's file, the original models, the result of the request it comes after
    (its ledger order), the shared side artifacts its method needs and what its method may read:
    a source-free method the request's extracted samples alone, any other the data set (with the
    experiment's labels)."""
    asked = DELETION_REQUESTS[wildcards.request]
    inputs = {"request": f"requests/{config['experiment']}/{wildcards.request}.yaml",
              "models": path_of("gather_originals", "models")}
    if spec_of(asked["method"]).source_free:
        inputs["samples"] = request_samples_file(wildcards.request)
    else:
        inputs.update(data=DATA, labels=poisoned_labels())
    if asked["after"] != ORIGINAL:
        inputs["previous"] = path_of("deletion_request", "receipt", model=asked["model"], request=asked["after"])
    needs = request_needs(asked)
    return {**inputs, **{f"side_{name}": side_paths(name) for name in needs}}


def report_side_inputs(wildcards):
    """The shared side artifacts of every configured method (the report describes them)."""
    return {key: paths for method in config["methods"]
            for key, paths in side_inputs(method, shared_only=True).items()}


def train_params(training, first_id, n_models, role="original", subset_fraction=None, per_pass=None,
                 outputs_only=False):
    """Params of every rule that trains a bank with `python -m unlearnflow train`.

    `first_id` and `n_models` are numbers or functions of the wildcards; a job of more models
    than `per_pass` (a bank's chunk size) trains them in passes of that many, one after the
    other, so that it needs no more device memory than a chunk job; the forget set to
    retrain without (a prefix NAME@R of a sequence: without its first R requests) and the
    poisoned labels come from the rule's input when it has them; `outputs_only` stores the
    models' masks and logits without their weights.
    """

    def flags(wildcards, input):
        parts = [f"--role {role}"]
        if "forget_set" in input.keys():
            parts += [f"--forget-set {input.forget_set}", requests_flag(wildcards)]
        if subset_fraction:
            parts.append(f"--subset-fraction {subset_fraction}")
        if outputs_only:
            parts.append("--outputs-only")
        if per_pass and not callable(n_models) and n_models > per_pass:
            parts.append(f"--models-per-pass {per_pass}")
        if input.labels:
            parts.append(f"--labels-from {input.labels}")
        if "state_dicts" in input.keys() and input.state_dicts:
            parts.append(f"--state-dicts {' '.join(input.state_dicts)}")
        return " ".join(part for part in parts if part)

    return dict(model=as_json(config["model"]), training=as_json(training), seed=config["seed"],
                first_id=first_id, n_models=n_models, flags=flags, device=config["device"],
                progress=PROGRESS, version=STAGE_VERSIONS["model_bank"])


def chunk_state_dicts(wildcards):
    """The files a chunk of imported originals loads (``originals.state_dicts``); none when trained."""
    first, count = chunk_models(wildcards.chunk)
    return config["originals"].get("state_dicts", [])[first : first + count]


def chunk_first_id(wildcards):
    return chunk_models(wildcards.chunk)[0]


def chunk_size(wildcards):
    return chunk_models(wildcards.chunk)[1]
