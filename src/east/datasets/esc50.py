"""ESC-50 (Piczak 2015): 2,000 five-second environmental clips, 50 classes, 5 folds.

Official layout under ``root``::

    meta/esc50.csv   filename,fold,target,category,esc10,src_file,take
    audio/<filename> e.g. audio/1-100032-A-0.wav

Splits (``split=``):

* ``folds``: the official folds — ``test_fold`` is test, ``valid_fold`` (default: the fold
  before the test fold, 5 → 4, 1 → 5) is validation, the other folds are training.
* ``stratified``: a seeded split stratified by class, ``valid_fraction`` / ``test_fraction``
  (default 0.2 / 0.2, the share of one fold each) — for subsets that lack whole folds.
* ``auto`` (default): ``folds`` when the CSV holds all five folds, else ``stratified``.

Every clip keeps its official fold in ``manifest.extra["fold"]``. The CSV is checked row by
row: a clip listed twice, a short row, a fold outside 1..5, a target outside 0..49 or a
category that another row gives another target is a one-line DatasetError naming the line.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import numpy as np
from pydantic import Field

from east.datasets.base import Manifest
from east.datasets.common import (
    CsvRow,
    Fraction,
    OnMissing,
    Seed,
    handle_missing,
    read_csv_rows,
    refuse_duplicates,
    require_file,
)
from east.datasets.registry import register_dataset
from east.datasets.splits import stratified_split
from east.errors import DatasetError

__all__ = [
    "NUM_CLASSES",
    "NUM_FOLDS",
    "Fold",
    "load_esc50",
]

NUM_FOLDS = 5
NUM_CLASSES = 50
Fold = Annotated[int, Field(ge=1, le=NUM_FOLDS, description=f"a fold number 1..{NUM_FOLDS}")]


def _integer(csv_path: Path, row: CsvRow, column: str, low: int, high: int) -> int:
    """``row[column]`` as an integer in ``low..high``, else a DatasetError naming the line."""
    text = row[column].strip()
    try:
        value = int(text)
    except ValueError:
        value = None
    if value is None or not low <= value <= high:
        raise DatasetError(
            f"esc50: {csv_path} line {row.line}: {column} {text!r} is not an integer {low}..{high}"
        )
    return value


def _class_names(csv_path: Path, rows: list[CsvRow], targets: np.ndarray) -> list[str]:
    """Category of each target; every row must pair target and category the same way."""
    category: dict[int, tuple[str, int]] = {}  # target -> (category, first line)
    target_of: dict[str, tuple[int, int]] = {}  # category -> (target, first line)
    for row, t in zip(rows, targets.tolist(), strict=True):
        name = row["category"].strip()
        seen, line = category.setdefault(t, (name, row.line))
        if seen != name:
            raise DatasetError(
                f"esc50: {csv_path} line {row.line}: target {t} is category {name!r} here but "
                f"{seen!r} on line {line}; fix the target or the category"
            )
        seen_t, line = target_of.setdefault(name, (t, row.line))
        if seen_t != t:
            raise DatasetError(
                f"esc50: {csv_path} line {row.line}: category {name!r} has target {t} here but "
                f"{seen_t} on line {line}; fix the target or the category"
            )
    num_classes = int(targets.max()) + 1
    # a subset may lack some classes: their names are unknown, not wrong
    return [category[i][0] if i in category else f"target_{i}" for i in range(num_classes)]


@register_dataset(
    "esc50", "ESC-50 environmental sounds: 50 classes, 5 folds (single-label)", nominal_seconds=5.0
)
def load_esc50(
    root: Path,
    *,
    split: Literal["auto", "folds", "stratified"] = "auto",
    test_fold: Fold = 5,
    valid_fold: Fold | None = None,
    valid_fraction: Fraction = 0.2,
    test_fraction: Fraction = 0.2,
    seed: Seed = 0,
    on_missing: OnMissing = "drop",
) -> Manifest:
    """Manifest of ESC-50 under ``root`` (see the module docstring for the split rules)."""
    csv_path = require_file("esc50", root, "meta/esc50.csv")
    rows = read_csv_rows("esc50", csv_path, ["filename", "fold", "target", "category"])
    if not rows:
        raise DatasetError(f"esc50: {csv_path} lists no clips")
    filenames = [r["filename"].strip() for r in rows]
    for row, name in zip(rows, filenames, strict=True):
        if not name:
            raise DatasetError(f"esc50: {csv_path} line {row.line}: empty filename")
    clip_ids = [Path(f).stem for f in filenames]
    refuse_duplicates("esc50", csv_path, clip_ids, [r.line for r in rows], "clip")
    folds = np.array([_integer(csv_path, r, "fold", 1, NUM_FOLDS) for r in rows], np.int64)
    targets = np.array(
        [_integer(csv_path, r, "target", 0, NUM_CLASSES - 1) for r in rows], np.int64
    )
    class_names = _class_names(csv_path, rows, targets)

    if split == "auto":
        split = "folds" if set(range(1, NUM_FOLDS + 1)) <= set(folds.tolist()) else "stratified"
    if split == "folds":
        if valid_fold is None:
            valid_fold = (test_fold - 2) % NUM_FOLDS + 1
        if valid_fold == test_fold:
            raise DatasetError(f"esc50: valid_fold and test_fold are both {test_fold}")
        for label, fold in (("test_fold", test_fold), ("valid_fold", valid_fold)):
            if not (folds == fold).any():
                present = ", ".join(str(f) for f in sorted(set(folds.tolist())))
                raise DatasetError(
                    f"esc50: {label}={fold} holds no clips (folds present: {present}); "
                    "use split=stratified for a subset"
                )
        splits = np.where(
            folds == test_fold, "test", np.where(folds == valid_fold, "valid", "train")
        )
        rule = f"official folds: test fold {test_fold}, validation fold {valid_fold}"
    elif split == "stratified":
        try:
            splits = stratified_split(targets, valid_fraction, test_fraction, seed)
        except ValueError as exc:
            raise DatasetError(f"esc50: {exc}") from None
        rule = (
            f"stratified by class, seed {seed}: {valid_fraction:g} valid / {test_fraction:g} test"
        )
    else:
        raise DatasetError(f"esc50: split must be auto, folds or stratified, not {split!r}")

    manifest = Manifest(
        name="esc50",
        root=root,
        task="multiclass",
        class_names=class_names,
        clip_ids=clip_ids,
        rel_paths=[f"audio/{f}" for f in filenames],
        splits=splits,
        targets=targets,
        extra={"fold": folds},
        info={"split_rule": rule},
    )
    return handle_missing(manifest, on_missing)
