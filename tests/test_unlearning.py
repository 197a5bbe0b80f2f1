"""Unlearning a whole bank: configurations, per-model seeds, the artifact round trip."""

import numpy as np
import pytest
import torch

from unlearnflow.artifacts import train_bank
from unlearnflow.data import load_dataset
from unlearnflow.errors import UserError
from unlearnflow.forget_sets import build_forget_set
from unlearnflow.models import build_model
from unlearnflow.training import TrainConfig, model_seed
from unlearnflow.unlearning import (configurations, oracle_targets, paired_targets, read_unlearned, unlearn_bank,
                                    write_unlearned)


def test_configurations_default_then_every_grid_point():
    found = configurations("gradient_ascent", {"epochs": 2}, {"lr": [0.1, 0.01], "batch_size": [8]})
    assert [c.label for c in found] == ["default", "lr=0.1,batch_size=8", "lr=0.01,batch_size=8"]
    assert found[0].hyperparameters["epochs"] == 2 and found[2].hyperparameters["lr"] == 0.01
    assert [c.label for c in configurations("gradient_ascent", {}, {})] == ["default"]
    with pytest.raises(UserError, match="unknown hyper-parameter"):
        configurations("gradient_ascent", {}, {"learning_rate": [1.0]})


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


def test_unlearn_bank_round_trip_and_costs(small_world, tmp_path):
    dataset, forget_set, originals, oracles = small_world
    configs = configurations("gradient_ascent", {"epochs": 3}, {"lr": [1e-4, 0.05]})
    banks = unlearn_bank("gradient_ascent", originals, dataset, forget_set, configs, seed=0, device=torch.device("cpu"))
    write_unlearned(tmp_path / "u.h5", "gradient_ascent", "r", banks, {})
    again = read_unlearned(tmp_path / "u.h5")
    assert list(again) == ["default", "lr=0.0001", "lr=0.05"]
    for label, bank in banks.items():
        np.testing.assert_array_equal(again[label].logits["test"], bank.logits["test"])
        assert again[label].attrs["unlearn_examples_per_model"] == 3 * 8
    forget = forget_set.indices

    def forget_loss(bank):
        logits = torch.from_numpy(bank.logits["train"][:, forget]).flatten(0, 1)
        labels = torch.from_numpy(dataset.y_train[forget]).repeat(len(bank))
        return torch.nn.functional.cross_entropy(logits, labels).item()

    # a larger ascent step raises the forget loss more; a tiny one barely moves it
    assert forget_loss(banks["lr=0.05"]) > forget_loss(banks["lr=0.0001"]) + 0.1
    assert abs(forget_loss(banks["lr=0.0001"]) - forget_loss(originals)) < 0.05


def test_oracle_matching_with_oracle_targets_moves_towards_them(small_world):
    dataset, forget_set, originals, oracles = small_world
    targets = oracle_targets(oracles)({})
    configs = configurations("oracle_matching", {"epochs": 20, "lr": 5e-3}, {})
    bank = unlearn_bank("oracle_matching", originals, dataset, forget_set, configs, seed=0,
                        device=torch.device("cpu"), targets=oracle_targets(oracles))["default"]
    forget = forget_set.indices

    def distance(logits):
        return float(np.mean((logits[:, forget] - targets[forget]) ** 2))

    assert distance(bank.logits["train"]) < 0.5 * distance(originals.logits["train"])


def test_paired_targets_give_each_model_its_own_retrained_model(small_world):
    dataset, forget_set, originals, oracles = small_world
    configs = configurations("oracle_matching", {"epochs": 20, "lr": 5e-3}, {})
    bank = unlearn_bank("oracle_matching", originals, dataset, forget_set, configs, seed=0,
                        device=torch.device("cpu"), targets=paired_targets(oracles, originals))["default"]
    forget = forget_set.indices
    own = np.mean((bank.logits["train"][:, forget] - oracles.logits["train"][:, forget]) ** 2)
    swapped = np.mean((bank.logits["train"][:, forget] - oracles.logits["train"][::-1, forget]) ** 2)
    assert own < 0.5 * swapped  # model k moved towards retrained model k, not towards the others
    with pytest.raises(UserError, match="one retrained model per original"):
        paired_targets(oracles, type(originals)(**{**originals.__dict__, "model_ids": originals.model_ids[:2]}))
