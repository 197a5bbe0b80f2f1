"""Implementations named by import path and loaded on first use.

The registries (methods, artifacts, datamodel estimators) are read when the workflow is parsed,
by the config checks and by every SLURM job; they name their implementations as
``"package.module:function"`` so that reading them imports no heavy library (torch, scipy,
scikit-learn). :class:`Lazy` is such a name that can be called like the function.
"""

from __future__ import annotations

import importlib
from typing import Any


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
