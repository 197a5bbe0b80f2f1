# Linear experiments (source-free certified unlearning): the features every linear model is
# trained on. A backbone turns every input of data.h5 into a feature row of norm <= 1
# (unlearnflow.sourcefree.features); features.h5 is then the experiment's data set (DATA in
# common.smk). The linear banks themselves come from train_originals / train_oracles / retrain
# with the lbfgs training recipe.


rule extract_features:
    """Every split through the configured backbone, rows L2-normalised (||x|| <= 1)."""
    input:
        data=path_of("prepare_data"),
        weights=lambda wildcards: [config["features"]["weights"]] if "weights" in config.get("features", {}) else [],
    output:
        path_of("extract_features"),
    log:
        f"{RESULTS}/logs/extract_features.log",
    benchmark:
        f"{RESULTS}/benchmarks/extract_features.tsv"
    params:
        spec=as_json(config.get("features", {})),
        version=version_of("extract_features"),
    threads: threads_of("extract_features")
    resources:
        mem_mb=mem_mb_of("extract_features"),
        runtime=runtime_of("extract_features"),
    conda:
        ENV
    shell:
        "python -m unlearnflow extract-features --stage-version {params.version} --data {input.data} "
        "--spec {params.spec:q} --threads {threads} --out {output} > {log} 2>&1"
