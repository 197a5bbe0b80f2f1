# Forget sets, and the forget samples a source-free method reads instead of the data set.


rule forget_sets:
    """Build one named forget set (indices per request, and the experiment's training labels)."""
    input:
        data=DATA,
        index_file=index_file,
    output:
        path_of("forget_sets"),
    log:
        f"{RESULTS}/logs/forget_sets/{{forget_set}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/forget_sets/{{forget_set}}.tsv"
    wildcard_constraints:
        forget_set=FORGET_SET_NAME,
    params:
        spec=lambda wildcards: as_json(forget_set_spec(wildcards.forget_set)),
        seed=config["seed"],
        version=version_of("forget_sets"),
    threads: threads_of("forget_sets")
    resources:
        mem_mb=mem_mb_of("forget_sets"),
        runtime=runtime_of("forget_sets"),
    conda:
        ENV
    shell:
        "python -m unlearnflow forget-set --stage-version {params.version} --name {wildcards.forget_set} "
        "--spec {params.spec:q} --data {input.data} --seed {params.seed} --out {output} > {log} 2>&1"


rule forget_samples:
    """The forget samples (inputs, labels, request of each) and the validation split: all that a
    source-free method's unlearn job may read. No retain data, no training indices."""
    input:
        data=DATA,
        forget_set=path_of("forget_sets"),
        labels=poisoned_labels(),
    output:
        path_of("forget_samples"),
    log:
        f"{RESULTS}/logs/forget_samples/{{forget_set}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/forget_samples/{{forget_set}}.tsv"
    wildcard_constraints:
        forget_set=FORGET_SET_NAME,
    params:
        labels=labels_flag,
        version=version_of("forget_samples"),
    threads: threads_of("forget_samples")
    resources:
        mem_mb=mem_mb_of("forget_samples"),
        runtime=runtime_of("forget_samples"),
    conda:
        ENV
    shell:
        "python -m unlearnflow forget-samples --stage-version {params.version} --data {input.data} "
        "--forget-set {input.forget_set} {params.labels} --out {output} > {log} 2>&1"
