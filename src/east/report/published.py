"""The papers' published numbers (``docs/paper_results.csv``, shipped in the package as
``east/report/paper_results.csv``), looked up beside ours."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from importlib.resources.abc import Traversable
from pathlib import Path

from east.errors import EastError

FIELDS = ("paper", "table", "dataset", "system", "teacher", "metric", "value")


def default_path() -> Traversable:
    """The shipped copy of ``docs/paper_results.csv`` (package data; a symlink to the docs
    file in a checkout, so an editable install reads the docs file itself)."""
    from east.resources import paper_results

    return paper_results()


@dataclass(frozen=True)
class Published:
    paper: str
    table: str
    dataset: str
    system: str
    teacher: str
    metric: str
    value: float


class PublishedResults:
    """Rows of ``paper_results.csv`` with lookups by (paper, table, dataset, system, teacher,
    metric). Empty when the default file is missing (a package built without its data)."""

    def __init__(self, rows: list[Published], source: Path | Traversable | None) -> None:
        self.rows = rows
        self.source = source
        self._index = {
            (r.paper, r.table, r.dataset, r.system, r.teacher, r.metric): r.value for r in rows
        }

    @classmethod
    def load(cls, path: str | Path | None = None) -> PublishedResults:
        explicit = path is not None
        path = Path(path) if path is not None else default_path()
        if not path.is_file():
            if explicit:
                raise EastError(f"{path}: published results file not found")
            return cls([], None)
        try:
            rows = _read_rows(path)
        except UnicodeDecodeError as exc:
            raise EastError(f"{path}: not a UTF-8 CSV file ({exc.reason})") from None
        except csv.Error as exc:
            raise EastError(f"{path}: not a valid CSV file ({exc})") from None
        return cls(rows, path)

    def get(
        self, paper: str, table: str, dataset: str, system: str, teacher: str, metric: str
    ) -> float | None:
        return self._index.get((paper, table, dataset, system, teacher, metric))

    def select(self, paper: str, table: str, dataset: str | None = None) -> list[Published]:
        return [
            r
            for r in self.rows
            if r.paper == paper and r.table == table and (dataset is None or r.dataset == dataset)
        ]


def _read_rows(path: Path | Traversable) -> list[Published]:
    rows = []
    with path.open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        missing = set(FIELDS) - set(reader.fieldnames or ())
        if missing:
            raise EastError(f"{path}: missing columns {sorted(missing)}")
        for line, row in enumerate(reader, start=2):
            empty = [k for k in FIELDS if row.get(k) is None]
            if empty:
                raise EastError(f"{path}:{line}: no value for {', '.join(empty)}")
            try:
                value = float(row["value"])
            except ValueError:
                raise EastError(f"{path}:{line}: value {row['value']!r} is not a number") from None
            rows.append(Published(*(row[k].strip() for k in FIELDS[:-1]), value))
    return rows
