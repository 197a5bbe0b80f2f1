# unlearnflow: machine unlearning of classifiers as one workflow.
# Run `snakemake --cores 2` for the embedded default (sklearn digits), or add
# `--configfile config/fashion-mnist.yaml` for a preset. See README.md.

import sys

from snakemake.utils import min_version

from unlearnflow.config import load_config_file
from unlearnflow.errors import UserError

min_version("9.0")


# config.yaml is the embedded default; a --configfile preset replaces it instead of merging
# into it (so a preset's forget sets are the only ones).
# A YAML syntax error in a --configfile is reported by Snakemake before this file runs, without
# its place; `python -m unlearnflow check-config FILE` names the line and column (README).
if not workflow.config_settings.configfiles:
    try:
        load_config_file("config.yaml")
    except UserError as error:
        sys.exit(f"unlearnflow: error: {error}")

    configfile: "config.yaml"


include: "rules/common.smk"


# A failed job's one-line cause is in its log; print it where the user looks.
onerror:
    report_failed_jobs(log)



# A forget set's name; NAME@R is the first R requests of a sequence (an incremental set).
FORGET_SET_NAME = r"[A-Za-z0-9_.-]+"


wildcard_constraints:
    forget_set=FORGET_SET_NAME + r"(@\d+)?",
    chunk=r"\d+-\d+",
    method="|".join(METHODS),


include: "rules/data.smk"
include: "rules/forget_sets.smk"
include: "rules/train.smk"
include: "rules/datamodels.smk"
include: "rules/unlearn.smk"
include: "rules/evaluate.smk"
include: "rules/theory.smk"


rule all:
    default_target: True
    input:
        rules.report.output,
