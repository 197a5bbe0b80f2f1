"""Command line of unlearnflow: ``python -m unlearnflow COMMAND ...``; the workflow's rules call it.

This module only parses: each command's options become the keyword arguments of one stage
function of :mod:`unlearnflow.stages`, the orchestrator, imported once a command runs (so that
``--help`` imports no torch). Config slices arrive as JSON strings.
A user mistake (:class:`~unlearnflow.errors.UserError`) prints one line and exits with status 2.
"""

from __future__ import annotations

import argparse
import errno
import json
import sys
from typing import Any, Sequence

from unlearnflow import __version__
from unlearnflow.core.stage_table import STAGE_VERSIONS
from unlearnflow.errors import UserError
from unlearnflow.lazy import imported
from unlearnflow.metrics.declarations import MAX_ABS_LOGIT

#: Options that steer the CLI itself, not the stage function.
_CLI_OPTIONS = ("command", "function", "stage", "stage_version")
#: Options naming a stage's output files, whose stale temporaries a new run removes first.
_OUTPUT_OPTIONS = ("out", "out_h5", "out_csv", "weights_out")


def json_value(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise UserError(f"expected a JSON value, got {text!r} ({error.msg})") from error


def check_version(stage: str, version: int | None) -> None:
    """Rules pass the stage version they were written for; a mismatch means a stale workflow."""
    if version is not None and version != STAGE_VERSIONS[stage]:
        raise UserError(f"the workflow asks for {stage} stage version {version}, the library writes "
                        f"version {STAGE_VERSIONS[stage]}; update the workflow's rules and the library together")


def torch_options(sub: argparse.ArgumentParser) -> None:
    """Options of every command that runs models: device, CPU threads, progress bars."""
    sub.add_argument("--device", default="auto", help="auto, cpu or cuda")
    sub.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    sub.add_argument("--progress", action="store_true", help="show progress bars on stderr")


def labels_option(sub: argparse.ArgumentParser) -> None:
    """The option of every command that needs the experiment's training labels."""
    sub.add_argument("--labels-from", help="poison forget set whose labels the experiment trains on")


def side_option(sub: argparse.ArgumentParser) -> None:
    """Side artifacts a method declares in the registry, by name (one per step of a sequence)."""
    sub.add_argument("--side", action="append", default=[], metavar="NAME=PATH",
                     help="a side artifact the method needs (repeat; in step order for a sequence)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="unlearnflow", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=__version__)
    commands = parser.add_subparsers(dest="command", required=True)

    def command(name: str, function: str, help_text: str, stage: str | None = None) -> argparse.ArgumentParser:
        """A command running the stage function of :mod:`unlearnflow.stages` named `function`."""
        sub = commands.add_parser(name, help=help_text)
        sub.set_defaults(function=function, stage=stage)
        if stage:
            sub.add_argument("--stage-version", type=int, help="stage version the calling rule expects")
        return sub

    sub = command("prepare-data", "prepare_data", "load, split and normalise a data set", "dataset")
    sub.add_argument("--spec", type=json_value, required=True, help="JSON data config slice")
    sub.add_argument("--out", required=True)

    sub = command("extract-features", "extract_features",
                  "a data set's features through a backbone, rows L2-normalised (linear experiments)", "features")
    sub.add_argument("--data", required=True, help="dataset artifact")
    sub.add_argument("--spec", type=json_value, required=True, help="JSON features config slice")
    sub.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    sub.add_argument("--out", required=True)

    sub = command("forget-set", "make_forget_set", "build one named forget set", "forget_set")
    sub.add_argument("--name", required=True)
    sub.add_argument("--spec", type=json_value, required=True, help="JSON forget-set config slice")
    sub.add_argument("--data", required=True, help="dataset artifact")
    sub.add_argument("--seed", type=int, required=True)
    sub.add_argument("--out", required=True)

    sub = command("forget-samples", "make_forget_samples",
                  "write a forget set's samples and the validation split (a source-free method's input)",
                  "forget_samples")
    sub.add_argument("--data", required=True, help="dataset artifact")
    sub.add_argument("--forget-set", required=True)
    labels_option(sub)
    sub.add_argument("--out", required=True)

    sub = command("train", "train", "train a chunk of a model bank (vectorised)", "model_bank")
    sub.add_argument("--role", default="original",
                     help="role of the models, seeds depend on it (with --forget-set: ROLE/FORGET_SET)")
    sub.add_argument("--data", required=True, help="dataset artifact")
    sub.add_argument("--forget-set", help="retrain without this forget set (oracles)")
    sub.add_argument("--requests", type=int, help="only without its first REQUESTS requests (a sequence's prefix)")
    labels_option(sub)
    sub.add_argument("--model", type=json_value, required=True, help="JSON model config slice")
    sub.add_argument("--training", type=json_value, required=True, help="JSON training config slice")
    sub.add_argument("--seed", type=int, required=True, help="global seed")
    sub.add_argument("--subset-fraction", type=float,
                     help="train each model on a random subset of this fraction (mask drawn from its seed)")
    sub.add_argument("--first-id", type=int, required=True)
    sub.add_argument("--count", type=int, required=True)
    sub.add_argument("--models-per-pass", type=int, default=0,
                     help="train at most this many models at once on the device (0: all of them)")
    sub.add_argument("--state-dicts", nargs="+", default=(), metavar="PATH",
                     help="import these trained models (one state-dict file per model) instead of training")
    sub.add_argument("--outputs-only", dest="store_weights", action="store_false",
                     help="store the models' masks and logits, not their weights (subset models)")
    torch_options(sub)
    sub.add_argument("--out", required=True)

    sub = command("import-bank", "import_originals", "an original bank from models you trained (state-dict files)",
                  "model_bank")
    sub.add_argument("--data", required=True, help="dataset artifact (results/EXPERIMENT/data.h5)")
    labels_option(sub)
    sub.add_argument("--model", type=json_value, required=True,
                     help='JSON model config slice, e.g. \'{"arch": "mlp", "options": {"hidden": [64]}}\'')
    sub.add_argument("--seed", type=int, default=0, help="global seed (the models' recorded seeds)")
    sub.add_argument("--out", required=True, help="the bank (results/EXPERIMENT/originals.h5)")
    sub.add_argument("--weights-out", help="also the models alone (results/EXPERIMENT/original_models.h5)")
    sub.add_argument("state_dicts", nargs="+", metavar="STATE_DICT", help="one .pt file per model, in model-id order")

    sub = command("gather", "gather", "concatenate model-bank chunks", "model_bank")
    sub.add_argument("--out", required=True)
    sub.add_argument("--weights-out", help="also write the models alone (no logits, no training masks)")
    sub.add_argument("chunks", nargs="+")

    sub = command("unlearn", "unlearn", "unlearn a forget set from every original model", "unlearned")
    sub.add_argument("--method", required=True)
    sub.add_argument("--method-config", type=json_value, default={},
                     help="JSON config slice of the method: hyperparameters, grid and its options")
    sub.add_argument("--originals", required=True, help="bank of the original models")
    sub.add_argument("--data", help="dataset artifact (methods that are not source-free)")
    sub.add_argument("--forget-set", help="forget set artifact (methods that are not source-free)")
    sub.add_argument("--forget-samples", help="forget samples artifact (source-free methods)")
    labels_option(sub)
    side_option(sub)
    sub.add_argument("--seed", type=int, required=True)
    sub.add_argument("--models-per-pass", type=int, default=0,
                     help="most models whose training loops run as one (0: all; 1: one model after the other, "
                          "the same models, bitwise for Linear chains)")
    torch_options(sub)
    sub.add_argument("--out", required=True)

    sub = command("gradient-space", "gradient_space",
                  "PGU's cached factorisation of every layer's input representations", "gradient_space")
    sub.add_argument("--data", required=True, help="dataset artifact")
    sub.add_argument("--originals", required=True, help="bank of the original models (weights)")
    sub.add_argument("--batch-size", type=int, default=256, help="training points per forward pass")
    torch_options(sub)
    sub.add_argument("--out", required=True)

    sub = command("evaluate", "evaluate", "evaluate the unlearned banks of one forget set against its oracles",
                  "evaluation")
    sub.add_argument("--data", required=True, help="dataset artifact")
    sub.add_argument("--forget-set", required=True)
    sub.add_argument("--requests", type=int, help="evaluate the result after this many requests of a sequence")
    sub.add_argument("--originals", required=True, help="bank of the original models")
    labels_option(sub)
    sub.add_argument("--oracles", required=True)
    sub.add_argument("--method", action="append", required=True, help="a method to evaluate (repeat)")
    sub.add_argument("--unlearned", action="append", required=True, help="its bank (one per --method, in order)")
    sub.add_argument("--from-scratch", action="append", default=[], metavar="METHOD",
                     help="a method whose models were not obtained from the original models (retraining)")
    sub.add_argument("--ulira", action="append", default=[], help="CSV with its U-LiRA accuracy (one per --method)")
    sub.add_argument("--seed", type=int, default=0)
    sub.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    sub.add_argument("--max-abs-logit", type=float, default=MAX_ABS_LOGIT,
                     help="an output beyond +-this counts as exploded: the configuration diverged")
    sub.add_argument("--out-h5", action="append", required=True, help="its evaluation artifact (one per --method)")
    sub.add_argument("--out-csv", action="append", required=True, help="its rows (one per --method)")

    sub = command("fit-datamodels", "fit_datamodels", "fit the experiment's datamodels", "datamodels")
    sub.add_argument("--data", required=True, help="dataset artifact")
    labels_option(sub)
    sub.add_argument("--subset-models", nargs="+", required=True, help="chunks of the subset-model bank")
    sub.add_argument("--originals", help="original bank (the trak estimator's checkpoints)")
    sub.add_argument("--spec", type=json_value, required=True, help="JSON datamodels config slice")
    sub.add_argument("--seed", type=int, required=True)
    sub.add_argument("--chunk", type=int, help="fit only this chunk of the points (0-based) and write a part")
    sub.add_argument("--chunks", type=int, default=1, help="number of chunks the points are split into")
    torch_options(sub)
    sub.add_argument("--out", required=True)

    sub = command("gather-datamodels", "gather_datamodels", "gather the parts of a scattered datamodel fit",
                  "datamodels")
    sub.add_argument("--parts", nargs="+", required=True, help="the parts written by fit-datamodels --chunk")
    sub.add_argument("--out", required=True)

    sub = command("calibrate-datamodels", "calibrate_datamodels",
                  "fit the datamodels' scale on a held-out forget set's oracles", "datamodel_calibration")
    sub.add_argument("--datamodels", required=True)
    sub.add_argument("--forget-set", required=True, help="the held-out calibration forget set")
    sub.add_argument("--originals", required=True)
    sub.add_argument("--oracles", required=True, help="the calibration forget set's oracles")
    labels_option(sub)
    sub.add_argument("--out", required=True)

    sub = command("ulira", "ulira", "U-LiRA attacker accuracy of a method on shadow models", "ulira")
    sub.add_argument("--method", required=True)
    sub.add_argument("--data", required=True)
    sub.add_argument("--base", required=True, help="bank of base models trained on 50%% subsets")
    labels_option(sub)
    sub.add_argument("--spec", type=json_value, required=True,
                     help="JSON: forget_sets_per_model, forget_size, pool_class[, pool_size]")
    sub.add_argument("--training", type=json_value, required=True, help="JSON training recipe (for retraining)")
    sub.add_argument("--method-config", type=json_value, default={},
                     help="JSON config slice of the method (hyperparameters, options)")
    side_option(sub)
    sub.add_argument("--seed", type=int, required=True)
    sub.add_argument("--models-per-pass", type=int, default=0,
                     help="retrain at most this many shadow models at once on the device (0: all of them)")
    torch_options(sub)
    sub.add_argument("--out", required=True)

    sub = command("report", "make_report", "summary tables and plots of all evaluations", "report")
    sub.add_argument("--out-dir", required=True)
    sub.add_argument("--csv", nargs="+", required=True, help="evaluation CSV rows")
    sub.add_argument("--evaluations", nargs="+", required=True, help="evaluation HDF5 artifacts")
    side_option(sub)
    sub.add_argument("--accuracy-guard", type=float,
                     help="largest test-accuracy loss against the oracles of a selectable configuration (default 0.005)")
    sub.add_argument("--selection-set", help="choose every headline configuration on this forget set")
    sub.add_argument("--threads", type=int, default=1, help="bootstrap intervals computed at once")

    sub = command("pgu-table", "pgu_table",
                  "the PGU paper's tables (errors, attack, time; de-poisoning per budget) from report summaries")
    sub.add_argument("summaries", nargs="+", help="results/EXPERIMENT/report/summary.csv files")
    sub.add_argument("--acceptance", metavar="METHOD", help="also check issue 10's class-sample criteria for METHOD")
    sub.add_argument("--configurations", action="store_true",
                     help="also the de-poisoning table for every configuration, not only the headline")
    sub.add_argument("--out", help="write the markdown here (default: standard output)")

    sub = command("sourcefree-table", "sourcefree_table",
                  "the source-free paper's tables (weight distance, test acc, KLOM, time) from linear reports")
    sub.add_argument("summaries", nargs="+", help="results/EXPERIMENT/report/summary.csv files")
    sub.add_argument("--out", help="write the markdown here (default: standard output)")

    sub = command("snapshot", "snapshot",
                  "keep a finished run's summary.csv, config and cost under docs/results/NAME (a table's source)")
    sub.add_argument("--name", required=True, help="the snapshot's name (its directory under docs/results/)")
    sub.add_argument("--summary", required=True, help="the run's results/EXPERIMENT/report/summary.csv")
    sub.add_argument("--config", required=True, help="the config file the run used")
    sub.add_argument("--command", dest="run_command", help="the command that ran it, e.g. \"snakemake --cores 2\"")
    sub.add_argument("--machine", help="the machine it ran on (default: this one's OS, architecture and CPUs)")
    sub.add_argument("--commit", help="the commit it ran (default: HEAD of the checkout holding the summary)")
    sub.add_argument("--root", default=".", help="the repository root (default: .)")

    sub = command("tables", "tables",
                  "render the table blocks of README.md and docs/*.md from their snapshots (docs/results/tables.yaml)")
    sub.add_argument("--check", action="store_true",
                     help="change nothing; exit 1 naming each block whose text differs from its snapshot")
    sub.add_argument("--root", default=".", help="the repository root (default: .)")

    sub = command("request-samples", "make_request_samples",
                  "write a deletion request's samples and the validation split (a source-free method's input)",
                  "forget_samples")
    sub.add_argument("--request", required=True, help="the request's YAML file")
    sub.add_argument("--data", required=True, help="dataset artifact")
    labels_option(sub)
    sub.add_argument("--out", required=True)

    sub = command("deletion-request", "deletion_request",
                  "process one deletion request against a model's ledger (new head model, certificate)",
                  "deletion_request")
    sub.add_argument("--request", required=True, help="the request's YAML file")
    sub.add_argument("--samples", help="the request's extracted samples (a source-free method reads these alone)")
    sub.add_argument("--data", help="dataset artifact (a method that is not source-free reads the training set)")
    labels_option(sub)
    sub.add_argument("--models", required=True, help="the original models alone (original_models.h5)")
    sub.add_argument("--ledger-dir", required=True, help="the model's ledger directory")
    sub.add_argument("--receipt", help="the file written last, once the request is in the ledger")
    side_option(sub)
    sub.add_argument("--device", default="auto", help="auto, cpu or cuda")
    sub.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")

    sub = command("check-config", "check_config",
                  "validate a workflow config file (names the line and column of a YAML syntax error)")
    sub.add_argument("config_file")
    sub.add_argument("--schema", help="config schema (default: the workflow's, in a source checkout)")

    sub = command("estimate", "estimate",
                  "predict a larger config's core-hours, GPU-hours and disk per stage from a finished smaller run")
    sub.add_argument("--measured", required=True, metavar="CONFIG",
                     help="config of the finished run whose results/{experiment}/benchmarks are measured")
    sub.add_argument("--planned", required=True, metavar="CONFIG", help="config to predict")
    sub.add_argument("--directory", default=".", help="working directory of the measured run (default: .)")
    sub.add_argument("--planned-data", help="data path of the planned config (overrides its data.path)")
    sub.add_argument("--speedup", type=float, default=1.0,
                     help="how many times faster the planned run's GPU rules are than the measured run's (1)")
    sub.add_argument("--snakefile", help="the workflow's Snakefile (default: the source checkout's)")

    sub = command("theory", "theory", "ridge-regression oracle-matching experiment (DMM paper, Section 5)",
                  "theory")
    sub.add_argument("--panel", required=True, help="figure panel, e.g. fig5a or figE2_sgd_small")
    sub.add_argument("--out", required=True, help="PNG of the relative distance to the optimum")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        if args.stage:
            check_version(args.stage, args.stage_version)
        clean_stale_temporaries = imported("unlearnflow.core.store:clean_stale_temporaries")
        for option in _OUTPUT_OPTIONS:
            paths = getattr(args, option, None) or []
            for path in [paths] if isinstance(paths, str) else paths:
                clean_stale_temporaries(path)
        function = imported(f"unlearnflow.stages:{args.function}")
        status = function(**{key: value for key, value in vars(args).items() if key not in _CLI_OPTIONS})
    except UserError as error:
        print(f"unlearnflow: error: {error}", file=sys.stderr)
        return 2
    except OSError as error:  # the machine's faults a user can fix: a full disk, a quota
        if error.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        print(f"unlearnflow: error: {error.strerror} writing {error.filename or 'the outputs'}; free space "
              "and rerun (nothing half-written was kept)", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("unlearnflow: error: interrupted by the user (nothing half-written was kept)", file=sys.stderr)
        return 130
    return status or 0  # a stage may return a status: `tables --check` returns 1 when a table differs
