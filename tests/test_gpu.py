"""The GPU smoke path: the tiny workflow with ``device: cuda`` end to end, against the same run on
the CPU. Skipped without a CUDA GPU (CI has none; README "Tests"); run it where there is one with
``python -m pytest -m cuda``.

Tolerance. Both runs train the same models from the same seeds, but GPU kernels (cuBLAS, cuDNN)
round differently from the CPU's, and training amplifies rounding, so the numbers are compared
within a stated tolerance, not bitwise: the original models' test logits within 1e-3 of the
largest absolute logit, every accuracy of the summary within 0.05, and KLOM and W1 columns within
10% relative or 0.02 absolute."""

import csv
import math

import numpy as np
import pytest
import torch
from test_workflow import TINY, snakemake, write_config

from unlearnflow.core.artifacts import read_bank

pytestmark = [pytest.mark.cuda, pytest.mark.slow]

ACCURACY_COLUMNS = ("acc_forget", "acc_retain", "acc_val", "acc_test")
DISTANCE_COLUMNS = ("klom_score", "klom_forget_p95", "w1_forget_mean", "w1_retain_mean")


def rows(path):
    with open(path) as handle:
        return {(row["forget_set"], row["method"], row["config"]): row for row in csv.DictReader(handle)}


def close(a: str, b: str, rel: float, abs_: float) -> bool:
    x, y = float(a), float(b)
    return (math.isnan(x) and math.isnan(y)) or math.isclose(x, y, rel_tol=rel, abs_tol=abs_)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU (the GPU smoke path runs where there is one)")
def test_tiny_workflow_on_the_gpu_matches_the_cpu_run(tmp_path):
    runs = {}
    for device in ("cpu", "cuda"):
        workdir = tmp_path / device
        workdir.mkdir()
        write_config(workdir, {**TINY, "device": device})
        snakemake(workdir)
        runs[device] = workdir / "results" / "tiny"
    cpu, gpu = (read_bank(runs[device] / "originals.h5") for device in ("cpu", "cuda"))
    scale = float(np.abs(cpu.logits["test"]).max())
    assert float(np.abs(cpu.logits["test"] - gpu.logits["test"]).max()) < 1e-3 * scale
    cpu_rows, gpu_rows = (rows(runs[device] / "report" / "summary.csv") for device in ("cpu", "cuda"))
    assert cpu_rows.keys() == gpu_rows.keys() and cpu_rows
    for key, row in cpu_rows.items():
        for column in ACCURACY_COLUMNS:
            assert close(row[column], gpu_rows[key][column], 0.0, 0.05), (key, column)
        for column in DISTANCE_COLUMNS:
            assert close(row[column], gpu_rows[key][column], 0.1, 0.02), (key, column)
