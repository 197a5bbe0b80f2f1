# Projected-Gradient Unlearning's cached stage (PGU paper, Section 3.2.2): once per original bank,
# the factorisation U, Sigma of R R^T for every conv/linear layer of every original model over the
# whole training set. Its output path is the registry's gradient_space artifact, so the unlearn
# jobs of pgu and pgu_tuned pick it up as a side input; it holds aggregates of the training
# representations, no sample, and is the only thing besides the model a PGU request reads.


rule gradient_space:
    """Accumulate R R^T of every conv/linear layer's inputs in float64 and eigendecompose it."""
    input:
        data=DATA,
        originals=path_of("gather_originals", "models"),
    output:
        path_of("gradient_space"),
    log:
        f"{RESULTS}/logs/gradient_space.log",
    benchmark:
        f"{RESULTS}/benchmarks/gradient_space.tsv"
    params:
        device=config["device"],
        progress=PROGRESS,
        version=version_of("gradient_space"),
    threads: threads_of("gradient_space")
    resources:
        mem_mb=mem_mb_of("gradient_space"),
        runtime=runtime_of("gradient_space"),
        gpu=gpu_of("gradient_space"),
    conda:
        ENV
    shell:
        "python -m unlearnflow gradient-space --stage-version {params.version} --data {input.data} "
        "--originals {input.originals} --device {params.device} --threads {threads} {params.progress} "
        "--out {output} > {log} 2>&1"
