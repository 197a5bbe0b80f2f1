# Model banks: N original models on all training data, and per forget set N oracles retrained
# without it. Each job trains one chunk of models at once with the vectorised trainer; model
# seeds depend on (seed, role, model id) only. Chunks are kept: they are the cache a gather
# reuses when the bank grows.

TRAIN_SHELL = (
    "python -m unlearnflow train --stage-version {params.version} --data {input.data} {params.flags} "
    "--model {params.model:q} --training {params.training:q} --seed {params.seed} "
    "--first-id {params.first_id} --count {params.n_models} --device {params.device} --threads {threads} {params.progress} "
    "--out {output} > {log} 2>&1"
)


rule train_originals:
    """Train one chunk of the original models (all training data)."""
    input:
        data=f"{RESULTS}/data.h5",
        labels=poisoned_labels(),
    output:
        f"{RESULTS}/originals/chunk_{{chunk}}.h5",
    log:
        f"{RESULTS}/logs/originals/chunk_{{chunk}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/originals/chunk_{{chunk}}.tsv"
    params:
        **train_params(config["training"], chunk_first_id, chunk_size),
    threads: 1
    resources:
        mem_mb=4000,
        runtime=120,
    conda:
        "../envs/cpu.yaml"
    shell:
        TRAIN_SHELL


rule train_oracles:
    """Train one chunk of the oracles of a forget set: retrained from scratch without it."""
    input:
        data=f"{RESULTS}/data.h5",
        forget_set=f"{RESULTS}/forget_sets/{{forget_set}}.h5",
        labels=poisoned_labels(),
    output:
        f"{RESULTS}/oracles/{{forget_set}}/chunk_{{chunk}}.h5",
    log:
        f"{RESULTS}/logs/oracles/{{forget_set}}/chunk_{{chunk}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/oracles/{{forget_set}}/chunk_{{chunk}}.tsv"
    params:
        **train_params(oracle_training(config), chunk_first_id, chunk_size, role="oracle"),
    threads: 1
    resources:
        mem_mb=4000,
        runtime=120,
    conda:
        "../envs/cpu.yaml"
    shell:
        TRAIN_SHELL


rule gather_originals:
    """Concatenate the original models' chunks into one bank."""
    input:
        expand(f"{RESULTS}/originals/chunk_{{chunk}}.h5", chunk=chunk_ids("originals")),
    output:
        f"{RESULTS}/originals.h5",
    log:
        f"{RESULTS}/logs/gather_originals.log",
    params:
        version=STAGE_VERSIONS["model_bank"],
    localrule: True
    threads: 1
    resources:
        mem_mb=4000,
        runtime=10,
    conda:
        "../envs/cpu.yaml"
    shell:
        "python -m unlearnflow gather --stage-version {params.version} --out {output} {input} > {log} 2>&1"


rule gather_oracles:
    """Concatenate the oracle chunks of one forget set into one bank."""
    input:
        expand(f"{RESULTS}/oracles/{{{{forget_set}}}}/chunk_{{chunk}}.h5", chunk=chunk_ids("oracles")),
    output:
        f"{RESULTS}/oracles/{{forget_set}}.h5",
    log:
        f"{RESULTS}/logs/gather_oracles/{{forget_set}}.log",
    params:
        version=STAGE_VERSIONS["model_bank"],
    localrule: True
    threads: 1
    resources:
        mem_mb=4000,
        runtime=10,
    conda:
        "../envs/cpu.yaml"
    shell:
        "python -m unlearnflow gather --stage-version {params.version} --out {output} {input} > {log} 2>&1"
