# One experiment: a data set, a model family, its forget sets and methods, every output under
# results/{experiment}. The Snakefile runs one module of this file per experiment of the config.


include: "common.smk"


# A forget set's name; NAME@R is the first R requests of a sequence (an incremental set).
FORGET_SET_NAME = r"[A-Za-z0-9_.-]+"


wildcard_constraints:
    forget_set=FORGET_SET_NAME + r"(@\d+)?",
    chunk=r"\d+-\d+",
    method="|".join(METHODS),


include: "data.smk"
include: "sourcefree.smk"
include: "forget_sets.smk"
include: "train.smk"
include: "datamodels.smk"
include: "pgu.smk"
include: "unlearn.smk"
include: "evaluate.smk"
include: "theory.smk"
include: "requests.smk"
