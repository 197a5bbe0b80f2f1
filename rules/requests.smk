# Deletion requests against the finished experiment: every requests/{experiment}/{name}.yaml
# becomes a new head model of its model's ledger and a certificate, one job per request, in
# ledger order (a request's input is the receipt of the request it names as `after`). The ledger's
# files are not the job's outputs (its receipt is), so no rerun ever deletes a processed request;
# a rerun of a processed, unchanged request rewrites its receipt alone. For a
# source-free method, request_samples extracts the request's samples first and the request's job
# reads no data set (rules/common.smk, deletion_request_inputs).

from unlearnflow.ops.requests import ORIGINAL, experiment_requests, request_needs

# A bad request file stops `snakemake requests` alone (the Snakefile's rule requests reports it);
# the experiment's own workflow runs without its requests.
try:
    DELETION_REQUESTS = experiment_requests(config["experiment"])
except UserError:
    DELETION_REQUESTS = {}


rule request_samples:
    """A request's samples and the validation split, the one job of a request that reads the data
    set: all that its job reads of the data when its method is source-free. Temporary, so that no
    file keeps the forgotten inputs once the request is processed."""
    input:
        request=f"requests/{config['experiment']}/{{request}}.yaml",
        data=DATA,
        labels=poisoned_labels(),
    output:
        temp(request_samples_file("{request}")),
    log:
        f"{RESULTS}/logs/request_samples/{{request}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/request_samples/{{request}}.tsv"
    params:
        labels=labels_flag,
        version=version_of("request_samples"),
    threads: threads_of("request_samples")
    resources:
        mem_mb=mem_mb_of("request_samples"),
        runtime=runtime_of("request_samples"),
    conda:
        ENV
    shell:
        "python -m unlearnflow request-samples --stage-version {params.version} --request {input.request} "
        "--data {input.data} {params.labels} --out {output} > {log} 2>&1"


rule deletion_request:
    """Unlearn a request's samples from the head of its model's ledger; certificate; ledger entry."""
    input:
        unpack(deletion_request_inputs),
    output:
        receipt=path_of("deletion_request", "receipt"),
    log:
        f"{RESULTS}/logs/ledger/model_{{model}}/{{request}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/ledger/model_{{model}}/{{request}}.tsv"
    wildcard_constraints:
        model=r"\d+",
    params:
        ledger_dir=lambda wildcards, output: os.path.dirname(output.receipt),
        reads=input_flags("samples", "data"),
        labels=labels_flag,
        side=side_flags,
        device=config["device"],
        version=version_of("deletion_request"),
    threads: threads_of("deletion_request")
    resources:
        mem_mb=mem_mb_of("deletion_request"),
        runtime=runtime_of("deletion_request"),
        gpu=gpu_of("deletion_request"),
    conda:
        ENV
    shell:
        "python -m unlearnflow deletion-request --stage-version {params.version} --request {input.request} "
        "{params.reads} {params.labels} --models {input.models} --ledger-dir {params.ledger_dir} "
        "--receipt {output.receipt} {params.side} "
        "--device {params.device} --threads {threads} > {log} 2>&1"
