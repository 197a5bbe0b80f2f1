"""Deletion request files as the workflow reads them when it is parsed (which requests an
experiment has, what each needs, where its job's receipt goes), without torch; processing a request
is :mod:`unlearnflow.ops.ledger`'s, whose docstring describes the file.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Iterable, Mapping

import yaml

from unlearnflow.config import HYPERPARAMETER_MINIMA, check_numbers
from unlearnflow.errors import UserError
from unlearnflow.registry import ARTIFACTS, EDITS_MODEL, configurations, spec_of

#: The ledger head before any request: the experiment's original model.
ORIGINAL = "original"
REQUEST_KEYS = {"model", "after", "method", "samples", "hyperparameters", "seed"}


def read_request(path: str | Path) -> dict[str, Any]:
    """A request file, checked for its keys and their types (one UserError line naming the file)."""
    path = Path(path)
    try:
        request = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as error:
        raise UserError(f"{path}: cannot read the deletion request ({error})") from None
    if not isinstance(request, dict):
        raise UserError(f"{path}: a deletion request is a mapping with keys {', '.join(sorted(REQUEST_KEYS))}")
    unknown, missing = set(request) - REQUEST_KEYS, {"model", "after", "method", "samples"} - set(request)
    if unknown or missing:
        raise UserError(f"{path}: " + "; ".join(
            part for part in (f"unknown key(s) {', '.join(sorted(map(str, unknown)))}" if unknown else "",
                              f"missing key(s) {', '.join(sorted(missing))}" if missing else "") if part))
    samples = request["samples"]
    if not isinstance(samples, list) or not samples or not all(isinstance(s, int) and not isinstance(s, bool)
                                                                for s in samples):
        raise UserError(f"{path}: samples must be a non-empty list of training-set indices")
    if len(set(samples)) != len(samples):
        raise UserError(f"{path}: samples lists an index more than once")
    kinds = {"model": int, "after": str, "method": str, "hyperparameters": dict, "seed": int}
    for key, kind in kinds.items():
        if key in request and (not isinstance(request[key], kind) or isinstance(request[key], bool)):
            raise UserError(f"{path}: {key}: must be {'a mapping' if kind is dict else kind.__name__}, "
                            f"got {request[key]!r}")
    return {"name": path.stem, "file": str(path), "hyperparameters": {}, "seed": 0, **request}


def experiment_requests(experiment: str, root: str | Path = ".") -> dict[str, dict[str, Any]]:
    """Every request file of an experiment (``requests/{experiment}/*.yaml``), by name, each
    checked as the workflow is parsed (:func:`check_request`): one UserError line naming the file
    and the key."""
    paths = sorted(Path(root, "requests", experiment).glob("*.yaml"))
    requests = {path.stem: read_request(path) for path in paths}
    for path in paths:
        check_request(path, requests[path.stem], requests)
    return requests


def check_request(path: Path, asked: Mapping[str, Any], requests: Mapping[str, Mapping[str, Any]]) -> None:
    """A request whose method can serve it, with hyper-parameters that resolve and keep the bounds
    a config's do, and whose ``after`` is ``original`` or a request of the same model."""
    request_needs(asked)
    check_numbers(str(path), "hyperparameters", asked["hyperparameters"], HYPERPARAMETER_MINIMA)
    try:
        configurations(asked["method"], {"hyperparameters": asked["hyperparameters"]})
    except UserError as error:
        raise UserError(f"{path}: hyperparameters: {error}") from None
    after = asked["after"]
    if after != ORIGINAL and after not in requests:
        raise UserError(f"{path}: after: no request {after!r} in {path.parent} (the head is {ORIGINAL!r} "
                        "or the name of a request of the same model)")
    if after != ORIGINAL and requests[after]["model"] != asked["model"]:
        raise UserError(f"{path}: after: {after} is a request of model {requests[after]['model']}, not of model "
                        f"{asked['model']}; a request continues its own model's ledger")


def receipt_path(experiment: str, request: Mapping[str, Any]) -> str:
    """The file the workflow's job of a request writes last (the ledger's own files are not
    Snakemake's outputs, so that a rerun never deletes a processed request)."""
    return f"results/{experiment}/ledger/model_{request['model']}/{request['name']}.receipt.json"


def request_receipts(experiments: Iterable[str]) -> list[str]:
    """The receipt of every request of every experiment (what ``snakemake requests`` makes)."""
    return [receipt_path(name, asked) for name in experiments for asked in experiment_requests(name).values()]


def request_hash(asked: Mapping[str, Any]) -> str:
    """SHA-256 of what a request asks, its fields with their defaults (comments, formatting and the
    file's dates do not count): a processed request's hash is in its ledger entry."""
    fields = {key: asked.get(key) for key in sorted(REQUEST_KEYS)}
    return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()


def request_needs(asked: Mapping[str, Any]) -> tuple[str, ...]:
    """The shared side artifacts the request's method needs; a method that predicts outputs, takes
    options, builds its targets from the original bank's logits (DMM) or needs per-forget-set
    artifacts (oracles) cannot serve a deletion request."""
    where = f"{asked['file']}: method"
    try:
        spec = spec_of(asked["method"])
    except UserError as error:
        raise UserError(f"{where}: {error}") from None
    if spec.kind != EDITS_MODEL or spec.options:
        raise UserError(f"{where}: {asked['method']} cannot serve deletion requests "
                        "(it predicts outputs or needs oracles)")
    if spec.prepare_reads_logits:
        raise UserError(f"{where}: {asked['method']} cannot serve deletion requests (its targets come from the "
                        "original bank's logits on every training point, which a request's job does not compute)")
    needs = spec.needs_for({"hyperparameters": asked["hyperparameters"]})
    per_forget_set = [name for name in needs if "{forget_set}" in ARTIFACTS[name].path]
    if per_forget_set:
        raise UserError(f"{where}: {asked['method']} needs {', '.join(per_forget_set)}, which "
                        "a deletion request does not have")
    return needs
