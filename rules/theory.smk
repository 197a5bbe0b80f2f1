# Section 5 / Appendix E of the DMM paper: oracle matching vs gradient descent on ridge
# regression (Figure 5 and E.2). Not part of the default target: `snakemake theory`.

from unlearnflow.dmm.ridge_theory import PAPER_SETTINGS


rule theory_panel:
    """One panel: relative distance to the retain optimum vs iterations, per algorithm."""
    output:
        report(f"{RESULTS}/theory/{{panel}}.png", caption="../workflow/report/theory.rst", category="Theory"),
    log:
        f"{RESULTS}/logs/theory/{{panel}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/theory/{{panel}}.tsv"
    params:
        version=STAGE_VERSIONS["theory"],
    threads: threads_of("theory_panel")
    resources:
        mem_mb=mem_mb_of("theory_panel"),
        runtime=runtime_of("theory_panel"),
    conda:
        ENV
    shell:
        "python -m unlearnflow theory --stage-version {params.version} --panel {wildcards.panel} --out {output} "
        "> {log} 2>&1"


rule theory:
    """All panels of Figure 5 and Figure E.2."""
    input:
        expand(f"{RESULTS}/theory/{{panel}}.png", panel=list(PAPER_SETTINGS)),
    localrule: True
