"""The artifact store: round trip, provenance, atomic writes and clear errors."""

import os
import signal
import subprocess
import sys
import textwrap

import h5py
import numpy as np
import pytest

from unlearnflow.core.stage_table import STAGE_VERSIONS
from unlearnflow.core.store import file_checksum, provenance, read_artifact, write_artifact
from unlearnflow.errors import UserError


def test_round_trip_with_groups_strings_attrs_and_provenance(tmp_path):
    source = tmp_path / "input.bin"
    source.write_bytes(b"abc")
    arrays = {"x": np.random.default_rng(0).normal(size=(300, 20)).astype(np.float32),
              "logits/train": np.arange(12).reshape(3, 4), "classes": np.array(["cat", "dog"])}
    record = provenance({"lr": 0.1}, {"seed": 3}, [source])
    path = write_artifact(tmp_path / "a.h5", "dataset", arrays, attrs={"name": "toy", "options": {"k": [1, 2]}},
                          provenance_record=record)
    artifact = read_artifact(path, "dataset")
    assert artifact.version == STAGE_VERSIONS["dataset"]
    np.testing.assert_array_equal(artifact["x"], arrays["x"])
    np.testing.assert_array_equal(artifact["logits/train"], arrays["logits/train"])
    assert list(artifact["classes"]) == ["cat", "dog"]
    assert artifact.attrs == {"name": "toy", "options": {"k": [1, 2]}}
    assert artifact.provenance["config"] == {"lr": 0.1}
    assert artifact.provenance["inputs"][str(source)] == file_checksum(source)
    with h5py.File(path) as h5:  # large arrays are chunked and compressed
        assert h5["x"].compression == "gzip" and h5["x"].chunks is not None
    only = read_artifact(path, "dataset", names=["classes"])
    assert set(only.arrays) == {"classes"}
    without_logits = read_artifact(path, "dataset", skip_groups=["logits"])
    assert set(without_logits.arrays) == {"x", "classes"}


def test_exception_mid_write_leaves_no_file(tmp_path):
    target = tmp_path / "bank.h5"

    class FailsAfterFirstArray(dict):
        def items(self):
            yield "ok", np.ones(100_000)
            raise RuntimeError("disk on fire")

    with pytest.raises(RuntimeError, match="disk on fire"):
        write_artifact(target, "model_bank", FailsAfterFirstArray())
    assert not target.exists()
    assert list(tmp_path.iterdir()) == []


def test_existing_artifact_survives_a_failed_rewrite(tmp_path):
    target = write_artifact(tmp_path / "d.h5", "dataset", {"x": np.ones(3)})
    with pytest.raises(TypeError):
        write_artifact(target, "dataset", {"x": np.zeros(3)}, provenance_record={"bad": object()})
    np.testing.assert_array_equal(read_artifact(target, "dataset")["x"], np.ones(3))


def test_kill_mid_write_leaves_no_file(tmp_path):
    target = tmp_path / "big.h5"
    script = textwrap.dedent(f"""
        import numpy as np, sys
        from unlearnflow.core.store import write_artifact
        arrays = {{f"a{{i}}": np.random.default_rng(i).normal(size=(1000, 1000)) for i in range(40)}}
        print("writing", flush=True)
        write_artifact({str(target)!r}, "dataset", arrays)
    """)
    process = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert process.stdout.readline().strip() == "writing"
    deadline = 50
    while deadline and not any(p.name.endswith(".tmp.h5") for p in tmp_path.iterdir()):
        subprocess.run(["sleep", "0.1"])
        deadline -= 1
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert not target.exists()


def test_wrong_kind_version_or_file_is_a_user_error(tmp_path):
    path = write_artifact(tmp_path / "f.h5", "forget_set", {"indices": np.arange(3)})
    with pytest.raises(UserError, match="expected a model_bank artifact, found a forget_set"):
        read_artifact(path, "model_bank")
    with pytest.raises(UserError, match="stage version 1, this code reads version 2; rebuild it: "
                       "snakemake --cores 1 --forcerun forget_sets"):
        read_artifact(path, "forget_set", version=2)
    with pytest.raises(UserError, match="no such artifact"):
        read_artifact(tmp_path / "missing.h5", "dataset")
    (tmp_path / "junk.h5").write_text("not hdf5")
    with pytest.raises(UserError, match="damaged or unreadable HDF5 file"):
        read_artifact(tmp_path / "junk.h5", "dataset")
    with h5py.File(tmp_path / "foreign.h5", "w") as h5:
        h5["x"] = 1
    with pytest.raises(UserError, match="not an unlearnflow artifact"):
        read_artifact(tmp_path / "foreign.h5", "dataset")
    with pytest.raises(UserError, match="lacks array"):
        read_artifact(path, "forget_set", names=["nope"])
    with pytest.raises(UserError, match="has no array 'nope'"):
        read_artifact(path, "forget_set")["nope"]
