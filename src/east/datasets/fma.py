"""FMA-small (Defferrard et al. 2017): 8,000 30-second tracks, 8 balanced top genres.

Official layout under ``root``::

    fma_metadata/tracks.csv      two header rows (e.g. ``set``/``split``, ``set``/``subset``,
                                 ``track``/``genre_top``) and a ``track_id`` index-name row
    fma_small/<tid[:3]>/<tid>.mp3  with tid the six-digit track id, e.g. fma_small/000/000002.mp3

Tracks with ``set/subset == small``; the official ``set/split`` (training / validation /
test); classes are the sorted ``track/genre_top`` values. Tracks 099134, 108925 and 133297
decode to nothing and are excluded (listed in ``manifest.info["excluded_broken"]``); tracks
whose mp3 is absent are dropped and listed in ``manifest.info["missing"]`` (``on_missing``).
A track listed twice, a short row or a non-integer track id is a one-line DatasetError naming
the line.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from east.datasets.base import Manifest
from east.datasets.common import (
    OnMissing,
    handle_missing,
    record_start,
    refuse_duplicates,
    require_file,
)
from east.datasets.registry import register_dataset
from east.errors import DatasetError

BROKEN_TRACKS = (99134, 108925, 133297)
SPLIT_NAMES = {"training": "train", "validation": "valid", "test": "test"}
_COLUMNS = ("set/split", "set/subset", "track/genre_top")


def audio_rel_path(track_id: int, subset: str = "small") -> str:
    """``fma_small/<tid[:3]>/<tid>.mp3`` for the six-digit track id ``tid``."""
    tid = f"{track_id:06d}"
    return f"fma_{subset}/{tid[:3]}/{tid}.mp3"


def read_tracks(path: Path) -> dict[str, list[str]]:
    """``track_id`` plus the split/subset/genre columns of ``tracks.csv``, as strings, and
    the file ``line`` each row starts on.

    The file has two header rows that name each column ``<top>/<sub>`` (as pandas'
    ``header=[0, 1]`` reads it) and then a row naming the index (``track_id``).
    """
    out: dict[str, list[str]] = {"track_id": [], **{c: [] for c in _COLUMNS}, "line": []}
    try:
        with path.open(newline="", encoding="utf-8") as fh:
            reader = csv.reader(fh)
            top, sub = next(reader, None), next(reader, None)
            if top is None or sub is None:
                raise DatasetError(f"fma_small: {path} has fewer than two header rows")
            names = [f"{a.strip()}/{b.strip()}" for a, b in zip(top, sub, strict=False)]
            missing = [c for c in _COLUMNS if c not in names]
            if missing:
                raise DatasetError(
                    f"fma_small: {path} lacks column(s) {', '.join(missing)} "
                    "(expected the two header rows of fma_metadata/tracks.csv)"
                )
            where = [names.index(c) for c in _COLUMNS]
            width = max(where) + 1
            for row in reader:
                if not row or (row[0].strip() == "track_id" and not any(row[1:])):
                    continue  # the index-name row, or a blank line
                line = record_start(reader.line_num, row)
                if len(row) < width:
                    raise DatasetError(
                        f"fma_small: {path} line {line}: short row for track {row[0]!r} "
                        f"({len(row)} fields, the columns need {width})"
                    )
                out["line"].append(str(line))
                out["track_id"].append(row[0].strip())
                for col, idx in zip(_COLUMNS, where, strict=True):
                    out[col].append(row[idx].strip())
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DatasetError(f"fma_small: cannot read {path}: {exc}") from None
    return out


def _track_ids(csv_path: Path, tracks: dict[str, list[str]]) -> np.ndarray:
    """Integer track ids; DatasetError naming the line of a bad or repeated one."""
    lines = [int(n) for n in tracks["line"]]
    ids = []
    for text, line in zip(tracks["track_id"], lines, strict=True):
        if not text.isdigit():
            raise DatasetError(
                f"fma_small: {csv_path} line {line}: track id {text!r} is not an integer"
            )
        ids.append(int(text))
    refuse_duplicates("fma_small", csv_path, [f"{t:06d}" for t in ids], lines, "track")
    return np.array(ids, dtype=np.int64)


@register_dataset(
    "fma_small",
    "FMA-small music genres: 8 genres, official split (single-label)",
    nominal_seconds=30.0,
)
def load_fma_small(root: Path, *, on_missing: OnMissing = "drop") -> Manifest:
    """Manifest of FMA-small under ``root`` (see the module docstring)."""
    csv_path = require_file("fma_small", root, "fma_metadata/tracks.csv")
    tracks = read_tracks(csv_path)
    ids = _track_ids(csv_path, tracks)
    subset = np.array(tracks["set/subset"])
    split = np.array(tracks["set/split"])
    genre = np.array(tracks["track/genre_top"])

    small = subset == "small"
    broken = small & np.isin(ids, BROKEN_TRACKS)
    no_genre = small & (genre == "")
    bad_split = small & ~np.isin(split, list(SPLIT_NAMES))
    rows = np.flatnonzero(small & ~broken & ~no_genre & ~bad_split)
    if len(rows) == 0:
        raise DatasetError(f"fma_small: {csv_path} lists no usable tracks of subset 'small'")

    class_names = sorted(set(genre[rows].tolist()))
    index = {g: i for i, g in enumerate(class_names)}
    manifest = Manifest(
        name="fma_small",
        root=root,
        task="multiclass",
        class_names=class_names,
        clip_ids=[f"{ids[i]:06d}" for i in rows],
        rel_paths=[audio_rel_path(int(ids[i])) for i in rows],
        splits=[SPLIT_NAMES[split[i]] for i in rows],
        targets=np.array([index[genre[i]] for i in rows], dtype=np.int64),
        info={
            "split_rule": "official set/split",
            "excluded_broken": [f"{t:06d}" for t in ids[broken]],
        },
    )
    if no_genre.any():
        manifest.info["excluded_no_genre"] = [f"{t:06d}" for t in ids[no_genre]]
    if bad_split.any():
        manifest.info["excluded_no_split"] = [f"{t:06d}" for t in ids[bad_split]]
    return handle_missing(manifest, on_missing)
