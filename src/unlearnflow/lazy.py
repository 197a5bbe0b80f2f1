"""Implementations named by import path and loaded on first use.

The registries (methods, artifacts, datamodel estimators) are read when the workflow is parsed,
by the config checks and by every SLURM job; they name their implementations as
``"package.module:function"`` so that reading them imports no heavy library (torch, scipy,
scikit-learn). :class:`Lazy` is such a name that can be called like the function.

A user's own model factory or data loader is named the same way in the config
(``model.arch``, ``data.loader``): :func:`check_findable` checks its package when the workflow is
parsed, without importing it; :func:`user_function` imports it in the job that calls it. Both
fail in one line naming the config key.
"""

from __future__ import annotations

import importlib
import importlib.machinery
import importlib.util
import os
import re
import sys
from typing import Any, Callable

from unlearnflow.errors import UserError

#: How a config names a function of the user's: ``package.module:function``.
IMPORT_PATH = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*")


def imported(path: str) -> Any:
    """The object at `path`, ``"package.module:attribute"``, importing its module now."""
    module, _, attribute = path.partition(":")
    if not attribute:
        raise ValueError(f"an import path is 'package.module:attribute', got {path!r}")
    return getattr(importlib.import_module(module), attribute)


class Lazy:
    """A function named by its import path, imported on the first call (then called directly)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._function: Any = None

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if self._function is None:
            self._function = imported(self.path)
        return self._function(*args, **kwargs)

    def __repr__(self) -> str:
        return f"Lazy({self.path!r})"


def is_import_path(value: Any) -> bool:
    """Whether `value` is ``package.module:function``."""
    return isinstance(value, str) and IMPORT_PATH.fullmatch(value) is not None


def check_findable(path: str, key: str) -> None:
    """That the top-level package of `path` is on the Python path or in the working directory
    (importing nothing); a one-line UserError naming the config `key` otherwise."""
    top = path.partition(":")[0].split(".")[0]
    if importlib.util.find_spec(top) is None and importlib.machinery.PathFinder.find_spec(top, [os.getcwd()]) is None:
        raise UserError(f"config: {key}: no module {top!r} on the Python path or in the working directory "
                        f"(for {path})")


def user_function(path: str, key: str) -> Callable[..., Any]:
    """The function the config names at `key` (``package.module:function``), its module imported
    now with the working directory on the path; a one-line UserError naming `key` when the module
    cannot be imported (whatever it raised) or has no such function."""
    module_name, _, name = path.partition(":")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())  # the working directory's module first, as `python -m` does
    try:
        module = importlib.import_module(module_name)
    except Exception as error:  # noqa: BLE001 - a user's module may raise anything as it loads
        raise UserError(f"config: {key}: cannot import {module_name} for {path} "
                        f"({type(error).__name__}: {error})") from None
    function = getattr(module, name, None)
    if not callable(function):
        raise UserError(f"config: {key}: module {module_name} has no function {name}")
    return function
