"""Forget sets: the training points whose influence an unlearning request removes.

A forget set is built from a config slice such as ``{"kind": "random", "size": 10}``, the
training data and a seed. All randomness comes from a generator seeded with the seed *and* a
CRC-32 of the set's name, so a build is reproducible while two sets with the same seed differ.

Kinds, their keys (defaults in parentheses) and where they come from:

``random`` -- ``size`` k
    k distinct training points drawn uniformly at random. The random forget sets of the
    datamodel-matching/KLOM paper (Appendix D.2: sizes 10, 100 and 1000 on CIFAR-10).
``class`` -- ``classes``
    Every training point of the listed classes. Class removal in projected-gradient unlearning
    (PGU, Section 4.3: the first class of CIFAR-10, the first 5 classes of TinyImageNet).
``class_sample`` -- ``class`` c, ``size`` k
    k points drawn uniformly from class c. PGU's data removal (Section 4.2: 500 samples of class 0).
``cluster`` -- ``size`` k, ``n_clusters`` (10), ``cluster`` (0), ``space`` ("input"), ``components`` (20)
    A coherent, non-random subpopulation, as in the KLOM paper (Appendix D.2: forget sets found
    by clustering). k-means runs on the flattened inputs (``space: input``) or on their first
    ``components`` principal components (``space: pca``); clusters are ranked by size, largest
    first, and the k points nearest the centroid of cluster number ``cluster`` are forgotten.
``incremental`` -- ``requests`` R, ``size`` k
    R disjoint requests forgotten one after the other (PGU, Section 4.4: 1,000 points at a time,
    100 per class). Each request splits its k points as evenly as possible over the classes and
    draws them from the points no earlier request took.
``indices`` -- ``indices`` [i, ...] or ``file`` (a path)
    Exactly the listed training points, for a user who must forget specific records: a list in
    the config or a text file of indices (whitespace or comma separated, ``#`` starts a comment).
    Indices are positions in the experiment's training split (``data.h5``'s ``x_train``).
``poison`` -- ``pairs`` [[a, b], ...], ``budget``
    Label-flip poisoning to be undone (PGU, Section 4.5 "depoisoning"). For each pair, ``budget``
    points (or, for a float in (0, 1), that fraction of the pair's points), half from class a and
    half from class b, get the other class's label. The flipped points are the forget set and the
    experiment trains on the poisoned labels, :attr:`ForgetSet.train_labels`.

Every request goes through :func:`validate_indices`; any problem with a spec is a
:class:`~unlearnflow.errors.UserError` naming the forget set.
"""

from __future__ import annotations

import difflib
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NoReturn

import numpy as np

from unlearnflow.errors import UserError

KINDS = ("random", "class", "class_sample", "cluster", "incremental", "poison", "indices")

_MISSING = object()


@dataclass(frozen=True, eq=False)
class ForgetSet:
    """The points to forget, as one or more unlearning requests, and the labels to train on.

    `requests` holds one sorted int64 index array per unlearning request: R disjoint arrays, in
    order, for ``incremental``; exactly one for every other kind. `train_labels` are the labels
    the experiment trains on: the training labels, except for ``poison`` where they are the
    poisoned ones. The arrays are validated on construction and made read-only.
    """

    name: str
    kind: str
    requests: tuple[np.ndarray, ...]
    train_labels: np.ndarray

    def __post_init__(self) -> None:
        prefix = f"forget set {self.name!r}"
        if self.kind not in KINDS:
            raise UserError(f"{prefix}: unknown kind {self.kind!r} (kinds are {', '.join(KINDS)})")
        labels = _frozen(_as_labels(self.train_labels, f"{prefix}: training labels"))
        requests = tuple(self.requests)
        if not requests or (self.kind != "incremental" and len(requests) > 1):
            expected = "at least one request" if self.kind == "incremental" else "exactly one request"
            raise UserError(f"{prefix}: kind {self.kind!r} needs {expected}, got {len(requests)}")
        if len(requests) == 1:
            checked = [validate_indices(requests[0], labels.size, prefix)]
        else:
            checked = [validate_indices(r, labels.size, f"{prefix}, request {i}") for i, r in enumerate(requests)]
            validate_indices(np.concatenate(checked), labels.size, f"{prefix} (all requests together)")
        object.__setattr__(self, "requests", tuple(_frozen(r) for r in checked))
        object.__setattr__(self, "train_labels", labels)

    @property
    def indices(self) -> np.ndarray:
        """All forgotten indices: the sorted union of the requests."""
        return np.unique(np.concatenate(self.requests))

    def retain_mask(self, n_train: int, upto_request: int | None = None) -> np.ndarray:
        """Boolean mask over the training set, True for points not forgotten.

        Counts the requests 0..`upto_request` (inclusive); None counts all of them.
        """
        if n_train != self.train_labels.size:
            raise UserError(
                f"forget set {self.name!r} was built for {self.train_labels.size} training points, not {n_train}"
            )
        last = len(self.requests) - 1 if upto_request is None else upto_request
        if not _is_int(last) or not 0 <= last < len(self.requests):
            raise UserError(
                f"forget set {self.name!r} has requests 0..{len(self.requests) - 1}, not {upto_request!r}"
            )
        mask = np.ones(n_train, dtype=bool)
        mask[np.concatenate(self.requests[: last + 1])] = False
        return mask

    def prefix(self, requests: int) -> "ForgetSet":
        """The set of the first `requests` requests of a sequence, named ``NAME@R``: what has
        been forgotten after request R (its oracles retrain without all of them)."""
        if not _is_int(requests) or not 1 <= requests <= len(self.requests):
            raise UserError(f"forget set {self.name!r} has requests 1..{len(self.requests)}, not {requests!r}")
        return ForgetSet(step_name(self.name, requests), self.kind, self.requests[:requests], self.train_labels)


def step_name(forget_set: str, requests: int) -> str:
    """Name of the first `requests` requests of a sequence: ``NAME@R``."""
    return f"{forget_set}@{requests}"


def split_step_name(name: str) -> tuple[str, int | None]:
    """(forget set, number of requests) of ``NAME@R``; (NAME, None) for a plain name."""
    base, _, requests = name.partition("@")
    return base, int(requests) if requests else None


@dataclass(frozen=True, eq=False)
class ForgetSamples:
    """What a source-free method may see of a forget set: the forget samples' inputs and labels,
    in request order, which request each belongs to, and the held-out validation split. No
    retain data, no index into the training set."""

    name: str
    kind: str
    inputs: np.ndarray
    labels: np.ndarray
    request_of: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    num_classes: int

    @classmethod
    def of(cls, forget_set: ForgetSet, x_train: np.ndarray, x_val: np.ndarray, y_val: np.ndarray,
           num_classes: int) -> "ForgetSamples":
        """The samples of `forget_set`, labelled with its training labels (poisoned ones for a poison set)."""
        order = np.concatenate(forget_set.requests)
        request_of = np.concatenate([np.full(len(r), i) for i, r in enumerate(forget_set.requests)])
        return cls(forget_set.name, forget_set.kind, x_train[order], forget_set.train_labels[order], request_of,
                   x_val, y_val, num_classes)

    @property
    def n_requests(self) -> int:
        return int(self.request_of.max()) + 1

    def request(self, step: int) -> tuple[np.ndarray, np.ndarray]:
        """(inputs, labels) of request `step` (0-based)."""
        rows = self.request_of == step
        return self.inputs[rows], self.labels[rows]


def validate_indices(indices: Any, n_train: int, what: str = "forget set") -> np.ndarray:
    """Check that `indices` name distinct training points, some but not all; return them sorted.

    Raises :class:`UserError` (message prefixed by `what`) for anything but a non-empty 1-D list of
    unique integers in 0..`n_train`-1 that leaves at least one point to retain.
    """
    array = np.asarray(indices)
    if array.ndim != 1:
        raise UserError(f"{what}: expected a flat list of indices, got an array of shape {array.shape}")
    if array.size == 0:
        raise UserError(f"{what}: contains no indices")
    if not np.issubdtype(array.dtype, np.integer):
        raise UserError(f"{what}: indices must be integers, got {array.tolist()[0]!r} ({array.dtype})")
    if array.min() < 0:
        raise UserError(f"{what}: index {array.min()} is negative (indices are 0..{n_train - 1})")
    if array.max() >= n_train:
        raise UserError(
            f"{what}: index {array.max()} is out of range (the training set has {n_train} points, "
            f"indices 0..{n_train - 1})"
        )
    unique, counts = np.unique(array, return_counts=True)
    if counts.max() > 1:
        repeated = np.argmax(counts > 1)
        raise UserError(f"{what}: index {unique[repeated]} appears {counts[repeated]} times; indices must be unique")
    if unique.size == n_train:
        raise UserError(f"{what}: contains all {n_train} training points, so nothing would be retained")
    return unique.astype(np.int64)


def check_spec(name: str, spec: Mapping[str, Any]) -> str:
    """Check a forget set's name, kind and keys without any data; return its kind.

    The workflow calls this when it validates the config, so a typo fails before any job runs.
    """
    if not isinstance(name, str) or not name:
        raise UserError(f"forget set names must be non-empty strings, got {name!r}")
    prefix = f"forget set {name!r}"
    if not isinstance(spec, Mapping):
        raise UserError(f"{prefix}: expected a mapping with a 'kind' key, got {spec!r}")
    if "kind" not in spec:
        raise UserError(f"{prefix}: missing 'kind' (one of {', '.join(KINDS)})")
    kind = spec["kind"]
    if kind not in KINDS:
        raise UserError(f"{prefix}: unknown kind {kind!r} (kinds are {', '.join(KINDS)})")
    keys = _BUILDERS[kind][1]
    for key in spec:
        if key != "kind" and key not in keys:
            raise UserError(f"{prefix}: unknown key {key!r} for kind {kind!r}{_suggestion(key, keys)}")
    if kind == "indices":
        _given_indices(name, spec)
    return kind


def build_forget_set(
    name: str, spec: Mapping[str, Any], x_train: np.ndarray, y_train: np.ndarray, seed: int
) -> ForgetSet:
    """Build forget set `name` from its config slice `spec` (see the module docstring for kinds)."""
    kind = check_spec(name, spec)
    prefix = f"forget set {name!r}"
    if not _is_int(seed) or seed < 0:
        raise UserError(f"{prefix}: the seed must be a non-negative integer, got {seed!r}")
    y = _as_labels(y_train, f"{prefix}: training labels")
    x = np.asarray(x_train)
    if x.ndim == 0 or len(x) != y.size:
        raise UserError(f"{prefix}: {y.size} training labels but inputs of shape {x.shape}")
    ctx = _Context(name, spec, x, y, np.random.default_rng([seed, zlib.crc32(name.encode("utf-8"))]))
    requests, train_labels = _BUILDERS[kind][0](ctx)
    return ForgetSet(name, kind, tuple(requests), train_labels)


@dataclass
class _Context:
    """What a kind's builder works with: its spec, the training data and the seeded generator."""

    name: str
    spec: Mapping[str, Any]
    x: np.ndarray
    y: np.ndarray
    rng: np.random.Generator

    def fail(self, problem: str) -> NoReturn:
        raise UserError(f"forget set {self.name!r}: {problem}")

    def get(self, key: str, default: Any = _MISSING) -> Any:
        value = self.spec.get(key, default)
        if value is _MISSING:
            self.fail(f"missing required key {key!r}")
        return value

    def integer(self, key: str, default: Any = _MISSING, minimum: int = 1) -> int:
        value = self.get(key, default)
        if not _is_int(value) or value < minimum:
            self.fail(f"{key!r} must be an integer >= {minimum}, got {value!r}")
        return int(value)

    def choice(self, key: str, options: Sequence[str], default: str) -> str:
        value = self.get(key, default)
        if value not in options:
            self.fail(f"{key!r} must be one of {', '.join(map(repr, options))}, got {value!r}")
        return value

    def class_id(self, value: Any) -> int:
        n_classes = int(self.y.max()) + 1
        if not _is_int(value) or not 0 <= value < n_classes:
            self.fail(f"class {value!r} does not exist (classes are 0..{n_classes - 1})")
        return int(value)

    def require(self, k: int, available: int, what: str) -> None:
        if k > available:
            self.fail(f"cannot draw {k} points from {what}: only {available} are available")

    def sample(self, pool: np.ndarray, k: int, what: str) -> np.ndarray:
        """k distinct points of `pool`, uniformly at random, sorted."""
        self.require(k, pool.size, what)
        return np.sort(self.rng.choice(pool, size=k, replace=False))

    def sample_per_class(
        self, classes: Sequence[int], counts: Sequence[int], available: np.ndarray, what: str
    ) -> list[np.ndarray]:
        """For each class, `counts` of its points among `available`; `what` ends the error message."""
        return [
            self.sample(np.flatnonzero((self.y == c) & available), int(k), f"class {c}{what}")
            for c, k in zip(classes, counts)
        ]


_Built = tuple[list[np.ndarray], np.ndarray]


def _random(ctx: _Context) -> _Built:
    return [ctx.sample(np.arange(ctx.y.size), ctx.integer("size"), "the training set")], ctx.y


def _class(ctx: _Context) -> _Built:
    classes = ctx.get("classes")
    if not isinstance(classes, (list, tuple)) or not classes:
        ctx.fail(f"'classes' must be a non-empty list of class ids, got {classes!r}")
    ids = [ctx.class_id(c) for c in classes]
    if len(set(ids)) < len(ids):
        ctx.fail(f"'classes' lists a class more than once: {classes!r}")
    return [np.flatnonzero(np.isin(ctx.y, ids))], ctx.y


def _class_sample(ctx: _Context) -> _Built:
    c = ctx.class_id(ctx.get("class"))
    (points,) = ctx.sample_per_class([c], [ctx.integer("size")], np.ones(ctx.y.size, dtype=bool), "")
    return [points], ctx.y


def _cluster(ctx: _Context) -> _Built:
    k = ctx.integer("size")
    n_clusters = ctx.integer("n_clusters", 10)
    which = ctx.integer("cluster", 0, minimum=0)
    ctx.require(k, ctx.y.size, "the training set")
    if n_clusters > ctx.y.size:
        ctx.fail(f"'n_clusters' is {n_clusters} but the training set has only {ctx.y.size} points")
    if which >= n_clusters:
        ctx.fail(f"'cluster' must be below n_clusters ({n_clusters}), got {which}")
    from sklearn.cluster import (
        KMeans,  # imported here: only cluster sets need scikit-learn
    )

    features = _cluster_features(ctx)
    kmeans = KMeans(n_clusters=n_clusters, n_init=10, random_state=int(ctx.rng.integers(2**31 - 1)))
    assignment = kmeans.fit_predict(features)
    by_size = np.argsort(-np.bincount(assignment, minlength=n_clusters), kind="stable")
    distances = np.linalg.norm(features - kmeans.cluster_centers_[by_size[which]], axis=1)
    return [np.sort(np.argsort(distances, kind="stable")[:k])], ctx.y


def _cluster_features(ctx: _Context) -> np.ndarray:
    """The space k-means runs in: flattened inputs, or their leading principal components."""
    flat = ctx.x.reshape(ctx.y.size, -1).astype(np.float64)
    if ctx.choice("space", ("input", "pca"), "input") == "input":
        if "components" in ctx.spec:
            ctx.fail("'components' only applies to space 'pca'")
        return flat
    limit = min(flat.shape)
    components = ctx.integer("components", min(20, limit))
    if components > limit:
        ctx.fail(f"'components' is {components} but inputs of shape {flat.shape} allow at most {limit}")
    from sklearn.decomposition import PCA

    return PCA(n_components=components, svd_solver="full").fit_transform(flat)


def _incremental(ctx: _Context) -> _Built:
    n_requests = ctx.integer("requests")
    k = ctx.integer("size")
    classes = np.unique(ctx.y)
    available = np.ones(ctx.y.size, dtype=bool)
    requests = []
    for r in range(n_requests):
        counts = _split_evenly(k, classes.size, ctx.rng)
        parts = ctx.sample_per_class(classes, counts, available, f" for request {r} (not in earlier requests)")
        request = np.sort(np.concatenate(parts))
        available[request] = False
        requests.append(request)
    return requests, ctx.y


def _indices(ctx: _Context) -> _Built:
    return [_given_indices(ctx.name, ctx.spec)], ctx.y


def _given_indices(name: str, spec: Mapping[str, Any]) -> np.ndarray:
    """The indices of an ``indices`` forget set, from its list or its file; checked for what
    needs no data (a list of unique non-negative integers, not empty). The range and the whole
    training set are checked when the set is built."""
    prefix = f"forget set {name!r}"
    if ("indices" in spec) == ("file" in spec):
        raise UserError(f"{prefix}: kind 'indices' takes exactly one of 'indices' (a list) or 'file' (a path)")
    if "file" in spec:
        values = read_index_file(spec["file"], prefix)
    else:
        values = spec["indices"]
        if not isinstance(values, (list, tuple)) or not all(_is_int(value) for value in values):
            raise UserError(f"{prefix}: 'indices' must be a list of integers, got {values!r}")
    if values and min(values) < 0:
        raise UserError(f"{prefix}: index {min(values)} is negative (indices count training points from 0)")
    return validate_indices(np.asarray(values, dtype=np.int64), np.iinfo(np.int64).max, prefix)


def read_index_file(path: Any, what: str) -> list[int]:
    """Integers of a text file of indices (whitespace or comma separated, ``#`` comments)."""
    try:
        with open(path) as handle:
            lines = handle.read().splitlines()
    except (OSError, TypeError) as error:
        reason = getattr(error, "strerror", None) or str(error)
        raise UserError(f"{what}: cannot read the index file {path!r} ({reason})") from error
    values = []
    for number, line in enumerate(lines, 1):
        for token in line.split("#")[0].replace(",", " ").split():
            try:
                values.append(int(token))
            except ValueError:
                raise UserError(f"{what}: {path}, line {number}: {token!r} is not an integer index") from None
    return values


def _poison(ctx: _Context) -> _Built:
    labels = ctx.y.copy()
    everything = np.ones(ctx.y.size, dtype=bool)
    flipped = []
    for a, b in _pairs(ctx):
        n_flip = _flip_count(ctx, int(np.count_nonzero(np.isin(ctx.y, (a, b)))), (a, b))
        counts = _split_evenly(n_flip, 2, ctx.rng)
        from_a, from_b = ctx.sample_per_class((a, b), counts, everything, f" for pair {[a, b]}")
        labels[from_a], labels[from_b] = b, a
        flipped += [from_a, from_b]
    return [np.sort(np.concatenate(flipped))], labels


def _pairs(ctx: _Context) -> list[tuple[int, int]]:
    pairs = ctx.get("pairs")
    if (
        not isinstance(pairs, (list, tuple))
        or not pairs
        or not all(isinstance(p, (list, tuple)) and len(p) == 2 for p in pairs)
    ):
        ctx.fail(f"'pairs' must be a non-empty list of [a, b] class pairs, got {pairs!r}")
    parsed = [(ctx.class_id(a), ctx.class_id(b)) for a, b in pairs]
    used = [c for pair in parsed for c in pair]
    if len(set(used)) < len(used):
        ctx.fail(f"'pairs' uses a class more than once ({pairs!r}); each class may appear in one pair only")
    return parsed


def _flip_count(ctx: _Context, n_pair: int, pair: tuple[int, int]) -> int:
    """How many points of `pair` (which has `n_pair` points) the budget flips."""
    budget = ctx.get("budget")
    if isinstance(budget, (float, np.floating)) and 0 < budget < 1:
        n_flip = round(budget * n_pair)
        if n_flip == 0:
            ctx.fail(f"'budget' {budget} of the {n_pair} points of pair {list(pair)} flips no point")
        return n_flip
    if not _is_int(budget) or budget < 1:
        ctx.fail(f"'budget' must be a number of points (integer >= 1) or a fraction in (0, 1), got {budget!r}")
    return int(budget)


def _split_evenly(total: int, parts: int, rng: np.random.Generator) -> np.ndarray:
    """`total` split into `parts` counts differing by at most one; random parts get the remainder."""
    counts = np.full(parts, total // parts)
    counts[rng.permutation(parts)[: total % parts]] += 1
    return counts


_BUILDERS: dict[str, tuple[Callable[[_Context], _Built], frozenset[str]]] = {
    "random": (_random, frozenset({"size"})),
    "class": (_class, frozenset({"classes"})),
    "class_sample": (_class_sample, frozenset({"class", "size"})),
    "cluster": (_cluster, frozenset({"size", "n_clusters", "cluster", "space", "components"})),
    "incremental": (_incremental, frozenset({"requests", "size"})),
    "poison": (_poison, frozenset({"pairs", "budget"})),
    "indices": (_indices, frozenset({"indices", "file"})),
}


def _is_int(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _as_labels(labels: Any, what: str) -> np.ndarray:
    y = np.asarray(labels)
    if y.ndim != 1 or y.size == 0 or not np.issubdtype(y.dtype, np.integer) or y.min() < 0:
        raise UserError(f"{what} must be a non-empty 1-D array of non-negative integer class ids")
    return y.astype(np.int64)


def _frozen(array: np.ndarray) -> np.ndarray:
    """`array` (a fresh array no caller holds) made read-only."""
    array.setflags(write=False)
    return array


def _suggestion(key: str, keys: frozenset[str]) -> str:
    close = difflib.get_close_matches(key, sorted(keys), n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return f" (allowed: {', '.join(sorted(keys))}{hint})"
