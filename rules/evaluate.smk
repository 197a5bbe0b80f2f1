# Evaluation of every (method, forget set) against the forget set's oracles, and the report.


rule evaluate:
    """KLOM (with noise floor and bootstrap interval), accuracies, entropy, MIAs and cost."""
    input:
        data=f"{RESULTS}/data.h5",
        forget_set=f"{RESULTS}/forget_sets/{{forget_set}}.h5",
        originals=f"{RESULTS}/originals.h5",
        oracles=f"{RESULTS}/oracles/{{forget_set}}.h5",
        unlearned=unlearned_bank,
        ulira=f"{RESULTS}/ulira/{{method}}.csv",
        labels=poisoned_labels(),
    output:
        h5=f"{RESULTS}/evaluation/{{method}}/{{forget_set}}.h5",
        csv=f"{RESULTS}/evaluation/{{method}}/{{forget_set}}.csv",
    log:
        f"{RESULTS}/logs/evaluation/{{method}}/{{forget_set}}.log",
    params:
        from_scratch=lambda wildcards: "--from-scratch" if wildcards.method == "retrain" else "",
        labels=labels_flag,
        seed=config["seed"],
        version=STAGE_VERSIONS["evaluation"],
    threads: 1
    resources:
        mem_mb=4000,
        runtime=30,
    conda:
        "../envs/cpu.yaml"
    shell:
        "python -m unlearnflow evaluate --stage-version {params.version} --data {input.data} "
        "--forget-set {input.forget_set} --originals {input.originals} --oracles {input.oracles} "
        "--unlearned {input.unlearned} --method {wildcards.method} {params.from_scratch} {params.labels} "
        "--ulira {input.ulira} --seed {params.seed} --out-h5 {output.h5} --out-csv {output.csv} > {log} 2>&1"


rule report:
    """Summary table, KLOM-vs-compute plot, entropy histograms and MIA ROC curves."""
    input:
        unpack(datamodel_artifacts),
        csv=[f"{path}.csv" for path in EVALUATIONS],
        h5=[f"{path}.h5" for path in EVALUATIONS],
    output:
        table=report(f"{RESULTS}/report/summary.md", caption="../workflow/report/summary.rst", category="Summary"),
        csv=f"{RESULTS}/report/summary.csv",
        klom=report(f"{RESULTS}/report/klom_vs_compute.png", caption="../workflow/report/klom_vs_compute.rst",
                    category="KLOM"),
        entropy=report(expand(f"{RESULTS}/report/entropy_{{forget_set}}.png", forget_set=FORGET_SETS),
                       caption="../workflow/report/entropy.rst", category="Entropy"),
        roc=report(expand(f"{RESULTS}/report/mia_roc_{{forget_set}}.png", forget_set=FORGET_SETS),
                   caption="../workflow/report/mia_roc.rst", category="Membership inference"),
    log:
        f"{RESULTS}/logs/report.log",
    params:
        out_dir=lambda wildcards, output: os.path.dirname(output.csv),
        datamodels=artifact_flags,
    localrule: True
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    conda:
        "../envs/cpu.yaml"
    shell:
        "python -m unlearnflow report --out-dir {params.out_dir} --csv {input.csv} --evaluations {input.h5} "
        "{params.datamodels} > {log} 2>&1"


rule ulira_base_models:
    """Base models of U-LiRA: each trained on a random 50% subset of the training set."""
    input:
        data=f"{RESULTS}/data.h5",
        labels=poisoned_labels(),
    output:
        f"{RESULTS}/ulira/base_models.h5",
    log:
        f"{RESULTS}/logs/ulira/base_models.log",
    benchmark:
        f"{RESULTS}/benchmarks/ulira/base_models.tsv"
    params:
        **train_params(
            config["training"],
            0,
            config["evaluation"]["ulira"]["base_models"],
            role="ulira_base",
            subset_fraction=0.5,
        ),
    threads: 1
    resources:
        mem_mb=4000,
        runtime=120,
    conda:
        "../envs/cpu.yaml"
    shell:
        TRAIN_SHELL


rule ulira:
    """U-LiRA attacker accuracy of one method (efficient version, DMM paper Algorithm F.4)."""
    input:
        unpack(lambda wildcards: datamodel_artifacts(wildcards) if wildcards.method in DATAMODEL_METHODS else {}),
        data=f"{RESULTS}/data.h5",
        base=f"{RESULTS}/ulira/base_models.h5",
        labels=poisoned_labels(),
    output:
        f"{RESULTS}/ulira/{{method}}.csv",
    log:
        f"{RESULTS}/logs/ulira/{{method}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/ulira/{{method}}.tsv"
    params:
        spec=as_json({k: v for k, v in config["evaluation"]["ulira"].items() if k != "base_models"}),
        training=as_json(config["training"]),
        method_spec=lambda wildcards: as_json(method_spec(wildcards.method)),
        labels=labels_flag,
        datamodels=artifact_flags,
        seed=config["seed"],
        device=config["device"],
        progress=PROGRESS,
    threads: 1
    resources:
        mem_mb=4000,
        runtime=120,
    conda:
        "../envs/cpu.yaml"
    shell:
        "python -m unlearnflow ulira --method {wildcards.method} --data {input.data} --base {input.base} "
        "{params.labels} {params.datamodels} --spec {params.spec:q} --training {params.training:q} "
        "--method-spec {params.method_spec:q} "
        "--seed {params.seed} "
        "--device {params.device} --threads {threads} {params.progress} --out {output} > {log} 2>&1"
