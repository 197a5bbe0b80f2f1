rule prepare_data:
    """Load the configured data set, split train / validation / test and normalise (train stats)."""
    output:
        path_of("prepare_data"),
    log:
        f"{RESULTS}/logs/prepare_data.log",
    benchmark:
        f"{RESULTS}/benchmarks/prepare_data.tsv"
    params:
        spec=as_json(config["data"]),
        version=version_of("prepare_data"),
    threads: threads_of("prepare_data")
    resources:
        mem_mb=mem_mb_of("prepare_data"),
        runtime=runtime_of("prepare_data"),
    conda:
        ENV
    shell:
        "python -m unlearnflow prepare-data --stage-version {params.version} --spec {params.spec:q} "
        "--out {output} > {log} 2>&1"
