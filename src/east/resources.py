"""Data that ships inside the package, read with :mod:`importlib.resources` so that an installed
wheel works without a source checkout.

The files stay where the checkout keeps them (``configs/``, ``docs/paper_results.csv``): the
package holds relative symlinks to them (``src/east/paper_configs`` → ``configs``,
``src/east/report/paper_results.csv`` → ``docs/paper_results.csv``), which an editable install
follows and a wheel build copies in as package data (``pyproject.toml``). So there is one source
of truth and nothing to regenerate.
"""

from __future__ import annotations

import difflib
import shutil
from importlib.resources import files
from importlib.resources.abc import Traversable
from pathlib import Path

from east.errors import EastError

__all__ = [
    "config_names",
    "copy_configs",
    "label_map",
    "paper_configs",
    "paper_results",
]

#: what a shipped config folder holds (``generate.py`` writes them; it ships but is no config)
CONFIG_SUFFIXES = (".yaml", ".yml", ".json")


def paper_results() -> Traversable:
    """The papers' published numbers (the checkout's ``docs/paper_results.csv``)."""
    return files("east.report") / "paper_results.csv"


def paper_configs() -> Traversable:
    """The shipped configs folder (the checkout's ``configs/``): paper configs, label maps."""
    return files("east") / "paper_configs"


def label_map(name: str) -> Traversable:
    """A shipped label map by name (``mtat_to_openmic``, with or without ``.yaml``)."""
    stem = name.removesuffix(".yaml")
    path = paper_configs() / "label_maps" / f"{stem}.yaml"
    if not path.is_file():
        known = [n.removeprefix("label_maps/") for n in config_names("label_maps")]
        raise EastError(f"no shipped label map {name!r} (known: {', '.join(known) or 'none'})")
    return path


def _walk(node: Traversable, prefix: str) -> list[str]:
    names = []
    for child in node.iterdir():
        rel = f"{prefix}{child.name}"
        if child.is_dir():
            names.extend(_walk(child, f"{rel}/"))
        elif child.name.endswith(CONFIG_SUFFIXES):
            names.append(rel)
    return names


def config_names(under: str = "") -> list[str]:
    """Relative names (``paper1/mtat/baseline.yaml``) of the shipped configs, sorted."""
    node = _node(under) if under else paper_configs()
    prefix = f"{under.strip('/')}/" if under else ""
    if node.is_file():
        return [under]
    return sorted(_walk(node, prefix))


def _node(name: str) -> Traversable:
    """The shipped file or folder ``name`` (``.yaml`` optional); a one-line error if none."""
    parts = [p for p in name.strip("/").split("/") if p]
    if any(p in (".", "..") for p in parts):
        raise EastError(f"{name!r}: give a shipped config name (see `east configs list`)")
    node = paper_configs()
    for part in parts:
        node = node / part
    if node.is_dir() or node.is_file():
        return node
    with_suffix = paper_configs().joinpath(*parts[:-1], f"{parts[-1]}.yaml") if parts else node
    if with_suffix.is_file():
        return with_suffix
    hint = difflib.get_close_matches(name, _all_names(), n=3)
    raise EastError(
        f"no shipped config {name!r}"
        + (f" (did you mean {', '.join(hint)}?)" if hint else " (see `east configs list`)")
    )


def _all_names() -> list[str]:
    """Every config name and every folder above one, without ``.yaml`` too."""
    names = set()
    for n in config_names():
        names.update({n, n.removesuffix(".yaml")})
        parts = n.split("/")
        names.update("/".join(parts[:i]) for i in range(1, len(parts)))
    return sorted(names)


def copy_configs(name: str, dest: Path, *, force: bool = False) -> list[Path]:
    """Copy the shipped config or folder ``name`` (``all`` for every one) to ``dest``, keeping
    its path under the configs folder, so ``dest`` works as ``--configs`` of east.reproduce and
    label maps stay at ``dest/label_maps``. Refuses to overwrite unless ``force``."""
    everything = name in ("all", ".", "")
    if not everything:
        node = _node(name)
        rel = name.strip("/")
        if node.is_file() and not rel.endswith(CONFIG_SUFFIXES):
            rel += ".yaml"
        names = [rel] if node.is_file() else config_names(rel)
    else:
        names = config_names()
    targets = [(paper_configs().joinpath(*n.split("/")), dest / n) for n in names]
    existing = [str(t) for _, t in targets if t.exists()]
    if existing and not force:
        more = f" and {len(existing) - 1} more" if len(existing) > 1 else ""
        verb = "already exist" if more else "already exists"
        raise EastError(f"{existing[0]}{more} {verb} (give --force to overwrite)")
    for src, target in targets:
        target.parent.mkdir(parents=True, exist_ok=True)
        with src.open("rb") as fin, target.open("wb") as fout:
            shutil.copyfileobj(fin, fout)
    return [t for _, t in targets]
