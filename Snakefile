# unlearnflow: machine unlearning of classifiers as one workflow.
# Run `snakemake --cores 2` for the embedded default (sklearn digits), or add
# `--configfile config/fashion-mnist.yaml` for a preset. See README.md.

import sys

from snakemake.utils import min_version

from unlearnflow.config import load_config_file, load_schema, validated_experiments
from unlearnflow.errors import or_exit, report_failed_jobs
from unlearnflow.ops.requests import request_receipts
from unlearnflow.ops.reruns import forget_rebuilt_outputs, outputs_to_redo, record_failed_outputs

min_version("9.27")


# config.yaml is the embedded default; a --configfile preset replaces it instead of merging
# into it (so a preset's forget sets are the only ones).
# A YAML syntax error in a --configfile is reported by Snakemake before this file runs, without
# its place; `python -m unlearnflow check-config FILE` names the line and column (README).
if not workflow.config_settings.configfiles:
    or_exit(load_config_file, "config.yaml")

    configfile: "config.yaml"


# Every experiment of the config (the main one, then those under `experiments:`) runs the same
# rules as a module of its own; the main experiment's rules keep their names, another's are
# prefixed with its name. Each is validated here first, so that an error names its place in the
# config file (experiments.NAME.KEY for an entry).
SCHEMA = load_schema(workflow.source_path("workflow/schemas/config.schema.yaml"))
EXPERIMENTS = or_exit(validated_experiments, config, SCHEMA)
REPORT_RULES = []
for index, (experiment_name, experiment_config) in enumerate(EXPERIMENTS.items()):
    rule_prefix = f"{experiment_name}_" if index else ""

    module:
        name:
            experiment_name
        snakefile:
            "rules/experiment.smk"
        config:
            experiment_config

    use rule * from experiment_name as rule_prefix*

    REPORT_RULES.append(f"{rule_prefix}report")


# A failed job's one-line cause is in its log; print it where the user looks. Its outputs are
# recorded, so that the next run redoes it and what is downstream of it (unlearnflow.ops.reruns).
onerror:
    report_failed_jobs(log)
    record_failed_outputs(log, EXPERIMENTS)


onsuccess:
    forget_rebuilt_outputs(EXPERIMENTS)


REDO, NOT_REDONE = outputs_to_redo(EXPERIMENTS)
for paths, what in ((REDO, "this run rebuilds them"),
                    (NOT_REDONE, "the config changed since, so this run rebuilds only what the change asks for")):
    if paths:
        shown = ", ".join(paths[:3]) + (f" and {len(paths) - 3} more" if len(paths) > 3 else "")
        print(f"unlearnflow: {len(paths)} output(s) of jobs that failed in an earlier run are missing ({shown}); "
              f"{what}", file=sys.stderr)


rule all:
    """Every output of each experiment's report (a forget set added to a finished run adds some)
    and the missing outputs of jobs that failed before."""
    default_target: True
    input:
        [getattr(rules, name).output for name in REPORT_RULES],
        REDO,


rule requests:
    """Every deletion request under requests/{experiment}/, in ledger order (their receipts)."""
    input:
        lambda wildcards: or_exit(request_receipts, EXPERIMENTS),
