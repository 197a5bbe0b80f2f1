"""Reruns that redo failed work (issue 19, item 6).

Snakemake deletes a failed job's outputs and, on the next run, plans a job whose outputs are
missing only when a job that runs asks for them. After a failure the report and the other files
downstream of the failed job are still there, so a plain rerun found "nothing to be done" and the
run looked complete. The workflow's ``onerror`` handler therefore records the outputs of every
failed job (:func:`record_failed_outputs`, from Snakemake's log) in :data:`RECORD`, each with the
fingerprint of its experiment's config. The default target asks for those still missing whose
experiment has the same config (:func:`outputs_to_redo`): the same config plans the same jobs, so
they run again, and with them every job downstream of them. Where the config changed since, the
failed jobs may no longer be planned; the run says so in one line instead of redoing them (the
change itself reruns what it invalidates). ``onsuccess`` forgets the recorded outputs that exist
again or will not be redone (:func:`forget_rebuilt_outputs`).

Outputs of rules outside the default target are not recorded (:data:`NOT_REDONE_BY_DEFAULT`):
``snakemake requests`` and ``snakemake theory`` ask for theirs themselves, and a bad deletion
request must not stop the main workflow.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path
from typing import Any, Iterable, Mapping

from unlearnflow.core.stage_table import output_wildcards
from unlearnflow.errors import FAILED_JOB, log_texts

#: The missing outputs of the jobs that failed, relative to the working directory, each with the
#: fingerprint of its experiment's config then (a JSON object).
RECORD = Path(".snakemake/unlearnflow/failed_outputs.json")
#: Rules whose outputs only other targets ask for (``snakemake requests``, ``snakemake theory``).
NOT_REDONE_BY_DEFAULT = ("deletion_request", "request_samples", "theory_panel")
_JOB_OUTPUT = re.compile(r"^\s+output: (.+)$", re.M)


def failed_outputs(snakemake_log: str) -> list[str]:
    """The output files of every job that the text of Snakemake's log says failed."""
    outputs = []
    for _rule, body in FAILED_JOB.findall(snakemake_log):
        found = _JOB_OUTPUT.search(body)
        outputs += found.group(1).split(", ") if found else []
    return list(dict.fromkeys(outputs))


def fingerprint(config: Mapping[str, Any]) -> str:
    """A short hash of an experiment's validated config."""
    return hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()[:16]


def recorded() -> dict[str, str]:
    """Recorded output -> its experiment's config fingerprint (empty when there is no readable record)."""
    try:
        entries = json.loads(RECORD.read_text())
    except (OSError, ValueError):
        return {}
    return {path: digest for path, digest in entries.items() if isinstance(digest, str)} \
        if isinstance(entries, dict) else {}


def _write(entries: Mapping[str, str]) -> None:
    if not entries:
        RECORD.unlink(missing_ok=True)
        return
    RECORD.parent.mkdir(parents=True, exist_ok=True)
    partial = RECORD.with_name(RECORD.name + ".partial")
    partial.write_text(json.dumps(entries, indent=1))
    os.replace(partial, RECORD)


def _experiment_of(path: str, experiments: Mapping[str, Mapping[str, Any]]) -> str | None:
    """The experiment whose results a default-target rule writes `path` into, or None."""
    for name, config in experiments.items():
        results = f"results/{config['experiment']}/"
        found = output_wildcards(path[len(results):]) if path.startswith(results) else None
        if found and found[0] not in NOT_REDONE_BY_DEFAULT:
            return name
    return None


def record_failed_outputs(snakemake_logs: Iterable[str], experiments: Mapping[str, Mapping[str, Any]]) -> None:
    """``onerror``: add the outputs of the jobs that Snakemake's log files name as failed, each
    with its experiment's config fingerprint (`experiments`: name -> validated config), to the
    record, keeping the earlier entries still missing."""
    entries = recorded()
    for text in log_texts(snakemake_logs):
        for path in failed_outputs(text):
            name = _experiment_of(path, experiments)
            if name is not None:
                entries[path] = fingerprint(experiments[name])
    _write({path: digest for path, digest in entries.items() if not os.path.exists(path)})


def forget_rebuilt_outputs(experiments: Mapping[str, Mapping[str, Any]]) -> None:
    """``onsuccess``: keep only the recorded outputs that are still missing and would still be
    redone (their experiment's config unchanged)."""
    entries = recorded()
    _write({path: entries[path] for path in outputs_to_redo(experiments)[0]})


def outputs_to_redo(experiments: Mapping[str, Mapping[str, Any]]) -> tuple[list[str], list[str]]:
    """(the recorded missing outputs whose experiment has the config it had when they failed,
    those whose experiment's config changed since or is gone)."""
    redo, changed = [], []
    for path, digest in recorded().items():
        if os.path.exists(path):
            continue
        name = _experiment_of(path, experiments)
        (redo if name is not None and fingerprint(experiments[name]) == digest else changed).append(path)
    return redo, changed
