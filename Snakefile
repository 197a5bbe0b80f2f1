# unlearnflow: machine unlearning of classifiers as one workflow.
# Run `snakemake --cores 2` for the embedded default (sklearn digits), or add
# `--configfile config/fashion-mnist.yaml` for a preset. See README.md.

from snakemake.utils import min_version

from unlearnflow.config import experiments
from unlearnflow.ops.ledger import certificate_path, experiment_requests

min_version("9.27")


# config.yaml is the embedded default; a --configfile preset replaces it instead of merging
# into it (so a preset's forget sets are the only ones).
if not workflow.config_settings.configfiles:

    configfile: "config.yaml"


# Every experiment of the config (the main one, then those under `experiments:`) runs the same
# rules as a module of its own; the main experiment's rules keep their names, another's are
# prefixed with its name.
EXPERIMENTS = experiments(config)
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


rule all:
    default_target: True
    input:
        [f"results/{name}/report/summary.md" for name in EXPERIMENTS],


rule requests:
    """Every deletion request under requests/{experiment}/, in ledger order (certificates)."""
    input:
        [certificate_path(name, asked) for name in EXPERIMENTS for asked in experiment_requests(name).values()],
