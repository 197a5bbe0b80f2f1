rule prepare_data:
    """Load the configured data set, split train / validation / test and normalise (train stats)."""
    output:
        f"{RESULTS}/data.h5",
    log:
        f"{RESULTS}/logs/prepare_data.log",
    params:
        spec=as_json(config["data"]),
        version=STAGE_VERSIONS["dataset"],
    threads: 1
    resources:
        mem_mb=4000,
        runtime=30,
    conda:
        "../envs/cpu.yaml"
    shell:
        "python -m unlearnflow prepare-data --stage-version {params.version} --spec {params.spec:q} "
        "--out {output} > {log} 2>&1"
