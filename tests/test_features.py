"""Feature extraction for linear experiments: the identity backbone (with pooling), a ResNet-18
backbone from a local state-dict file, the config checks, and the lbfgs recipe the trainer
dispatches to (source-free unlearning, Sec. 5; Guo et al., Sec. 4)."""

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

from unlearnflow.config import load_schema, validate_config
from unlearnflow.core.data import load_dataset
from unlearnflow.core.models import build_model
from unlearnflow.errors import UserError
from unlearnflow.registry import configurations
from unlearnflow.sourcefree.declarations import is_linear_recipe
from unlearnflow.sourcefree.features import check_features_spec, extract_features
from unlearnflow.sourcefree.linear import config_recipe

pytestmark = pytest.mark.usefixtures("one_thread")

@pytest.fixture(scope="module")
def digits():
    return load_dataset({"loader": "digits", "max_train": 200, "max_test": 100})

def test_identity_features_are_the_flattened_inputs_with_unit_rows(digits):
    features = extract_features(digits, {"backbone": "identity"})
    assert features.x_train.shape == (len(digits.y_train), 64)
    np.testing.assert_allclose(np.linalg.norm(features.x_train, axis=1), 1.0, atol=1e-5)
    flat = digits.x_train.reshape(len(digits.x_train), -1)
    cosine = (features.x_train * flat).sum(1) / np.linalg.norm(flat, axis=1)
    np.testing.assert_allclose(cosine, 1.0, atol=1e-5)      # the same direction as the input
    assert np.array_equal(features.y_test, digits.y_test) and features.classes == digits.classes

def test_pooling_averages_pixel_blocks_before_normalising(digits):
    features = extract_features(digits, {"backbone": "identity", "pool": 2})
    assert features.x_val.shape == (len(digits.y_val), 16)
    block = digits.x_train[0, 0, :2, :2].mean()              # the top-left 2x2 block of image 0
    pooled = digits.x_train[0, 0].reshape(4, 2, 4, 2).mean(axis=(1, 3)).reshape(-1)
    assert features.x_train[0, 0] == pytest.approx(block / np.linalg.norm(pooled), rel=1e-5)
    with pytest.raises(UserError, match="features.pool: 3 must divide the image sides"):
        extract_features(digits, {"backbone": "identity", "pool": 3})
    # side: the pooled images' side, whatever the data's (digits 8x8 -> pool 2; 28x28 -> pool 7)
    by_side = extract_features(digits, {"backbone": "identity", "side": 4})
    np.testing.assert_array_equal(by_side.x_train, features.x_train)
    rng = np.random.default_rng(0)
    large = dataclasses.replace(digits, **{f"x_{split}": rng.random((len(getattr(digits, f"y_{split}")), 1, 28, 28),
                                                                    dtype=np.float32) for split in ("train", "val", "test")})
    fashion_sized = extract_features(large, {"backbone": "identity", "side": 4})
    assert fashion_sized.x_train.shape == (len(digits.y_train), 16)
    np.testing.assert_array_equal(fashion_sized.x_test, extract_features(large, {"backbone": "identity", "pool": 7}).x_test)
    with pytest.raises(UserError, match=r"features.side: 3 must divide the side of square images"):
        extract_features(digits, {"backbone": "identity", "side": 3})
    with pytest.raises(UserError, match="give pool .a factor. or side"):
        extract_features(digits, {"backbone": "identity", "pool": 2, "side": 4})

def test_a_resnet18_backbone_loads_a_local_state_dict_and_embeds_every_split(digits, tmp_path):
    options = {"width": 4}
    source = build_model("resnet18", digits.input_shape, 10, **options)
    with torch.no_grad():
        source.bn1.running_mean.fill_(0.25)                  # something the loader must carry over
    path = tmp_path / "backbone.pt"
    torch.save({"state_dict": source.state_dict()}, path)
    spec = {"backbone": "resnet18", "weights": str(path), "options": options, "batch_size": 64}
    features = extract_features(digits, spec)
    assert features.x_train.shape == (len(digits.y_train), 8 * options["width"])
    assert np.isfinite(features.x_test).all()
    np.testing.assert_array_less(np.linalg.norm(features.x_train, axis=1), 1 + 1e-5)
    source.eval()
    with torch.no_grad():
        expected = source.features(torch.from_numpy(digits.x_val[:3])).numpy()
    expected /= np.linalg.norm(expected, axis=1, keepdims=True)
    np.testing.assert_allclose(features.x_val[:3], expected, atol=1e-5)
    with pytest.raises(UserError, match="pretrained weights file not found"):
        extract_features(digits, {**spec, "weights": str(tmp_path / "missing.pt")})

PUBLIC = {"backbone": "public", "public_fraction": 0.3, "seed": 4, "arch": "mlp", "options": {"hidden": [16]},
          "training": {"epochs": 3, "lr": 0.05, "batch_size": 32}}

def test_a_public_backbone_embeds_only_the_private_training_points(digits):
    """The backbone trains on a seeded 30% of the training split; features.h5's training split is
    the other 70%, embedded by that network (penultimate activations, unit rows)."""
    from unlearnflow.core.models import penultimate_features
    from unlearnflow.sourcefree.features import public_split, train_public_backbone
    n = len(digits.y_train)
    public, private = public_split(n, 0.3, seed=4)
    assert len(public) == 60 and len(private) == n - 60 and not set(public) & set(private)
    assert sorted({*public, *private}) == list(range(n))
    features = extract_features(digits, PUBLIC)
    assert features.x_train.shape == (n - 60, 16) and np.array_equal(features.y_train, digits.y_train[private])
    assert len(features.y_val) == len(digits.y_val) and len(features.y_test) == len(digits.y_test)
    network = train_public_backbone(digits, PUBLIC)
    with torch.no_grad():
        expected = penultimate_features(network, torch.from_numpy(digits.x_train[private])).numpy()
        public_rows = penultimate_features(network, torch.from_numpy(digits.x_train[public])).numpy()
    norms = np.linalg.norm(expected, axis=1, keepdims=True)
    expected = expected / np.where(norms > 0, norms, 1)
    np.testing.assert_allclose(features.x_train, expected, atol=1e-5)
    public_rows /= np.maximum(np.linalg.norm(public_rows, axis=1, keepdims=True), 1e-12)
    # no public point's feature row is in the training split (distinct digits give distinct rows)
    distances = np.linalg.norm(features.x_train[:, None, :] - public_rows[None, :, :], axis=2)
    assert distances.min() > 1e-4
    # deterministic given the seed; another seed draws another public part and another network
    again = extract_features(digits, PUBLIC)
    assert np.array_equal(again.x_train, features.x_train) and np.array_equal(again.x_test, features.x_test)
    other = extract_features(digits, {**PUBLIC, "seed": 5})
    assert not np.array_equal(public_split(n, 0.3, seed=5)[0], public)
    assert not np.allclose(other.x_test, features.x_test)

def test_the_feature_stage_records_the_public_points_and_forget_sets_come_from_the_private_ones(tmp_path):
    from unlearnflow.core.artifacts import read_dataset, read_forget_set
    from unlearnflow.core.store import read_artifact
    from unlearnflow.stages import extract_features as stage
    from unlearnflow.stages import make_forget_set, prepare_data
    data, out = tmp_path / "data.h5", tmp_path / "features.h5"
    prepare_data(spec={"loader": "digits", "max_train": 200, "max_test": 100}, out=str(data))
    stage(data=str(data), spec=PUBLIC, out=str(out))
    record = read_artifact(out, "dataset", names=()).provenance["seeds"]
    public, private = np.array(record["public_indices"]), np.array(record["private_indices"])
    assert record["public_size"] == len(public) == 60 and record["seed"] == 4
    raw, features = read_dataset(data), read_dataset(out)
    from unlearnflow.sourcefree.features import public_split
    assert all(np.array_equal(a, b) for a, b in zip((public, private), public_split(len(raw.y_train), 0.3, seed=4)))
    assert np.array_equal(features.y_train, raw.y_train[private]) and len(features.y_train) == 140
    make_forget_set(name="r30", spec={"kind": "random", "size": 30}, data=str(out), seed=0,
                    out=str(tmp_path / "r30.h5"))
    forget = read_forget_set(tmp_path / "r30.h5")
    assert len(forget.indices) == 30 and forget.indices.max() < len(features.y_train)

@pytest.mark.parametrize("spec, message", [
    ({"backbone": "vit"}, "unknown backbone 'vit'"),
    ({"backbone": "public"}, "features.public_fraction: the public backbone needs a fraction in"),
    ({**PUBLIC, "public_fraction": 1.0}, "features.public_fraction: the public backbone needs a fraction in"),
    ({**PUBLIC, "arch": "linear"}, "features.arch: the public backbone trains one of mlp"),
    ({**PUBLIC, "training": {"epoch": 3}}, "config: features.training: unknown key"),
    ({**PUBLIC, "pool": 2}, "backbone public takes public_fraction, seed"),
    ({"backbone": "identity", "weights": "w.pt"}, "backbone identity takes pool, side, not weights"),
    ({"backbone": "resnet18"}, "the resnet18 backbone needs a local state-dict file"),
])
def test_a_bad_features_spec_is_one_line(spec, message):
    with pytest.raises(UserError, match=message):
        check_features_spec(spec)


@pytest.mark.parametrize("training, message", [
    ({"lr": "1e-3"}, "features.training.lr: '1e-3' is not of type 'number'"),   # YAML 1.1 reads 1e-3 as text
    ({"epochs": 2.5}, "features.training.epochs: 2.5 is not of type 'integer'"),
])
def test_the_backbones_training_recipe_is_validated_like_the_training_section(training, message):
    config = {"experiment": "x", "data": {"loader": "digits"}, "model": {"arch": "linear"},
              "features": {**PUBLIC, "training": training},
              "training": {"optimizer": "lbfgs", "loss": "squared", "lam": 1e-3, "noise_std": 0.1},
              "forget_sets": {"r5": {"kind": "random", "size": 5}}}
    schema = load_schema(Path(__file__).parent.parent / "workflow" / "schemas" / "config.schema.yaml")
    with pytest.raises(UserError, match=message) as error:
        validate_config(config, schema)
    assert "\n" not in str(error.value)

def test_the_lbfgs_recipe_is_checked_and_feeds_the_newton_hyperparameters():
    training = {"optimizer": "lbfgs", "loss": "logistic", "lam": 1e-3, "noise_std": 0.5}
    assert is_linear_recipe(training) and not is_linear_recipe({"optimizer": "sgd", "lr": 0.1})
    objective, noise_std = config_recipe(training)
    assert (objective.loss, objective.lam, noise_std) == ("logistic", 1e-3, 0.5)
    with pytest.raises(UserError, match="takes loss, lam, noise_std, not epochs"):
        config_recipe({**training, "epochs": 3})
    with pytest.raises(UserError, match="optimizer lbfgs needs lam"):
        config_recipe({"optimizer": "lbfgs", "loss": "squared"})
    # the Newton methods take loss and lam from the recipe, n_train from a bank's record
    [found] = configurations("newton_source_free", {}, training)
    assert (found.hyperparameters["loss"], found.hyperparameters["lam"]) == ("logistic", 1e-3)
    recorded = {"kind": "linear", "loss": "squared", "lam": 0.01, "noise_std": 0.0, "n_train": 900}
    found = configurations("newton_source_free", {"grid": {"variant": ["corrected"]}}, recorded)
    assert all(c.hyperparameters["n_train"] == 900 and c.hyperparameters["lam"] == 0.01 for c in found)
    assert configurations("newton_certified", {}, {"optimizer": "sgd"})[0].hyperparameters["loss"] == "squared"
    with pytest.raises(UserError, match="methods.newton_certified: loss comes from the training recipe"):
        configurations("newton_certified", {"hyperparameters": {"loss": "squared"}}, training)

def test_a_linear_bank_from_the_train_stage_shares_b_with_its_oracles(tmp_path, digits):
    from unlearnflow.core.artifacts import read_bank, write_dataset, write_forget_set
    from unlearnflow.core.forget_sets import build_forget_set
    from unlearnflow.core.store import lineage_of, provenance
    from unlearnflow.stages import train
    features = extract_features(digits, {"backbone": "identity", "pool": 2})
    data = write_dataset(tmp_path / "features.h5", features, provenance())
    forget = build_forget_set("r", {"kind": "random", "size": 10}, features.x_train, features.y_train, 0)
    forget_path = write_forget_set(tmp_path / "r.h5", forget, provenance({}, {}, [data], lineage_of(data=data)))
    training = {"optimizer": "lbfgs", "loss": "squared", "lam": 1e-3, "noise_std": 0.5}
    common = dict(data=str(data), model={"arch": "linear", "options": {"bias": False}}, training=training, seed=0,
                  first_id=0, count=2)
    for role, out, extra in (("original", "o.h5", {}), ("oracle", "or.h5", {"forget_set": str(forget_path)}),
                             ("retrain", "re.h5", {"forget_set": str(forget_path)})):
        train(role=role, out=str(tmp_path / out), **common, **extra)
    original, oracle, retrained = (read_bank(tmp_path / name) for name in ("o.h5", "or.h5", "re.h5"))
    assert original.attrs["training"] == {"kind": "linear", "loss": "squared", "lam": 1e-3, "noise_std": 0.5,
                                          "n_train": len(features.y_train)}
    assert np.array_equal(original.seeds, oracle.seeds) and not np.array_equal(original.seeds, retrained.seeds)
    assert oracle.train_masks[:, forget.indices].sum() == 0 and oracle.attrs["role"] == "oracle/r"
    W = "classifier.weight"
    removal = np.linalg.norm(original.weights[W] - oracle.weights[W])
    assert 0 < removal < np.linalg.norm(retrained.weights[W] - oracle.weights[W])  # b differs, removal is small
