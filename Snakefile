# unlearnflow: machine unlearning of classifiers as one workflow.
# Run `snakemake --cores 2` for the embedded default (sklearn digits), or add
# `--configfile config/fashion-mnist.yaml` for a preset. See README.md.

from snakemake.utils import min_version

min_version("9.0")


# config.yaml is the embedded default; a --configfile preset replaces it instead of merging
# into it (so a preset's forget sets are the only ones).
if not workflow.config_settings.configfiles:

    configfile: "config.yaml"


include: "rules/common.smk"


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
include: "rules/pgu.smk"
include: "rules/unlearn.smk"
include: "rules/evaluate.smk"
include: "rules/theory.smk"


rule all:
    default_target: True
    input:
        rules.report.output,
