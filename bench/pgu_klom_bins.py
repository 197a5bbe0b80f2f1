"""Why KLOM selects damaged models after requests 3-4 of the PGU incremental preset (README, Table 3).

`python bench/pgu_klom_bins.py RESULTS_DIR [REQUEST]`, RESULTS_DIR a finished
config/pgu-cnn-incremental.yaml run (results/pgu-cnn-incremental), REQUEST 1..4 (default 3).
For retrain and every pgu_tuned configuration after that request, per group of points: KLOM-95
against the prefix's oracles, how much wider the combined oracle + unlearned margin range (KLOM's
bins) is than the oracles' own range (median over points), the share of models that
misclassify a point (margin < 0, mean over points), and KLOM-95 again with the unlearned margins
clipped into the oracles' range (bins about as wide as the oracles' spread).
"""

import sys

import numpy as np
import torch

from unlearnflow.core.artifacts import read_bank, read_dataset, read_forget_set
from unlearnflow.metrics.klom import klom
from unlearnflow.metrics.margins import margins
from unlearnflow.runner import read_unlearned, with_logits


def main(results: str, request: int) -> None:
    torch.set_num_threads(1)
    dataset = read_dataset(f"{results}/data.h5")
    forget_set = read_forget_set(f"{results}/forget_sets/incremental_4x25.h5")
    oracle = read_bank(f"{results}/oracles/incremental_4x25@{request}.h5", with_weights=False)
    retrain = read_bank(f"{results}/unlearned/retrain/incremental_4x25@{request}.h5", with_weights=False)
    tuned = read_unlearned(f"{results}/unlearned/pgu_tuned/incremental_4x25.h5", step=request - 1)
    labels = {"train": forget_set.train_labels, "test": dataset.y_test}
    forget = forget_set.prefix(request).indices
    retain = np.setdiff1d(np.arange(len(forget_set.train_labels)), forget)
    groups = (("forget", "train", forget), ("retain", "train", retain), ("test", "test", slice(None)))
    banks = [("retrain", retrain)] + [(f"pgu_tuned {label}", with_logits(bank, dataset, torch.device("cpu")))
                                      for label, bank in tuned.items()]
    print("| models | group | KLOM-95 | bins' range / oracles' range | models with margin < 0 | KLOM-95, clipped |")
    print("| --- | --- | --- | --- | --- | --- |")
    for name, bank in banks:
        for group, split, index in groups:
            o = margins(oracle.logits[split], labels[split])[:, index]
            u = margins(bank.logits[split], labels[split])[:, index]
            widening = np.ptp(np.clip(np.concatenate([o, u]), -100, 100), 0) / np.maximum(np.ptp(o, 0), 1e-9)
            clipped = klom(o, np.clip(u, o.min(0), o.max(0)))
            print(f"| {name} | {group} | {np.percentile(klom(o, u), 95):.3f} | {np.median(widening):.2f} | "
                  f"{(u < 0).mean():.3f} | {np.percentile(clipped, 95):.3f} |")


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 3)
