"""Predict what a larger run costs from the ``benchmark:`` files of a finished smaller one.

``unlearnflow estimate --measured SMALL.yaml --planned LARGE.yaml`` (:func:`estimate`):

1. **Jobs.** Both configs are planned with ``snakemake --dry-run --forceall`` (every job of the
   experiment, done or not), which gives each job's rule, wildcards and outputs.
2. **Work per job.** Each rule's work is a product of the sizes that drive it
   (:func:`job_work`): models x epochs x training points x multiply-adds per forward for the
   training stages, models x points for the evaluation, subset models x training points x fitted
   targets for the datamodels, and so on. Multiply-adds per forward (:func:`forward_macs`) are
   counted with forward hooks on every ``Conv2d`` and ``Linear`` layer of the configured model
   on one input (``Conv2d``: output elements x in-channels / groups x kernel area; ``Linear``:
   in x out features).
3. **Time.** A job takes ``fixed + rate x work``. Training banks and U-LiRA record their
   compute time in their outputs: that part scales with the work, the rest of the job
   (start-up of Python and torch, reading inputs, writing outputs) is the rule's fixed cost.
   Other rules' fixed cost is the median of those fixed costs (capped at the rule's shortest
   job), and the rest of their measured seconds scales with the work. The planned
   config's jobs are predicted with the same rates, so the prediction is in the measured run's
   device time; ``speedup`` divides the work of GPU rules when the planned run is on a GPU and
   the measured one was not (measure it with ``bench/bench_training.py`` on both).
4. **Core-hours** are wall hours x the threads the planned config gives the rule
   (:func:`unlearnflow.config.rule_resources`), **GPU-hours** wall hours x its GPUs.
5. **Disk.** Each rule's measured output bytes scale with the size of what it writes
   (:func:`job_bytes`): model banks with models x (parameters + logits of every point), edited
   unlearned banks with configurations x models x parameters, datamodels with training points x
   points x fitted outputs.

The model is linear in each size; stages whose cost grows faster (the lasso's iterations, a
k-means) are predicted low, which the measured error over two run sizes in the README bounds.
"""

from __future__ import annotations

import csv
import math
import re
import subprocess
import sys
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import torch
from torch import nn

from unlearnflow.config import (
    datamodel_outputs,
    datamodel_splits,
    load_config_file,
    load_schema,
    oracle_training,
    rule_resources,
    validate_config,
)
from unlearnflow.core.forget_sets import split_step_name
from unlearnflow.core.models import build_model
from unlearnflow.core.stage_table import STAGES
from unlearnflow.core.training import TrainConfig
from unlearnflow.errors import UserError
from unlearnflow.registry import PREDICTS_OUTPUTS, REFERENCES, configurations, spec_of
from unlearnflow.sourcefree.declarations import is_linear_recipe


@dataclass(frozen=True)
class Sizes:
    """What the cost of an experiment's stages depends on."""

    n_train: int
    n_points: int  # train + validation + test
    input_size: int  # numbers per input
    classes: int
    macs: int  # multiply-adds of one forward pass of one input
    parameters: int


@dataclass(frozen=True)
class Job:
    rule: str
    wildcards: dict[str, str]
    outputs: tuple[str, ...]
    benchmark: str | None


@dataclass
class StageEstimate:
    """One rule's prediction (hours and bytes are totals over its jobs)."""

    rule: str
    jobs: int
    wall_hours: float
    core_hours: float
    gpu_hours: float
    disk_bytes: float
    measured_jobs: int = 0
    notes: list[str] = field(default_factory=list)


# --- the model's size --------------------------------------------------------------------------


def forward_macs(model: nn.Module, input_shape: Sequence[int]) -> int:
    """Multiply-adds of one forward pass of one input, counted with hooks on every Conv2d and
    Linear layer (BatchNorm, ReLU, pooling and additions are left out: they are a few percent)."""
    total = 0

    def count(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        nonlocal total
        if isinstance(module, nn.Conv2d):
            per_output = module.in_channels // module.groups * math.prod(module.kernel_size)
            total += output[0].numel() * per_output
        else:
            total += module.in_features * module.out_features

    hooks = [module.register_forward_hook(count) for module in model.modules()
             if isinstance(module, (nn.Conv2d, nn.Linear))]
    try:
        model.eval()
        with torch.no_grad():
            model(torch.zeros(1, *input_shape))
    finally:
        for hook in hooks:
            hook.remove()
    return total


def experiment_sizes(config: Mapping[str, Any], data: str | Path | None = None) -> Sizes:
    """The sizes of a config's data and model: from its prepared ``data.h5`` when given, else by
    loading the configured data set."""
    if data is not None and Path(data).is_file():
        from unlearnflow.core.artifacts import read_dataset
        dataset = read_dataset(data)
    else:
        from unlearnflow.core.data import load_dataset
        dataset = load_dataset(config["data"])
    input_shape, classes = dataset.input_shape, dataset.num_classes
    counts = {"train": len(dataset.y_train), "val": len(dataset.y_val), "test": len(dataset.y_test)}
    model = build_model(config["model"]["arch"], input_shape, classes, **config["model"].get("options", {}))
    return Sizes(n_train=counts["train"], n_points=sum(counts.values()), input_size=math.prod(input_shape),
                 classes=classes, macs=forward_macs(model, input_shape),
                 parameters=sum(p.numel() for p in model.parameters()))


# --- the jobs of a config ----------------------------------------------------------------------


def planned_jobs(config_file: str | Path, directory: str | Path, snakefile: str | Path,
                 overrides: Sequence[str] = ()) -> list[Job]:
    """Every job of the config's workflow (``snakemake --dry-run --forceall``), done or not."""
    command = [sys.executable, "-m", "snakemake", "-s", str(snakefile), "--directory", str(directory),
               "--configfile", str(config_file), "--dry-run", "--forceall", "--cores", "1"]
    command += ["--config", *overrides] if overrides else []
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        last = next((line for line in reversed((result.stderr + result.stdout).splitlines()) if line.strip()), "")
        raise UserError(f"{config_file}: snakemake cannot plan it: {last.strip()}")
    return parse_plan(result.stdout)


def parse_plan(output: str) -> list[Job]:
    """The jobs of a dry run's printed plan."""
    jobs = []
    for block in re.split(r"^(?:localrule|rule) ", output, flags=re.M)[1:]:
        rule, _, body = block.partition(":\n")
        fields = dict(re.findall(r"^    (\w+): (.*)$", body, re.M))
        wildcards = dict(pair.split("=", 1) for pair in fields.get("wildcards", "").split(", ") if "=" in pair)
        jobs.append(Job(rule=rule.strip(), wildcards=wildcards,
                        outputs=tuple(path for path in fields.get("output", "").split(", ") if path),
                        benchmark=fields.get("benchmark")))
    return jobs


# --- work and bytes per job --------------------------------------------------------------------


def _chunk_models(wildcards: Mapping[str, str]) -> int:
    first, last = map(int, wildcards["chunk"].split("-"))
    return last - first + 1


def _configurations(config: Mapping[str, Any], method: str) -> int:
    if method in REFERENCES:
        return 1
    return len(configurations(method, config["methods"].get(method, {})))


def _evaluated_configurations(config: Mapping[str, Any]) -> int:
    """Configurations an evaluation job judges: the references' and every configured method's."""
    return sum(_configurations(config, method) for method in [*REFERENCES, *config["methods"]])


def _forget_size(config: Mapping[str, Any], name: str) -> int:
    spec = config["forget_sets"].get(split_step_name(name)[0], {})
    return int(spec.get("size", 1)) * int(spec.get("requests", 1))


def _datamodel_targets(config: Mapping[str, Any], sizes: Sizes) -> int:
    """Targets the datamodel fit solves: the configured outputs on the splits the methods read."""
    points = sizes.n_train if datamodel_splits(config) == ["train"] else sizes.n_points
    return points * sum(sizes.classes if output == "logits" else 1 for output in datamodel_outputs(config))


def _epochs(training: Mapping[str, Any]) -> int:
    """Epochs of a training recipe (its defaults applied); 1 for linear models trained to optimum."""
    return 1 if is_linear_recipe(training) else TrainConfig.from_mapping(training).epochs


def _bank_floats(sizes: Sizes) -> float:
    """Floats per model of a bank: its weights, its logits of every point and its training mask."""
    return sizes.parameters + sizes.n_points * sizes.classes + sizes.n_train / 4


#: The quantities a stage's work and written bytes are products of (the stage table's ``work`` and
#: ``size``): name -> (job, config, sizes, jobs per rule) -> value.
FACTORS: dict[str, Callable[[Job, Mapping[str, Any], Sizes, Mapping[str, int]], float]] = {
    "chunk_models": lambda job, config, sizes, n_jobs: _chunk_models(job.wildcards),
    "original_models": lambda job, config, sizes, n_jobs: config["originals"]["models"],
    "oracle_models": lambda job, config, sizes, n_jobs: config["oracles"]["models"],
    "subset_models": lambda job, config, sizes, n_jobs: config["subset_models"]["models"],
    "ulira_base_models": lambda job, config, sizes, n_jobs: config["evaluation"]["ulira"]["base_models"],
    "ulira_forget_sets": lambda job, config, sizes, n_jobs: config["evaluation"]["ulira"]["forget_sets_per_model"],
    # judged models of an evaluation: the unlearned bank (as many as the originals) and the oracles
    "judged_models": lambda job, config, sizes, n_jobs: config["originals"]["models"] + config["oracles"]["models"],
    "epochs": lambda job, config, sizes, n_jobs: _epochs(config["training"]),
    "oracle_epochs": lambda job, config, sizes, n_jobs: _epochs(oracle_training(config)),
    # U-LiRA's shadows are retrained for the retrain reference, unlearned once otherwise
    "shadow_epochs": lambda job, config, sizes, n_jobs: (_epochs(config["training"])
                                                         if job.wildcards.get("method") == "retrain" else 1),
    "subset_fraction": lambda job, config, sizes, n_jobs: config["subset_models"]["fraction"],
    "half": lambda job, config, sizes, n_jobs: 0.5,  # U-LiRA's base models train on half the data
    "n_train": lambda job, config, sizes, n_jobs: sizes.n_train,
    "n_points": lambda job, config, sizes, n_jobs: sizes.n_points,
    "input_size": lambda job, config, sizes, n_jobs: sizes.input_size,
    "macs": lambda job, config, sizes, n_jobs: sizes.macs,
    "configurations": lambda job, config, sizes, n_jobs: _configurations(config, job.wildcards["method"]),
    "evaluated_configurations": lambda job, config, sizes, n_jobs: _evaluated_configurations(config),
    # what an unlearning request reads: the forget samples (source-free) or the training set
    "request_points": lambda job, config, sizes, n_jobs: (
        _forget_size(config, job.wildcards["forget_set"]) if spec_of(job.wildcards["method"]).source_free
        else sizes.n_train),
    "datamodel_targets": lambda job, config, sizes, n_jobs: _datamodel_targets(config, sizes),
    "per_job": lambda job, config, sizes, n_jobs: 1 / max(n_jobs.get(job.rule, 1), 1),
    "evaluations": lambda job, config, sizes, n_jobs: n_jobs.get("evaluate", 1),
    "reported_methods": lambda job, config, sizes, n_jobs: len(REFERENCES) + len(config["methods"]),
    "bank_floats": lambda job, config, sizes, n_jobs: _bank_floats(sizes),
    "bank_outputs": lambda job, config, sizes, n_jobs: sizes.parameters + sizes.n_points * sizes.classes,
    # subset-model chunks keep their weights only with subset_models.store_weights
    "subset_floats": lambda job, config, sizes, n_jobs: _bank_floats(sizes) - (
        0 if config["subset_models"].get("store_weights") else sizes.parameters),
    # the originals' gather also writes the weights alone (original_models.h5)
    "bank_and_weights": lambda job, config, sizes, n_jobs: _bank_floats(sizes) + sizes.parameters,
    "unlearned_floats": lambda job, config, sizes, n_jobs: (
        sizes.n_points * sizes.classes if spec_of(job.wildcards["method"]).kind == PREDICTS_OUTPUTS
        else sizes.parameters),
    # the forget samples' inputs and the validation split's
    "forget_samples_floats": lambda job, config, sizes, n_jobs: sizes.n_points * sizes.input_size / 2
    + _forget_size(config, job.wildcards["forget_set"]),
}


def _product(factors: Sequence[str], job: Job, config: Mapping[str, Any], sizes: Sizes,
             n_jobs: Mapping[str, int]) -> float:
    return math.prod((FACTORS[factor](job, config, sizes, n_jobs) for factor in factors), start=1.0)


def job_work(job: Job, config: Mapping[str, Any], sizes: Sizes, n_jobs: Mapping[str, int]) -> float:
    """The size of a job's work, in units that its measured seconds are proportional to: the
    product of its stage's ``work`` factors (1 for a rule outside the table: a constant cost)."""
    factors = STAGES[job.rule].work if job.rule in STAGES else ()
    return _product(factors, job, config, sizes, n_jobs)


def job_bytes(job: Job, config: Mapping[str, Any], sizes: Sizes, n_jobs: Mapping[str, int]) -> float:
    """The size of what a job writes, in units that its measured bytes are proportional to: the
    product of its stage's ``size`` factors."""
    factors = STAGES[job.rule].size if job.rule in STAGES else ()
    return _product(factors, job, config, sizes, n_jobs)


# --- measurements ------------------------------------------------------------------------------


def benchmark_seconds(path: str | Path) -> float:
    """Wall seconds of a Snakemake ``benchmark:`` file (the mean over its repeats)."""
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle, delimiter="\t"))
    if not rows or "s" not in rows[0]:
        raise UserError(f"{path}: not a Snakemake benchmark file (expected a tab-separated table with column s)")
    return sum(float(row["s"]) for row in rows) / len(rows)


def recorded_seconds(directory: Path, rule: str, outputs: Sequence[str]) -> float | None:
    """The compute time a job's outputs record, if they do: a model bank's ``train_seconds``, a
    U-LiRA table's ``seconds``; None otherwise (and for a gather, whose bank sums its chunks')."""
    if rule not in STAGES or not STAGES[rule].records_seconds:
        return None
    found = None
    for output in outputs:
        path = directory / output
        if not path.is_file():
            continue
        if path.suffix == ".h5":
            import h5py
            try:
                with h5py.File(path, "r") as handle:
                    value = handle.attrs.get("train_seconds")
            except OSError:
                value = None
        elif path.suffix == ".csv":
            with open(path, newline="") as handle:
                rows = list(csv.DictReader(handle))
            value = sum(float(row["seconds"]) for row in rows) if rows and "seconds" in rows[0] else None
        else:
            value = None
        if value is not None:
            found = (found or 0.0) + float(value)
    return found


def _output_bytes(directory: Path, outputs: Sequence[str]) -> int:
    total = 0
    for output in outputs:
        path = directory / output
        if path.is_file():
            total += path.stat().st_size
        elif path.is_dir():
            total += sum(item.stat().st_size for item in path.rglob("*") if item.is_file())
    return total


@dataclass
class Measured:
    """A finished run: per rule, its jobs' work, seconds and bytes."""

    work: dict[str, list[float]]
    seconds: dict[str, list[float]]
    size: dict[str, float]
    bytes: dict[str, float]
    overhead: float
    device: str
    unfinished: int = 0  # jobs of the measured config without a benchmark file (not run yet)
    compute: dict[str, list[float | None]] = field(default_factory=dict)  # seconds the outputs record

    def split(self, key: str) -> tuple[float, float]:
        """(fixed seconds per job, seconds per unit of work) of a rule (or rule:method).

        Where every job's outputs record their compute time (training banks, U-LiRA), that is
        the part that scales with the work and the rest of the job (start-up, reading, writing)
        is fixed; otherwise the fixed part is the run's shortest job (start-up alone)."""
        times, work = self.seconds[key], sum(self.work[key])
        recorded = self.compute.get(key, [])
        if recorded and all(value is not None for value in recorded):
            fixed = max(sum(times) - sum(recorded), 0.0) / len(times)
            return fixed, (sum(recorded) / work if work > 0 else 0.0)
        fixed = min(min(times), self.startup)
        beyond = max(sum(times) - fixed * len(times), 0.0)
        return fixed, (beyond / work if work > 0 else 0.0)

    @cached_property
    def startup(self) -> float:
        """A job's fixed cost: the median of what the jobs that record their compute time spend
        besides it (start-up, reading inputs, writing outputs), or the shortest job."""
        fixed = sorted(time - value for key, times in self.seconds.items() if ":" not in key
                       for time, value in zip(times, self.compute.get(key, [])) if value is not None)
        return fixed[len(fixed) // 2] if fixed else self.overhead

    @property
    def total_seconds(self) -> float:
        return sum(sum(values) for key, values in self.seconds.items() if ":" not in key)


def measure(config: Mapping[str, Any], jobs: Sequence[Job], directory: Path, sizes: Sizes) -> Measured:
    """Work, seconds and bytes of every job of a run that has a benchmark file (a partly finished
    run measures the rules it ran; the others are predicted at a job's fixed cost alone)."""
    n_jobs = _counts(jobs)
    work: dict[str, list[float]] = {}
    seconds: dict[str, list[float]] = {}
    compute: dict[str, list[float | None]] = {}
    size: dict[str, float] = {}
    written: dict[str, float] = {}
    missing = []
    for job in jobs:
        if job.benchmark is None:
            continue
        path = directory / job.benchmark
        if not path.is_file():
            missing.append(job.benchmark)
            continue
        job_seconds, job_written = benchmark_seconds(path), _output_bytes(directory, job.outputs)
        job_compute = recorded_seconds(directory, job.rule, job.outputs)
        for key in _keys(job):
            work.setdefault(key, []).append(job_work(job, config, sizes, n_jobs))
            seconds.setdefault(key, []).append(job_seconds)
            compute.setdefault(key, []).append(job_compute)
            size[key] = size.get(key, 0.0) + job_bytes(job, config, sizes, n_jobs)
            written[key] = written.get(key, 0.0) + job_written
    if not seconds:
        raise UserError(f"{directory / 'results' / config['experiment'] / 'benchmarks'}: no benchmark files; "
                        "run the measured config to the end first (snakemake --cores N --configfile ...)")
    overhead = min(min(values) for values in seconds.values())  # the quickest job: start-up alone
    return Measured(work=work, seconds=seconds, size=size, bytes=written, overhead=overhead,
                    device=str(config["device"]), unfinished=len(missing), compute=compute)


def _keys(job: Job) -> list[str]:
    """What a job's measurements count towards: its rule, and its rule and method (methods of one
    rule cost differently per unit of work; a method the measured run lacks uses the rule's)."""
    return [job.rule] + ([f"{job.rule}:{job.wildcards['method']}"] if "method" in job.wildcards else [])


def _counts(jobs: Sequence[Job]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for job in jobs:
        counts[job.rule] = counts.get(job.rule, 0) + 1
    return counts


# --- the prediction ----------------------------------------------------------------------------


def predict(measured: Measured, config: Mapping[str, Any], jobs: Sequence[Job], sizes: Sizes,
            speedup: float = 1.0) -> list[StageEstimate]:
    """Per rule of the planned config: wall, core and GPU hours, and the bytes its outputs take."""
    n_jobs = _counts(jobs)
    on_gpu = config["device"] == "cuda"
    stages: dict[str, StageEstimate] = {}
    for job in jobs:
        if job.benchmark is None:
            continue  # a target rule (all, theory): no command of its own
        rule = job.rule
        estimate = stages.get(rule)
        if estimate is None:
            estimate = stages[rule] = StageEstimate(rule, 0, 0.0, 0.0, 0.0, 0.0,
                                                    measured_jobs=len(measured.seconds.get(rule, [])))
            if rule not in measured.seconds:
                estimate.notes.append("not in the measured run: fixed cost only")
        work = job_work(job, config, sizes, n_jobs)
        seconds = measured.startup
        key = next((key for key in reversed(_keys(job)) if key in measured.seconds), None)
        if key is not None:
            fixed, rate = measured.split(key)
            scale = speedup if (on_gpu and rule in STAGES and STAGES[rule].gpu and measured.device != "cuda") else 1.0
            seconds = fixed + rate * work / scale
            if rate == 0 and work > 2 * max(measured.work[key]) and not estimate.notes:
                estimate.notes.append("measured jobs no longer than start-up: work rate unknown, measure a larger run")
            if measured.size.get(key):
                estimate.disk_bytes += measured.bytes[key] * job_bytes(job, config, sizes, n_jobs) / measured.size[key]
        resources = rule_resources(config, rule) if rule in STAGES else {"threads": 1, "gpu": 0}
        estimate.jobs += 1
        estimate.wall_hours += seconds / 3600
        estimate.core_hours += seconds * resources["threads"] / 3600
        estimate.gpu_hours += seconds * resources.get("gpu", 0) / 3600
    return list(stages.values())


def _human_bytes(value: float) -> str:
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if value < 1000 or unit == "TB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    raise AssertionError("unreachable")


def format_table(stages: Sequence[StageEstimate], measured: Measured, sizes: Mapping[str, Sizes],
                 speedup: float, planned_device: str) -> str:
    """The printed report: one row per stage, then the totals."""
    small, large = sizes["measured"], sizes["planned"]
    lines = [f"measured run: {measured.total_seconds / 3600:.3f} h of job wall time on {measured.device}, "
             f"{small.n_train} training points, {small.macs:,} multiply-adds per forward; fixed cost "
             f"of a job {measured.startup:.1f} s" + (f"; {measured.unfinished} of its jobs have not run" if measured.unfinished
                                             else ""),
             f"planned run: {large.n_train} training points, {large.macs:,} multiply-adds per forward, "
             f"device {planned_device}" + (f", GPU rules {speedup:g}x faster than measured" if speedup != 1 else ""),
             "",
             f"{'stage':<24} {'jobs':>6} {'wall h':>10} {'core h':>10} {'GPU h':>10} {'disk':>10}  note",
             f"{'-' * 24} {'-' * 6} {'-' * 10} {'-' * 10} {'-' * 10} {'-' * 10}"]
    for stage in sorted(stages, key=lambda item: -item.wall_hours):
        lines.append(f"{stage.rule:<24} {stage.jobs:>6} {stage.wall_hours:>10.2f} {stage.core_hours:>10.2f} "
                     f"{stage.gpu_hours:>10.2f} {_human_bytes(stage.disk_bytes):>10}  {'; '.join(stage.notes)}")
    lines.append(f"{'total':<24} {sum(s.jobs for s in stages):>6} {sum(s.wall_hours for s in stages):>10.2f} "
                 f"{sum(s.core_hours for s in stages):>10.2f} {sum(s.gpu_hours for s in stages):>10.2f} "
                 f"{_human_bytes(sum(s.disk_bytes for s in stages)):>10}")
    return "\n".join(lines)


def _load(config_file: str | Path, schema: Path, overrides: Mapping[str, Any]) -> dict[str, Any]:
    config = load_config_file(config_file)
    for key, value in overrides.items():
        config[key] = {**config.get(key, {}), **value} if isinstance(value, Mapping) else value
    return validate_config(config, load_schema(schema))


def estimate(measured_config: str | Path, planned_config: str | Path, directory: str | Path = ".",
             planned_directory: str | Path | None = None, snakefile: str | Path | None = None,
             speedup: float = 1.0, planned_data: str | None = None) -> tuple[list[StageEstimate], str]:
    """Predict the planned config's cost per stage from the measured config's finished run in
    `directory`; returns the stages and the printed table."""
    root = Path(__file__).resolve().parents[3]
    snakefile = Path(snakefile) if snakefile else root / "Snakefile"
    if not snakefile.is_file():
        raise UserError(f"{snakefile}: no Snakefile here; give --snakefile PATH/Snakefile")
    if speedup <= 0:
        raise UserError(f"estimate: --speedup must be positive, got {speedup}")
    schema = snakefile.parent / "workflow" / "schemas" / "config.schema.yaml"
    directory = Path(directory)
    data_override = {"data": {"path": planned_data}} if planned_data else {}
    small = _load(measured_config, schema, {})
    large = _load(planned_config, schema, data_override)
    results = directory / "results" / small["experiment"]
    if not (results / "benchmarks").is_dir():
        raise UserError(f"{results / 'benchmarks'}: no such directory; run {measured_config} to the end first")
    small_sizes = experiment_sizes(small, results / "data.h5")
    large_sizes = experiment_sizes(large)
    measured = measure(small, _own(planned_jobs(measured_config, directory, snakefile), small), directory,
                       small_sizes)
    overrides = [f"data={{loader: {large['data']['loader']}, path: {planned_data}}}"] if planned_data else []
    jobs = _own(planned_jobs(planned_config, planned_directory or directory, snakefile, overrides), large)
    stages = predict(measured, large, jobs, large_sizes, speedup)
    table = format_table(stages, measured, {"measured": small_sizes, "planned": large_sizes}, speedup,
                         large["device"])
    return stages, table


def _own(jobs: Sequence[Job], config: Mapping[str, Any]) -> list[Job]:
    """The jobs of the config's main experiment (not those of its further ``experiments``)."""
    prefix = f"results/{config['experiment']}/"
    return [job for job in jobs if not job.outputs or all(path.startswith(prefix) for path in job.outputs)]
