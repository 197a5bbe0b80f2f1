# Section 5 / Appendix E of the DMM paper: oracle matching vs gradient descent on ridge
# regression (Figure 5 and E.2). Not part of the default target: `snakemake theory`.

from unlearnflow.theory import PAPER_SETTINGS


rule theory_panel:
    """One panel: relative distance to the retain optimum vs iterations, per algorithm."""
    output:
        report("results/theory/{panel}.png", caption="../workflow/report/theory.rst", category="Theory"),
    log:
        "results/theory/logs/{panel}.log",
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    conda:
        "../envs/cpu.yaml"
    shell:
        "python -m unlearnflow theory --panel {wildcards.panel} --out {output} > {log} 2>&1"


rule theory:
    """All panels of Figure 5 and Figure E.2."""
    input:
        expand("results/theory/{panel}.png", panel=list(PAPER_SETTINGS)),
    localrule: True
