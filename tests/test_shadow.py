"""The U-LiRA shadow experiment: roles of each (model, point) and the attack end to end."""

import numpy as np
import pytest
import torch

from unlearnflow.core.artifacts import train_bank
from unlearnflow.core.data import load_dataset
from unlearnflow.core.models import build_model
from unlearnflow.core.training import TrainConfig, model_seed, subset_mask
from unlearnflow.dmm import dm_direct
from unlearnflow.dmm.regression import fit_diagonal
from unlearnflow.errors import UserError
from unlearnflow.evaluation.ulira import (
    ShadowDesign,
    check_design,
    draw_forget_sets,
    run_ulira,
    shadow_margin_tables,
)
from unlearnflow.metrics.margins import margins
from unlearnflow.pgu.gradient_space import Factorisation, shadow_gradient_space


def test_forget_sets_come_from_the_pool_inside_each_base_subset():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, 200)
    masks = np.stack([subset_mask(s, 200, 0.5) for s in range(6)])
    design = draw_forget_sets(masks, labels, seed=1, forget_sets_per_model=3, forget_size=4, pool_class=2)
    assert set(design.pool) == set(np.flatnonzero(labels == 2))
    assert design.forget_sets.shape == (6, 3, 4)
    for mask, sets in zip(masks, design.forget_sets):
        assert mask[sets].all() and (labels[sets] == 2).all()


def test_margin_tables_put_each_margin_in_its_role():
    labels = np.array([0, 1, 0, 1, 0, 1])
    design = ShadowDesign(pool=np.array([1, 3, 5]), forget_sets=np.array([[[1]], [[3]]]))
    base_masks = np.array([[1, 1, 1, 0, 1, 0], [1, 0, 1, 1, 1, 1]], bool)
    logits = np.zeros((2, 1, 6, 2))
    logits[..., 1] = np.arange(6)  # margin of class 1 on point i is i (other logit 0)
    unlearned, never_seen = shadow_margin_tables(design, base_masks, logits, labels)
    np.testing.assert_array_equal(unlearned, [[1, np.nan, np.nan], [np.nan, 3, np.nan]])
    np.testing.assert_array_equal(never_seen, [[np.nan, 3, 5], [1, np.nan, np.nan]])


def test_a_design_that_judges_no_target_is_refused_before_any_unlearning():
    """Issue 19, item 12: sizes that leave no judged point name the evaluation.ulira keys and the
    remedy, before the shadows are unlearned (the same bookkeeping as the attack's)."""
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, 400)
    masks = np.stack([subset_mask(s, 400, 0.5) for s in range(4)])
    sparse = draw_forget_sets(masks, labels, seed=1, forget_sets_per_model=1, forget_size=1, pool_class=2)
    with pytest.raises(UserError, match=r"ulira: no target model has a judged point .*, with evaluation\.ulira "
                                        r"base_models 4, forget_sets_per_model 1, forget_size 1 over a pool of \d+ "
                                        r"points; raise base_models or forget_sets_per_model, or lower pool_size"):
        check_design(sparse, masks, labels, shadow_models=2)
    dense = draw_forget_sets(masks, labels, seed=1, forget_sets_per_model=8, forget_size=3, pool_class=2, pool_size=12)
    check_design(dense, masks, labels, shadow_models=2)


@pytest.mark.slow
def test_ulira_detects_do_nothing_on_a_memorising_model_and_not_retraining():
    dataset = load_dataset({"loader": "digits", "max_train": 300})
    labels = dataset.y_train.copy()
    pool = np.flatnonzero(labels == 5)
    labels[pool[::2]] = 0  # mislabelled pool points can only be fit by memorising them
    config = TrainConfig(epochs=60, lr=0.1, batch_size=32, weight_decay=0.0)
    seeds = [model_seed(0, "ulira_base", i) for i in range(24)]
    masks = np.stack([subset_mask(s, len(labels), 0.5) for s in seeds])
    build = lambda: build_model("mlp", dataset.input_shape, 10, hidden=[256])  # noqa: E731
    base = train_bank(build, "mlp", {"hidden": [256]}, "ulira_base", range(24), seeds, dataset, labels, masks,
                      config, torch.device("cpu"), progress=False)
    kwargs = dict(base=base, dataset=dataset, labels=labels, config=config, seed=0, forget_sets_per_model=3,
                  forget_size=3, pool_class=0, pool_size=None, device=torch.device("cpu"))
    nothing = run_ulira("do_nothing", **{**kwargs, "pool_class": 0})
    assert nothing["ulira_accuracy"] > 0.6
    retrain = run_ulira("retrain", **kwargs)
    assert abs(retrain["ulira_accuracy"] - 0.5) < 0.1

    # DM-DIRECT and DMM with diagonal datamodels (memorisation scores) of these very models:
    # predicting each forgotten point's margin drop fools the attack more than doing nothing
    n_train = len(labels)
    memorisation = fit_diagonal(base.train_masks, margins(base.logits["train"], labels), np.arange(n_train))
    side = {"datamodels": MemorisationScores(n_train, memorisation.weights)}
    shifted = {"construction": "margin_shift"}
    predicted = run_ulira("dm_direct", **kwargs, method_config={"hyperparameters": shifted}, side=side)
    assert predicted["ulira_accuracy"] < nothing["ulira_accuracy"] - 0.05  # measured 0.559 vs 0.626 (retrain 0.531)
    matched = run_ulira("dmm", **kwargs, method_config={"hyperparameters": {**shifted, "epochs": 10, "lr": 1e-3}},
                        side=side)
    assert matched["ulira_accuracy"] < nothing["ulira_accuracy"] - 0.05  # measured 0.549
    with pytest.raises(UserError, match="needs datamodels"):
        run_ulira("dmm", **kwargs)
    # oracle matching's true targets do not exist for shadows: NaN, not an error
    assert np.isnan(run_ulira("oracle_matching", **kwargs, method_config={"targets": "oracle"})["ulira_accuracy"])
    # PGU's gradient space is built for the base models, each over its own subset
    projected = run_ulira("pgu_tuned", **kwargs)
    assert projected["pool_size"] > 0 and projected["ulira_accuracy"] < nothing["ulira_accuracy"] - 0.02  # 0.587


def test_shadow_gradient_space_covers_each_base_models_own_training_points():
    dataset = load_dataset({"loader": "digits", "max_train": 120})
    seeds = [model_seed(0, "ulira_base", i) for i in range(2)]
    masks = np.stack([subset_mask(s, len(dataset.y_train), 0.5) for s in seeds])
    build = lambda: build_model("mlp", dataset.input_shape, 10, hidden=[16])  # noqa: E731
    base = train_bank(build, "mlp", {"hidden": [16]}, "ulira_base", range(2), seeds, dataset, dataset.y_train, masks,
                      TrainConfig(epochs=1, lr=0.1, batch_size=32), torch.device("cpu"), progress=False)
    space = shadow_gradient_space(base, dataset, torch.device("cpu"))
    inputs = torch.from_numpy(dataset.x_train)
    for index, model in enumerate(base.load_models(dataset.input_shape, dataset.num_classes)):
        own = Factorisation.of(model, inputs[torch.from_numpy(masks[index])])
        everything = Factorisation.of(model, inputs)
        for name, layer in space.model(index).layers.items():
            np.testing.assert_allclose(layer.singular_values, own.layers[name].singular_values, rtol=1e-10)
            assert not np.allclose(layer.singular_values, everything.layers[name].singular_values)


class MemorisationScores:
    """Datamodels of the training points' margins that keep only each point's effect on itself."""

    def __init__(self, n_train, weights):
        self.split_sizes, self.weights = {"train": n_train, "val": 0, "test": 0}, weights

    def forget_effects(self, forget, calibration=None):
        return dm_direct.forget_effects(forget, None, self.weights)


def test_shadow_retraining_in_passes_gives_the_same_models(one_thread):
    """At scale the shadows' retraining (base models x forget sets) goes in passes of a chunk's
    size; a model does not depend on its pass, so the logits are the same."""
    from unlearnflow.evaluation.ulira import _retrain
    dataset = load_dataset({"loader": "digits", "max_train": 200})
    labels = dataset.y_train
    config = TrainConfig(epochs=1, lr=0.1, batch_size=32)
    seeds = [model_seed(0, "ulira_base", i) for i in range(4)]
    masks = np.stack([subset_mask(s, len(labels), 0.5) for s in seeds])
    build = lambda: build_model("mlp", dataset.input_shape, 10, hidden=[8])  # noqa: E731
    base = train_bank(build, "mlp", {"hidden": [8]}, "ulira_base", range(4), seeds, dataset, labels, masks,
                      config, torch.device("cpu"), progress=False)
    design = draw_forget_sets(base.train_masks, labels, seed=0, forget_sets_per_model=2, forget_size=2, pool_class=5)
    common = dict(base=base, design=design, dataset=dataset, labels=labels, config=config, seed=0,
                  device=torch.device("cpu"), progress=False)
    once, _, examples = _retrain(**common)
    passes, _, examples_in_passes = _retrain(**common, models_per_pass=3)  # 8 models: passes of 3, 3, 2
    assert once.shape == (4, 2, len(labels), 10) and examples_in_passes == examples
    np.testing.assert_array_equal(passes, once)
