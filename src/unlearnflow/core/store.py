"""The artifact store: every artifact of the workflow is one HDF5 file written atomically.

An artifact has a *kind* (``"dataset"``, ``"forget_set"``, ``"model_bank"``, ...), the
*semantic version* of the stage that wrote it, named arrays (HDF5 datasets, chunked and
compressed; ``"a/b"`` names create groups), and provenance attributes: the config slice as
JSON, the stage and package versions, seeds and the SHA-256 of every input file.

Writes go to a temporary file in the destination directory and are renamed into place with
:func:`os.replace`, so an exception or a kill mid-write never leaves a file at the final path.
Reading checks the kind and the stage version, and a mismatch is a one-line
:class:`~unlearnflow.errors.UserError` telling the user which stage to rerun.

Stage versions live in :data:`STAGE_VERSIONS`. Rules pass them to the CLI as params, so
bumping a version (a change of meaning) makes Snakemake rerun that stage and everything
downstream, while a refactor that keeps the version reruns nothing.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import h5py
import numpy as np

from unlearnflow import __version__
from unlearnflow.errors import UserError

#: Semantic version of each stage's output. Bump one when the meaning of what the stage
#: writes changes (a different split, a fixed bug in training); keep it on refactors.
STAGE_VERSIONS: dict[str, int] = {
    "dataset": 1,
    "forget_set": 1,
    "forget_samples": 1,
    "model_bank": 1,
    "evaluation": 1,
    "unlearned": 2,
    "datamodels": 1,
    "datamodel_calibration": 1,
    "ulira": 1,
    "report": 1,
    "theory": 1,
    "ledger_state": 1,
    "deletion_request": 1,
    "gradient_space": 1,
}

#: Arrays smaller than this many bytes are stored contiguous and uncompressed.
_COMPRESS_MIN_BYTES = 16 * 1024


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


def file_checksum(path: str | os.PathLike, chunk_bytes: int = 1 << 22) -> str:
    """SHA-256 of a file's bytes, for the input checksums recorded in provenance."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk_bytes):
            digest.update(block)
    return digest.hexdigest()


def provenance(config: Mapping[str, Any] | None = None, seeds: Mapping[str, Any] | None = None,
               inputs: Iterable[str | os.PathLike] = ()) -> dict[str, Any]:
    """Provenance record: config slice, seeds, package version and input file checksums."""
    return {
        "config": dict(config or {}),
        "seeds": dict(seeds or {}),
        "package_version": __version__,
        "inputs": {str(p): file_checksum(p) for p in inputs},
        "created_unix": time.time(),
    }


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
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp.h5", dir=path.parent)
    os.close(fd)
    try:
        with h5py.File(tmp_name, "w") as h5:
            h5.attrs["unlearnflow_kind"] = kind
            h5.attrs["unlearnflow_version"] = int(version)
            h5.attrs["provenance"] = json.dumps(provenance_record or {}, default=_json_default)
            for key, value in (attrs or {}).items():
                h5.attrs[key] = _encode_attr(value)
            for name, array in arrays.items():
                _write_array(h5, name, np.asarray(array))
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    return path


def read_artifact(path: str | os.PathLike, kind: str, names: Iterable[str] | None = None,
                  version: int | None = None, skip_groups: Sequence[str] = ()) -> Artifact:
    """Read an artifact, checking that it is of `kind` at the current stage version.

    `names` restricts which arrays are loaded (all by default); arrays under the groups in
    `skip_groups` (e.g. ``"weights"``) are not read at all. A missing file, an HDF5 file that
    is not an unlearnflow artifact, another kind or another version is a UserError.
    """
    path = Path(path)
    expected_version = STAGE_VERSIONS[kind] if version is None else version
    if not path.is_file():
        raise UserError(f"{path}: no such artifact (expected a {kind} HDF5 file)")
    try:
        h5 = h5py.File(path, "r")
    except OSError as error:
        raise UserError(f"{path}: not a readable HDF5 file ({error})") from error
    with h5:
        found_kind = h5.attrs.get("unlearnflow_kind")
        if found_kind is None:
            raise UserError(f"{path}: not an unlearnflow artifact (no 'unlearnflow_kind' attribute)")
        if found_kind != kind:
            raise UserError(f"{path}: expected a {kind} artifact, found a {found_kind} artifact")
        found_version = int(h5.attrs["unlearnflow_version"])
        if found_version != expected_version:
            raise UserError(f"{path}: {kind} artifact of stage version {found_version}, this code reads "
                            f"version {expected_version}; rerun the stage that writes it")
        wanted = None if names is None else set(names)
        arrays: dict[str, np.ndarray] = {}

        skipped = tuple(f"{group}/" for group in skip_groups)

        def collect(name: str, node: Any) -> None:
            if name.startswith(skipped):
                return
            if isinstance(node, h5py.Dataset) and (wanted is None or name in wanted):
                is_text = h5py.check_string_dtype(node.dtype) is not None
                arrays[name] = node.asstr()[()] if is_text else node[()]

        h5.visititems(collect)
        missing = (wanted or set()) - set(arrays)
        if missing:
            raise UserError(f"{path}: {kind} artifact lacks array(s) {', '.join(sorted(missing))}")
        attrs = {key: _decode_attr(value) for key, value in h5.attrs.items()
                 if key not in ("unlearnflow_kind", "unlearnflow_version", "provenance")}
        record = json.loads(h5.attrs.get("provenance", "{}"))
    return Artifact(path=path, kind=kind, version=found_version, arrays=arrays, attrs=attrs,
                    provenance=record)


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
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    return path


def artifact_kind(path: str | os.PathLike) -> str:
    """The kind of an artifact, without reading its arrays."""
    return read_artifact_header(path)[0]


def read_artifact_header(path: str | os.PathLike) -> tuple[str, int]:
    """(kind, stage version) of an artifact; UserError if it is missing or not an artifact."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such artifact")
    try:
        with h5py.File(path, "r") as h5:
            kind = h5.attrs.get("unlearnflow_kind")
            version = h5.attrs.get("unlearnflow_version")
    except OSError as error:
        raise UserError(f"{path}: not a readable HDF5 file ({error})") from error
    if kind is None:
        raise UserError(f"{path}: not an unlearnflow artifact (no 'unlearnflow_kind' attribute)")
    return str(kind), int(version)


def _write_array(h5: h5py.File, name: str, array: np.ndarray) -> None:
    if array.dtype.kind in "UO":
        h5.create_dataset(name, data=array.astype(h5py.string_dtype()))
    elif array.nbytes >= _COMPRESS_MIN_BYTES and array.ndim > 0:
        h5.create_dataset(name, data=array, chunks=True, compression="gzip", compression_opts=4,
                          shuffle=True)
    else:
        h5.create_dataset(name, data=array)


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
