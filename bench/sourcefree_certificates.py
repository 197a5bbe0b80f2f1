"""Certificates against the truth on the default run's linear experiment (config.yaml,
``digits_linear``), reproduced in-process with the library: digits, identity features pooled 2x2
(d = 16), bias-free linear models with the squared loss, lam 1e-3, objective noise std 0.1, 50
original models and 50 oracles per forget set, forget sets random_60 and random_126, Newton (+)
and the source-free step in every reading (m = 500). Per (forget set, method, configuration) it
prints the report's linear-model columns (:func:`unlearnflow.report.summary.linear_cells`) from the
evaluation's certificate columns (:mod:`unlearnflow.evaluation.certificates`): the weight distance
to the retrained models, the true retain-gradient norm, the certified bound beside it, the worst
epsilon at delta, the paper's Theorem 1 and Lemma 1 expressions beside the truth (``violated``:
the share of models whose claim is below the truth; means over models), and the seconds per model.

    OMP_NUM_THREADS=1 python bench/sourcefree_certificates.py [--models 50]
"""

from __future__ import annotations

import argparse
import time

import yaml

from unlearnflow.core.data import load_dataset
from unlearnflow.core.forget_sets import build_forget_set
from unlearnflow.core.training import model_seed
from unlearnflow.evaluation.certificates import certificate_columns
from unlearnflow.evaluation.evaluate import weight_distance
from unlearnflow.report.summary import LINEAR_COLUMNS, linear_cells, markdown_line
from unlearnflow.runner import apply_method
from unlearnflow.sourcefree.features import extract_features
from unlearnflow.sourcefree.linear import config_recipe, train_linear_bank

METHODS = ("newton_certified", "newton_source_free")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", type=int, default=50)
    args = parser.parse_args()
    config = yaml.safe_load(open("config.yaml"))
    experiment = config["experiments"]["digits_linear"]
    features = extract_features(load_dataset(config["data"]), experiment["features"])
    objective, noise_std = config_recipe(experiment["training"])
    seeds = [model_seed(config["seed"], "linear", model_id) for model_id in range(args.models)]
    originals = train_linear_bank(features, objective, noise_std, seeds)
    header = ["forget set", "method", "config", *LINEAR_COLUMNS, "s / model"]
    print(markdown_line(header), markdown_line(["---"] * len(header)), sep="\n")
    for name, spec in experiment["forget_sets"].items():
        forget_set = build_forget_set(name, spec, features.x_train, features.y_train, config["seed"])
        oracles = train_linear_bank(features, objective, noise_std, seeds, role="oracle",
                                    train_mask=forget_set.retain_mask(len(features.y_train)))
        for method in METHODS:
            start = time.perf_counter()
            banks = apply_method(method, originals, features, forget_set, experiment["methods"][method])
            seconds = (time.perf_counter() - start) / len(banks) / args.models
            for label, steps in banks.items():
                row = {**certificate_columns(features, forget_set, originals, steps[-1]),
                       "weight_distance": weight_distance(originals, oracles, steps[-1])}
                print(markdown_line([name, method, label, *linear_cells(row), f"{seconds:.3g}"]))


if __name__ == "__main__":
    main()
