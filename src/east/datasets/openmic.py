"""OpenMIC-2018 (Humphrey et al. 2018): 20,000 ten-second clips, 20 instruments, partial labels.

Official layout under ``root``::

    openmic-2018.npz                 Y_true (N, 20) float, Y_mask (N, 20) bool, sample_key (N,)
    class-map.json                   {"accordion": 0, ..., "voice": 19}
    partitions/split01_train.csv     one sample key per line (14,915)
    partitions/split01_test.csv      one sample key per line (5,085)
    audio/<key[:3]>/<key>.ogg        e.g. audio/000/000046_3840.ogg

Labels: positive where ``Y_true > 0.5``, negative where ``Y_true <= 0.5``, unknown (``mask``
false, target 0) where ``Y_mask`` is false. Validation: each training clip, in the order of
the partition file, goes to validation when ``random.Random(seed).uniform(0, 1) <
valid_fraction`` — with the defaults (0.15, seed 2022) the full set splits 12,692 / 2,223 /
5,085 as in the EAsT reference. The manifest keeps the npz order.

Checked: ``class-map.json`` maps each class to a distinct index ``0..C-1``; ``sample_key`` lists
each clip once; known ``Y_true`` values lie in [0, 1]; a partition file lists each key once
and no key is in both. Each defect is a one-line DatasetError naming the file (and line).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from east.datasets.base import Manifest
from east.datasets.common import (
    Fraction,
    OnMissing,
    Seed,
    handle_missing,
    refuse_duplicates,
    require_file,
)
from east.datasets.registry import register_dataset
from east.datasets.splits import bernoulli_split
from east.errors import DatasetError

__all__ = [
    "audio_rel_path",
    "load_openmic",
]


def _read_keys(path: Path) -> list[str]:
    """Sample keys of a partition file, one per line; each must appear once."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise DatasetError(f"openmic: cannot read {path}: {exc}") from None
    found = [(n, ln.strip().split(",")[0]) for n, ln in enumerate(text.splitlines(), 1)]
    found = [(n, key) for n, key in found if key and key != "sample_key"]  # header tolerated
    refuse_duplicates("openmic", path, [k for _, k in found], [n for n, _ in found], "key")
    return [key for _, key in found]


def _class_names(map_path: Path) -> list[str]:
    """Class names in index order; the indices must be exactly ``0..C-1``."""
    try:
        class_map = json.loads(map_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise DatasetError(f"openmic: cannot read {map_path}: {exc}") from None
    if not isinstance(class_map, dict) or not class_map:
        raise DatasetError(f"openmic: {map_path} must map class names to indices 0..C-1")
    for name, index in class_map.items():
        if not isinstance(index, int) or isinstance(index, bool):
            raise DatasetError(
                f"openmic: {map_path}: class {name!r} has index {index!r}, not an integer"
            )
    if sorted(class_map.values()) != list(range(len(class_map))):
        raise DatasetError(
            f"openmic: {map_path}: indices must be 0..{len(class_map) - 1}, each once "
            f"(got {sorted(class_map.values())})"
        )
    return sorted(class_map, key=class_map.__getitem__)


def _check_labels(npz_path: Path, keys: list[str], y_true: np.ndarray, y_mask: np.ndarray) -> None:
    """Each key once; known ``Y_true`` values finite and in [0, 1]."""
    first: dict[str, int] = {}
    for row, key in enumerate(keys):
        if first.setdefault(key, row) != row:
            raise DatasetError(
                f"openmic: {npz_path}: sample_key {key!r} appears twice (rows {first[key]} and "
                f"{row}); the npz must list each clip once"
            )
    bad = y_mask & ~((y_true >= 0.0) & (y_true <= 1.0))  # NaN fails both comparisons
    if bad.any():
        row, col = (int(i) for i in np.argwhere(bad)[0])
        raise DatasetError(
            f"openmic: {npz_path}: Y_true[{row}, {col}] (key {keys[row]}) is "
            f"{float(y_true[row, col])}; known labels must lie in [0, 1]"
        )


def audio_rel_path(key: str) -> str:
    """``audio/<key[:3]>/<key>.ogg``, the official location of a clip."""
    return f"audio/{key[:3]}/{key}.ogg"


@register_dataset(
    "openmic",
    "OpenMIC-2018 instruments: 20 classes, partial labels (multi-label)",
    nominal_seconds=10.0,
)
def load_openmic(
    root: Path,
    *,
    partition: str = "split01",
    valid_fraction: Fraction = 0.15,
    seed: Seed = 2022,
    on_missing: OnMissing = "drop",
) -> Manifest:
    """Manifest of OpenMIC-2018 under ``root`` (see the module docstring)."""
    npz_path = require_file("openmic", root, "openmic-2018.npz")
    map_path = require_file("openmic", root, "class-map.json")
    train_path = require_file("openmic", root, f"partitions/{partition}_train.csv")
    test_path = require_file("openmic", root, f"partitions/{partition}_test.csv")

    try:
        with np.load(npz_path, allow_pickle=False) as data:
            missing = [k for k in ("Y_true", "Y_mask", "sample_key") if k not in data.files]
            if missing:
                raise DatasetError(f"openmic: {npz_path} lacks {', '.join(missing)}")
            y_true = np.asarray(data["Y_true"], dtype=np.float32)
            y_mask = np.asarray(data["Y_mask"]).astype(bool)
            keys = [str(k) for k in data["sample_key"]]
    except (OSError, ValueError) as exc:
        raise DatasetError(f"openmic: cannot read {npz_path}: {exc}") from None
    class_names = _class_names(map_path)
    if y_true.shape != (len(keys), len(class_names)) or y_mask.shape != y_true.shape:
        raise DatasetError(
            f"openmic: {npz_path} has Y_true {y_true.shape}, Y_mask {y_mask.shape} for "
            f"{len(keys)} keys and {len(class_names)} classes in class-map.json"
        )
    _check_labels(npz_path, keys, y_true, y_mask)

    train_keys = _read_keys(train_path)
    test_keys = _read_keys(test_path)
    try:
        is_valid = bernoulli_split(len(train_keys), valid_fraction, seed)
    except ValueError as exc:
        raise DatasetError(f"openmic: {exc}") from None
    split_of: dict[str, str] = {k: "test" for k in test_keys}
    for key, valid in zip(train_keys, is_valid, strict=True):
        if key in split_of:
            raise DatasetError(
                f"openmic: key {key} is in both {train_path.name} and {test_path.name}"
            )
        split_of[key] = "valid" if valid else "train"

    rows = [i for i, k in enumerate(keys) if k in split_of]
    known = set(keys)
    rows_arr = np.asarray(rows, dtype=np.int64)
    mask = y_mask[rows_arr]
    targets = np.where(mask, (y_true[rows_arr] > 0.5).astype(np.float32), np.float32(0.0))
    manifest = Manifest(
        name="openmic",
        root=root,
        task="multilabel",
        class_names=class_names,
        clip_ids=[keys[i] for i in rows],
        rel_paths=[audio_rel_path(keys[i]) for i in rows],
        splits=[split_of[keys[i]] for i in rows],
        targets=targets.astype(np.float32),
        mask=mask,
        info={
            "split_rule": (
                f"{partition} partitions; validation: {valid_fraction:g} of train, "
                f"Bernoulli per clip, seed {seed}"
            )
        },
    )
    not_in_npz = [k for k in split_of if k not in known]
    unpartitioned = len(keys) - len(rows)
    if not_in_npz:
        manifest.info["not_in_npz"] = not_in_npz
    if unpartitioned:
        manifest.info["unpartitioned"] = unpartitioned
    return handle_missing(manifest, on_missing)
