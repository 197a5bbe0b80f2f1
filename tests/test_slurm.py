"""The workflow on a real SLURM: a single-node cluster on localhost (Debian's slurmctld, slurmd and
munged, started by the fixture with their state, logs and munge key in a temporary directory), the
tests' tiny config submitted through ``profiles/slurm``, compared with a local run.

slurm.conf has to be at the compiled-in /etc/slurm/slurm.conf: the plugin's job step drops every
SLURM_* variable, SLURM_CONF included, before its nested ``srun``, which then finds no
configuration. The fixture writes that file only where there is none (or its own from an
interrupted run) and removes it afterwards; a site's file is never touched (the test skips).

Needs root and the Debian packages slurmctld, slurmd, slurm-client and munge plus the pip package
snakemake-executor-plugin-slurm (``.ci/run`` installs them); skipped with the reason otherwise,
failed under ``CI=true``.
Every snakemake call runs under ``timeout``: with a status command that cannot work (``sacct``
without slurmdbd) the SLURM executor waits forever and ignores SIGTERM.
"""

from __future__ import annotations

import csv
import importlib.util
import math
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
from conftest import requires
from test_workflow import REPO, TINY, planned_jobs, snakemake, write_config

from unlearnflow.core.artifacts import read_bank

pytestmark = pytest.mark.slow

PROFILE = REPO / "profiles" / "slurm"
PARTITION = "unlearnflow-ci"  # deliberately not the profile's `debug`: the test overrides the site key
SNAKEMAKE_TIMEOUT = 900  # seconds per snakemake call (the SLURM run takes ~3 minutes here)


def _cannot_run() -> str | None:
    """Why this machine cannot start a SLURM cluster, or None."""
    if os.name != "posix" or os.geteuid() != 0:
        return "needs root to start munged, slurmctld and slurmd"
    missing = [tool for tool in ("munged", "mungekey", "slurmctld", "slurmd", "sbatch", "squeue", "sinfo",
                                 "scancel", "timeout") if shutil.which(tool) is None]
    if missing:
        return (f"{', '.join(missing)} not found: install the Debian packages slurmctld slurmd slurm-client "
                "munge (.ci/run does where apt works)")
    if importlib.util.find_spec("snakemake_executor_plugin_slurm") is None:
        return "snakemake-executor-plugin-slurm is not installed (pip install snakemake-executor-plugin-slurm)"
    if SYSTEM_CONF.exists() and not SYSTEM_CONF.read_text(errors="replace").startswith(MARK):
        return f"{SYSTEM_CONF} exists (a site's SLURM?) and the test will not replace it"
    return None


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _wait_for(condition, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(what)
        time.sleep(0.2)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@dataclass
class Cluster:
    """A running single-node SLURM: its directory, the environment that reaches it, daemon PIDs."""

    directory: Path
    env: dict[str, str]
    pids: dict[str, int] = field(default_factory=dict)

    def run(self, *command: str, timeout: float = 30) -> str:
        result = subprocess.run(command, env=self.env, capture_output=True, text=True, timeout=timeout)
        if result.returncode != 0:
            raise AssertionError(f"{' '.join(command)} failed:\n{result.stdout}\n{result.stderr}\n{self.logs()}")
        return result.stdout

    def logs(self) -> str:
        return "\n".join(f"--- {log.name} (tail)\n" + "\n".join(log.read_text(errors="replace").splitlines()[-15:])
                         for log in sorted((self.directory / "log").glob("*.log")))

    def start(self, name: str, command: list[str], pid_file: Path) -> None:
        """Start a daemon that forks into the background and record the PID it writes."""
        result = subprocess.run(command, env=self.env, capture_output=True, text=True, timeout=60)
        if result.returncode != 0:
            raise AssertionError(f"{name} did not start:\n{result.stdout}\n{result.stderr}\n{self.logs()}")
        _wait_for(lambda: pid_file.exists() and pid_file.read_text().strip(), 20, f"{name} wrote no {pid_file}")
        self.pids[name] = int(pid_file.read_text().split()[0])

    def stop(self) -> None:
        """Cancel every job, then stop the daemons this fixture started, newest first, by PID."""
        if "slurmctld" in self.pids and _alive(self.pids["slurmctld"]):
            subprocess.run(["scancel", "--user=root"], env=self.env, capture_output=True, timeout=30)
            # let slurmd's job steps report their end while munged and slurmctld still listen, or
            # they outlive the daemons retrying
            try:
                _wait_for(lambda: not subprocess.run(
                    ["squeue", "-h", "--states=PENDING,CONFIGURING,RUNNING,COMPLETING,SUSPENDED"], env=self.env,
                    capture_output=True, text=True, timeout=30).stdout.strip(), 60, "jobs still ending")
            except (TimeoutError, subprocess.TimeoutExpired):
                pass
        for name, pid in reversed(self.pids.items()):
            try:
                os.kill(pid, signal.SIGTERM)
                _wait_for(lambda pid=pid: not _alive(pid), 15, f"{name} ({pid}) ignored SIGTERM")
            except ProcessLookupError:
                pass
            except TimeoutError:
                os.kill(pid, signal.SIGKILL)
                _wait_for(lambda pid=pid: not _alive(pid), 5, f"{name} ({pid}) survived SIGKILL")


SYSTEM_CONF = Path("/etc/slurm/slurm.conf")
MARK = "# written by unlearnflow's tests/test_slurm.py; removed when the test ends\n"
SLURM_CONF = MARK + """\
ClusterName=unlearnflow-ci
SlurmctldHost={host}(127.0.0.1)
SlurmctldPort={ctld_port}
SlurmdPort={d_port}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={dir}/munge/munge.socket
StateSaveLocation={dir}/state
SlurmdSpoolDir={dir}/spool
SlurmctldPidFile={dir}/slurmctld.pid
SlurmdPidFile={dir}/slurmd.pid
SlurmctldLogFile={dir}/log/slurmctld.log
SlurmdLogFile={dir}/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
ReturnToService=2
# the executor plugin queries squeue only when finished jobs stay listed for >= 3 x its first
# status check interval; shorter, it falls back to sacct (no slurmdbd here). An hour, so that
# no finished job leaves the list before the test reads it, however loaded the machine
MinJobAge=3600
MpiDefault=none
NodeName={host} NodeAddr=127.0.0.1 CPUs={cpus} RealMemory={memory} State=UNKNOWN
PartitionName={partition} Nodes={host} Default=YES MaxTime=INFINITE State=UP
"""


def _available_memory_mb() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) // 1024
    return 4096


@pytest.fixture(scope="module")
def slurm():
    """munged, slurmctld and slurmd on localhost, state and logs under a temporary directory; all
    stopped by PID afterwards, also when the test fails, and /etc/slurm/slurm.conf removed."""
    reason = _cannot_run()
    requires(reason is None, f"no SLURM test here: {reason}")
    # munged wants every directory on its socket's path readable by all, and not writable by others
    directory = Path(tempfile.mkdtemp(prefix="unlearnflow-slurm-"))
    directory.chmod(0o755)
    for sub in ("munge", "state", "spool", "log"):
        (directory / sub).mkdir(mode=0o755)
    env = {**os.environ, "SLURM_CONF": str(SYSTEM_CONF),
           "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO / "src"), os.environ.get("PYTHONPATH")]))}
    for variable in [name for name in env if name.startswith(("SLURM_", "SBATCH_", "SQUEUE_"))]:
        if variable != "SLURM_CONF":  # nothing of an enclosing allocation may leak into our jobs
            del env[variable]
    cluster = Cluster(directory, env)
    try:
        munge = directory / "munge"
        cluster.run("mungekey", "--create", f"--keyfile={munge / 'munge.key'}")
        cluster.start("munged", ["munged", f"--key-file={munge / 'munge.key'}", f"--socket={munge / 'munge.socket'}",
                                 f"--pid-file={munge / 'munged.pid'}", f"--log-file={directory / 'log' / 'munged.log'}",
                                 f"--seed-file={munge / 'munged.seed'}"], munge / "munged.pid")
        host = socket.gethostname().split(".")[0]
        SYSTEM_CONF.parent.mkdir(parents=True, exist_ok=True)
        SYSTEM_CONF.write_text(SLURM_CONF.format(
            host=host, dir=directory, ctld_port=_free_port(), d_port=_free_port(), cpus=os.cpu_count() or 1,
            memory=int(_available_memory_mb() * 0.8), partition=PARTITION))
        cluster.start("slurmctld", ["slurmctld", "-f", str(SYSTEM_CONF)], directory / "slurmctld.pid")
        cluster.start("slurmd", ["slurmd", "-f", str(SYSTEM_CONF)], directory / "slurmd.pid")
        _wait_for(lambda: cluster.run("sinfo", "-h", "-o", "%T").strip() == "idle", 60,
                  "the node never became idle")
        yield cluster
    finally:
        cluster.stop()
        if SYSTEM_CONF.exists() and SYSTEM_CONF.read_text(errors="replace").startswith(MARK):
            SYSTEM_CONF.unlink()
        shutil.rmtree(directory, ignore_errors=True)


def snakemake_on_slurm(cluster: Cluster, workdir: Path, *args: str) -> str:
    """`snakemake --profile profiles/slurm` on the test cluster, killed after SNAKEMAKE_TIMEOUT."""
    command = ["timeout", "-k", "10", str(SNAKEMAKE_TIMEOUT), sys.executable, "-m", "snakemake",
               "-s", str(REPO / "Snakefile"), "--directory", str(workdir), "--profile", str(PROFILE),
               # the site's key, overridden for this cluster; status checks fast for a test
               "--default-resources", f"slurm_partition={PARTITION}",
               "--slurm-init-seconds-before-status-checks", "2", *args]
    result = subprocess.run(command, env=cluster.env, capture_output=True, text=True, timeout=SNAKEMAKE_TIMEOUT + 30)
    output = result.stdout + result.stderr
    with open(workdir.parent / "snakemake-on-slurm.log", "a") as log:  # kept by pytest's tmp_path
        log.write(f"$ {' '.join(command)}\n{output}\n")
    if result.returncode != 0:
        reason = "timed out" if result.returncode in (124, 137) else f"failed ({result.returncode})"
        raise AssertionError(f"snakemake on SLURM {reason}:\n{output[-6000:]}\n{cluster.logs()}")
    return output


def slurm_jobs(cluster: Cluster) -> dict[str, dict[str, str]]:
    """Every job the cluster knows (finished ones stay MinJobAge seconds), by job id (array tasks
    as <job>_<task>): state, working directory, comment (the plugin writes the rule there), memory
    and time limit requested."""
    keys = ("state", "workdir", "comment", "memory", "limit", "submitted", "started", "ended")
    out = cluster.run("squeue", "--states=all", "--array", "-h", "-o", "%i|%T|%Z|%k|%m|%l|%V|%S|%e")
    return {job_id: dict(zip(keys, rest)) for job_id, *rest in (line.split("|") for line in out.splitlines())}


def deterministic_rows(path: Path) -> list[dict[str, str]]:
    """summary.csv without the columns that measure wall time."""
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    timed = [column for column in rows[0] if re.search(r"seconds|time", column)]
    return [{column: value for column, value in row.items() if column not in timed} for row in rows]


def test_tiny_config_through_the_slurm_profile_equals_a_local_run(slurm, tmp_path):
    on_slurm, local = tmp_path / "slurm", tmp_path / "local"
    for workdir in (on_slurm, local):
        workdir.mkdir()
        write_config(workdir, TINY)
    plan = Counter(planned_jobs(on_slurm))

    started = time.monotonic()
    output = snakemake_on_slurm(slurm, on_slurm)
    slurm_seconds = time.monotonic() - started

    # the rules marked `localrule: True` (`all`, the gathers, report) ran in snakemake's process,
    # all others were submitted; among them every training rule
    in_process = Counter(re.findall(r"^localrule (\w+):", output, re.M))
    expected = plan - in_process
    submitted = expected.total()
    assert in_process.total() < plan.total() and {"prepare_data", "train_originals", "train_oracles"} <= set(expected)

    # every job went through sbatch: one SLURM job per job, or one array per ready batch of an array rule
    single = re.findall(r"has been submitted with SLURM jobid (\d+)", output)
    arrays = re.findall(r"Submitted array job with Snakemake IDs ([\d,]+) and SLURM job ID (\d+)", output)
    assert len(single) + sum(len(ids.split(",")) for ids, _ in arrays) == submitted, output
    assert arrays, f"the profile's slurm-array-jobs submitted no job array:\n{output}"
    jobs = slurm_jobs(slurm)
    ours = {job_id: job for job_id, job in jobs.items() if job["workdir"] == str(on_slurm)}
    assert len(ours) == submitted, jobs
    assert all(job["state"] == "COMPLETED" for job in ours.values()), ours
    assert set(single) <= set(ours) and all(f"{array}_1" in ours for _, array in arrays)
    # the plugin names the rule in the job's comment; arrays carry the rule of their tasks
    rules = Counter(re.match(r"rule_(\w+?)(?:_wildcards|$)", job["comment"]).group(1) for job in ours.values())
    assert rules == expected, rules
    # the rules' resources reached sbatch: mem_mb and runtime (minutes) from the config's defaults
    data = next(job for job in ours.values() if job["comment"].startswith("rule_prepare_data"))
    assert data["memory"] == "4000M" and data["limit"] == "30:00", data
    train = next(job for job in ours.values() if job["comment"].startswith("rule_train_originals"))
    # an array job asks for a few MB more, for its payload (the plugin's memory fudge)
    assert 4000 <= int(train["memory"].rstrip("M")) < 4010 and train["limit"] == "2:00:00", train

    # a second submission plans nothing and submits nothing
    again = snakemake_on_slurm(slurm, on_slurm)
    assert "Nothing to be done" in again and "submitted with SLURM" not in again, again
    assert len([job for job in slurm_jobs(slurm).values() if job["workdir"] == str(on_slurm)]) == submitted

    # the same results as a local run: the models' logits, and every summary column but wall times
    started = time.monotonic()
    snakemake(local)
    local_seconds = time.monotonic() - started
    for bank in ("originals.h5", "oracles/r5.h5", "oracles/c7.h5"):
        here, there = read_bank(on_slurm / "results/tiny" / bank), read_bank(local / "results/tiny" / bank)
        for split in here.logits:
            np.testing.assert_array_equal(here.logits[split], there.logits[split], err_msg=f"{bank} {split}")
    slurm_rows = deterministic_rows(on_slurm / "results/tiny/report/summary.csv")
    local_rows = deterministic_rows(local / "results/tiny/report/summary.csv")
    assert slurm_rows and len(slurm_rows) == len(local_rows)
    for slurm_row, local_row in zip(slurm_rows, local_rows):
        for column, value in slurm_row.items():
            try:
                same = math.isclose(float(value), float(local_row[column]), rel_tol=1e-9, abs_tol=1e-12) or \
                    (math.isnan(float(value)) and math.isnan(float(local_row[column])))
            except ValueError:
                same = value == local_row[column]
            assert same, f"{column}: {value} on SLURM, {local_row[column]} locally"
    print(f"SLURM run {slurm_seconds:.0f} s, local run {local_seconds:.0f} s, {submitted} SLURM jobs")
    for job_id, job in sorted(ours.items(), key=lambda item: item[1]["submitted"]):
        print(job_id, job["comment"][:40], job["submitted"], job["started"], job["ended"])
