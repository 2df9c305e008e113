"""Small helpers shared by the dataset adapters: required files, CSV reading, missing audio."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Literal

import numpy as np

from east.datasets.base import Manifest
from east.errors import DatasetError

OnMissing = Literal["drop", "keep", "error"]
# how many missing clip ids to name in messages (the full list stays in ``manifest.info``)
_NAMED = 5


def require_file(dataset: str, root: Path, rel: str) -> Path:
    """``root / rel``, or a one-line DatasetError naming the missing file."""
    path = root / rel
    if not path.is_file():
        raise DatasetError(f"{dataset}: missing {rel} under {root} (not the official layout?)")
    return path


def read_csv_rows(
    dataset: str, path: Path, required: list[str], delimiter: str = ","
) -> list[dict[str, str]]:
    """Rows of a CSV with a header row; DatasetError when a required column is absent."""
    try:
        with path.open(newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh, delimiter=delimiter)
            header = [h.strip() for h in (reader.fieldnames or [])]
            reader.fieldnames = header
            missing = [c for c in required if c not in header]
            if missing:
                raise DatasetError(
                    f"{dataset}: {path} lacks column(s) {', '.join(missing)} "
                    f"(has: {', '.join(header[:10])}{'...' if len(header) > 10 else ''})"
                )
            return list(reader)
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DatasetError(f"{dataset}: cannot read {path}: {exc}") from None


def handle_missing(manifest: Manifest, on_missing: OnMissing) -> Manifest:
    """Apply the ``on_missing`` policy to clips whose audio file does not exist.

    ``drop`` (default everywhere) removes them and lists their ids in
    ``manifest.info["missing"]``; ``keep`` keeps them (``east datasets check`` then reports
    them); ``error`` raises a DatasetError naming the first few.
    """
    if on_missing not in ("drop", "keep", "error"):
        raise DatasetError(f"on_missing must be drop, keep or error, not {on_missing!r}")
    if on_missing == "keep":
        return manifest
    present = np.array([(manifest.root / rel).is_file() for rel in manifest.rel_paths], dtype=bool)
    if present.all():
        return manifest
    missing = [manifest.clip_ids[i] for i in np.flatnonzero(~present)]
    if on_missing == "error":
        named = ", ".join(missing[:_NAMED]) + (" ..." if len(missing) > _NAMED else "")
        raise DatasetError(
            f"{manifest.name}: {len(missing)} clip(s) have no audio file under "
            f"{manifest.root}: {named}"
        )
    out = manifest.select(np.flatnonzero(present))
    out.info["missing"] = missing
    return out
