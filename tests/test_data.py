"""Tests for unlearnflow.core.data: every loader on small files in the real formats, splits, errors."""

from __future__ import annotations

import gzip
import pickle
import struct
from pathlib import Path

import h5py
import numpy as np
import pytest
from conftest import requires
from PIL import Image

from unlearnflow.core.data import FASHION_MNIST_CLASSES, LOADERS, Dataset, load_dataset
from unlearnflow.errors import UserError

FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")


def raw(dataset: Dataset, x: np.ndarray) -> np.ndarray:
    """Undo the normalisation: back to [0, 1] pixels or raw features."""
    shape = (1, -1) + (1,) * (x.ndim - 2)
    return x * dataset.std.reshape(shape) + dataset.mean.reshape(shape)


def as_bytes(dataset: Dataset, x: np.ndarray) -> np.ndarray:
    return np.rint(raw(dataset, x) * 255).astype(np.uint8)


def rows(x: np.ndarray) -> list[bytes]:
    return sorted(row.tobytes() for row in x)


def assert_user_error(spec: dict, *fragments: object) -> str:
    with pytest.raises(UserError) as caught:
        load_dataset(spec)
    message = str(caught.value)
    assert "\n" not in message
    for fragment in fragments:
        assert str(fragment) in message
    return message


# --- digits -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def digits() -> Dataset:
    return load_dataset({"loader": "digits"})


def test_digits_shapes_and_types(digits: Dataset) -> None:
    assert LOADERS == ("digits", "idx", "cifar", "image_folder", "features")
    assert digits.name == "digits"
    assert digits.classes == tuple("0123456789")
    assert digits.num_classes == 10
    assert digits.input_shape == (1, 8, 8)
    assert len(digits.y_train) + len(digits.y_val) + len(digits.y_test) == 1797
    for x, y in ((digits.x_train, digits.y_train), (digits.x_val, digits.y_val), (digits.x_test, digits.y_test)):
        assert x.dtype == np.float32 and y.dtype == np.int64
        assert x.shape[1:] == (1, 8, 8) and len(x) == len(y)
    assert digits.mean.shape == digits.std.shape == (1,)
    assert digits.mean.dtype == digits.std.dtype == np.float32


def test_digits_splits_are_stratified(digits: Dataset) -> None:
    from sklearn.datasets import load_digits

    sizes = np.bincount(load_digits().target)
    held_out = np.bincount(digits.y_val, minlength=10) + np.bincount(digits.y_test, minlength=10)
    np.testing.assert_array_equal(held_out, np.floor(0.3 * sizes + 0.5))
    np.testing.assert_array_equal(np.bincount(digits.y_val, minlength=10), np.floor(0.5 * held_out + 0.5))
    np.testing.assert_array_equal(np.bincount(digits.y_train, minlength=10), sizes - held_out)


def test_digits_splits_partition_the_data(digits: Dataset) -> None:
    from sklearn.datasets import load_digits

    source = load_digits()
    original = [np.append(image.ravel(), label) for image, label in zip(source.images, source.target)]
    loaded = [np.append(np.rint(raw(digits, x) * 16).ravel(), y)
              for part_x, part_y in ((digits.x_train, digits.y_train), (digits.x_val, digits.y_val),
                                     (digits.x_test, digits.y_test))
              for x, y in zip(part_x, part_y)]
    assert rows(np.array(loaded)) == rows(np.array(original))


def test_digits_normalised_with_train_statistics(digits: Dataset) -> None:
    assert abs(digits.x_train.mean()) < 1e-5
    assert abs(digits.x_train.std() - 1) < 1e-5
    assert abs(digits.x_test.mean()) > 1e-4  # test statistics were not used
    pixels = raw(digits, digits.x_train) * 16
    np.testing.assert_allclose(pixels, np.rint(pixels), atol=1e-4)
    assert pixels.min() > -1e-4 and pixels.max() < 16 + 1e-4


def test_digits_deterministic(digits: Dataset) -> None:
    again = load_dataset({"loader": "digits", "seed": 0, "test_fraction": 0.3, "validation_fraction": 0.5})
    for field in ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test", "mean", "std"):
        np.testing.assert_array_equal(getattr(again, field), getattr(digits, field))
    other = load_dataset({"loader": "digits", "seed": 1})
    assert not np.array_equal(other.y_test, digits.y_test) or not np.array_equal(other.x_test, digits.x_test)


def test_digits_fractions() -> None:
    dataset = load_dataset({"loader": "digits", "test_fraction": 0.5, "validation_fraction": 0.2})
    held_out = len(dataset.y_val) + len(dataset.y_test)
    assert abs(held_out - 1797 / 2) <= 10
    assert abs(len(dataset.y_val) - 0.2 * held_out) <= 10


def test_max_test_subsamples_test_and_validation_together_and_keeps_train(digits: Dataset) -> None:
    small = load_dataset({"loader": "digits", "max_test": 100})
    assert len(small.y_val) + len(small.y_test) == 100
    np.testing.assert_array_equal(small.x_train, digits.x_train)
    assert abs(len(small.y_val) - len(small.y_test)) <= 10  # validation is half of each class
    assert np.bincount(small.y_test, minlength=10).min() >= 3  # stratified


def test_max_train_subsamples_train_only(digits: Dataset) -> None:
    small = load_dataset({"loader": "digits", "max_train": 200})
    assert len(small.y_train) == 200
    expected = np.bincount(digits.y_train) * 200 / len(digits.y_train)
    assert np.all(np.abs(np.bincount(small.y_train) - expected) < 1)
    np.testing.assert_array_equal(small.y_test, digits.y_test)
    np.testing.assert_array_equal(np.rint(raw(small, small.x_val) * 16), np.rint(raw(digits, digits.x_val) * 16))
    assert abs(small.x_train.mean()) < 1e-5 and abs(small.x_train.std() - 1) < 1e-5
    assert small.mean[0] != digits.mean[0]
    assert len(load_dataset({"loader": "digits", "max_train": 10**6}).y_train) == len(digits.y_train)


# --- idx --------------------------------------------------------------------------------------


def idx_bytes(array: np.ndarray) -> bytes:
    header = struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(np.uint8).tobytes()


def write_idx(path: Path, array: np.ndarray, compress: bool) -> None:
    if compress:
        with gzip.open(path.with_name(path.name + ".gz"), "wb") as stream:
            stream.write(idx_bytes(array))
    else:
        path.write_bytes(idx_bytes(array))


def synthetic_images(count: int, height: int, width: int, seed: int) -> np.ndarray:
    """Random uint8 images whose first pixel is the image's index, so each is unique."""
    images = np.random.default_rng(seed).integers(0, 256, size=(count, height, width), dtype=np.uint8)
    images[:, 0, 0] = np.arange(count)
    return images


def make_idx(directory: Path, compress: bool = True) -> dict[str, np.ndarray]:
    directory.mkdir()
    arrays = {
        "train-images-idx3-ubyte": synthetic_images(40, 5, 4, seed=1),
        "train-labels-idx1-ubyte": np.arange(40) % 10,
        "t10k-images-idx3-ubyte": synthetic_images(20, 5, 4, seed=2),
        "t10k-labels-idx1-ubyte": np.arange(20) % 10,
    }
    for name, array in arrays.items():
        write_idx(directory / name, array, compress)
    return arrays


@pytest.mark.parametrize("compress", [True, False])
def test_idx_loads_written_pixels(tmp_path: Path, compress: bool) -> None:
    arrays = make_idx(tmp_path / "mnist", compress)
    dataset = load_dataset({"loader": "idx", "path": str(tmp_path / "mnist")})
    assert dataset.classes == tuple("0123456789")
    assert dataset.input_shape == (1, 5, 4)
    np.testing.assert_array_equal(as_bytes(dataset, dataset.x_train)[:, 0], arrays["train-images-idx3-ubyte"])
    np.testing.assert_array_equal(dataset.y_train, arrays["train-labels-idx1-ubyte"])
    test_images, test_labels = arrays["t10k-images-idx3-ubyte"], arrays["t10k-labels-idx1-ubyte"]
    for x, y in ((dataset.x_val, dataset.y_val), (dataset.x_test, dataset.y_test)):
        images = as_bytes(dataset, x)[:, 0]
        index = images[:, 0, 0]
        np.testing.assert_array_equal(images, test_images[index])
        np.testing.assert_array_equal(y, test_labels[index])
    np.testing.assert_array_equal(np.bincount(dataset.y_val), np.ones(10))  # half of each test class
    assert sorted(np.concatenate([as_bytes(dataset, dataset.x_val), as_bytes(dataset, dataset.x_test)])[:, 0, 0, 0]) \
        == list(range(20))


def test_idx_fashion_class_names(tmp_path: Path) -> None:
    make_idx(tmp_path / "Fashion_synthetic")
    dataset = load_dataset({"loader": "idx", "path": tmp_path / "Fashion_synthetic"})
    assert dataset.classes == FASHION_MNIST_CLASSES
    assert dataset.classes[0] == "T-shirt/top" and dataset.classes[9] == "Ankle boot"


def test_idx_bad_magic(tmp_path: Path) -> None:
    make_idx(tmp_path / "mnist")
    labels = tmp_path / "mnist" / "train-labels-idx1-ubyte.gz"
    with gzip.open(labels, "wb") as stream:
        stream.write(struct.pack(">I", 1234) + bytes(40))
    assert_user_error({"loader": "idx", "path": tmp_path / "mnist"}, labels, "magic 2049", "found magic 1234")


def test_idx_truncated(tmp_path: Path) -> None:
    make_idx(tmp_path / "mnist", compress=False)
    images = tmp_path / "mnist" / "t10k-images-idx3-ubyte"
    images.write_bytes(images.read_bytes()[:-7])
    assert_user_error({"loader": "idx", "path": tmp_path / "mnist"}, images, "truncated")


def test_idx_truncated_gzip_stream(tmp_path: Path) -> None:
    make_idx(tmp_path / "mnist")
    images = tmp_path / "mnist" / "train-images-idx3-ubyte.gz"
    images.write_bytes(images.read_bytes()[:30])
    assert_user_error({"loader": "idx", "path": tmp_path / "mnist"}, images)


def test_idx_count_mismatch(tmp_path: Path) -> None:
    make_idx(tmp_path / "mnist")
    write_idx(tmp_path / "mnist" / "train-labels-idx1-ubyte", np.arange(39) % 10, compress=True)
    assert_user_error({"loader": "idx", "path": tmp_path / "mnist"},
                      tmp_path / "mnist" / "train-labels-idx1-ubyte.gz", "39 labels for 40")


def test_idx_missing_file(tmp_path: Path) -> None:
    make_idx(tmp_path / "mnist")
    (tmp_path / "mnist" / "t10k-labels-idx1-ubyte.gz").unlink()
    assert_user_error({"loader": "idx", "path": tmp_path / "mnist"},
                      tmp_path / "mnist" / "t10k-labels-idx1-ubyte", "no such file")


@pytest.mark.parametrize("loader", ["idx", "cifar", "image_folder"])
def test_missing_directory(tmp_path: Path, loader: str) -> None:
    assert_user_error({"loader": loader, "path": tmp_path / "absent"}, tmp_path / "absent", "no such directory")


def test_real_fashion_mnist() -> None:
    requires(FASHION_MNIST.is_dir(), f"Fashion-MNIST not installed at {FASHION_MNIST} (Debian's dataset-fashion-mnist)")
    dataset = load_dataset({"loader": "idx", "path": str(FASHION_MNIST), "max_train": 2000})
    assert dataset.classes == FASHION_MNIST_CLASSES
    assert dataset.x_train.shape == (2000, 1, 28, 28)
    np.testing.assert_array_equal(np.bincount(dataset.y_train), np.full(10, 200))
    assert dataset.x_val.shape == dataset.x_test.shape == (5000, 1, 28, 28)
    np.testing.assert_array_equal(np.bincount(dataset.y_val), np.full(10, 500))
    assert abs(dataset.x_train.mean()) < 1e-4


# --- cifar ------------------------------------------------------------------------------------


def dump(path: Path, content: dict) -> None:
    with path.open("wb") as stream:
        pickle.dump(content, stream, protocol=2)


def cifar_rows(count: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(count, 3072), dtype=np.uint8)


def make_cifar10(directory: Path) -> tuple[np.ndarray, list[int]]:
    directory.mkdir()
    data, labels = cifar_rows(30, seed=3), [index % 3 for index in range(30)]
    for number in range(1, 6):
        part = slice(6 * (number - 1), 6 * number)
        dump(directory / f"data_batch_{number}",
             {b"batch_label": b"training batch", b"labels": labels[part], b"data": data[part],
              b"filenames": [b"x.png"] * 6})
    dump(directory / "test_batch", {b"labels": [0, 1, 2, 0, 1, 2], b"data": cifar_rows(6, seed=4)})
    dump(directory / "batches.meta", {b"label_names": [b"airplane", b"automobile", b"bird"], b"num_vis": 3072})
    return data, labels


def test_cifar10(tmp_path: Path) -> None:
    data, labels = make_cifar10(tmp_path / "cifar-10-batches-py")
    dataset = load_dataset({"loader": "cifar", "path": tmp_path / "cifar-10-batches-py"})
    assert dataset.classes == ("airplane", "automobile", "bird")
    assert dataset.input_shape == (3, 32, 32)
    assert dataset.mean.shape == (3,)
    np.testing.assert_array_equal(as_bytes(dataset, dataset.x_train), data.reshape(-1, 3, 32, 32))
    np.testing.assert_array_equal(dataset.y_train, labels)
    assert len(dataset.y_val) == len(dataset.y_test) == 3
    assert np.abs(dataset.x_train.mean(axis=(0, 2, 3))).max() < 1e-5


def test_cifar100_uses_fine_labels(tmp_path: Path) -> None:
    directory = tmp_path / "cifar-100-python"
    directory.mkdir()
    data, fine = cifar_rows(20, seed=5), [index % 5 for index in range(20)]
    dump(directory / "train", {b"data": data, b"fine_labels": fine, b"coarse_labels": [0] * 20})
    dump(directory / "test", {b"data": cifar_rows(10, seed=6), b"fine_labels": [index % 5 for index in range(10)],
                              b"coarse_labels": [1] * 10})
    dump(directory / "meta", {b"fine_label_names": [b"apple", b"bear", b"cloud", b"dolphin", b"elephant"],
                              b"coarse_label_names": [b"fruit", b"mammal"]})
    dataset = load_dataset({"loader": "cifar", "path": directory})
    assert dataset.classes == ("apple", "bear", "cloud", "dolphin", "elephant")
    np.testing.assert_array_equal(dataset.y_train, fine)
    np.testing.assert_array_equal(as_bytes(dataset, dataset.x_train), data.reshape(-1, 3, 32, 32))
    np.testing.assert_array_equal(np.bincount(dataset.y_val), np.ones(5))


def test_cifar_missing_batch(tmp_path: Path) -> None:
    make_cifar10(tmp_path / "cifar")
    (tmp_path / "cifar" / "test_batch").unlink()
    assert_user_error({"loader": "cifar", "path": tmp_path / "cifar"}, tmp_path / "cifar" / "test_batch", "no such file")


def test_cifar_missing_key(tmp_path: Path) -> None:
    make_cifar10(tmp_path / "cifar")
    batch = tmp_path / "cifar" / "data_batch_3"
    dump(batch, {b"data": cifar_rows(6, seed=7)})
    assert_user_error({"loader": "cifar", "path": tmp_path / "cifar"}, batch, "missing labels")


def test_cifar_not_a_pickle(tmp_path: Path) -> None:
    make_cifar10(tmp_path / "cifar")
    batch = tmp_path / "cifar" / "data_batch_2"
    batch.write_bytes(b"not a pickle at all")
    assert_user_error({"loader": "cifar", "path": tmp_path / "cifar"}, batch, "pickle")


def test_cifar_unrecognised_directory(tmp_path: Path) -> None:
    assert_user_error({"loader": "cifar", "path": tmp_path}, tmp_path, "batches.meta")


# --- image_folder -----------------------------------------------------------------------------


def write_png(path: Path, pixels: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)


def grey_folder(root: Path, per_class: int = 4) -> dict[int, np.ndarray]:
    """Grey 6x5 PNGs in root/<class>/; pixel [0, 0] encodes class * 10 + index."""
    written = {}
    for label, name in enumerate(["cat", "dog"]):
        for index in range(per_class):
            pixels = np.random.default_rng(label * 10 + index).integers(0, 256, size=(6, 5), dtype=np.uint8)
            pixels[0, 0] = label * 10 + index
            write_png(root / name / f"{index:02d}.png", pixels)
            written[label * 10 + index] = pixels
    return written


def test_image_folder_grey(tmp_path: Path, capsys) -> None:
    written = grey_folder(tmp_path / "pets")
    (tmp_path / "pets" / "cat" / "notes.txt").write_text("not an image, skipped and reported")
    (tmp_path / "pets" / "dog" / "list.csv").write_text("also reported")
    dataset = load_dataset({"loader": "image_folder", "path": tmp_path / "pets", "test_fraction": 0.5})
    warning = capsys.readouterr().err.strip()
    assert warning == (f"unlearnflow: warning: {tmp_path / 'pets'}: skipped 2 file(s) that are not images "
                       "(.png, .jpg, .jpeg, .bmp), e.g. cat/notes.txt")
    assert dataset.name == "pets"
    assert dataset.classes == ("cat", "dog")
    assert dataset.input_shape == (1, 6, 5)
    assert (len(dataset.y_train), len(dataset.y_val), len(dataset.y_test)) == (4, 2, 2)
    seen = []
    for x, y in ((dataset.x_train, dataset.y_train), (dataset.x_val, dataset.y_val), (dataset.x_test, dataset.y_test)):
        for image, label in zip(as_bytes(dataset, x)[:, 0], y):
            key = int(image[0, 0])
            assert key // 10 == label
            np.testing.assert_array_equal(image, written[key])
            seen.append(key)
    assert sorted(seen) == sorted(written)


def test_image_folder_colour_and_given_split(tmp_path: Path) -> None:
    colour = np.random.default_rng(0).integers(0, 256, size=(4, 4, 3), dtype=np.uint8)
    grey = np.full((4, 4), 77, dtype=np.uint8)
    for split in ("train", "test"):
        write_png(tmp_path / split / "a" / "colour.png", colour)
        write_png(tmp_path / split / "b" / "grey.png", grey)
        write_png(tmp_path / split / "b" / "grey2.png", grey)
    dataset = load_dataset({"loader": "image_folder", "path": tmp_path})
    assert dataset.input_shape == (3, 4, 4)
    np.testing.assert_array_equal(dataset.y_train, [0, 1, 1])
    train = as_bytes(dataset, dataset.x_train)
    np.testing.assert_array_equal(train[0], colour.transpose(2, 0, 1))
    np.testing.assert_array_equal(train[1], np.full((3, 4, 4), 77))
    assert len(dataset.y_val) + len(dataset.y_test) == 3


def test_image_folder_sizes(tmp_path: Path) -> None:
    write_png(tmp_path / "a" / "small.png", np.zeros((4, 4), dtype=np.uint8))
    write_png(tmp_path / "b" / "large.png", np.zeros((8, 6), dtype=np.uint8))
    write_png(tmp_path / "b" / "large2.png", np.zeros((8, 6), dtype=np.uint8))
    assert_user_error({"loader": "image_folder", "path": tmp_path}, tmp_path / "b" / "large.png", "image_size")
    dataset = load_dataset({"loader": "image_folder", "path": tmp_path, "image_size": [3, 5]})
    assert dataset.input_shape == (1, 3, 5)


def test_image_folder_non_image(tmp_path: Path) -> None:
    grey_folder(tmp_path)
    fake = tmp_path / "dog" / "fake.png"
    fake.write_text("this is text")
    assert_user_error({"loader": "image_folder", "path": tmp_path}, fake, "image")


def test_image_folder_empty_class(tmp_path: Path) -> None:
    grey_folder(tmp_path)
    (tmp_path / "emu").mkdir()
    assert_user_error({"loader": "image_folder", "path": tmp_path}, tmp_path / "emu", "found none")


# --- features ---------------------------------------------------------------------------------


def test_features_with_test_split(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    x_train, x_test = rng.normal(3, 2, size=(30, 4)), rng.normal(3, 2, size=(10, 4))
    x_train[:, 3] = 5.0  # a constant feature
    y_train, y_test = np.arange(30) % 2, np.arange(10) % 2
    path = tmp_path / "embeddings.h5"
    with h5py.File(path, "w") as file:
        file["x_train"], file["y_train"], file["x_test"], file["y_test"] = x_train, y_train, x_test, y_test
        file.attrs["classes"] = ["no", "yes"]
    dataset = load_dataset({"loader": "features", "path": path})
    assert dataset.name == "embeddings" and dataset.classes == ("no", "yes")
    assert dataset.input_shape == (4,) and dataset.mean.shape == (4,)
    np.testing.assert_allclose(raw(dataset, dataset.x_train), x_train, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(dataset.x_train[:, :3].mean(axis=0), 0, atol=1e-5)
    np.testing.assert_allclose(dataset.x_train[:, :3].std(axis=0), 1, atol=1e-5)
    np.testing.assert_array_equal(dataset.x_train[:, 3], 0)
    held_out = np.concatenate([raw(dataset, dataset.x_val), raw(dataset, dataset.x_test)])
    np.testing.assert_allclose(sorted(held_out[:, 0]), sorted(x_test[:, 0]), rtol=1e-5)
    np.testing.assert_array_equal(np.bincount(dataset.y_val), [3, 3])  # half of 5, rounded up


def test_features_without_test_split(tmp_path: Path) -> None:
    path = tmp_path / "f.h5"
    with h5py.File(path, "w") as file:
        file["x_train"] = np.arange(60, dtype=np.float64).reshape(20, 3)
        file["y_train"] = np.arange(20) % 4
        file["classes"] = np.array([b"a", b"b", b"c", b"d"])
    dataset = load_dataset({"loader": "features", "path": path, "test_fraction": 0.4})
    assert dataset.classes == ("a", "b", "c", "d")
    assert (len(dataset.y_train), len(dataset.y_val), len(dataset.y_test)) == (12, 4, 4)


def test_features_errors(tmp_path: Path) -> None:
    assert_user_error({"loader": "features", "path": tmp_path / "none.h5"}, tmp_path / "none.h5", "no such file")
    not_hdf5 = tmp_path / "text.h5"
    not_hdf5.write_text("hello")
    assert_user_error({"loader": "features", "path": not_hdf5}, not_hdf5, "HDF5")
    path = tmp_path / "f.h5"
    with h5py.File(path, "w") as file:
        file["x_train"] = np.zeros((5, 2))
    assert_user_error({"loader": "features", "path": path}, path, "y_train")
    with h5py.File(path, "w") as file:
        file["x_train"], file["y_train"] = np.zeros((5, 2, 2)), np.zeros(5)
    assert_user_error({"loader": "features", "path": path}, path, "(N, D)")


# --- the spec ---------------------------------------------------------------------------------


def test_unknown_loader() -> None:
    assert_user_error({"loader": "imagenet", "path": "/x"}, "imagenet", "digits")


def test_unknown_key() -> None:
    assert_user_error({"loader": "digits", "batch_size": 3}, "batch_size")


@pytest.mark.parametrize("key, value", [("test_fraction", 1.5), ("validation_fraction", 0), ("seed", -1),
                                        ("max_train", 0), ("seed", True)])
def test_invalid_values(key: str, value: object) -> None:
    assert_user_error({"loader": "digits", key: value}, key)


def test_missing_path() -> None:
    assert_user_error({"loader": "idx"}, "path")


def test_a_users_loader_by_name_is_checked_in_one_line(tmp_path, monkeypatch):
    """data.loader: package.module:function (issue 21): what it returns is checked, and a module
    that fails to import or lacks the function is named."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "loaders_under_test.py").write_text(
        "import numpy as np\n"
        "def good():\n    return {'x_train': np.eye(6)[np.arange(40) % 6], 'y_train': np.arange(40) % 2}\n"
        "def a_list():\n    return [1, 2]\n"
        "def bad_labels():\n    return {'x_train': np.zeros((4, 3)), 'y_train': np.array([0.5, 1, 0, 1])}\n"
        "def gapped():\n    return {'x_train': np.zeros((4, 3)), 'y_train': np.array([0, 5, 0, 5])}\n"
        "def ragged():\n    return {'x_train': [[1, 2], [3]], 'y_train': [0, 1]}\n")
    (tmp_path / "broken_loader.py").write_text("raise RuntimeError('no data today')\n")
    dataset = load_dataset({"loader": "loaders_under_test:good"})
    assert dataset.x_train.shape[1:] == (6,) and len(dataset.y_train) + len(dataset.y_test) + len(dataset.y_val) == 40
    for loader, message in [
        ("loaders_under_test:a_list", "config: data.loader: loaders_under_test:a_list returned list, not a mapping"),
        ("loaders_under_test:bad_labels", "returned y_train of float64 and shape (4,), not one integer label"),
        ("loaders_under_test:gapped", "returned labels 0..5 with 2 distinct values, not every class of 0..C-1"),
        ("loaders_under_test:ragged", "returned x_train or y_train that is no array"),
        ("loaders_under_test:missing", "config: data.loader: module loaders_under_test has no function missing"),
        ("broken_loader:good", "config: data.loader: cannot import broken_loader for broken_loader:good "
                               "(RuntimeError: no data today)"),
    ]:
        with pytest.raises(UserError) as error:
            load_dataset({"loader": loader})
        assert message in str(error.value)
