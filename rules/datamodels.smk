# Datamodels (DMM paper, Section 4): the expensive, cached stage behind DM-DIRECT and Datamodel
# Matching. Many models train on random subsets of the training set (chunks; a complete chunk
# is never retrained), then datamodels.fit_jobs jobs each regress a chunk of the points' margins
# and logits on the subset masks and score the fit on held-out subset models; one job gathers
# them. Only the outputs and points the configured methods read are fitted. Built only when a
# method needs it.


rule train_subset_models:
    """Train one chunk of the subset models, each on a random fraction of the training set."""
    input:
        data=DATA,
        labels=poisoned_labels(),
    output:
        path_of("train_subset_models"),
    log:
        f"{RESULTS}/logs/subset_models/chunk_{{chunk}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/subset_models/chunk_{{chunk}}.tsv"
    params:
        **train_params(
            config["training"],
            chunk_first_id,
            chunk_size,
            role="subset",
            subset_fraction=config["subset_models"]["fraction"],
            outputs_only=not config["subset_models"]["store_weights"],
        ),
    threads: threads_of("train_subset_models")
    priority: priority_of("train_subset_models")
    resources:
        mem_mb=mem_mb_of("train_subset_models"),
        runtime=runtime_of("train_subset_models"),
        gpu=gpu_of("train_subset_models"),
    conda:
        ENV
    shell:
        TRAIN_SHELL


rule fit_datamodels:
    """Fit the margin and/or per-logit datamodels (lasso, ridge or trak) of one chunk of the points
    (each target is its own regression) and score them on held-out subset models (LDS, R^2)."""
    input:
        unpack(estimator_checkpoints),
        data=DATA,
        subset_models=expand(path_of("train_subset_models"), chunk=chunk_ids("subset_models")),
        labels=poisoned_labels(),
    output:
        path_of("fit_datamodels", jobs=FIT_JOBS),
    log:
        f"{RESULTS}/logs/fit_datamodels/chunk_{{part}}_of_{FIT_JOBS}.log",
    benchmark:
        f"{RESULTS}/benchmarks/fit_datamodels/chunk_{{part}}_of_{FIT_JOBS}.tsv"
    wildcard_constraints:
        part=r"\d+",
    params:
        spec=as_json(datamodel_spec(config)),
        labels=labels_flag,
        originals=lambda wildcards, input: f"--originals {input.originals}" if "originals" in input.keys() else "",
        chunks=FIT_JOBS,
        seed=config["seed"],
        device=config["device"],
        progress=PROGRESS,
        version=version_of("fit_datamodels"),
    threads: threads_of("fit_datamodels")
    priority: priority_of("fit_datamodels")
    resources:
        mem_mb=mem_mb_of("fit_datamodels"),
        runtime=runtime_of("fit_datamodels"),
        gpu=gpu_of("fit_datamodels"),
    conda:
        ENV
    shell:
        "python -m unlearnflow fit-datamodels --stage-version {params.version} --data {input.data} {params.labels} "
        "--subset-models {input.subset_models} {params.originals} --spec {params.spec:q} --seed {params.seed} "
        "--chunk {wildcards.part} --chunks {params.chunks} --device {params.device} --threads {threads} "
        "{params.progress} --out {output} > {log} 2>&1"


rule gather_datamodels:
    """The datamodels of every fitted point, from the chunks of the fit, in one artifact."""
    input:
        expand(path_of("fit_datamodels", jobs=FIT_JOBS), part=range(FIT_JOBS)),
    output:
        path_of("gather_datamodels"),
    log:
        f"{RESULTS}/logs/gather_datamodels.log",
    benchmark:
        f"{RESULTS}/benchmarks/gather_datamodels.tsv"
    params:
        version=version_of("gather_datamodels"),
    threads: threads_of("gather_datamodels")
    priority: priority_of("gather_datamodels")
    resources:
        mem_mb=mem_mb_of("gather_datamodels"),
        runtime=runtime_of("gather_datamodels"),
    conda:
        ENV
    shell:
        "python -m unlearnflow gather-datamodels --stage-version {params.version} --parts {input} --out {output} "
        "> {log} 2>&1"


rule calibrate_datamodels:
    """Fit the datamodels' global scale on a held-out forget set's oracles (Appendix G.2)."""
    input:
        datamodels=path_of("gather_datamodels"),
        forget_set=path_of("forget_sets", forget_set=CALIBRATION_SET),
        originals=path_of("gather_originals", "bank"),
        oracles=path_of("gather_oracles", "bank", forget_set=CALIBRATION_SET),
        labels=poisoned_labels(),
    output:
        path_of("calibrate_datamodels"),
    log:
        f"{RESULTS}/logs/calibrate_datamodels.log",
    benchmark:
        f"{RESULTS}/benchmarks/calibrate_datamodels.tsv"
    params:
        labels=labels_flag,
        version=version_of("calibrate_datamodels"),
    threads: threads_of("calibrate_datamodels")
    priority: priority_of("calibrate_datamodels")
    resources:
        mem_mb=mem_mb_of("calibrate_datamodels"),
        runtime=runtime_of("calibrate_datamodels"),
    conda:
        ENV
    shell:
        "python -m unlearnflow calibrate-datamodels --stage-version {params.version} --datamodels {input.datamodels} "
        "--forget-set {input.forget_set} --originals {input.originals} --oracles {input.oracles} {params.labels} "
        "--out {output} "
        "> {log} 2>&1"
