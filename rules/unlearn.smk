# Unlearning methods. Each writes, per forget set, one unlearned artifact: the N unlearned models
# (or their predicted outputs) of every configuration after every request, with the cost, that
# the evaluation rule consumes. What an unlearn job reads comes from the method registry: a
# source-free method gets the forget samples and the models alone, never data.h5; the side
# artifacts a method declares arrive by name. References: do_nothing is the original bank
# itself; retrain trains N fresh models without the forget set (seeds of role
# retrain/{forget_set}, independent of the oracles').


rule retrain:
    """Reference method: retrain from scratch without the forget set (the quality upper bound)."""
    input:
        data=DATA,
        forget_set=forget_set_file,
        labels=poisoned_labels(),
    output:
        path_of("retrain"),
    log:
        f"{RESULTS}/logs/unlearned/retrain/{{forget_set}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/unlearned/retrain/{{forget_set}}.tsv"
    params:
        **train_params(oracle_training(config), 0, config["oracles"]["models"], role="retrain",
                       per_pass=config["oracles"]["chunk_size"]),
    threads: threads_of("retrain")
    resources:
        mem_mb=mem_mb_of("retrain"),
        runtime=runtime_of("retrain"),
        gpu=gpu_of("retrain"),
    conda:
        ENV
    shell:
        TRAIN_SHELL


rule unlearn:
    """Unlearn the forget set from every original model, for each configuration of a method and
    each request of the forget set in order."""
    input:
        unpack(unlearn_inputs),
    output:
        path_of("unlearn"),
    log:
        f"{RESULTS}/logs/unlearned/{{method}}/{{forget_set}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/unlearned/{{method}}/{{forget_set}}.tsv"
    wildcard_constraints:
        method="|".join(config["methods"]) or "^$",
        forget_set=FORGET_SET_NAME,
    params:
        method_config=lambda wildcards: as_json(method_config(wildcards.method)),
        inputs=input_flags("data", "forget_set", "forget_samples", "originals"),
        labels=labels_flag,
        side=side_flags,
        seed=config["seed"],
        device=config["device"],
        progress=PROGRESS,
        per_pass=config["originals"]["chunk_size"],
        version=version_of("unlearn"),
    threads: threads_of("unlearn")
    resources:
        mem_mb=mem_mb_of("unlearn"),
        runtime=runtime_of("unlearn"),
        gpu=gpu_of("unlearn"),
    conda:
        ENV
    shell:
        "python -m unlearnflow unlearn --stage-version {params.version} --method {wildcards.method} "
        "{params.inputs} {params.labels} {params.side} --method-config {params.method_config:q} --seed {params.seed} "
        "--models-per-pass {params.per_pass} --device {params.device} --threads {threads} {params.progress} "
        "--out {output} > {log} 2>&1"
