"""Your own audio: a folder of files plus a CSV of labels.

Layout under ``root`` (``csv=`` names another file, relative to ``root`` or absolute)::

    labels.csv      header row, then one row per clip
    <any path>      the audio files, e.g. audio/dog/001.wav

Columns of the CSV:

* ``path`` (required): audio file relative to ``root`` (``/`` separators);
* either ``label``: one class name per clip (single-label, accuracy), or ``labels``: class
  names separated by ``;`` (multi-label; an empty cell means no positive class);
* ``split`` (optional): ``train``, ``valid`` (or ``validation``/``val``) or ``test`` for
  every row;
* ``id`` (optional): clip id, default the path without its extension.

Classes are the sorted distinct names. Without a ``split`` column the clips are split with
``seed``: stratified by class for single-label sets, a plain seeded permutation for
multi-label sets, ``valid_fraction`` / ``test_fraction`` (default 0.15 / 0.15).

Without ``csv=`` and without ``labels.csv``, a folder whose sub-folders hold audio files is
read as one class per sub-folder (``root/<class>/**/<file>``), single-label, with the seeded
split. A CSV named by ``csv=`` must exist (no fall-back). A short row, an empty path or label,
a path or id listed twice is a one-line DatasetError naming the line.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from east.datasets.base import Manifest
from east.datasets.common import (
    CsvRow,
    Fraction,
    OnMissing,
    Seed,
    handle_missing,
    read_csv_rows,
    refuse_duplicates,
)
from east.datasets.registry import register_dataset
from east.datasets.splits import random_split, stratified_split
from east.errors import DatasetError

__all__ = [
    "AUDIO_SUFFIXES",
    "DEFAULT_CSV",
    "load_folder",
]

AUDIO_SUFFIXES = frozenset({".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".aif", ".aiff"})
_SPLIT_ALIASES = {"train": "train", "valid": "valid", "validation": "valid", "val": "valid",
                  "test": "test"}  # fmt: skip


DEFAULT_CSV = "labels.csv"


def _rows_from_subfolders(root: Path) -> list[CsvRow]:
    rows = []
    for sub in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        for f in sorted(sub.rglob("*")):
            if f.is_file() and f.suffix.lower() in AUDIO_SUFFIXES:
                row = CsvRow(path=f.relative_to(root).as_posix(), label=sub.name)
                row.line = 0  # not from a file
                rows.append(row)
    return rows


def _where(source: str, row: CsvRow) -> str:
    """Where a row came from, for messages: ``<csv> line <n>`` or ``sub-folders``."""
    return f"{source} line {row.line}" if row.line else source


def _read_rows(root: Path, csv: str | None) -> tuple[list[CsvRow], set[str], str]:
    """Rows, header and source: the CSV, or the sub-folders when no CSV was asked for."""
    csv_path = Path(csv or DEFAULT_CSV)
    csv_path = csv_path if csv_path.is_absolute() else root / csv_path
    if csv_path.is_file():
        rows = read_csv_rows("folder", csv_path, ["path"])
        if not rows:
            raise DatasetError(f"folder: {csv_path} lists no clips")
        return rows, set(rows[0]), str(csv_path)
    if csv is not None:
        raise DatasetError(
            f"folder: labels file {csv_path} not found (csv={csv}); give a CSV relative to the "
            "root or an absolute path, or leave csv out to use one class per sub-folder"
        )
    rows = _rows_from_subfolders(root)
    if not rows:
        raise DatasetError(
            f"folder: missing {DEFAULT_CSV} under {root} (and no class sub-folders with audio); "
            "see docs/datasets.md for the CSV format"
        )
    return rows, {"path", "label"}, "sub-folders"


def _paths_and_ids(rows: list[CsvRow], source: str) -> tuple[list[str], list[str]]:
    """Audio path and clip id of every row; each must be non-empty and unique."""
    paths = [r["path"].strip().replace("\\", "/") for r in rows]
    for row, path in zip(rows, paths, strict=True):
        if not path:
            raise DatasetError(f"folder: {_where(source, row)}: empty path")
    ids = [
        (r.get("id") or "").strip() or str(Path(p).with_suffix(""))
        for r, p in zip(rows, paths, strict=True)
    ]
    lines = [r.line for r in rows]
    refuse_duplicates("folder", source, paths, lines, "path")
    refuse_duplicates("folder", source, ids, lines, "clip id")
    return paths, ids


@register_dataset("folder", "your own audio folder + labels CSV (single- or multi-label)")
def load_folder(
    root: Path,
    *,
    csv: str | None = None,
    valid_fraction: Fraction = 0.15,
    test_fraction: Fraction = 0.15,
    seed: Seed = 0,
    on_missing: OnMissing = "drop",
) -> Manifest:
    """Manifest of a user folder under ``root`` (see the module docstring for the CSV)."""
    rows, header, source = _read_rows(root, csv)
    if ("label" in header) == ("labels" in header):
        raise DatasetError(
            f"folder: {source} needs exactly one of the columns 'label' (single-label) "
            "or 'labels' (multi-label, ';'-separated)"
        )
    multilabel = "labels" in header
    paths, ids = _paths_and_ids(rows, source)
    if multilabel:
        per_clip = [[t.strip() for t in r["labels"].split(";") if t.strip()] for r in rows]
        class_names = sorted({t for tags in per_clip for t in tags})
        if not class_names:
            raise DatasetError(f"folder: {source} has no labels at all")
        index = {c: i for i, c in enumerate(class_names)}
        targets = np.zeros((len(rows), len(class_names)), dtype=np.float32)
        for i, tags in enumerate(per_clip):
            targets[i, [index[t] for t in tags]] = 1.0
        mask: np.ndarray | None = np.ones_like(targets, dtype=bool)
    else:
        labels = [r["label"].strip() for r in rows]
        for row, path, label in zip(rows, paths, labels, strict=True):
            if not label:
                raise DatasetError(f"folder: {_where(source, row)}: no label for {path}")
        class_names = sorted(set(labels))
        index = {c: i for i, c in enumerate(class_names)}
        targets = np.array([index[lab] for lab in labels], dtype=np.int64)
        mask = None

    if "split" in header:
        splits = []
        for p, r in zip(paths, rows, strict=True):
            value = r["split"].strip().lower()
            if value not in _SPLIT_ALIASES:
                raise DatasetError(
                    f"folder: {_where(source, r)}: split {value!r} for {p} is not train, valid "
                    "or test"
                )
            splits.append(_SPLIT_ALIASES[value])
        rule = "split column of the CSV"
    else:
        try:
            if multilabel:
                splits = random_split(len(rows), valid_fraction, test_fraction, seed)
            else:
                splits = stratified_split(targets, valid_fraction, test_fraction, seed)
        except ValueError as exc:
            raise DatasetError(f"folder: {exc}") from None
        kind = "random" if multilabel else "stratified by class"
        rule = f"{kind}, seed {seed}: {valid_fraction:g} valid / {test_fraction:g} test"

    manifest = Manifest(
        name="folder",
        root=root,
        task="multilabel" if multilabel else "multiclass",
        class_names=class_names,
        clip_ids=ids,
        rel_paths=paths,
        splits=splits,
        targets=targets,
        mask=mask,
        info={"split_rule": rule, "labels_from": source},
    )
    return handle_missing(manifest, on_missing)
