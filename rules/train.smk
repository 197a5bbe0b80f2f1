# Model banks: N original models on all training data, and per forget set N oracles retrained
# without it (per prefix NAME@R of a sequence: without its first R requests). Each job trains
# one chunk of models at once with the vectorised trainer; model seeds depend on (seed, role,
# model id) only. Chunks are kept: they are the cache a gather reuses when the bank grows.

TRAIN_SHELL = (
    "python -m unlearnflow train --stage-version {params.version} --data {input.data} {params.flags} "
    "--model {params.model:q} --training {params.training:q} --seed {params.seed} "
    "--first-id {params.first_id} --count {params.n_models} --device {params.device} --threads {threads} {params.progress} "
    "--out {output} > {log} 2>&1"
)
GATHER_SHELL = (
    "python -m unlearnflow gather --stage-version {params.version} --out {output.bank} {params.weights_out} "
    "{input} > {log} 2>&1"
)


rule train_originals:
    """Train one chunk of the original models (all training data), or import it (``originals.state_dicts``)."""
    input:
        data=DATA,
        labels=poisoned_labels(),
        state_dicts=chunk_state_dicts,
    output:
        path_of("train_originals"),
    log:
        f"{RESULTS}/logs/originals/chunk_{{chunk}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/originals/chunk_{{chunk}}.tsv"
    params:
        **train_params(config["training"], chunk_first_id, chunk_size),
    threads: threads_of("train_originals")
    resources:
        mem_mb=mem_mb_of("train_originals"),
        runtime=runtime_of("train_originals"),
        gpu=gpu_of("train_originals"),
    conda:
        ENV
    shell:
        TRAIN_SHELL


rule train_oracles:
    """Train one chunk of the oracles of a forget set: retrained from scratch without it."""
    input:
        data=DATA,
        forget_set=forget_set_file,
        labels=poisoned_labels(),
    output:
        path_of("train_oracles"),
    log:
        f"{RESULTS}/logs/oracles/{{forget_set}}/chunk_{{chunk}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/oracles/{{forget_set}}/chunk_{{chunk}}.tsv"
    params:
        **train_params(oracle_training(config), chunk_first_id, chunk_size, role="oracle"),
    threads: threads_of("train_oracles")
    resources:
        mem_mb=mem_mb_of("train_oracles"),
        runtime=runtime_of("train_oracles"),
        gpu=gpu_of("train_oracles"),
    conda:
        ENV
    shell:
        TRAIN_SHELL


rule gather_originals:
    """Concatenate the original models' chunks into one bank, and write the models alone (no
    logits, no training masks): what a source-free method may read."""
    input:
        expand(path_of("train_originals"), chunk=chunk_ids("originals")),
    output:
        bank=path_of("gather_originals", "bank"),
        models=path_of("gather_originals", "models"),
    log:
        f"{RESULTS}/logs/gather_originals.log",
    benchmark:
        f"{RESULTS}/benchmarks/gather_originals.tsv"
    params:
        weights_out=lambda wildcards, output: f"--weights-out {output.models}",
        version=version_of("gather_originals"),
    localrule: True
    threads: threads_of("gather_originals")
    resources:
        mem_mb=mem_mb_of("gather_originals"),
        runtime=runtime_of("gather_originals"),
    conda:
        ENV
    shell:
        GATHER_SHELL


rule gather_oracles:
    """Concatenate the oracle chunks of one forget set into one bank."""
    input:
        expand(path_of("train_oracles"), chunk=chunk_ids("oracles"), allow_missing=True),
    output:
        bank=path_of("gather_oracles", "bank"),
    log:
        f"{RESULTS}/logs/gather_oracles/{{forget_set}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/gather_oracles/{{forget_set}}.tsv"
    params:
        weights_out="",
        version=version_of("gather_oracles"),
    localrule: True
    threads: threads_of("gather_oracles")
    resources:
        mem_mb=mem_mb_of("gather_oracles"),
        runtime=runtime_of("gather_oracles"),
    conda:
        ENV
    shell:
        GATHER_SHELL
