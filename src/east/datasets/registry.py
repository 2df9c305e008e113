"""Name → adapter registry, and ``load_manifest`` / ``list_datasets``.

An adapter is a function ``(root: Path, **options) -> Manifest`` registered under a name with
:func:`register_dataset`. :func:`load_manifest` checks the root and the option names so that a
typo gives a one-line :class:`~east.errors.DatasetError` instead of a ``TypeError``.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from east.datasets.base import Manifest
from east.errors import DatasetError

Adapter = Callable[..., Manifest]


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    description: str  # one line, shown by ``east datasets list``
    adapter: Adapter

    def options(self) -> dict[str, inspect.Parameter]:
        """Keyword options of the adapter (everything after ``root``)."""
        params = list(inspect.signature(self.adapter).parameters.values())[1:]
        return {p.name: p for p in params}


_REGISTRY: dict[str, DatasetInfo] = {}


def register_dataset(name: str, description: str) -> Callable[[Adapter], Adapter]:
    """Decorator registering ``adapter`` as dataset ``name``."""

    def wrap(adapter: Adapter) -> Adapter:
        if name in _REGISTRY:
            raise ValueError(f"dataset {name!r} registered twice")
        _REGISTRY[name] = DatasetInfo(name, description, adapter)
        return adapter

    return wrap


def _load_builtin() -> None:
    # importing the modules runs their @register_dataset decorators
    from east.datasets import esc50, fma, folder, mtat, openmic  # noqa: F401


def dataset_info(name: str) -> DatasetInfo:
    _load_builtin()
    try:
        return _REGISTRY[name]
    except KeyError:
        known = ", ".join(sorted(_REGISTRY))
        raise DatasetError(f"unknown dataset {name!r}; known datasets: {known}") from None


def list_datasets() -> list[str]:
    """Names of the registered datasets, sorted."""
    _load_builtin()
    return sorted(_REGISTRY)


def dataset_description(name: str) -> str:
    """One-line description of dataset ``name``."""
    return dataset_info(name).description


def load_manifest(name: str, root: str | Path, **options: Any) -> Manifest:
    """Read dataset ``name`` from its official layout under ``root``.

    Options are adapter keywords (see ``docs/datasets.md`` or ``east datasets show --help``).

    Raises:
        DatasetError: unknown dataset or option, missing root or metadata file.
    """
    info = dataset_info(name)
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DatasetError(f"{name}: dataset root {root} is not a folder")
    allowed = info.options()
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise DatasetError(
            f"{name}: unknown option(s) {', '.join(unknown)}; "
            f"options: {', '.join(allowed) or 'none'}"
        )
    return info.adapter(root, **options)


def parse_options(items: list[str] | None) -> dict[str, Any]:
    """``["test_fold=3", "split=folds"]`` → ``{"test_fold": 3, "split": "folds"}``.

    Values are read as YAML scalars (numbers, booleans, ``null``), otherwise kept as strings.
    """
    import yaml

    out: dict[str, Any] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or not key:
            raise DatasetError(f"dataset option {item!r} is not KEY=VALUE")
        try:
            parsed = yaml.safe_load(value) if value.strip() else None
        except yaml.YAMLError:
            parsed = value
        out[key] = parsed if isinstance(parsed, (int, float, bool, type(None))) else value
    return out
