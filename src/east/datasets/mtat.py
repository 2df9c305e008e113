"""MagnaTagATune (Law et al. 2009): 25,863 ~29-second clips with 188 binary tags.

Official layout under ``root``::

    annotations_final.csv   tab-separated, quoted: clip_id, 188 tag columns (0/1), mp3_path
    <mp3_path>              e.g. f/american_bach_soloists-..-30-59.mp3 (folders 0-9, a-f)

The usual protocol (Dieleman & Schrauwen 2014; Won et al. 2020): the ``num_tags`` (50) tags with
the most positive clips over the whole file (ties: column order), folders ``0``–``b`` for
training, ``c`` for validation, ``d``–``f`` for testing, and clips with no positive tag among
those dropped (≈ 15.2k / 1,529 / 4,332 clips). All labels are known (``mask`` all true).

A clip id listed twice, a short row or a tag value other than 0 or 1 is a one-line
DatasetError naming the line.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import numpy as np
from pydantic import Field

from east.datasets.base import Manifest
from east.datasets.common import (
    OnMissing,
    handle_missing,
    read_csv_rows,
    refuse_duplicates,
    require_file,
)
from east.datasets.registry import register_dataset
from east.errors import DatasetError

VALID_FOLDERS = frozenset("c")
TEST_FOLDERS = frozenset("def")
TRAIN_FOLDERS = frozenset("0123456789ab")


def folder_split(mp3_path: str) -> str | None:
    """Split of a clip from the folder its mp3 is in (``None`` for an unknown folder)."""
    folder = mp3_path.split("/", 1)[0].lower()
    if folder in TRAIN_FOLDERS:
        return "train"
    if folder in VALID_FOLDERS:
        return "valid"
    if folder in TEST_FOLDERS:
        return "test"
    return None


TagCount = Annotated[int, Field(ge=1, description="an integer >= 1 (number of top tags)")]


@register_dataset(
    "mtat",
    "MagnaTagATune music tags: top-50 tags, folder split (multi-label)",
    nominal_seconds=29.1,
)
def load_mtat(root: Path, *, num_tags: TagCount = 50, on_missing: OnMissing = "drop") -> Manifest:
    """Manifest of MagnaTagATune under ``root`` (see the module docstring)."""
    csv_path = require_file("mtat", root, "annotations_final.csv")
    rows = read_csv_rows("mtat", csv_path, ["clip_id", "mp3_path"], delimiter="\t")
    if not rows:
        raise DatasetError(f"mtat: {csv_path} lists no clips")
    tag_columns = [c for c in rows[0] if c not in ("clip_id", "mp3_path")]
    if num_tags < 1 or num_tags > len(tag_columns):
        raise DatasetError(f"mtat: num_tags must be 1..{len(tag_columns)}, got {num_tags}")
    ids = [r["clip_id"].strip() for r in rows]
    refuse_duplicates("mtat", csv_path, ids, [r.line for r in rows], "clip_id")
    # one vectorised pass over the ~4.9 M cells of the real file
    cells = np.array([[r[c] for c in tag_columns] for r in rows])
    bad = (cells != "0") & (cells != "1")
    if bad.any():
        i, j = (int(k[0]) for k in np.nonzero(bad))
        raise DatasetError(
            f"mtat: {csv_path} line {rows[i].line}: tag {tag_columns[j]!r} is {str(cells[i, j])!r}; "
            "tag values must be 0 or 1"
        )
    all_tags = (cells == "1").astype(np.int8)

    # stable sort: equal counts keep the column order
    counts = (all_tags > 0).sum(axis=0)
    top = np.argsort(-counts, kind="stable")[:num_tags]
    targets = (all_tags[:, top] > 0).astype(np.float32)

    splits = [folder_split(r["mp3_path"]) for r in rows]
    keep = np.array([s is not None for s in splits]) & (targets.sum(axis=1) > 0)
    no_tag = int((targets.sum(axis=1) == 0).sum())
    other_folder = int(sum(s is None for s in splits))
    rows_kept = np.flatnonzero(keep)
    manifest = Manifest(
        name="mtat",
        root=root,
        task="multilabel",
        class_names=[tag_columns[i] for i in top],
        clip_ids=[ids[i] for i in rows_kept],
        rel_paths=[rows[i]["mp3_path"].strip() for i in rows_kept],
        splits=[splits[i] for i in rows_kept],
        targets=targets[rows_kept],
        mask=np.ones((len(rows_kept), num_tags), dtype=bool),
        info={
            "split_rule": "folders 0-b train, c valid, d-f test",
            "dropped_no_tag": no_tag,
        },
    )
    if other_folder:
        manifest.info["dropped_unknown_folder"] = other_folder
    return handle_missing(manifest, on_missing)
