"""Name → adapter registry, and ``load_manifest`` / ``list_datasets``.

An adapter is a function ``(root: Path, **options) -> Manifest`` registered under a name with
:func:`register_dataset`. Its keyword parameters and their type hints (``Annotated`` with a
pydantic ``Field`` for ranges) are the dataset's option schema: :func:`load_manifest` checks the
root, the option names and every value against it, so a typo or a value of the wrong type gives
a one-line :class:`~east.errors.DatasetError` naming the option, the value and the expected
type, instead of a ``TypeError`` deep inside the adapter.
"""

from __future__ import annotations

import functools
import inspect
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model
from pydantic.fields import FieldInfo

from east.datasets.base import Manifest
from east.errors import DatasetError

Adapter = Callable[..., Manifest]
_TYPE_NAMES = {int: "an integer", float: "a number", str: "text", bool: "true or false"}
# text options take numbers as written (-o csv=2024); other types (a plug-in's Path) as usual
_OPTIONS_CONFIG = ConfigDict(
    extra="forbid", coerce_numbers_to_str=True, arbitrary_types_allowed=True
)
_NUMBERS = frozenset({int, float, bool})


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    description: str  # one line, shown by ``east datasets list``
    adapter: Adapter
    # typical clip length in seconds (``east datasets check`` flags clips far from it)
    nominal_seconds: float | None = None

    def options(self) -> dict[str, inspect.Parameter]:
        """Keyword options of the adapter (everything after ``root``)."""
        params = list(inspect.signature(self.adapter).parameters.values())[1:]
        return {p.name: p for p in params}

    def option_types(self) -> dict[str, Any]:
        """Type hint of each option (``Any`` where the adapter gives none)."""
        try:
            hints = typing.get_type_hints(self.adapter, include_extras=True)
        except Exception:  # a plug-in adapter's unresolvable hint: its options go unchecked
            hints = {}
        return {name: hints.get(name, Any) for name in self.options()}

    @functools.cached_property
    def options_model(self) -> type[BaseModel]:
        """A pydantic model of the options, built from the adapter's signature."""
        fields: dict[str, Any] = {}
        for name, hint in self.option_types().items():
            if _leaves(hint) & _NUMBERS:
                # strict: no True→1, "3"→3 or 3.0→3 guesses (an int still fits a float)
                hint = Annotated[hint, Field(strict=True)]
            fields[name] = (hint, self.options()[name].default)
        return create_model(f"{self.name}_options", __config__=_OPTIONS_CONFIG, **fields)

    def validate_options(self, options: dict[str, Any]) -> dict[str, Any]:
        """``options`` checked and converted; DatasetError (one line) on the first bad one."""
        allowed = self.options()
        unknown = sorted(set(options) - set(allowed))
        if unknown:
            raise DatasetError(
                f"{self.name}: unknown option(s) {', '.join(unknown)}; "
                f"options: {', '.join(allowed) or 'none'}"
            )
        try:
            checked = self.options_model.model_validate(options)
        except ValidationError as exc:
            error = exc.errors()[0]
            key = str(error["loc"][0])
            message = error["msg"][:1].lower() + error["msg"][1:]
            raise DatasetError(
                f"{self.name}: option {key}={options[key]!r} is not valid ({message}); "
                f"expected {expected_type(self.option_types()[key])}"
            ) from None
        return {key: getattr(checked, key) for key in options}


def _leaves(hint: Any) -> set[Any]:
    """The plain types a hint is made of: ``Annotated[int, ...] | None`` → {int, NoneType}."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is Annotated:
        return _leaves(args[0])
    if origin in (Union, types.UnionType):
        return set().union(*(_leaves(a) for a in args))
    return {hint}


def expected_type(hint: Any) -> str:
    """A short phrase for an option's type hint, e.g. ``a number in [0, 1)``."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is Annotated:
        for meta in args[1:]:
            if isinstance(meta, FieldInfo) and meta.description:
                return meta.description
        return expected_type(args[0])
    if origin is Literal:
        return "one of " + ", ".join(str(a) for a in args)
    if origin in (Union, types.UnionType):
        named = [expected_type(a) for a in args if a is not type(None)]
        return " or ".join(named + (["null"] if type(None) in args else []))
    return _TYPE_NAMES.get(hint, getattr(hint, "__name__", str(hint)))


_REGISTRY: dict[str, DatasetInfo] = {}


def register_dataset(
    name: str, description: str, *, nominal_seconds: float | None = None
) -> Callable[[Adapter], Adapter]:
    """Decorator registering ``adapter`` as dataset ``name``.

    ``nominal_seconds``: the dataset's clip length, if it has one (ESC-50: 5 s).
    """

    def wrap(adapter: Adapter) -> Adapter:
        if name in _REGISTRY:
            raise ValueError(f"dataset {name!r} registered twice")
        _REGISTRY[name] = DatasetInfo(name, description, adapter, nominal_seconds)
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
        DatasetError: unknown dataset or option, an option value of the wrong type or out of
            range, missing root or metadata file, a defect in the metadata.
    """
    info = dataset_info(name)
    root = Path(root).expanduser()
    if not root.is_dir():
        what = "is a file, not a folder" if root.is_file() else "is not a folder"
        raise DatasetError(f"{name}: dataset root {root} {what}; give --root the dataset folder")
    return info.adapter(root, **info.validate_options(options))


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
