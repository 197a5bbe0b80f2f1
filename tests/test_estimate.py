"""`unlearnflow estimate`: multiply-adds per forward, the plan's jobs, and a prediction of a run
twice the size of a measured one, its jobs and disk checked against what that run writes (its
wall time: bench/bench_estimate.py)."""

import importlib.util

import pytest
import torch
import yaml
from torch import nn
from workflow_runs import REPO, snakemake

from unlearnflow.config import load_schema, validate_config
from unlearnflow.core.models import build_model
from unlearnflow.errors import UserError
from unlearnflow.ops.estimate import Job, Sizes, benchmark_seconds, estimate, forward_macs, job_work, parse_plan

_spec = importlib.util.spec_from_file_location("bench_estimate", REPO / "bench" / "bench_estimate.py")
bench_estimate = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench_estimate)


def test_forward_macs_counts_convolutions_and_linear_layers():
    mlp = build_model("mlp", (64,), 10, hidden=[16])
    assert forward_macs(mlp, (64,)) == 64 * 16 + 16 * 10
    conv = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.Conv2d(4, 8, 3, stride=2, padding=1, groups=2),
                         nn.Flatten(), nn.Linear(8 * 4 * 4, 10))
    assert forward_macs(conv, (3, 8, 8)) == 8 * 8 * 4 * 3 * 9 + 4 * 4 * 8 * 2 * 9 + 128 * 10
    # ResNet-9 on CIFAR-10 (64 channels), layer by layer: 0.29 GMACs per image
    resnet9 = build_model("resnet9", (3, 32, 32), 10)
    macs = forward_macs(resnet9, (3, 32, 32))
    assert macs == (32 * 32 * 64 * 3 * 9 + 16 * 16 * 128 * 64 * 25 + 2 * 16 * 16 * 128 * 128 * 9
                    + 16 * 16 * 256 * 128 * 9 + 2 * 8 * 8 * 256 * 256 * 9 + 6 * 6 * 128 * 256 * 9 + 128 * 10)
    half = forward_macs(build_model("resnet9", (3, 32, 32), 10, width=32), (3, 32, 32))
    assert macs / half == pytest.approx(4, rel=0.02)  # convolutions scale with the width squared
    assert resnet9(torch.zeros(2, 3, 32, 32)).shape == (2, 10)


PLAN = """Building DAG of jobs...
rule train_originals:
    input: results/x/data.h5
    output: results/x/originals/chunk_0-24.h5
    log: results/x/logs/originals/chunk_0-24.log
    jobid: 3
    benchmark: results/x/benchmarks/originals/chunk_0-24.tsv
    reason: Forced execution
    wildcards: chunk=0-24
    threads: 2
    resources: tmpdir=/tmp, runtime=480, gpu=1
[Tue Dec  1 01:48:14 2026]
localrule all:
    input: results/x/report/summary.md
    jobid: 0
"""


def test_the_plan_gives_each_job_its_rule_wildcards_outputs_and_benchmark(tmp_path):
    jobs = parse_plan(PLAN)
    assert [job.rule for job in jobs] == ["train_originals", "all"]
    assert jobs[0].wildcards == {"chunk": "0-24"} and jobs[0].outputs == ("results/x/originals/chunk_0-24.h5",)
    assert jobs[0].benchmark == "results/x/benchmarks/originals/chunk_0-24.tsv" and jobs[1].benchmark is None
    table = tmp_path / "b.tsv"
    table.write_text("s\th:m:s\tmax_rss\n2.5\t0:00:02\t100\n3.5\t0:00:03\t100\n")
    assert benchmark_seconds(table) == 3.0
    table.write_text("not a benchmark\n")
    with pytest.raises(UserError, match="not a Snakemake benchmark file"):
        benchmark_seconds(table)


def run_config(name: str, models: int, max_train: int) -> dict:
    """A small run (bench/bench_estimate.py's, with 3 epochs: this test checks the plan and the
    disk, and the benchmark the wall-time prediction, which a loaded machine moves)."""
    return {**bench_estimate.run_config(name, models, max_train, epochs=3)}


def test_training_work_follows_each_recipe_with_its_defaults():
    """Epochs come from the recipe with the trainer's defaults (20 when unset), the oracles' from
    their own overrides, and a linear recipe trains to optimum in one pass."""
    config = validate_config({"experiment": "x", "data": {"loader": "digits"}, "model": {"arch": "mlp"},
                              "training": {}, "originals": {"models": 4, "chunk_size": 2},
                              "oracles": {"models": 4, "chunk_size": 2, "training": {"epochs": 5}},
                              "forget_sets": {"r5": {"kind": "random", "size": 5}}}, load_schema(REPO / "workflow" / "schemas" / "config.schema.yaml"))
    sizes = Sizes(n_train=100, n_points=150, input_size=64, classes=10, macs=1000, parameters=650)
    chunk = {"chunk": "0-1"}
    original = job_work(Job("train_originals", chunk, (), None), config, sizes, {})
    oracle = job_work(Job("train_oracles", {**chunk, "forget_set": "r5"}, (), None), config, sizes, {})
    assert original == 2 * 20 * 100 * 1000 and oracle == 2 * 5 * 100 * 1000
    linear = {**config, "training": {"optimizer": "lbfgs", "loss": "squared", "lam": 1e-3, "noise_std": 0.1},
              "oracles": {"models": 4, "chunk_size": 2}}
    assert job_work(Job("train_originals", chunk, (), None), linear, sizes, {}) == 2 * 100 * 1000


def test_a_missing_measured_run_is_one_line(tmp_path):
    (tmp_path / "small.yaml").write_text(yaml.safe_dump(run_config("small", 4, 300)))
    with pytest.raises(UserError, match=r"results/small/benchmarks: no such directory; run .*small.yaml"):
        estimate(tmp_path / "small.yaml", tmp_path / "small.yaml", directory=tmp_path)


@pytest.mark.slow
def test_the_plan_and_the_disk_of_a_run_twice_the_size_are_predicted(tmp_path, capsys):
    """Jobs, GPU hours and disk of a run twice the size of a measured one; how close its wall time
    comes is bench/bench_estimate.py's (bench/RESULTS.md, section "estimate")."""
    small, large = run_config("small", 6, 600), run_config("large", 12, 1200)
    for config in (small, large):
        path = tmp_path / f"{config['experiment']}.yaml"
        path.write_text(yaml.safe_dump(config))
        snakemake(tmp_path, "--configfile", str(path))
    stages, table = estimate(tmp_path / "small.yaml", tmp_path / "large.yaml", directory=tmp_path)
    assert sum(stage.wall_hours for stage in stages) > 0
    by_rule = {stage.rule: stage for stage in stages}
    assert by_rule["train_originals"].jobs == 1 and by_rule["evaluate"].jobs == 1 and "all" not in by_rule
    assert all(stage.gpu_hours == 0 for stage in stages)  # a CPU config asks for no GPU
    # disk: twice the models and points, so the banks take about twice the bytes
    written = sum(path.stat().st_size for path in (tmp_path / "results" / "large").rglob("*.h5"))
    predicted_bytes = sum(stage.disk_bytes for stage in stages)
    assert abs(predicted_bytes / written - 1) < 0.30, (predicted_bytes, written)
    # the command line prints the same table
    from unlearnflow.cli import main
    assert main(["estimate", "--measured", str(tmp_path / "small.yaml"), "--planned", str(tmp_path / "large.yaml"),
                 "--directory", str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    assert "train_originals" in printed and printed.strip().splitlines()[-1].startswith("total")
