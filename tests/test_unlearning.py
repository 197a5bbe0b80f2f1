"""The runner: configurations, per-model seeds, request sequences, source-free requests, the
registry's contract and the unlearned artifact's round trip."""

import numpy as np
import pytest
import torch

from unlearnflow.core.artifacts import train_bank, weights_only
from unlearnflow.core.data import load_dataset
from unlearnflow.core.forget_sets import ForgetSamples, build_forget_set
from unlearnflow.core.models import build_model
from unlearnflow.core.training import FitStats, TrainConfig, model_seed
from unlearnflow.errors import UserError
from unlearnflow.methods.request import ForgetRequest, MethodResult, UnlearningRequest
from unlearnflow.registry import EDITS_MODEL, METHODS, MethodSpec, configurations, register, spec_of
from unlearnflow.runner import RequestSource, apply_method, read_unlearned, unlearn_bank, with_logits, write_unlearned


def test_configurations_default_then_every_grid_point():
    found = configurations("gradient_ascent", {"hyperparameters": {"epochs": 2},
                                               "grid": {"lr": [0.1, 0.01], "batch_size": [8]}})
    assert [c.label for c in found] == ["default", "lr=0.1,batch_size=8", "lr=0.01,batch_size=8"]
    assert found[0].hyperparameters["epochs"] == 2 and found[2].hyperparameters["lr"] == 0.01
    assert [c.label for c in configurations("gradient_ascent", {})] == ["default"]
    # a grid point equal to the default (or to an earlier point) would repeat its work: left out
    repeated = configurations("gradient_ascent", {"hyperparameters": {"lr": 0.1}, "grid": {"lr": [0.01, 0.1, 0.01]}})
    assert [c.label for c in repeated] == ["default", "lr=0.01"]
    with pytest.raises(UserError, match="unknown hyper-parameter"):
        configurations("gradient_ascent", {"grid": {"learning_rate": [1.0]}})


@pytest.fixture(scope="module")
def small_world():
    torch.set_num_threads(1)
    dataset = load_dataset({"loader": "digits", "max_train": 400})
    forget_set = build_forget_set("r", {"kind": "random", "size": 8}, dataset.x_train, dataset.y_train, seed=0)
    build = lambda: build_model("mlp", dataset.input_shape, 10, hidden=[16])  # noqa: E731
    config = TrainConfig(epochs=5, batch_size=32)

    def bank(role, masks):
        seeds = [model_seed(0, role, i) for i in range(4)]
        return train_bank(build, "mlp", {"hidden": [16]}, role, range(4), seeds, dataset, dataset.y_train, masks,
                          config, torch.device("cpu"), progress=False)

    everything = np.ones((4, len(dataset.y_train)), bool)
    originals = bank("original", everything)
    oracles = bank("oracle/r", np.tile(forget_set.retain_mask(len(dataset.y_train)), (4, 1)))
    return dataset, forget_set, originals, oracles


def forget_loss(bank, dataset, forget):
    logits = torch.from_numpy(bank.logits["train"][:, forget]).flatten(0, 1)
    labels = torch.from_numpy(dataset.y_train[forget]).repeat(len(bank))
    return torch.nn.functional.cross_entropy(logits, labels).item()


def test_unlearn_bank_round_trip_and_costs(small_world, tmp_path):
    dataset, forget_set, originals, _ = small_world
    configs = configurations("gradient_ascent", {"hyperparameters": {"epochs": 3}, "grid": {"lr": [1e-4, 0.05]}})
    samples = ForgetSamples.of(forget_set, dataset.x_train, dataset.x_val, dataset.y_val, dataset.num_classes)
    results = unlearn_bank(spec_of("gradient_ascent"), configs, originals, RequestSource(samples), [{}], seed=0,
                           device=torch.device("cpu"))
    write_unlearned(tmp_path / "u.h5", "gradient_ascent", "r", originals, configs, results, {}, {})
    again = read_unlearned(tmp_path / "u.h5")
    assert list(again) == ["default", "lr=0.0001", "lr=0.05"]
    for label, steps in results.items():
        for name, value in steps[0].weights.items():
            np.testing.assert_array_equal(again[label].weights[name], value)
        assert again[label].attrs["unlearn_examples_per_model"] == 3 * 8
    banks = {label: with_logits(bank, dataset, torch.device("cpu")) for label, bank in again.items()}
    forget = forget_set.indices
    # a larger ascent step raises the forget loss more; a tiny one barely moves it
    assert forget_loss(banks["lr=0.05"], dataset, forget) > forget_loss(banks["lr=0.0001"], dataset, forget) + 0.1
    assert abs(forget_loss(banks["lr=0.0001"], dataset, forget) - forget_loss(originals, dataset, forget)) < 0.05


def test_a_source_free_method_gets_only_the_forget_samples_and_the_same_result(small_world):
    """Gradient ascent is registered source-free: its requests hold no retain data, and it
    unlearns exactly as it would from the training set's rows."""
    dataset, forget_set, originals, _ = small_world
    seen = []
    spec = spec_of("gradient_ascent")

    def spy(model, request, hp, seed):
        seen.append(request)
        return spec.unlearn(model, request, hp, seed)

    probe = MethodSpec("probe_source_free", "test", EDITS_MODEL, spec.defaults, {}, unlearn=spy, source_free=True)
    register(probe)
    try:
        probed = apply_method("probe_source_free", originals, dataset, forget_set)["default"][0]
    finally:
        METHODS.pop("probe_source_free")
    assert all(type(request) is ForgetRequest for request in seen)
    assert not any(hasattr(request, name) for request in seen for name in ("retain", "inputs", "forget"))
    np.testing.assert_array_equal(seen[0].forget_inputs.numpy(), dataset.x_train[forget_set.indices])
    direct = apply_method("gradient_ascent", originals, dataset, forget_set)["default"][0]
    np.testing.assert_array_equal(probed.logits["test"], direct.logits["test"])


def test_a_sequence_starts_each_request_from_the_previous_model_and_state(small_world):
    """A toy method registered here: each request adds 1 to the last layer's bias and returns
    its request count as state; after R requests the bias moved by R, each request saw the state
    of the one before, only its own forget samples and the retain set without earlier requests."""
    dataset, _, originals, _ = small_world
    sequence = build_forget_set("inc", {"kind": "incremental", "requests": 3, "size": 10}, dataset.x_train,
                                dataset.y_train, seed=0)
    seen = []

    def shift_bias(model, request, hp, seed):
        seen.append((request.step, request.state, len(request.forget), len(request.retain)))
        with torch.no_grad():
            list(model.parameters())[-1].add_(hp["amount"])
        return MethodResult(FitStats(seconds=0.0, steps=1, examples=len(request.forget)),
                            certificate={"step": request.step}, state=(request.state or 0) + 1)

    register(MethodSpec("toy_shift", "test", EDITS_MODEL, {"amount": 1.0}, {}, unlearn=shift_bias))
    try:
        steps = apply_method("toy_shift", originals, dataset, sequence)["default"]
    finally:
        METHODS.pop("toy_shift")
    bias = [name for name in originals.weights if name.endswith("bias")][-1]
    for r, bank in enumerate(steps, start=1):
        np.testing.assert_allclose(bank.weights[bias], originals.weights[bias] + r, rtol=0, atol=1e-5)
        assert bank.attrs["certificates"] == [{"step": r - 1}] * len(originals)
    n_train = len(dataset.y_train)
    assert seen[:3] == [(0, None, 10, n_train - 10), (1, 1, 10, n_train - 20), (2, 2, 10, n_train - 30)]


def test_a_method_registered_in_a_test_runs_through_the_runner_and_the_evaluation(small_world):
    from unlearnflow.evaluation.evaluate import evaluate

    dataset, forget_set, originals, oracles = small_world

    def shift_bias(model, request, hp, seed):
        with torch.no_grad():
            list(model.parameters())[-1].add_(hp["amount"])
        return MethodResult(FitStats(seconds=0.0, steps=1, examples=len(request.forget_inputs)))

    register(MethodSpec("toy_bias", "test", EDITS_MODEL, {"amount": 1.0}, {"amount": [0.0, 3.0]}, unlearn=shift_bias,
                        source_free=True))
    try:
        banks = apply_method("toy_bias", originals, dataset, forget_set, {"grid": {"amount": [0.0, 3.0]}})
    finally:
        METHODS.pop("toy_bias")
    rows = {label: evaluate(dataset, forget_set, originals, oracles, steps[0], "toy_bias", label, n_boot=5).row
            for label, steps in banks.items()}
    assert set(rows) == {"default", "amount=0.0", "amount=3.0"}
    assert rows["amount=0.0"]["compute_fraction"] == 8 / oracles.attrs["examples_per_model"]
    # shifting every logit by the same amount keeps every margin: KLOM cannot tell the configurations apart
    assert rows["amount=3.0"]["selection_score"] == pytest.approx(rows["amount=0.0"]["selection_score"], abs=1e-3)
    np.testing.assert_array_equal(banks["amount=0.0"][0].logits["test"], originals.logits["test"])


def test_registry_rejects_a_source_free_method_that_needs_retain_data():
    spec = MethodSpec("leaky", "test", EDITS_MODEL, {}, {}, unlearn=lambda *a: None, needs=("oracle_targets",),
                      source_free=True)
    with pytest.raises(ValueError, match="source-free"):
        register(spec)
    assert "leaky" not in METHODS


def test_every_registered_method_declares_known_artifacts_and_a_working_entry_point():
    for name, spec in METHODS.items():
        assert spec.paper and (spec.unlearn or spec.predict), name
        assert configurations(name, {**{key: values[0] for key, values in spec.options.items()}})


def test_oracle_matching_with_oracle_targets_moves_towards_them(small_world):
    dataset, forget_set, originals, oracles = small_world
    bank = apply_method("oracle_matching", originals, dataset, forget_set,
                        {"hyperparameters": {"epochs": 20, "lr": 5e-3}, "targets": "oracle"},
                        side={"oracle_targets": oracles})["default"][0]
    targets = oracles.logits["train"].mean(axis=0)
    forget = forget_set.indices

    def distance(logits):
        return float(np.mean((logits[:, forget] - targets[forget]) ** 2))

    assert distance(bank.logits["train"]) < 0.5 * distance(originals.logits["train"])


def test_paired_targets_give_each_model_its_own_retrained_model(small_world):
    dataset, forget_set, originals, oracles = small_world
    config = {"hyperparameters": {"epochs": 20, "lr": 5e-3}, "targets": "retrain"}
    bank = apply_method("oracle_matching", originals, dataset, forget_set, config,
                        side={"paired_targets": oracles})["default"][0]
    forget = forget_set.indices
    own = np.mean((bank.logits["train"][:, forget] - oracles.logits["train"][:, forget]) ** 2)
    swapped = np.mean((bank.logits["train"][:, forget] - oracles.logits["train"][::-1, forget]) ** 2)
    assert own < 0.5 * swapped  # model k moved towards retrained model k, not towards the others
    fewer = type(oracles)(**{**oracles.__dict__, "model_ids": oracles.model_ids[:2]})
    with pytest.raises(UserError, match="one retrained model per original"):
        apply_method("oracle_matching", originals, dataset, forget_set, config, side={"paired_targets": fewer})


def test_weights_only_bank_keeps_models_and_drops_what_names_training_points(small_world):
    _, _, originals, _ = small_world
    models = weights_only(originals)
    assert models.logits == {} and models.train_masks.shape == (len(originals), 0)
    assert set(models.weights) == set(originals.weights)


def test_unlearning_request_checks_its_shapes():
    x, y = torch.zeros(6, 2), torch.zeros(6, dtype=torch.long)
    with pytest.raises(UserError, match="forget set is empty"):
        UnlearningRequest.of_training_set(x, y, torch.tensor([], dtype=torch.long), torch.arange(6), 2)
    with pytest.raises(UserError, match="retain set is empty"):
        UnlearningRequest.of_training_set(x, y, torch.arange(6), torch.tensor([], dtype=torch.long), 2)
