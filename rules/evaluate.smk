# Evaluation of every (method, forget set) against the forget set's oracles (for a sequence,
# of every prefix NAME@R against the oracles retrained without its first R requests), U-LiRA
# per method, and the report.


rule evaluate:
    """KLOM (with noise floor and bootstrap interval), accuracies, entropy, MIAs and cost of every
    method on one forget set: the data, oracles and reference attacks are read once for all."""
    input:
        data=DATA,
        forget_set=forget_set_file,
        originals=path_of("gather_originals", "bank"),
        oracles=path_of("gather_oracles", "bank"),
        unlearned=evaluated_banks,
        ulira=[] if LINEAR else [path_of("ulira", method=method) for method in METHODS],
        labels=poisoned_labels(),
    output:
        h5=[path_of("evaluate", "h5", method=method) for method in METHODS],
        csv=[path_of("evaluate", "csv", method=method) for method in METHODS],
    log:
        f"{RESULTS}/logs/evaluation/{{forget_set}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/evaluation/{{forget_set}}.tsv"
    params:
        methods=per_method_flags,
        requests=requests_flag,
        labels=labels_flag,
        seed=config["seed"],
        max_abs_logit=config["evaluation"]["max_abs_logit"],
        version=version_of("evaluate"),
    threads: threads_of("evaluate")
    resources:
        mem_mb=mem_mb_of("evaluate"),
        runtime=runtime_of("evaluate"),
    conda:
        ENV
    shell:
        "python -m unlearnflow evaluate --stage-version {params.version} --data {input.data} "
        "--forget-set {input.forget_set} {params.requests} --originals {input.originals} --oracles {input.oracles} "
        "{params.methods} --from-scratch retrain {params.labels} --seed {params.seed} --max-abs-logit {params.max_abs_logit} "
        "--threads {threads} > {log} 2>&1"


rule report:
    """Summary table, KLOM-vs-compute plot, entropy histograms and MIA ROC curves; each method's
    headline configuration per forget set is chosen without that set's oracles."""
    input:
        unpack(report_side_inputs),
        csv=expand(path_of("evaluate", "csv"), method=METHODS, forget_set=EVALUATED_SETS),
        h5=expand(path_of("evaluate", "h5"), method=METHODS, forget_set=EVALUATED_SETS),
    output:
        table=report(path_of("report", "table"), caption="../workflow/report/summary.rst", category="Summary"),
        csv=path_of("report", "csv"),
        klom=report(path_of("report", "klom"), caption="../workflow/report/klom_vs_compute.rst",
                    category="KLOM"),
        entropy=report(expand(path_of("report", "entropy"), forget_set=EVALUATED_SETS),
                       caption="../workflow/report/entropy.rst", category="Entropy"),
        roc=report(expand(path_of("report", "roc"), forget_set=EVALUATED_SETS),
                   caption="../workflow/report/mia_roc.rst", category="Membership inference"),
    log:
        f"{RESULTS}/logs/report.log",
    benchmark:
        f"{RESULTS}/benchmarks/report.tsv"
    params:
        out_dir=lambda wildcards, output: os.path.dirname(output.csv),
        side=side_flags,
        # held-out selection (unlearnflow.evaluation.selection): the accuracy guard, and the
        # selection set where one is configured
        guard=config["evaluation"]["accuracy_guard"],
        selection_set=f"--selection-set {config['evaluation']['selection']['forget_set']}"
        if "selection" in config["evaluation"]
        else "",
        version=version_of("report"),
    localrule: True
    threads: threads_of("report")
    resources:
        mem_mb=mem_mb_of("report"),
        runtime=runtime_of("report"),
    conda:
        ENV
    shell:
        "python -m unlearnflow report --stage-version {params.version} --out-dir {params.out_dir} "
        "--csv {input.csv} --evaluations {input.h5} {params.side} --accuracy-guard {params.guard} {params.selection_set} "
        "--threads {threads} > {log} 2>&1"


rule ulira_base_models:
    """Base models of U-LiRA: each trained on a random 50% subset of the training set."""
    input:
        data=DATA,
        labels=poisoned_labels(),
    output:
        path_of("ulira_base_models"),
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
            per_pass=config["originals"]["chunk_size"],
        ),
    threads: threads_of("ulira_base_models")
    resources:
        mem_mb=mem_mb_of("ulira_base_models"),
        runtime=runtime_of("ulira_base_models"),
        gpu=gpu_of("ulira_base_models"),
    conda:
        ENV
    shell:
        TRAIN_SHELL


rule ulira:
    """U-LiRA attacker accuracy of one method (efficient version, DMM paper Algorithm F.4)."""
    input:
        unpack(lambda wildcards: side_inputs(wildcards.method, shared_only=True, for_shadows=True)
               if wildcards.method in config["methods"] else {}),
        data=DATA,
        base=path_of("ulira_base_models"),
        labels=poisoned_labels(),
    output:
        path_of("ulira"),
    log:
        f"{RESULTS}/logs/ulira/{{method}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/ulira/{{method}}.tsv"
    params:
        spec=as_json({k: v for k, v in config["evaluation"]["ulira"].items() if k != "base_models"}),
        training=as_json(config["training"]),
        method_config=lambda wildcards: as_json(method_config(wildcards.method)),
        labels=labels_flag,
        side=side_flags,
        seed=config["seed"],
        per_pass=config["originals"]["chunk_size"],
        device=config["device"],
        progress=PROGRESS,
        version=version_of("ulira"),
    threads: threads_of("ulira")
    resources:
        mem_mb=mem_mb_of("ulira"),
        runtime=runtime_of("ulira"),
        gpu=gpu_of("ulira"),
    conda:
        ENV
    shell:
        "python -m unlearnflow ulira --stage-version {params.version} --method {wildcards.method} "
        "--data {input.data} --base {input.base} {params.labels} {params.side} --spec {params.spec:q} "
        "--training {params.training:q} --method-config {params.method_config:q} --seed {params.seed} "
        "--models-per-pass {params.per_pass} --device {params.device} --threads {threads} {params.progress} "
        "--out {output} > {log} 2>&1"
