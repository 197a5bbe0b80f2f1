"""The artifact store: every artifact of the workflow is one HDF5 file written atomically.

An artifact has a *kind* (``"dataset"``, ``"forget_set"``, ``"model_bank"``, ...), the
*semantic version* of the stage that wrote it, named arrays (HDF5 datasets, chunked and
compressed; ``"a/b"`` names create groups), and provenance attributes: the config slice as
JSON, the stage and package versions, seeds and the SHA-256 of every input file.

Writes go to a hidden temporary file in the destination directory and are renamed into place
with :func:`os.replace`, so an exception or a kill mid-write never leaves a file at the final
path; the temporaries a killed write left behind are removed the next time that path is
written (:func:`clean_stale_temporaries`), and written files get the usual permissions of the
user's umask (0644 under umask 0022), so colleagues can read results on a shared filesystem.
Every array is stored with HDF5's fletcher32 checksum, so damaged bytes fail the read instead
of giving wrong numbers.

Reading checks the kind and the stage version; any problem (a missing or damaged file, another
kind or version) is a one-line :class:`~unlearnflow.errors.UserError` naming the file and the
command that rebuilds it (:func:`rebuild_advice`). :func:`expect` checks what an artifact *is*:
its role (``original``, ``oracle/<set>``, ...), identifying attributes and its *lineage*, the
checksums of the root artifacts it was made from (the data set, the forget set, the poisoned
labels), recorded in provenance by :func:`provenance` and compared with :func:`lineage_of` the
files the caller reads alongside.

Stage versions live in the stage table (:data:`~unlearnflow.core.stage_table.STAGE_VERSIONS`). Rules pass them to the CLI as params, so
bumping a version (a change of meaning) makes Snakemake rerun that stage and everything
downstream, while a refactor that keeps the version reruns nothing.
"""

from __future__ import annotations

import contextlib
import csv
import functools
import glob
import hashlib
import io
import json
import os
import re
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping, Sequence

import h5py
import numpy as np

from unlearnflow import __version__
from unlearnflow.core.stage_table import STAGE_VERSIONS, rule_of_kind, stage_of_path
from unlearnflow.errors import UserError

#: Arrays smaller than this many bytes are stored uncompressed.
_COMPRESS_MIN_BYTES = 16 * 1024

#: Lineage keys: the root artifacts every other artifact is made from.
LINEAGE_KEYS = ("data", "forget_set", "labels")


@dataclass
class Artifact:
    """An artifact read back from disk: its arrays, scalar attributes and provenance."""

    path: Path
    kind: str
    version: int
    arrays: dict[str, np.ndarray]
    attrs: dict[str, Any]
    provenance: dict[str, Any] = field(default_factory=dict)

    def __getitem__(self, name: str) -> np.ndarray:
        try:
            return self.arrays[name]
        except KeyError:
            raise UserError(f"{self.path}: {self.kind} artifact has no array '{name}' "
                            f"(it has: {', '.join(sorted(self.arrays)) or 'none'})") from None


def file_checksum(path: str | os.PathLike) -> str:
    """SHA-256 of a file's bytes, for the input checksums recorded in provenance (computed once
    per process for a file whose size and modification time did not change)."""
    try:
        stat = os.stat(path)
    except OSError as error:
        raise UserError(f"{path}: cannot read ({error.strerror})") from error
    return _checksum(os.path.realpath(path), stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=256)
def _checksum(path: str, size: int, mtime_ns: int, chunk_bytes: int = 1 << 22) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk_bytes):
            digest.update(block)
    return digest.hexdigest()


def lineage_of(**paths: str | os.PathLike | None) -> dict[str, str]:
    """Lineage of what is made from these root files: key (one of :data:`LINEAGE_KEYS`) -> the
    file's SHA-256, for the keys given a path (``lineage_of(data="d.h5", labels=None)``)."""
    unknown = set(paths) - set(LINEAGE_KEYS)
    if unknown:
        raise ValueError(f"unknown lineage key(s) {sorted(unknown)}")
    return {key: file_checksum(path) for key, path in paths.items() if path}


def provenance(config: Mapping[str, Any] | None = None, seeds: Mapping[str, Any] | None = None,
               inputs: Iterable[str | os.PathLike] = (), lineage: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Provenance record: config slice, seeds, package version, input file checksums and the
    lineage (root artifact checksums, see :func:`lineage_of`) of what is written."""
    record = {
        "config": dict(config or {}),
        "seeds": dict(seeds or {}),
        "package_version": __version__,
        "inputs": {str(p): file_checksum(p) for p in inputs},
        "created_unix": time.time(),
    }
    if lineage is not None:
        record["lineage"] = dict(lineage)
    return record


def rule_of(path: str | os.PathLike, kind: str | None = None) -> str | None:
    """The workflow rule that writes `path` (by its place under ``results/<experiment>/``, else
    by its artifact kind), or None when it is not a workflow file (the stage table)."""
    found = _workflow_path(path)
    written = stage_of_path(found.group(2)) if found else None
    return written[0] if written else rule_of_kind(kind or "")


def rebuild_advice(path: str | os.PathLike, kind: str | None = None) -> str:
    """How to rebuild `path`: the Snakemake command that reruns the job writing it, by the file
    when it is a rule's output (so it holds for any experiment of the config), else by the rule."""
    found = _workflow_path(path)
    written = stage_of_path(found.group(2)) if found else None
    if written and written[1]:
        return (f"rebuild it: snakemake --cores 1 --forcerun {found.group(1)} "
                f"(rule {written[0]}; with your usual --configfile)")
    rule = written[0] if written else rule_of_kind(kind or "")
    if rule is None:
        return "rebuild it with the stage that wrote it"
    return f"rebuild it: snakemake --cores 1 --forcerun {rule} (with your usual --configfile)"


def _workflow_path(path: str | os.PathLike) -> re.Match | None:
    """``results/<experiment>/<relative>`` at the end of `path` (group 1), its relative part (group 2)."""
    return re.search(r"(?:^|/)(results/[^/]+/(.+))$", Path(path).as_posix())


def expect(artifact: Artifact, role: str | None = None, lineage: Mapping[str, str] | None = None,
           **attrs: Any) -> Artifact:
    """Check that `artifact` is what the caller reads it as: its ``role`` attribute, other
    identifying attributes (``method="scrub"``) and its lineage (see :func:`lineage_of`).

    An artifact written before lineage was recorded has none and passes that check; any
    mismatch is one line naming the file, what was expected and what was found.
    """
    expected = ({"role": role} if role is not None else {}) | attrs
    for key, value in expected.items():
        found = artifact.attrs.get(key)
        if found != value:
            raise UserError(f"{artifact.path}: expected a {artifact.kind} with {key} {value}, found "
                            f"{key} {found}; {rebuild_advice(artifact.path, artifact.kind)}")
    recorded = artifact.provenance.get("lineage")
    if lineage is not None and recorded is not None:
        wrong = [key for key in LINEAGE_KEYS if recorded.get(key) != lineage.get(key)]
        if wrong:
            describe = ", ".join(f"{key} {_short(lineage.get(key))}" for key in wrong)
            found = ", ".join(f"{key} {_short(recorded.get(key))}" for key in wrong)
            raise UserError(f"{artifact.path}: expected a {artifact.kind} made from {describe}, found one made "
                            f"from {found} (another experiment or a stale file); "
                            f"{rebuild_advice(artifact.path, artifact.kind)}")
    return artifact


def _short(checksum: str | None) -> str:
    return "(none)" if checksum is None else f"sha256:{checksum[:12]}"


def clean_stale_temporaries(path: str | os.PathLike) -> list[Path]:
    """Remove the hidden temporaries a killed write of `path` left (``.<name>.*.tmp*``); the
    stage that writes `path` calls this when it runs again. Returns the removed files."""
    path = Path(path)
    if not path.parent.is_dir():
        return []
    removed = []
    for stale in path.parent.glob(f".{glob.escape(path.name)}.*.tmp*"):
        stale.unlink(missing_ok=True)
        removed.append(stale)
    return removed


def check_writable_directory(directory: str | os.PathLike) -> Path:
    """`directory`, or the nearest of its ancestors that exists, must be a writable directory:
    else a one-line UserError naming it (before any job writes there)."""
    directory = Path(directory)
    existing = directory
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    problem = None
    if not existing.is_dir():
        problem = f"{existing} is not a directory"
    elif not os.access(existing, os.W_OK | os.X_OK):
        problem = f"no permission to write in {existing}"
    if problem:
        raise UserError(f"{directory}: cannot write results here ({problem}); "
                        "make the directory writable or choose another one")
    return directory


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike, suffix: str) -> Iterator[str]:
    """A hidden temporary file next to `path`, renamed to `path` when the block ends without an
    exception (removed otherwise), with the permissions of the user's umask. An unwritable
    directory is a one-line UserError naming it."""
    path = Path(path)
    check_writable_directory(path.parent)
    clean_stale_temporaries(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    except OSError as error:
        raise UserError(f"{path.parent}: cannot write results here ({error.strerror}); "
                        "make the directory writable or choose another one") from error
    os.close(fd)
    try:
        os.chmod(tmp_name, 0o666 & ~_umask())
        yield tmp_name
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise


def write_artifact(path: str | os.PathLike, kind: str, arrays: Mapping[str, np.ndarray],
                   attrs: Mapping[str, Any] | None = None,
                   provenance_record: Mapping[str, Any] | None = None,
                   version: int | None = None) -> Path:
    """Write an artifact atomically (temporary file in the same directory, then rename).

    `attrs` are small scalar or string attributes (stored as HDF5 attributes; dicts and lists
    are stored as JSON). `version` defaults to ``STAGE_VERSIONS[kind]``.
    """
    path = Path(path)
    version = STAGE_VERSIONS[kind] if version is None else version
    with atomic_file(path, ".tmp.h5") as tmp_name, h5py.File(tmp_name, "w") as h5:
        h5.attrs["unlearnflow_kind"] = kind
        h5.attrs["unlearnflow_version"] = int(version)
        h5.attrs["provenance"] = json.dumps(provenance_record or {}, default=_json_default)
        for key, value in (attrs or {}).items():
            h5.attrs[key] = _encode_attr(value)
        for name, array in arrays.items():
            _write_array(h5, name, np.asarray(array))
    return path


def read_artifact(path: str | os.PathLike, kind: str, names: Iterable[str] | None = None,
                  version: int | None = None, skip_groups: Sequence[str] = (),
                  parts: Mapping[str, Any] | None = None) -> Artifact:
    """Read an artifact, checking that it is of `kind` at the current stage version.

    `names` restricts which arrays are loaded (all by default; ``()`` reads the attributes and
    provenance only); arrays under the groups in `skip_groups` (e.g. ``"weights"``) are not
    read at all; `parts` maps an array's name to the index of the part of it to read (e.g.
    ``np.s_[:, 100:200]``: HDF5 reads only the chunks that hold it). A missing or damaged file
    (a fletcher32 checksum that fails, broken HDF5 metadata), a file that is not an unlearnflow
    artifact, another kind or another version is a UserError naming the file and the rule that
    rebuilds it.
    """
    path = Path(path)
    expected_version = STAGE_VERSIONS[kind] if version is None else version
    advice = rebuild_advice(path, kind)
    if not path.is_file():
        raise UserError(f"{path}: no such artifact (expected a {kind} HDF5 file)")
    with _reading(path, kind) as h5:
        found_kind = h5.attrs.get("unlearnflow_kind")
        if found_kind is None:
            raise UserError(f"{path}: not an unlearnflow artifact (no 'unlearnflow_kind' attribute)")
        if found_kind != kind:
            raise UserError(f"{path}: expected a {kind} artifact, found a {found_kind} artifact; {advice}")
        found_version = int(h5.attrs["unlearnflow_version"])
        if found_version != expected_version:
            raise UserError(f"{path}: {kind} artifact of stage version {found_version}, this code reads "
                            f"version {expected_version}; {advice}")
        wanted = None if names is None else set(names)
        arrays: dict[str, np.ndarray] = {}

        skipped = tuple(f"{group}/" for group in skip_groups)

        def collect(name: str, node: Any) -> None:
            if name.startswith(skipped):
                return
            if isinstance(node, h5py.Dataset) and (wanted is None or name in wanted):
                is_text = h5py.check_string_dtype(node.dtype) is not None
                index = (parts or {}).get(name, ())
                arrays[name] = node.asstr()[index] if is_text else node[index]

        if wanted is None or wanted:
            h5.visititems(collect)
        missing = (wanted or set()) - set(arrays)
        if missing:
            raise UserError(f"{path}: {kind} artifact lacks array(s) {', '.join(sorted(missing))}; {advice}")
        attrs = {key: _decode_attr(value) for key, value in h5.attrs.items()
                 if key not in ("unlearnflow_kind", "unlearnflow_version", "provenance")}
        record = json.loads(h5.attrs.get("provenance", "{}"))
    return Artifact(path=path, kind=kind, version=found_version, arrays=arrays, attrs=attrs,
                    provenance=record)


@contextlib.contextmanager
def _reading(path: Path, kind: str | None) -> Iterator[h5py.File]:
    """An open HDF5 file; any failure of h5py while reading it (damaged bytes, a failed
    checksum, broken metadata) becomes one line naming the file and the rule to rerun."""
    try:
        with h5py.File(path, "r") as h5:
            yield h5
    except UserError:
        raise
    except (OSError, RuntimeError, KeyError, ValueError, TypeError) as error:
        reason = " ".join(str(error).split()) or type(error).__name__
        raise UserError(f"{path}: damaged or unreadable HDF5 file ({reason[:160]}); "
                        f"{rebuild_advice(path, kind)}") from error


def write_rows(path: str | os.PathLike, rows: Iterable[Mapping[str, Any]], columns: Sequence[str]) -> Path:
    """Write a CSV table atomically (the human-readable side output of a stage)."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(columns), extrasaction="raise")
    writer.writeheader()
    writer.writerows(rows)
    return write_text(path, buffer.getvalue())


def read_rows(path: str | os.PathLike) -> list[dict[str, str]]:
    """Rows of a CSV written by :func:`write_rows` (values as strings)."""
    try:
        with open(path, newline="") as handle:
            return list(csv.DictReader(handle))
    except OSError as error:
        raise UserError(f"{path}: cannot read CSV table ({error.strerror})") from error


def write_text(path: str | os.PathLike, text: str) -> Path:
    """Write a text file atomically: temporary file in the same directory, then rename."""
    path = Path(path)
    with atomic_file(path, ".tmp") as tmp_name, open(tmp_name, "w") as handle:
        handle.write(text)
    return path


def artifact_kind(path: str | os.PathLike) -> str:
    """The kind of an artifact, without reading its arrays."""
    return read_artifact_header(path)[0]


def read_artifact_header(path: str | os.PathLike) -> tuple[str, int]:
    """(kind, stage version) of an artifact; UserError if it is missing or not an artifact."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such artifact")
    with _reading(path, None) as h5:
        kind = h5.attrs.get("unlearnflow_kind")
        version = h5.attrs.get("unlearnflow_version")
    if kind is None:
        raise UserError(f"{path}: not an unlearnflow artifact (no 'unlearnflow_kind' attribute)")
    return str(kind), int(version)


def _write_array(h5: h5py.File, name: str, array: np.ndarray) -> None:
    """One dataset; numeric arrays are chunked with a fletcher32 checksum (gzip from
    :data:`_COMPRESS_MIN_BYTES`), so a damaged byte fails the read."""
    if array.dtype.kind in "UO":
        h5.create_dataset(name, data=array.astype(h5py.string_dtype()))
    elif array.ndim == 0 or array.size == 0:
        h5.create_dataset(name, data=array)
    elif array.nbytes >= _COMPRESS_MIN_BYTES:
        h5.create_dataset(name, data=array, chunks=True, compression="gzip", compression_opts=4,
                          shuffle=True, fletcher32=True)
    else:
        h5.create_dataset(name, data=array, chunks=array.shape, fletcher32=True)


def _encode_attr(value: Any) -> Any:
    if isinstance(value, (dict, list, tuple)):
        return "json:" + json.dumps(value, default=_json_default)
    return value


def _decode_attr(value: Any) -> Any:
    if isinstance(value, bytes):
        value = value.decode()
    if isinstance(value, str) and value.startswith("json:"):
        return json.loads(value[5:])
    if isinstance(value, np.generic):
        return value.item()
    return value


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot store {type(value).__name__} in provenance JSON")
