"""The stage table: every rule of the workflow, what it writes and what it needs, in one place.

Each :class:`Stage` says which files its rule writes under ``results/{experiment}/`` (path
templates whose ``{names}`` are the rule's wildcards), the artifact kind they hold (whose version
in :data:`STAGE_VERSIONS` the rule passes to the library, so that bumping it reruns the stage and
everything made from it), the resources a job gets unless the config's ``resources`` section says
otherwise, and whether it runs models (and asks for a GPU on a ``device: cuda`` experiment).

The rules take their output paths, stage versions and resources from here
(``rules/common.smk``); the store's rebuild advice (:func:`stage_of_path`), the config checks of
``resources`` and ``estimate`` (GPUs, threads) read the same entries. Adding a cached artifact is one entry here,
its rule, and the code that writes and reads it (README, "Adding a cached artifact"). This module
imports nothing heavy: the workflow reads it when it is parsed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Mapping

#: Semantic version of each artifact kind a stage writes. Bump one when the meaning of what the
#: stage writes changes (a different split, a fixed bug in training); keep it on refactors.
STAGE_VERSIONS: dict[str, int] = {
    "dataset": 1,
    "forget_set": 1,
    "forget_samples": 1,
    "model_bank": 1,
    "evaluation": 7,
    "unlearned": 4,
    "datamodels": 2,
    "datamodels_part": 1,
    "datamodel_calibration": 1,
    "ulira": 2,
    "report": 3,
    "theory": 1,
    "ledger_state": 1,
    "features": 1,
    "deletion_request": 2,
    "gradient_space": 1,
}

#: What a job gets unless its stage or the config's ``resources`` says otherwise: threads, memory
#: (MB), run time (minutes) and GPUs.
DEFAULT_RESOURCES: dict[str, int] = {"threads": 1, "mem_mb": 4000, "runtime": 120, "gpu": 0}


@dataclass(frozen=True)
class Stage:
    """One rule (module docstring). `outputs` maps an output's name in the rule (``""`` for a
    rule's only output) to its path template under ``results/{experiment}/``; `kind` is the artifact
    kind whose stage version the rule passes (that of what it writes); `also_writes` are
    files its job writes besides its outputs (a ledger). The estimate's work model: a job's work
    (what its seconds are proportional to) is the product of its `work` factors, what it writes
    that of its `size` factors (:data:`unlearnflow.ops.estimate.FACTORS`; none: a constant), and
    `records_seconds` says its outputs record their compute time (training banks, U-LiRA).
    `priority` is the rule's Snakemake priority: among the jobs ready to run, those of higher
    priority start first (the datamodels' chain, the longest path of a run that fits them)."""

    outputs: Mapping[str, str]
    kind: str
    resources: Mapping[str, int] = field(default_factory=dict)
    gpu: bool = False
    work: tuple[str, ...] = ()
    size: tuple[str, ...] = ()
    records_seconds: bool = False
    also_writes: tuple[str, ...] = ()
    priority: int = 0


#: The priority of the datamodels' chain: subset models, then the fit, are the longest path of a
#: run that fits datamodels (the fit starts only when every subset model is trained), so its jobs
#: go before the others that are ready (measured at 4,000 points: bench/RESULTS.md, "default_4000").
CRITICAL_PATH = 10

#: rule -> stage, in the order the workflow runs them; a path matches the first stage it fits
#: (``unlearned/retrain/...`` is retrain's before ``unlearned/{method}/...`` is unlearn's).
STAGES: dict[str, Stage] = {
    "prepare_data": Stage({"": "data.h5"}, "dataset", {"runtime": 30}, work=("n_points", "input_size"),
                          size=("n_points", "input_size")),
    "extract_features": Stage({"": "features.h5"}, "features", {"runtime": 30}),
    "forget_sets": Stage({"": "forget_sets/{forget_set}.h5"}, "forget_set", {"runtime": 30},
                         work=("n_points", "input_size")),
    "forget_samples": Stage({"": "forget_samples/{forget_set}.h5"}, "forget_samples", {"runtime": 30},
                            work=("n_points", "input_size"), size=("forget_samples_floats",)),
    "request_samples": Stage({"": "request_samples/{request}.h5"}, "forget_samples", {"runtime": 10}),
    "train_originals": Stage({"": "originals/chunk_{chunk}.h5"}, "model_bank", gpu=True,
                             work=("chunk_models", "epochs", "n_train", "macs"), size=("chunk_models", "bank_floats"),
                             records_seconds=True),
    "gather_originals": Stage({"bank": "originals.h5", "models": "original_models.h5"}, "model_bank",
                              {"runtime": 10}, work=("original_models", "bank_outputs"),
                              size=("original_models", "bank_and_weights")),
    "train_oracles": Stage({"": "oracles/{forget_set}/chunk_{chunk}.h5"}, "model_bank", gpu=True,
                           work=("chunk_models", "oracle_epochs", "n_train", "macs"),
                           size=("chunk_models", "bank_floats"), records_seconds=True),
    "gather_oracles": Stage({"bank": "oracles/{forget_set}.h5"}, "model_bank", {"runtime": 10},
                            work=("oracle_models", "bank_outputs"), size=("oracle_models", "bank_floats")),
    "retrain": Stage({"": "unlearned/retrain/{forget_set}.h5"}, "model_bank", gpu=True,
                     work=("oracle_models", "oracle_epochs", "n_train", "macs"), size=("oracle_models", "bank_floats"),
                     records_seconds=True),
    "gradient_space": Stage({"": "gradient_space.h5"}, "gradient_space", {"runtime": 60}, gpu=True,
                            work=("original_models", "n_train", "macs")),
    "unlearn": Stage({"": "unlearned/{method}/{forget_set}.h5"}, "unlearned", gpu=True,
                     work=("configurations", "original_models", "request_points", "macs"),
                     size=("configurations", "original_models", "unlearned_floats")),
    # one job judges every method of a forget set
    "evaluate": Stage({"h5": "evaluation/{method}/{forget_set}.h5", "csv": "evaluation/{method}/{forget_set}.csv"},
                      "evaluation", work=("judged_models", "n_points", "evaluated_configurations"),
                      size=("n_points", "evaluated_configurations")),
    "ulira_base_models": Stage({"": "ulira/base_models.h5"}, "model_bank", gpu=True,
                               work=("ulira_base_models", "epochs", "half", "n_train", "macs"),
                               size=("ulira_base_models", "bank_floats"), records_seconds=True),
    "ulira": Stage({"": "ulira/{method}.csv"}, "ulira", gpu=True,
                   work=("ulira_base_models", "ulira_forget_sets", "macs", "n_train", "shadow_epochs"),
                   records_seconds=True),
    "train_subset_models": Stage({"": "subset_models/chunk_{chunk}.h5"}, "model_bank", gpu=True,
                                 work=("chunk_models", "epochs", "subset_fraction", "n_train", "macs"),
                                 size=("chunk_models", "subset_floats"), records_seconds=True,
                                 priority=CRITICAL_PATH),
    # a part of a scattered fit is a datamodels_part artifact, checked against the datamodels version
    "fit_datamodels": Stage({"": "datamodels/chunk_{part}_of_{jobs}.h5"}, "datamodels", {"mem_mb": 8000},
                            gpu=True, work=("subset_models", "n_train", "datamodel_targets", "per_job"),
                            size=("n_train", "datamodel_targets", "per_job"), priority=CRITICAL_PATH),
    "gather_datamodels": Stage({"": "datamodels.h5"}, "datamodels", {"mem_mb": 8000, "runtime": 30},
                               size=("n_train", "datamodel_targets", "per_job"), priority=CRITICAL_PATH),
    "calibrate_datamodels": Stage({"": "datamodel_calibration.h5"}, "datamodel_calibration", {"runtime": 10},
                                  work=("n_train", "datamodel_targets"), priority=CRITICAL_PATH),
    "report": Stage({"table": "report/summary.md", "csv": "report/summary.csv", "klom": "report/klom_vs_compute.png",
                     "entropy": "report/entropy_{forget_set}.png", "roc": "report/mia_roc_{forget_set}.png"},
                    "report", {"mem_mb": 2000, "runtime": 10, "threads": 2}, work=("evaluations", "reported_methods")),
    "theory_panel": Stage({"": "theory/{panel}.png"}, "theory", {"mem_mb": 2000, "runtime": 10}),
    # the ledger's own files are never a rule's outputs, so that no rerun deletes a processed request
    "deletion_request": Stage({"receipt": "ledger/model_{model}/{request}.receipt.json"}, "deletion_request",
                              {"runtime": 30}, gpu=True,
                              also_writes=("ledger/model_{model}/ledger.json", "ledger/model_{model}/{request}.json",
                                           "ledger/model_{model}/{request}.h5",
                                           "ledger/model_{model}/{request}.state.h5")),
}


def stage(rule: str) -> Stage:
    """The stage of `rule` (a KeyError names the known rules)."""
    if rule not in STAGES:
        raise KeyError(f"no stage {rule!r} in the stage table (rules: {', '.join(STAGES)})")
    return STAGES[rule]


def output_template(rule: str, output: str = "", **fixed: str) -> str:
    """The path under ``results/{experiment}/`` of `rule`'s `output`, with the wildcards in
    `fixed` filled in and the others left as ``{name}``."""
    return re.sub(r"\{(\w+)\}", lambda match: str(fixed.get(match.group(1), match.group(0))),
                  stage(rule).outputs[output])


def version_of(rule: str) -> int:
    """The stage version `rule` passes to the library (that of the artifact kind it writes)."""
    return STAGE_VERSIONS[stage(rule).kind]


def resources_of(rule: str, given: Mapping[str, Mapping[str, int]], cuda: bool) -> dict[str, int]:
    """Threads, mem_mb, runtime and gpu of `rule`: the defaults, its stage's, one GPU when it runs
    models on a CUDA experiment, then the config's ``resources`` (``default`` first, then the rule's)."""
    entry = stage(rule)
    gpu = {"gpu": 1} if cuda and entry.gpu else {}
    return {**DEFAULT_RESOURCES, **entry.resources, **gpu, **given.get("default", {}), **given.get(rule, {})}


def _pattern(template: str, capture: bool = False) -> str:
    """A regular expression of the paths a template names (a wildcard is one path component or
    part of one; a group each with `capture`)."""
    wildcard = "([^/]+)" if capture else "[^/]+"
    return wildcard.join(re.escape(part) for part in re.split(r"\{\w+\}", template))


def output_wildcards(relative: str) -> tuple[str, dict[str, str]] | None:
    """(rule, wildcards) of a path under ``results/<experiment>/`` that is a rule's output, or
    None when it is none (the first stage in table order that fits)."""
    for rule, entry in STAGES.items():
        for template in entry.outputs.values():
            names = re.findall(r"\{(\w+)\}", template)
            found = re.fullmatch(_pattern(template, capture=True), relative)
            if found:
                return rule, dict(zip(names, found.groups()))
    return None


def stage_of_path(relative: str) -> tuple[str, bool] | None:
    """(rule, whether the file is one of its outputs) of a path under ``results/<experiment>/``,
    or None when no stage writes it (the first stage in table order that fits)."""
    for rule, entry in STAGES.items():
        for templates, declared in ((entry.outputs.values(), True), (entry.also_writes, False)):
            if any(re.fullmatch(_pattern(template), relative) for template in templates):
                return rule, declared
    return None


def rule_of_kind(kind: str) -> str | None:
    """The one rule that writes artifacts of `kind`, or None when several or none do."""
    writers = [rule for rule, entry in STAGES.items() if entry.kind == kind]
    return writers[0] if len(writers) == 1 else None
