"""Reruns that redo failed work (issue 19, item 6).

Snakemake deletes a failed job's outputs and, on the next run, plans a job whose outputs are
missing only when a job that runs asks for them. After a failure the report and the other files
downstream of the failed job are still there, so a plain rerun found "nothing to be done" and the
run looked complete. The workflow's ``onerror`` handler therefore records the outputs of every
failed job (:func:`record_failed_outputs`, from Snakemake's log) in :data:`RECORD`, and the
default target asks for those still missing that the config still plans
(:func:`outputs_to_redo`): their jobs run again, and with them every job downstream of them.
``onsuccess`` forgets the recorded outputs that exist again (:func:`forget_rebuilt_outputs`).

A deletion request's receipt is not recorded: ``snakemake requests`` asks for every receipt
itself, and a bad request must not stop the main workflow.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any, Iterable, Mapping

from unlearnflow.config import CALIBRATION_SET
from unlearnflow.core.forget_sets import step_name
from unlearnflow.core.stage_table import output_wildcards
from unlearnflow.errors import FAILED_JOB, log_texts
from unlearnflow.registry import REFERENCES

#: The outputs of the jobs that failed, relative to the working directory (a JSON list).
RECORD = Path(".snakemake/unlearnflow/failed_outputs.json")
#: Rules whose outputs only ``snakemake requests`` asks for.
NOT_REDONE_BY_DEFAULT = ("deletion_request",)
_JOB_OUTPUT = re.compile(r"^\s+output: (.+)$", re.M)


def failed_outputs(snakemake_log: str) -> list[str]:
    """The output files of every job that the text of Snakemake's log says failed."""
    outputs = []
    for _rule, body in FAILED_JOB.findall(snakemake_log):
        found = _JOB_OUTPUT.search(body)
        outputs += found.group(1).split(", ") if found else []
    return list(dict.fromkeys(outputs))


def recorded() -> list[str]:
    """The recorded outputs of failed jobs (none when the record is missing or unreadable)."""
    try:
        paths = json.loads(RECORD.read_text())
    except (OSError, ValueError):
        return []
    return [path for path in paths if isinstance(path, str)] if isinstance(paths, list) else []


def _write(paths: list[str]) -> None:
    if not paths:
        RECORD.unlink(missing_ok=True)
        return
    RECORD.parent.mkdir(parents=True, exist_ok=True)
    partial = RECORD.with_name(RECORD.name + ".partial")
    partial.write_text(json.dumps(paths, indent=1))
    os.replace(partial, RECORD)


def record_failed_outputs(snakemake_logs: Iterable[str]) -> None:
    """``onerror``: add the outputs of the jobs Snakemake's log files name as failed to the record
    (keeping the earlier entries still missing)."""
    failed = [output for text in log_texts(snakemake_logs) for output in failed_outputs(text)]
    _write([path for path in dict.fromkeys(recorded() + failed) if not os.path.exists(path)])


def forget_rebuilt_outputs() -> None:
    """``onsuccess``: keep only the recorded outputs that are still missing."""
    _write([path for path in recorded() if not os.path.exists(path)])


def _planned_names(config: Mapping[str, Any]) -> dict[str, set[str]]:
    """The values of the ``method`` and ``forget_set`` wildcards an experiment's config plans."""
    forget_sets = {CALIBRATION_SET}
    for name, spec in config["forget_sets"].items():
        forget_sets.add(name)
        if spec["kind"] == "incremental":
            forget_sets.update(step_name(name, requests) for requests in range(1, spec["requests"] + 1))
    return {"method": set(REFERENCES) | set(config["methods"]), "forget_set": forget_sets}


def outputs_to_redo(experiments: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """The recorded outputs of failed jobs that are missing and that a rule of one of
    `experiments` (name -> validated config) still writes for a method and forget set it plans."""
    redo = []
    for path in recorded():
        for config in experiments.values():
            results = f"results/{config['experiment']}/"
            found = output_wildcards(path[len(results):]) if path.startswith(results) else None
            if not found or found[0] in NOT_REDONE_BY_DEFAULT or os.path.exists(path):
                continue
            planned = _planned_names(config)
            if all(value in planned[name] for name, value in found[1].items() if name in planned):
                redo.append(path)
    return redo
