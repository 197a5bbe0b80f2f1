rule forget_sets:
    """Build one named forget set (indices per request, and the experiment's training labels)."""
    input:
        data=f"{RESULTS}/data.h5",
    output:
        f"{RESULTS}/forget_sets/{{forget_set}}.h5",
    log:
        f"{RESULTS}/logs/forget_sets/{{forget_set}}.log",
    params:
        spec=lambda wildcards: as_json(forget_set_spec(wildcards.forget_set)),
        seed=config["seed"],
        version=STAGE_VERSIONS["forget_set"],
    threads: 1
    resources:
        mem_mb=4000,
        runtime=30,
    conda:
        "../envs/cpu.yaml"
    shell:
        "python -m unlearnflow forget-set --stage-version {params.version} --name {wildcards.forget_set} "
        "--spec {params.spec:q} --data {input.data} --seed {params.seed} --out {output} > {log} 2>&1"
