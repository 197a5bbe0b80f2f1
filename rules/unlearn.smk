# Unlearning methods. Each writes, per forget set, a bank of N unlearned models in the
# model_bank format (logits on every point, cost) that the evaluation rule consumes.
# References: do_nothing is the original bank itself; retrain trains N fresh models without
# the forget set (seeds of role retrain/{forget_set}, independent of the oracles').


rule retrain:
    """Reference method: retrain from scratch without the forget set (the quality upper bound)."""
    input:
        data=f"{RESULTS}/data.h5",
        forget_set=f"{RESULTS}/forget_sets/{{forget_set}}.h5",
        labels=poisoned_labels(),
    output:
        f"{RESULTS}/unlearned/retrain/{{forget_set}}.h5",
    log:
        f"{RESULTS}/logs/unlearned/retrain/{{forget_set}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/unlearned/retrain/{{forget_set}}.tsv"
    params:
        **train_params(oracle_training(config), 0, config["oracles"]["models"], role="retrain"),
    threads: 1
    resources:
        mem_mb=4000,
        runtime=120,
    conda:
        "../envs/cpu.yaml"
    shell:
        TRAIN_SHELL


rule unlearn:
    """Unlearn the forget set from every original model, for each configuration of a method."""
    input:
        unpack(target_banks),
        data=f"{RESULTS}/data.h5",
        forget_set=f"{RESULTS}/forget_sets/{{forget_set}}.h5",
        originals=f"{RESULTS}/originals.h5",
        labels=poisoned_labels(),
    output:
        f"{RESULTS}/unlearned/{{method}}/{{forget_set}}.h5",
    log:
        f"{RESULTS}/logs/unlearned/{{method}}/{{forget_set}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/unlearned/{{method}}/{{forget_set}}.tsv"
    wildcard_constraints:
        method="|".join(config["methods"]) or "^$",
    params:
        spec=lambda wildcards: as_json(
            {key: value for key, value in method_spec(wildcards.method).items() if key != "targets"}
        ),
        targets=artifact_flags,
        labels=labels_flag,
        seed=config["seed"],
        device=config["device"],
        progress=PROGRESS,
        version=STAGE_VERSIONS["unlearned"],
    threads: 1
    resources:
        mem_mb=4000,
        runtime=120,
    conda:
        "../envs/cpu.yaml"
    shell:
        "python -m unlearnflow unlearn --stage-version {params.version} --method {wildcards.method} "
        "--data {input.data} --forget-set {input.forget_set} --originals {input.originals} {params.targets} "
        "{params.labels} "
        "--spec {params.spec:q} --seed {params.seed} --device {params.device} --threads {threads} "
        "{params.progress} --out {output} > {log} 2>&1"
