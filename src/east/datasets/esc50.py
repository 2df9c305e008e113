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

Every clip keeps its official fold in ``manifest.extra["fold"]``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from east.datasets.base import Manifest
from east.datasets.common import OnMissing, handle_missing, read_csv_rows, require_file
from east.datasets.registry import register_dataset
from east.datasets.splits import stratified_split
from east.errors import DatasetError

NUM_FOLDS = 5


@register_dataset("esc50", "ESC-50 environmental sounds: 50 classes, 5 folds (single-label)")
def load_esc50(
    root: Path,
    *,
    split: str = "auto",
    test_fold: int = 5,
    valid_fold: int | None = None,
    valid_fraction: float = 0.2,
    test_fraction: float = 0.2,
    seed: int = 0,
    on_missing: OnMissing = "drop",
) -> Manifest:
    """Manifest of ESC-50 under ``root`` (see the module docstring for the split rules)."""
    csv_path = require_file("esc50", root, "meta/esc50.csv")
    rows = read_csv_rows("esc50", csv_path, ["filename", "fold", "target", "category"])
    if not rows:
        raise DatasetError(f"esc50: {csv_path} lists no clips")
    try:
        folds = np.array([int(r["fold"]) for r in rows], dtype=np.int64)
        targets = np.array([int(r["target"]) for r in rows], dtype=np.int64)
    except ValueError as exc:
        raise DatasetError(f"esc50: {csv_path}: non-integer fold or target ({exc})") from None

    num_classes = int(targets.max()) + 1
    names: dict[int, str] = {}
    for r, t in zip(rows, targets, strict=True):
        names.setdefault(int(t), r["category"].strip())
    class_names = [names.get(i, f"target_{i}") for i in range(num_classes)]

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

    filenames = [r["filename"].strip() for r in rows]
    manifest = Manifest(
        name="esc50",
        root=root,
        task="multiclass",
        class_names=class_names,
        clip_ids=[Path(f).stem for f in filenames],
        rel_paths=[f"audio/{f}" for f in filenames],
        splits=splits,
        targets=targets,
        extra={"fold": folds},
        info={"split_rule": rule},
    )
    return handle_missing(manifest, on_missing)
