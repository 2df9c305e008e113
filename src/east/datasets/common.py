"""Small helpers shared by the dataset adapters: option types, required files, CSV reading
(with line numbers for every defect), duplicate checks, missing audio."""

from __future__ import annotations

import csv
from collections.abc import Iterable
from pathlib import Path
from typing import Annotated, Literal

import numpy as np
from pydantic import Field

from east.datasets.base import Manifest
from east.errors import DatasetError

OnMissing = Literal["drop", "keep", "error"]
# option types: load_manifest checks every value against these (see datasets/registry.py)
Fraction = Annotated[float, Field(ge=0.0, lt=1.0, description="a number in [0, 1)")]
Seed = Annotated[int, Field(ge=0, description="an integer >= 0")]
# how many missing clip ids to name in messages (the full list stays in ``manifest.info``)
_NAMED = 5


def require_file(dataset: str, root: Path, rel: str) -> Path:
    """``root / rel``, or a one-line DatasetError naming the missing file."""
    path = root / rel
    if not path.is_file():
        raise DatasetError(f"{dataset}: missing {rel} under {root} (not the official layout?)")
    return path


class CsvRow(dict[str, str]):
    """One CSV row, column name → text, that knows the file line it starts on."""

    line: int


def _fields(n: int) -> str:
    return f"{n} field" if n == 1 else f"{n} fields"


def record_start(line_num: int, fields: list[str]) -> int:
    """First file line of the record a csv reader just returned (quoted fields may hold line
    breaks, so the reader's ``line_num`` is its last line)."""
    return line_num - sum(f.count("\n") for f in fields)


def read_csv_rows(
    dataset: str, path: Path, required: list[str], delimiter: str = ","
) -> list[CsvRow]:
    """Rows of a CSV with a header row, each with its ``line``.

    DatasetError (one line) when a required column is absent or a row has more or fewer
    fields than the header (a short row would otherwise read as missing values).
    """
    try:
        with path.open(newline="", encoding="utf-8-sig") as fh:
            reader = csv.reader(fh, delimiter=delimiter)
            header = [h.strip() for h in next(reader, [])]
            missing = [c for c in required if c not in header]
            if missing:
                raise DatasetError(
                    f"{dataset}: {path} lacks column(s) {', '.join(missing)} "
                    f"(has: {', '.join(header[:10])}{'...' if len(header) > 10 else ''})"
                )
            rows = []
            for fields in reader:
                if not fields:
                    continue  # a blank line
                line = record_start(reader.line_num, fields)
                if len(fields) != len(header):
                    raise DatasetError(
                        f"{dataset}: {path} line {line} has {_fields(len(fields))}, the header "
                        f"has {len(header)}; fix or remove that row"
                    )
                row = CsvRow(zip(header, fields, strict=True))
                row.line = line
                rows.append(row)
            return rows
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DatasetError(f"{dataset}: cannot read {path}: {exc}") from None


def refuse_duplicates(
    dataset: str, source: Path | str, keys: Iterable[str], lines: Iterable[int], what: str
) -> None:
    """DatasetError naming the first ``key`` listed twice, with both lines (0: no line)."""
    first: dict[str, int] = {}
    for key, line in zip(keys, lines, strict=True):
        if key in first:
            here = f" line {line}" if line else ""
            before = f" (first on line {first[key]})" if first[key] else ""
            raise DatasetError(
                f"{dataset}: {source}{here}: {what} {key!r} listed twice{before}; "
                "remove one of the two"
            )
        first[key] = line


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
