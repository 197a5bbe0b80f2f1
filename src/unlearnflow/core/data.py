"""Loading data sets, splitting them deterministically, and normalising them.

:func:`load_dataset` turns a ``data`` config slice into a :class:`Dataset` in five steps:

1. **Read** the source with one of :data:`LOADERS` (``digits``, ``idx``, ``cifar``,
   ``image_folder``, ``features``) or the user's function named ``package.module:function``
   (:func:`_read_user_loader`). Pixels are scaled to [0, 1]; labels become int64 0..C-1.
2. **Test split.** Sources with their own test split keep it. The others (``digits``, an image
   folder without ``train/`` and ``test/``, a features file without test arrays) move
   ``test_fraction`` of each class to the test set.
3. **Validation split.** As in the PGU paper, the validation set is ``validation_fraction``
   (default one half) of *each test class*; the rest of that class stays in the test set. The
   training set is never touched, so the model sees exactly the training data the source defines.
4. **Subsample** (optional): ``max_train`` keeps a stratified subset of the training set, with
   each class's share as in the full training set (largest remainder rounding); ``max_test``
   does the same to the test split *before* step 3 takes the validation set from it (so
   validation and test shrink together; datamodels cover every point, so they need it).
5. **Normalise** with statistics of the final training set only: images per channel, features
   per feature, to mean 0 and standard deviation 1 (a constant channel or feature has its
   standard deviation taken as 1, so it maps to 0).

Per class, a fraction ``f`` of ``n`` examples means ``floor(f * n + 1/2)`` examples. Every random
choice comes from ``seed``, with an independent stream per step, so the same spec gives identical
arrays, and changing ``max_train`` changes neither the test nor the validation set (nor
``max_test`` the training set). Kept examples
stay in source order.

Anything wrong with the spec or the files raises :class:`~unlearnflow.errors.UserError` with one
line that names the path and what was expected. The ``cifar`` loader unpickles its files, so only
point it at files you trust.
"""

from __future__ import annotations

import gzip
import math
import pickle
import struct
import sys
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np
from PIL import Image

from unlearnflow.core.recipe import DATA_LOADERS
from unlearnflow.errors import UserError
from unlearnflow.lazy import is_import_path, user_function

LOADERS = DATA_LOADERS

FASHION_MNIST_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)
DIGIT_CLASSES = tuple(str(digit) for digit in range(10))

_SPEC_KEYS = ("loader", "path", "test_fraction", "validation_fraction", "seed", "max_train", "max_test", "image_size")
_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")
_IDX_IMAGES_MAGIC = 2051  # 0x00000803: unsigned bytes, 3 dimensions (N, H, W)
_IDX_LABELS_MAGIC = 2049  # 0x00000801: unsigned bytes, 1 dimension (N,)
_IDX_UBYTE = 0x08
_CIFAR_ROW = 3 * 32 * 32
# Independent random streams, one per step (see the module docstring).
_TEST_STREAM, _VALIDATION_STREAM, _SUBSAMPLE_STREAM, _TEST_SUBSAMPLE_STREAM = 0, 1, 2, 3
# What unpickling a file that is not the expected pickle can raise.
_UNPICKLE_ERRORS = (OSError, EOFError, pickle.UnpicklingError, ValueError, TypeError, AttributeError,
                    ImportError, IndexError, KeyError)


@dataclass(frozen=True, eq=False)
class Dataset:
    """A data set split into train, validation and test, normalised with training statistics.

    Images have shape (N, C, H, W) and are normalised per channel; feature vectors have shape
    (N, D) and are standardised per feature. ``x * std + mean`` (broadcast over channels or
    features) recovers pixels in [0, 1] or the raw features.
    """

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    classes: tuple[str, ...]
    mean: np.ndarray
    std: np.ndarray

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.x_train.shape[1:])

    def __repr__(self) -> str:
        return (f"Dataset({self.name!r}, {self.num_classes} classes, input {self.input_shape}, "
                f"train {len(self.y_train)}, val {len(self.y_val)}, test {len(self.y_test)})")


@dataclass(frozen=True)
class _Spec:
    loader: str
    path: Path | None
    test_fraction: float
    validation_fraction: float
    seed: int
    max_train: int | None
    max_test: int | None
    image_size: tuple[int, int] | None


@dataclass(frozen=True)
class _Source:
    """What a loader read: raw arrays (test arrays None if the source has no test split)."""

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray | None
    y_test: np.ndarray | None
    classes: tuple[str, ...]
    pixel_max: float  # the raw value that becomes 1.0 (1 for features)


def load_dataset(spec: Mapping[str, Any]) -> Dataset:
    """Load, split and normalise the data set that `spec` (a ``data`` config slice) describes."""
    parsed = _parse_spec(spec)
    source = (_read_user_loader if is_import_path(parsed.loader) else _READERS[parsed.loader])(parsed)
    _check_labels(source, parsed)
    return _split_and_normalise(source, parsed)


# --- the spec ---------------------------------------------------------------------------------


def _parse_spec(spec: Mapping[str, Any]) -> _Spec:
    if not isinstance(spec, Mapping):
        raise UserError(f"data spec: expected a mapping with keys {', '.join(_SPEC_KEYS)}, "
                        f"found {type(spec).__name__}")
    unknown = [str(key) for key in spec if key not in _SPEC_KEYS]
    if unknown:
        raise UserError(f"data spec: unknown key(s) {', '.join(sorted(unknown))}; "
                        f"expected some of {', '.join(_SPEC_KEYS)}")
    loader = spec.get("loader")
    if loader not in LOADERS and not is_import_path(loader):
        raise UserError(f"data spec: loader must be one of {', '.join(LOADERS)} or 'package.module:function', "
                        f"found {loader!r}")
    if loader != "image_folder" and spec.get("image_size") is not None:
        raise UserError(f"data spec: image_size applies only to the image_folder loader, not {loader}")
    return _Spec(
        loader=loader,
        path=_path(spec, loader),
        test_fraction=_fraction(spec, "test_fraction", 0.3),
        validation_fraction=_fraction(spec, "validation_fraction", 0.5),
        seed=_integer(spec, "seed", default=0, minimum=0),
        max_train=_integer(spec, "max_train", default=None, minimum=1),
        max_test=_integer(spec, "max_test", default=None, minimum=2),
        image_size=_image_size(spec),
    )


def _path(spec: Mapping[str, Any], loader: str) -> Path | None:
    path = spec.get("path")
    if loader == "digits" or is_import_path(loader):
        return None
    if not isinstance(path, (str, Path)) or not str(path):
        raise UserError(f"data spec: the {loader} loader needs a path, found {path!r}")
    return Path(path).expanduser()


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _fraction(spec: Mapping[str, Any], key: str, default: float) -> float:
    value = spec.get(key, default)
    if not _is_number(value) or not 0 < value < 1:
        raise UserError(f"data spec: {key} must be a number strictly between 0 and 1, found {value!r}")
    return float(value)


def _integer(spec: Mapping[str, Any], key: str, default: int | None, minimum: int) -> int | None:
    value = spec.get(key, default)
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise UserError(f"data spec: {key} must be an integer >= {minimum}, found {value!r}")
    return value


def _image_size(spec: Mapping[str, Any]) -> tuple[int, int] | None:
    size = spec.get("image_size")
    if size is None:
        return None
    if (not isinstance(size, Sequence) or isinstance(size, str) or len(size) != 2
            or not all(isinstance(side, int) and not isinstance(side, bool) and side > 0 for side in size)):
        raise UserError(f"data spec: image_size must be [height, width] in pixels, found {size!r}")
    return int(size[0]), int(size[1])


# --- shared helpers for the readers -----------------------------------------------------------


def _error(loader: str, path: Path, expected: str) -> UserError:
    return UserError(f"{loader} loader: {path}: {expected}")


def _require_dir(loader: str, path: Path) -> Path:
    if not path.is_dir():
        what = "is not a directory" if path.exists() else "no such directory"
        raise _error(loader, path, f"{what}; expected the {loader} data set directory")
    return path


def _require_file(loader: str, path: Path, expected: str) -> Path:
    if not path.is_file():
        what = "is not a file" if path.exists() else "no such file"
        raise _error(loader, path, f"{what}; expected {expected}")
    return path


def _check_count(loader: str, path: Path, labels: np.ndarray, inputs: np.ndarray) -> None:
    if len(labels) != len(inputs):
        raise _error(loader, path, f"expected one label per input, found {len(labels)} labels "
                                   f"for {len(inputs)} inputs")


def _check_labels(source: _Source, spec: _Spec) -> None:
    where = spec.path if spec.path is not None else Path(spec.loader)
    if len(source.y_train) == 0:
        raise _error(spec.loader, where, "expected training examples, found none")
    for labels in (source.y_train, source.y_test):
        if labels is not None and len(labels) and (labels.min() < 0 or labels.max() >= len(source.classes)):
            raise _error(spec.loader, where, f"expected labels 0..{len(source.classes) - 1} "
                                             f"(one per class), found {labels.min()}..{labels.max()}")


# --- digits -----------------------------------------------------------------------------------


def _read_digits(spec: _Spec) -> _Source:
    from sklearn.datasets import load_digits

    digits = load_digits()
    return _Source(name="digits", x_train=digits.images[:, None, :, :], y_train=digits.target.astype(np.int64),
                   x_test=None, y_test=None, classes=DIGIT_CLASSES, pixel_max=16.0)


# --- idx (MNIST, Fashion-MNIST) ---------------------------------------------------------------


def _read_idx(spec: _Spec) -> _Source:
    directory = _require_dir("idx", spec.path)
    x_train, y_train = _idx_pair(directory, "train")
    x_test, y_test = _idx_pair(directory, "t10k")
    if x_test.shape[1:] != x_train.shape[1:]:
        raise _error("idx", directory, f"expected test images of the training image size {x_train.shape[2:]}, "
                                       f"found {x_test.shape[2:]}")
    name = directory.resolve().name
    classes = FASHION_MNIST_CLASSES if "fashion" in name.lower() else DIGIT_CLASSES
    return _Source(name=name, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test,
                   classes=classes, pixel_max=255.0)


def _idx_pair(directory: Path, prefix: str) -> tuple[np.ndarray, np.ndarray]:
    """Images (N, 1, H, W) and int64 labels from ``<prefix>-images-idx3-ubyte[.gz]`` and labels."""
    images_path = _idx_file(directory, f"{prefix}-images-idx3-ubyte")
    labels_path = _idx_file(directory, f"{prefix}-labels-idx1-ubyte")
    images = _parse_idx(images_path, _IDX_IMAGES_MAGIC, "image")
    labels = _parse_idx(labels_path, _IDX_LABELS_MAGIC, "label")
    _check_count("idx", labels_path, labels, images)
    return images[:, None, :, :], labels.astype(np.int64)


def _idx_file(directory: Path, name: str) -> Path:
    for candidate in (directory / name, directory / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    raise _error("idx", directory / name, f"no such file (nor {name}.gz); expected an MNIST-style IDX file")


def _parse_idx(path: Path, magic: int, kind: str) -> np.ndarray:
    data = _read_bytes(path)
    expected = f"expected an IDX {kind} file (magic {magic})"
    if len(data) < 4:
        raise _error("idx", path, f"{expected}, found only {len(data)} bytes")
    zeros, dtype_code, ndim = struct.unpack(">HBB", data[:4])
    if zeros != 0 or ndim != magic & 0xFF:
        raise _error("idx", path, f"{expected}, found magic {int.from_bytes(data[:4], 'big')}")
    if dtype_code != _IDX_UBYTE:
        raise _error("idx", path, f"{expected} of unsigned bytes (dtype code 0x08), "
                                  f"found dtype code 0x{dtype_code:02x}")
    header_size = 4 + 4 * ndim
    if len(data) < header_size:
        raise _error("idx", path, f"{expected}, found a header truncated at {len(data)} bytes")
    dims = struct.unpack(f">{ndim}I", data[4:header_size])
    size = math.prod(dims)
    if len(data) - header_size != size:
        raise _error("idx", path, f"expected {size} data bytes for dimensions {dims}, "
                                  f"found {len(data) - header_size} (truncated or corrupt)")
    return np.frombuffer(data, dtype=np.uint8, offset=header_size).reshape(dims)


def _read_bytes(path: Path) -> bytes:
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as stream:
                return stream.read()
        return path.read_bytes()
    except (OSError, EOFError, zlib.error) as exc:
        raise _error("idx", path, f"expected a readable (optionally gzipped) IDX file, got: {exc}") from exc


# --- cifar (CIFAR-10, CIFAR-100 python pickles) -----------------------------------------------


def _read_cifar(spec: _Spec) -> _Source:
    directory = _require_dir("cifar", spec.path)
    if (directory / "batches.meta").is_file():
        train_files = [f"data_batch_{number}" for number in range(1, 6)]
        test_file, meta_file, label_key, names_key = "test_batch", "batches.meta", "labels", "label_names"
    elif (directory / "meta").is_file():
        train_files = ["train"]
        test_file, meta_file, label_key, names_key = "test", "meta", "fine_labels", "fine_label_names"
    else:
        raise _error("cifar", directory, "expected the CIFAR-10 (batches.meta, data_batch_1..5, test_batch) "
                                         "or CIFAR-100 (meta, train, test) python pickles")
    batches = [_cifar_batch(directory / name, label_key) for name in train_files]
    x_test, y_test = _cifar_batch(directory / test_file, label_key)
    names = _unpickle(directory / meta_file, (names_key,))[names_key]
    return _Source(name=directory.resolve().name,
                   x_train=np.concatenate([x for x, _ in batches]), y_train=np.concatenate([y for _, y in batches]),
                   x_test=x_test, y_test=y_test, classes=tuple(_text(name) for name in names), pixel_max=255.0)


def _cifar_batch(path: Path, label_key: str) -> tuple[np.ndarray, np.ndarray]:
    """Images (N, 3, 32, 32) uint8 and int64 labels from one CIFAR pickle."""
    batch = _unpickle(path, ("data", label_key))
    data = np.asarray(batch["data"])
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != _CIFAR_ROW:
        raise _error("cifar", path, f"expected 'data' as uint8 rows of {_CIFAR_ROW} pixels, "
                                    f"found {data.dtype} of shape {data.shape}")
    labels = _integer_labels("cifar", path, batch[label_key])
    _check_count("cifar", path, labels, data)
    return data.reshape(-1, 3, 32, 32), labels


def _unpickle(path: Path, keys: Sequence[str]) -> dict[str, Any]:
    """A CIFAR pickle as a dict with str keys (the originals have bytes keys), checked for `keys`."""
    _require_file("cifar", path, "a CIFAR python pickle")
    try:
        with path.open("rb") as stream:
            content = pickle.load(stream, encoding="bytes")
    except _UNPICKLE_ERRORS as exc:
        raise _error("cifar", path, f"expected a CIFAR python pickle, cannot unpickle it ({exc})") from exc
    if not isinstance(content, dict):
        raise _error("cifar", path, f"expected a pickled dict, found {type(content).__name__}")
    content = {_text(key): value for key, value in content.items()}
    missing = [key for key in keys if key not in content]
    if missing:
        raise _error("cifar", path, f"expected keys {', '.join(keys)}, missing {', '.join(missing)}")
    return content


def _text(value: Any) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def _integer_labels(loader: str, path: Path, values: Any) -> np.ndarray:
    labels = np.asarray(values)
    if labels.ndim != 1 or not (np.issubdtype(labels.dtype, np.integer)
                                or (np.issubdtype(labels.dtype, np.floating) and np.all(labels == np.round(labels)))):
        raise _error(loader, path, f"expected a 1-D array of integer labels, found {labels.dtype} "
                                   f"of shape {labels.shape}")
    return labels.astype(np.int64)


# --- image_folder -----------------------------------------------------------------------------


def _read_image_folder(spec: _Spec) -> _Source:
    root = _require_dir("image_folder", spec.path)
    train_dir, test_dir = root / "train", root / "test"
    if train_dir.is_dir() != test_dir.is_dir():
        raise _error("image_folder", root, "expected both train/ and test/ (a given split) or neither "
                                           "(class folders only), found one of them")
    if train_dir.is_dir():
        classes = _class_names(train_dir)
        if _class_names(test_dir) != classes:
            raise _error("image_folder", test_dir, f"expected the class folders of {train_dir}: {', '.join(classes)}")
        train_files, test_files = _image_files(train_dir, classes), _image_files(test_dir, classes)
    else:
        classes = _class_names(root)
        train_files, test_files = _image_files(root, classes), []
    pixels = _decode_all([path for path, _ in train_files + test_files], spec.image_size)
    labels = np.array([label for _, label in train_files + test_files], dtype=np.int64)
    split = len(train_files)
    has_test = bool(test_files)
    return _Source(name=root.resolve().name, x_train=pixels[:split], y_train=labels[:split],
                   x_test=pixels[split:] if has_test else None, y_test=labels[split:] if has_test else None,
                   classes=classes, pixel_max=255.0)


def _class_names(directory: Path) -> tuple[str, ...]:
    names = tuple(sorted(child.name for child in directory.iterdir()
                         if child.is_dir() and not child.name.startswith(".")))
    if not names:
        raise _error("image_folder", directory, "expected one sub-folder of images per class, found none")
    return names


def _image_files(directory: Path, classes: tuple[str, ...]) -> list[tuple[Path, int]]:
    """(image, class id) of every image in the class folders; other files (hidden ones aside)
    are skipped and reported on stderr, with their count and an example."""
    files, skipped = [], []
    for label, name in enumerate(classes):
        entries = sorted(path for path in (directory / name).iterdir()
                         if path.is_file() and not path.name.startswith("."))
        images = [path for path in entries if path.suffix.lower() in _IMAGE_SUFFIXES]
        skipped += [path for path in entries if path.suffix.lower() not in _IMAGE_SUFFIXES]
        if not images:
            raise _error("image_folder", directory / name,
                         f"expected images ({', '.join(_IMAGE_SUFFIXES)}), found none")
        files.extend((path, label) for path in images)
    if skipped:
        print(f"unlearnflow: warning: {directory}: skipped {len(skipped)} file(s) that are not images "
              f"({', '.join(_IMAGE_SUFFIXES)}), e.g. {skipped[0].relative_to(directory)}", file=sys.stderr)
    return files


def _decode_all(paths: list[Path], size: tuple[int, int] | None) -> np.ndarray:
    """Images as (N, C, H, W) uint8: one channel if every image is grey (R = G = B), else RGB."""
    first = None
    images = []
    for path in paths:
        rgb = _decode(path, size)
        if first is None:
            first = path, rgb.shape
        elif rgb.shape != first[1]:
            raise _error("image_folder", path, f"expected {first[1][0]}x{first[1][1]} pixels like {first[0]}, "
                                               f"found {rgb.shape[0]}x{rgb.shape[1]}; set image_size to resize")
        images.append(rgb)
    pixels = np.stack(images).transpose(0, 3, 1, 2)
    grey = np.array_equal(pixels[:, 0], pixels[:, 1]) and np.array_equal(pixels[:, 0], pixels[:, 2])
    return np.ascontiguousarray(pixels[:, :1] if grey else pixels)


def _decode(path: Path, size: tuple[int, int] | None) -> np.ndarray:
    """One image as (H, W, 3) uint8, resized to `size` = (H, W) if given."""
    try:
        with Image.open(path) as image:
            rgb = image.convert("RGB")
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        raise _error("image_folder", path, f"expected a PNG, JPEG or BMP image, cannot decode it ({exc})") from exc
    if size is not None and rgb.size != (size[1], size[0]):
        rgb = rgb.resize((size[1], size[0]), Image.Resampling.BILINEAR)
    return np.asarray(rgb)


# --- features (HDF5) --------------------------------------------------------------------------


def _read_features(spec: _Spec) -> _Source:
    path = _require_file("features", spec.path, "an HDF5 file with datasets x_train, y_train")
    try:
        with h5py.File(path, "r") as file:
            x_train, y_train = _feature_pair(file, path, "train")
            has_test = "x_test" in file or "y_test" in file
            x_test, y_test = _feature_pair(file, path, "test") if has_test else (None, None)
            names = _feature_class_names(file, path)
    except OSError as exc:
        raise _error("features", path, f"expected a readable HDF5 file, got: {exc}") from exc
    if x_test is not None and x_test.shape[1] != x_train.shape[1]:
        raise _error("features", path, f"expected x_test with {x_train.shape[1]} features like x_train, "
                                       f"found {x_test.shape[1]}")
    if names is None:
        top = max(y_train.max(initial=0), y_test.max(initial=0) if y_test is not None else 0)
        names = tuple(str(label) for label in range(top + 1))
    return _Source(name=path.stem, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test,
                   classes=names, pixel_max=1.0)


def _feature_pair(file: h5py.File, path: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    x = _h5_dataset(file, path, f"x_{split}")
    if x.ndim != 2 or not np.issubdtype(x.dtype, np.number) or not np.all(np.isfinite(x)):
        raise _error("features", path, f"expected x_{split} as a finite numeric (N, D) array, "
                                       f"found {x.dtype} of shape {x.shape}")
    labels = _integer_labels("features", path, _h5_dataset(file, path, f"y_{split}"))
    _check_count("features", path, labels, x)
    return x, labels


def _h5_dataset(file: h5py.File, path: Path, key: str) -> np.ndarray:
    dataset = file.get(key)
    if not isinstance(dataset, h5py.Dataset):
        raise _error("features", path, f"expected an HDF5 dataset '{key}', found none")
    return dataset[()]


def _feature_class_names(file: h5py.File, path: Path) -> tuple[str, ...] | None:
    if "classes" in file.attrs:
        values = file.attrs["classes"]
    elif "classes" in file:
        values = _h5_dataset(file, path, "classes")
    else:
        return None
    return tuple(_text(value) for value in np.atleast_1d(values))


# --- splitting and normalising ----------------------------------------------------------------


# --- a user's loader (package.module:function) ------------------------------------------------


def _read_user_loader(spec: _Spec) -> _Source:
    """The arrays the user's function returns (``data.loader: package.module:function``, called
    with no argument): a mapping with ``x_train``, ``y_train`` and optionally ``x_test``,
    ``y_test``; inputs finite numbers of shape (N, D) or (N, C, H, W), taken as they are (the
    normalisation step scales them), labels integers."""
    loaded = user_function(spec.loader, "data.loader")()

    def wrong(problem: str) -> UserError:
        return UserError(f"config: data.loader: {spec.loader} returned {problem}")
    if not isinstance(loaded, Mapping) or not {"x_train", "y_train"} <= set(loaded):
        raise wrong(f"{type(loaded).__name__}, not a mapping with x_train, y_train (and x_test, y_test)")
    arrays = {}
    for split in ("train", "test") if "x_test" in loaded or "y_test" in loaded else ("train",):
        try:
            x, y = np.asarray(loaded.get(f"x_{split}")), np.asarray(loaded.get(f"y_{split}"))
        except ValueError as error:  # ragged nested lists
            raise wrong(f"x_{split} or y_{split} that is no array ({error})") from None
        if x.ndim not in (2, 4) or not np.issubdtype(x.dtype, np.number) or not np.all(np.isfinite(x)):
            raise wrong(f"x_{split} of {x.dtype} and shape {x.shape}, not finite numbers (N, D) or (N, C, H, W)")
        if y.shape != (len(x),) or not np.issubdtype(y.dtype, np.number) or not np.all(y == np.round(y)):
            raise wrong(f"y_{split} of {y.dtype} and shape {y.shape}, not one integer label per row of x_{split}")
        arrays[split] = (x.astype(np.float32), y.astype(np.int64))
    x_test, y_test = arrays.get("test", (None, None))
    if x_test is not None and x_test.shape[1:] != arrays["train"][0].shape[1:]:
        raise wrong(f"x_test rows of shape {x_test.shape[1:]}, not x_train's {arrays['train'][0].shape[1:]}")
    present = np.unique(np.concatenate([y for _, y in arrays.values()]))
    if present[0] != 0 or present[-1] != len(present) - 1:
        raise wrong(f"labels {present[0]}..{present[-1]} with {len(present)} distinct values, not every class "
                    f"of 0..C-1 present")
    top = int(present[-1])
    return _Source(name=spec.loader.partition(":")[2], x_train=arrays["train"][0], y_train=arrays["train"][1],
                   x_test=x_test, y_test=y_test, classes=tuple(str(label) for label in range(top + 1)),
                   pixel_max=1.0)


_READERS: dict[str, Callable[[_Spec], _Source]] = {
    "digits": _read_digits,
    "idx": _read_idx,
    "cifar": _read_cifar,
    "image_folder": _read_image_folder,
    "features": _read_features,
}


def _split_and_normalise(source: _Source, spec: _Spec) -> Dataset:
    x_train, y_train = source.x_train, source.y_train
    if source.x_test is None:
        test = _pick(y_train, _fraction_counts(y_train, spec.test_fraction), _rng(spec.seed, _TEST_STREAM))
        x_test, y_test = x_train[test], y_train[test]
        x_train, y_train = x_train[~test], y_train[~test]
    else:
        x_test, y_test = source.x_test, source.y_test
    if spec.max_test is not None and spec.max_test < len(y_test):
        keep = _pick(y_test, _proportional_counts(y_test, spec.max_test), _rng(spec.seed, _TEST_SUBSAMPLE_STREAM))
        x_test, y_test = x_test[keep], y_test[keep]
    val = _pick(y_test, _fraction_counts(y_test, spec.validation_fraction), _rng(spec.seed, _VALIDATION_STREAM))
    x_val, y_val = x_test[val], y_test[val]
    x_test, y_test = x_test[~val], y_test[~val]
    if spec.max_train is not None and spec.max_train < len(y_train):
        keep = _pick(y_train, _proportional_counts(y_train, spec.max_train), _rng(spec.seed, _SUBSAMPLE_STREAM))
        x_train, y_train = x_train[keep], y_train[keep]
    x_train = _to_float(x_train, source.pixel_max)
    mean, std = _statistics(x_train)
    return Dataset(
        name=source.name,
        x_train=_normalise(x_train, mean, std), y_train=y_train,
        x_val=_normalise(_to_float(x_val, source.pixel_max), mean, std), y_val=y_val,
        x_test=_normalise(_to_float(x_test, source.pixel_max), mean, std), y_test=y_test,
        classes=source.classes, mean=mean, std=std,
    )


def _rng(seed: int, stream: int) -> np.random.Generator:
    return np.random.default_rng([seed, stream])


def _fraction_counts(labels: np.ndarray, fraction: float) -> np.ndarray:
    """How many examples of each class `fraction` of the class is (rounded half up)."""
    return np.floor(fraction * np.bincount(labels) + 0.5).astype(np.int64)


def _proportional_counts(labels: np.ndarray, total: int) -> np.ndarray:
    """`total` examples shared among classes in proportion to their sizes (largest remainder)."""
    sizes = np.bincount(labels)
    exact = sizes * total / sizes.sum()
    counts = np.floor(exact).astype(np.int64)
    shortfall = total - counts.sum()
    counts[np.argsort(counts - exact, kind="stable")[:shortfall]] += 1
    return counts


def _pick(labels: np.ndarray, counts: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A boolean mask choosing ``counts[c]`` examples of each class c at random."""
    mask = np.zeros(len(labels), dtype=bool)
    for label, count in enumerate(counts):
        members = np.flatnonzero(labels == label)
        mask[rng.choice(members, size=count, replace=False)] = True
    return mask


def _to_float(x: np.ndarray, pixel_max: float) -> np.ndarray:
    x = x.astype(np.float32)
    if pixel_max != 1.0:
        x /= np.float32(pixel_max)
    return x


def _statistics(x_train: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel (images) or per-feature (vectors) mean and standard deviation, as float32."""
    axes = (0,) if x_train.ndim == 2 else (0, 2, 3)
    mean = x_train.mean(axis=axes, dtype=np.float64)
    std = x_train.std(axis=axes, dtype=np.float64)
    std[std == 0] = 1.0
    return mean.astype(np.float32), std.astype(np.float32)


def _normalise(x: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    shape = (1, -1) + (1,) * (x.ndim - 2)
    x -= mean.reshape(shape)
    x /= std.reshape(shape)
    return x
