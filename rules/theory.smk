# Section 5 / Appendix E of the DMM paper: oracle matching vs gradient descent on ridge
# regression (Figure 5 and E.2). Not part of the default target: `snakemake theory`.

from unlearnflow.dmm.ridge_theory import PAPER_SETTINGS


rule theory_panel:
    """One panel: relative distance to the retain optimum vs iterations, per algorithm."""
    output:
        report(path_of("theory_panel"), caption="../workflow/report/theory.rst", category="Theory"),
    log:
        f"{RESULTS}/logs/theory/{{panel}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/theory/{{panel}}.tsv"
    params:
        version=version_of("theory_panel"),
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
        expand(path_of("theory_panel"), panel=list(PAPER_SETTINGS)),
    localrule: True
