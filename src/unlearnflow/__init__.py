"""unlearnflow: machine unlearning of classifiers, as a library and a Snakemake workflow."""

__version__ = "0.1.0"
