# unlearnflow: machine unlearning of classifiers as one workflow.
# Run `snakemake --cores 2` for the embedded default (sklearn digits), or add
# `--configfile config/fashion-mnist.yaml` for a preset. See README.md.

from snakemake.utils import min_version

from unlearnflow.config import load_config_file, load_schema, validated_experiments
from unlearnflow.errors import or_exit, report_failed_jobs
from unlearnflow.ops.requests import request_receipts

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


# A failed job's one-line cause is in its log; print it where the user looks.
onerror:
    report_failed_jobs(log)


rule all:
    default_target: True
    input:
        [f"results/{name}/report/summary.md" for name in EXPERIMENTS],


rule requests:
    """Every deletion request under requests/{experiment}/, in ledger order (their receipts)."""
    input:
        lambda wildcards: or_exit(request_receipts, EXPERIMENTS),
