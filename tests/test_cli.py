"""The command line: user mistakes are one line and exit status 2, never a traceback."""

import subprocess
import sys

import numpy as np
import pytest

from unlearnflow.core.artifacts import read_bank, read_dataset, read_forget_set
from unlearnflow.dmm.datamodel_set import read_datamodels
from unlearnflow.metrics.margins import margins
from unlearnflow.runner import read_unlearned


def run(*args, cwd):
    return subprocess.run([sys.executable, "-m", "unlearnflow", *args], capture_output=True, text=True, cwd=cwd)


@pytest.mark.parametrize("args, message", [
    (["prepare-data", "--spec", '{"loader": "idx", "path": "/no/such/dir"}', "--out", "d.h5"], "/no/such/dir"),
    (["prepare-data", "--spec", "{loader: digits}", "--out", "d.h5"], "expected a JSON value"),
    (["prepare-data", "--stage-version", "99", "--spec", "{}", "--out", "d.h5"], "stage version 99"),
    (["forget-set", "--name", "x", "--spec", '{"kind": "random", "size": 3}', "--data", "missing.h5",
      "--seed", "0", "--out", "f.h5"], "missing.h5: no such artifact"),
])
def test_user_errors_are_one_line(tmp_path, args, message):
    result = run(*args, cwd=tmp_path)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("unlearnflow: error:") and message in lines[0], result.stderr
    assert not (tmp_path / "d.h5").exists()


def test_data_forget_set_and_a_bank_chunk_from_the_command_line(tmp_path):
    assert run("prepare-data", "--spec", '{"loader": "digits"}', "--out", "d.h5", cwd=tmp_path).returncode == 0
    assert run("forget-set", "--name", "r", "--spec", '{"kind": "random", "size": 7}', "--data", "d.h5",
               "--seed", "0", "--out", "f.h5", cwd=tmp_path).returncode == 0
    bad = run("train", "--data", "d.h5", "--model", '{"arch": "mlp", "options": {"hiden": [4]}}',
              "--training", "{}", "--seed", "0", "--first-id", "0", "--count", "2", "--out", "b.h5", cwd=tmp_path)
    assert bad.returncode == 2 and "hiden" in bad.stderr and not (tmp_path / "b.h5").exists()
    done = run("train", "--role", "oracle", "--forget-set", "f.h5", "--data", "d.h5",
               "--model", '{"arch": "mlp", "options": {"hidden": [8]}}', "--training", '{"epochs": 1}',
               "--seed", "0", "--first-id", "3", "--count", "2", "--out", "b.h5", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    bank, forget = read_bank(tmp_path / "b.h5"), read_forget_set(tmp_path / "f.h5")
    data = read_dataset(tmp_path / "d.h5")
    assert bank.attrs["role"] == "oracle/r" and list(bank.model_ids) == [3, 4]
    assert bank.logits["val"].shape == (2, len(data.y_val), 10)
    assert not bank.train_masks[:, forget.indices].any()


def test_import_bank_round_trips_models_trained_elsewhere(tmp_path):
    """Issue 21: `unlearnflow import-bank` turns state-dict files into an original bank whose
    logits are the files' models' logits, its attrs naming each file's SHA-256, beside the models
    alone; a file of another architecture is one line naming it."""
    import torch

    from unlearnflow.core.models import build_model
    from unlearnflow.core.store import file_checksum
    from unlearnflow.core.training import init_model, predict_logits
    assert run("prepare-data", "--spec", '{"loader": "digits"}', "--out", "d.h5", cwd=tmp_path).returncode == 0
    data = read_dataset(tmp_path / "d.h5")
    models = [init_model(lambda: build_model("mlp", data.input_shape, 10, hidden=[12]), seed) for seed in (5, 6, 7)]
    files = [f"m{index}.pt" for index in range(3)]
    for model, name in zip(models, files):
        torch.save(model.state_dict(), tmp_path / name)
    spec = '{"arch": "mlp", "options": {"hidden": [12]}}'
    done = run("import-bank", "--data", "d.h5", "--model", spec, "--out", "originals.h5",
               "--weights-out", "original_models.h5", *files, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    bank = read_bank(tmp_path / "originals.h5", role="original")
    assert list(bank.model_ids) == [0, 1, 2] and bank.train_masks.all()
    for index, model in enumerate(models):
        for split in ("train", "val", "test"):
            expected = predict_logits(model, torch.from_numpy(getattr(data, f"x_{split}"))).numpy()
            np.testing.assert_allclose(bank.logits[split][index], expected, rtol=1e-5, atol=1e-6)
        assert np.array_equal(bank.weights["classifier.weight"][index], model.state_dict()["classifier.weight"])
    assert bank.attrs["imported_from"] == {name: file_checksum(tmp_path / name) for name in files}
    assert read_bank(tmp_path / "original_models.h5", with_weights=True).weights.keys() == bank.weights.keys()
    torch.save(build_model("mlp", data.input_shape, 10, hidden=[7]).state_dict(), tmp_path / "other.pt")
    wrong = run("import-bank", "--data", "d.h5", "--model", spec, "--out", "x.h5", "other.pt", cwd=tmp_path)
    assert wrong.returncode == 2 and wrong.stderr.startswith("unlearnflow: error: other.pt: weights do not fit")
    assert not (tmp_path / "x.h5").exists()


@pytest.mark.slow
def test_trak_datamodels_and_dm_direct_from_the_command_line(tmp_path):
    model = '{"arch": "mlp", "options": {"hidden": [8]}}'
    assert run("prepare-data", "--spec", '{"loader": "digits", "max_train": 200}', "--out", "d.h5",
               cwd=tmp_path).returncode == 0
    assert run("forget-set", "--name", "r", "--spec", '{"kind": "random", "size": 5}', "--data", "d.h5",
               "--seed", "0", "--out", "f.h5", cwd=tmp_path).returncode == 0
    for role, count, extra in (("original", 3, []), ("subset", 12, ["--subset-fraction", "0.5"])):
        trained = run("train", "--role", role, "--data", "d.h5", "--model", model, "--training", '{"epochs": 2}',
                      "--seed", "0", "--first-id", "0", "--count", str(count), *extra, "--out", f"{role}.h5",
                      cwd=tmp_path)
        assert trained.returncode == 0, trained.stderr
    spec = '{"estimator": "trak", "heldout_models": 12, "options": {"checkpoints": 2, "projection_dim": 32}}'
    missing = run("fit-datamodels", "--data", "d.h5", "--subset-models", "subset.h5", "--spec", spec, "--seed", "0",
                  "--out", "dm.h5", cwd=tmp_path)
    assert missing.returncode == 2 and "needs --originals" in missing.stderr
    fitted = run("fit-datamodels", "--data", "d.h5", "--subset-models", "subset.h5", "--originals", "original.h5",
                 "--spec", spec, "--seed", "0", "--out", "dm.h5", cwd=tmp_path)
    assert fitted.returncode == 0, fitted.stderr
    assert "margins_lds" in fitted.stdout
    logit = run("unlearn", "--method", "dm_direct", "--data", "d.h5", "--forget-set", "f.h5", "--originals",
                "original.h5", "--side", "datamodels=dm.h5", "--seed", "0", "--out", "u.h5", cwd=tmp_path)
    assert logit.returncode == 2 and "needs logits datamodels" in logit.stderr and not (tmp_path / "u.h5").exists()
    shifted = run("unlearn", "--method", "dm_direct", "--data", "d.h5", "--forget-set", "f.h5", "--originals",
                  "original.h5", "--side", "datamodels=dm.h5", "--seed", "0", "--out", "u.h5",
                  "--method-config", '{"hyperparameters": {"construction": "margin_shift"}}', cwd=tmp_path)
    assert shifted.returncode == 0, shifted.stderr
    assert "dm_direct [default] on r" in shifted.stdout
    # the forget points' margins moved by exactly minus the summed margin datamodels
    datamodels, forget = read_datamodels(tmp_path / "dm.h5"), read_forget_set(tmp_path / "f.h5")
    before = margins(read_bank(tmp_path / "original.h5").logits["train"], forget.train_labels)
    after = margins(read_unlearned(tmp_path / "u.h5")["default"].logits["train"], forget.train_labels)
    expected = -datamodels.forget_effects(forget.indices).margins[: len(forget.train_labels)]
    np.testing.assert_allclose(after - before, np.broadcast_to(expected, before.shape), atol=1e-4)


def test_unlearn_gives_a_source_free_method_only_the_forget_samples(tmp_path):
    assert run("prepare-data", "--spec", '{"loader": "digits", "max_train": 200}', "--out", "d.h5",
               cwd=tmp_path).returncode == 0
    assert run("forget-set", "--name", "r", "--spec", '{"kind": "random", "size": 5}', "--data", "d.h5",
               "--seed", "0", "--out", "f.h5", cwd=tmp_path).returncode == 0
    assert run("forget-samples", "--data", "d.h5", "--forget-set", "f.h5", "--out", "s.h5", cwd=tmp_path).returncode == 0
    assert run("train", "--data", "d.h5", "--model", '{"arch": "mlp", "options": {"hidden": [8]}}',
               "--training", '{"epochs": 1}', "--seed", "0", "--first-id", "0", "--count", "2", "--out", "o.h5",
               cwd=tmp_path).returncode == 0
    common = ["unlearn", "--method", "gradient_ascent", "--originals", "o.h5", "--seed", "0", "--out", "u.h5"]
    refused = run(*common, "--data", "d.h5", "--forget-set", "f.h5", cwd=tmp_path)
    assert refused.returncode == 2 and "source-free" in refused.stderr and not (tmp_path / "u.h5").exists()
    side = run(*common, "--forget-samples", "s.h5", "--side", "datamodels=d.h5", cwd=tmp_path)
    assert side.returncode == 2 and "needs the side artifacts none" in side.stderr
    done = run(*common, "--forget-samples", "s.h5", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    banks = read_unlearned(tmp_path / "u.h5")
    assert set(banks["default"].weights) == set(read_bank(tmp_path / "o.h5").weights)


def test_forget_sets_of_a_poisoned_experiment_carry_the_poisoned_labels(tmp_path):
    from unlearnflow.stages import experiment_forget_set
    assert run("prepare-data", "--spec", '{"loader": "digits"}', "--out", "d.h5", cwd=tmp_path).returncode == 0
    for name, spec in (("p", '{"kind": "poison", "pairs": [[1, 7]], "budget": 20}'),
                       ("r", '{"kind": "random", "size": 7}')):
        assert run("forget-set", "--name", name, "--spec", spec, "--data", "d.h5", "--seed", "0",
                   "--out", f"{name}.h5", cwd=tmp_path).returncode == 0
    poison, plain = read_forget_set(tmp_path / "p.h5"), read_forget_set(tmp_path / "r.h5")
    assert (poison.train_labels != plain.train_labels).sum() > 0
    judged = experiment_forget_set(str(tmp_path / "r.h5"), str(tmp_path / "p.h5"))
    assert (judged.train_labels == poison.train_labels).all() and (judged.indices == plain.indices).all()
    assert (experiment_forget_set(str(tmp_path / "r.h5"), None).train_labels == plain.train_labels).all()


@pytest.mark.parametrize("fault, status, message", [
    (OSError(28, "No space left on device", "results/x/data.h5"), 2,
     "No space left on device writing results/x/data.h5; free space and rerun"),
    (KeyboardInterrupt(), 130, "interrupted by the user"),
])
def test_a_full_disk_or_an_interrupt_is_one_line(monkeypatch, capsys, fault, status, message):
    """Issue 19, item 13: the log of a job killed by the machine names the cause in one line (the
    onerror handler prints it), not a traceback that reads as a bug."""
    from unlearnflow import cli, stages

    def failing(**options):
        raise fault

    monkeypatch.setattr(stages, "check_config", failing)
    assert cli.main(["check-config", "any.yaml"]) == status
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("unlearnflow: error:") and message in lines[0], lines


def test_any_other_os_error_keeps_its_traceback(monkeypatch):
    from unlearnflow import cli, stages

    def failing(**options):
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(stages, "check_config", failing)
    with pytest.raises(OSError, match="Input/output error"):
        cli.main(["check-config", "any.yaml"])
