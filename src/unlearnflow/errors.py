"""The one exception type for user mistakes, and how their one-line causes reach the console.

Library code raises :class:`UserError` for anything a user can fix (a missing directory, a
malformed file, an invalid index list, an unknown option). The CLI prints its message as one
line, ``unlearnflow: error: ...``, and exits with status 2; everything else is a bug and keeps
its traceback.

In the workflow a job's output goes to its log file, so the Snakefile's ``onerror`` handler
calls :func:`report_failed_jobs`: for every job that Snakemake's own log says failed, it
prints the last ``unlearnflow: error:`` line of the job's log with the log's path.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any, Callable, Iterable, TextIO, TypeVar

#: How the CLI starts the line of a user error.
ERROR_PREFIX = "unlearnflow: error:"
T = TypeVar("T")

#: A failed job's block in Snakemake's log: its rule, then its indented fields (input, output, log ...).
FAILED_JOB = re.compile(r"^Error in rule (\S+):\n((?:[ \t]+.*\n?)*)", re.M)
_JOB_LOG = re.compile(r"^\s+log: (.+?) \(check log file", re.M)


class UserError(Exception):
    """A problem with the user's input, explained in one line."""


def or_exit(function: Callable[..., T], *args: Any) -> T:
    """``function(*args)``; a UserError ends the process with its one line (what the Snakefile
    checks before any job runs, and its input functions)."""
    try:
        return function(*args)
    except UserError as error:
        sys.exit(f"{ERROR_PREFIX} {error}")


def failed_job_causes(snakemake_log: str) -> list[str]:
    """One line per failed job in the text of Snakemake's log: the last ``unlearnflow: error:``
    line of the job's log and the log's path (or, when the job failed otherwise, where to look)."""
    causes = []
    for rule, body in FAILED_JOB.findall(snakemake_log):
        found = _JOB_LOG.search(body)
        if not found:
            causes.append(f"rule {rule} failed (no log file; see the messages above)")
            continue
        for log in found.group(1).split(", "):
            cause = last_error_line(Path(log))
            causes.append(f"{cause}  [rule {rule}, log {log}]" if cause else
                          f"rule {rule} failed without a one-line cause (a bug or a crash); see {log}")
    return list(dict.fromkeys(causes))


def last_error_line(log: Path) -> str | None:
    """The last ``unlearnflow: error:`` line of a job's log, if it has one."""
    try:
        lines = log.read_text(errors="replace").splitlines()
    except OSError:
        return None
    return next((line.strip() for line in reversed(lines) if line.startswith(ERROR_PREFIX)), None)


def log_texts(snakemake_logs: Iterable[str]) -> list[str]:
    """The texts of those of Snakemake's log files (an ``onerror`` handler's ``log``) that can be read."""
    texts = []
    for path in snakemake_logs:
        try:
            texts.append(Path(path).read_text(errors="replace"))
        except OSError:
            continue
    return texts


def report_failed_jobs(snakemake_logs: Iterable[str], stream: TextIO | None = None) -> list[str]:
    """Print the cause of every failed job named in Snakemake's log files (the ``log`` of an
    ``onerror`` handler) to `stream` (stderr); return the printed lines."""
    causes = [cause for text in log_texts(snakemake_logs) for cause in failed_job_causes(text)]
    stream = stream or sys.stderr
    for cause in dict.fromkeys(causes):
        print(cause, file=stream)
    return list(dict.fromkeys(causes))
