"""The manifest: the one description of a dataset that every stage uses.

A manifest lists clips in a fixed order (the order of the rows of every embedding cache),
with their audio path, split and labels.

* multi-label sets (OpenMIC, MTAT): ``targets`` is ``(N, C)`` float32 multi-hot and
  ``mask`` ``(N, C)`` bool says which entries are known (OpenMIC leaves many unknown);
* single-label sets (ESC-50, FMA, most folders): ``targets`` is ``(N,)`` int64 class indices
  and ``mask`` is ``None``.

Two hashes:

* :attr:`Manifest.hash` covers the clips (ids and relative audio paths, in order). An
  embedding cache stores it, so a cache is tied to exactly this list of clips — but not to
  labels or splits, which may change (another validation seed, another test fold) without
  invalidating extracted embeddings.
* :attr:`Manifest.labels_hash` additionally covers splits, labels and class names.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from east.errors import DatasetError

Task = Literal["multilabel", "multiclass"]
SPLITS = ("train", "valid", "test")


@dataclass
class Manifest:
    """Clips of one dataset, in a fixed order."""

    name: str
    root: Path
    task: Task
    class_names: list[str]
    clip_ids: list[str]
    rel_paths: list[str]  # audio path of each clip, relative to ``root`` (posix separators)
    splits: np.ndarray  # (N,) str: "train" | "valid" | "test"
    targets: np.ndarray  # (N, C) float32 multi-hot, or (N,) int64 class index
    mask: np.ndarray | None = None  # (N, C) bool: label known (multi-label only)
    extra: dict[str, np.ndarray] = field(default_factory=dict)  # per-clip extras, e.g. "fold"
    info: dict[str, object] = field(default_factory=dict)  # notes, e.g. excluded clips

    def __post_init__(self) -> None:
        self.root = Path(self.root)
        self.splits = np.asarray(self.splits, dtype=str)
        n = len(self.clip_ids)
        if not (len(self.rel_paths) == len(self.splits) == len(self.targets) == n):
            raise ValueError("manifest columns have different lengths")
        if len(set(self.clip_ids)) != n:
            # the built-in adapters name the offending line first; this catches the others
            dup = next(c for c, k in Counter(self.clip_ids).items() if k > 1)
            raise DatasetError(f"{self.name}: clip id {dup!r} appears twice in the manifest")
        if self.mask is not None and self.mask.shape != self.targets.shape:
            raise ValueError("mask and targets differ in shape")

    def __len__(self) -> int:
        return len(self.clip_ids)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def multilabel(self) -> bool:
        return self.task == "multilabel"

    def audio_path(self, index: int) -> Path:
        return self.root / self.rel_paths[index]

    def indices(self, split: str) -> np.ndarray:
        """Row indices (into this manifest and its caches) of one split."""
        return np.flatnonzero(self.splits == split)

    def split_counts(self) -> dict[str, int]:
        return {s: int((self.splits == s).sum()) for s in SPLITS if (self.splits == s).any()}

    def known_mask(self) -> np.ndarray:
        """``(N, C)`` bool mask of known labels (all true for single-label sets)."""
        if self.mask is not None:
            return self.mask
        return np.ones((len(self), self.num_classes), dtype=bool)

    def multi_hot(self) -> np.ndarray:
        """``(N, C)`` float32 targets whatever the task."""
        if self.multilabel:
            return self.targets.astype(np.float32)
        out = np.zeros((len(self), self.num_classes), dtype=np.float32)
        out[np.arange(len(self)), self.targets] = 1.0
        return out

    @property
    def hash(self) -> str:
        """sha256 (hex, 16 chars) over the ordered clip ids and relative paths."""
        h = hashlib.sha256(self.name.encode())
        for cid, rel in zip(self.clip_ids, self.rel_paths, strict=True):
            h.update(b"\0" + cid.encode() + b"\1" + rel.encode())
        return h.hexdigest()[:16]

    @property
    def labels_hash(self) -> str:
        """sha256 (hex, 16 chars) over clips, splits, labels, mask and class names."""
        h = hashlib.sha256(self.hash.encode())
        h.update(json.dumps(self.class_names).encode())
        h.update("\0".join(self.splits.tolist()).encode())
        h.update(np.ascontiguousarray(self.targets).tobytes())
        if self.mask is not None:
            h.update(np.ascontiguousarray(self.mask).tobytes())
        return h.hexdigest()[:16]

    def select(self, rows: Sequence[int] | np.ndarray) -> Manifest:
        """A new manifest with only ``rows`` (in that order)."""
        rows = np.asarray(rows, dtype=np.int64)
        return Manifest(
            name=self.name,
            root=self.root,
            task=self.task,
            class_names=list(self.class_names),
            clip_ids=[self.clip_ids[i] for i in rows],
            rel_paths=[self.rel_paths[i] for i in rows],
            splits=self.splits[rows],
            targets=self.targets[rows],
            mask=None if self.mask is None else self.mask[rows],
            extra={k: v[rows] for k, v in self.extra.items()},
            info=dict(self.info),
        )
