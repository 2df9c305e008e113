"""The one progress bar of east's long commands: ``east train``'s epochs and ``east extract``'s
clips. A rich bar on stderr; every method is a no-op when it is disabled (tests, ``--quiet``,
ranks other than 0, nothing to do). rich is imported only when a bar starts."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

__all__ = ["ProgressBar"]


class ProgressBar:
    """``start(description, total)``, ``advance(n, **fields)``, ``stop()``, ``log(text)``; also
    a context manager (``with ProgressBar(...).started(label, total) as bar``).

    Columns: description, bar, count (``done/total unit``, or rich's M-of-N without ``unit``),
    the ``fields`` templates (``"loss {task.fields[loss]:.4f}"``, fields given to ``start`` and
    ``advance``), ``rate`` (``"<n> clips/s"`` when set to ``"clips/s"``), elapsed time with
    ``elapsed``, and the time remaining.
    """

    def __init__(
        self,
        enabled: bool,
        *,
        unit: str | None = None,
        fields: Sequence[str] = (),
        rate: str | None = None,
        elapsed: bool = False,
        transient: bool = False,
    ) -> None:
        self.enabled = enabled
        self.unit, self.fields, self.rate = unit, tuple(fields), rate
        self.elapsed, self.transient = elapsed, transient
        self._bar: Any = None
        self._task: Any = None
        self._t0 = 0.0
        self._count = 0

    def start(self, description: str, total: int, **fields: Any) -> None:
        if not self.enabled:
            return
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        from east.cli.common import err_console

        count = (
            TextColumn(f"{{task.completed}}/{{task.total}} {self.unit}")
            if self.unit
            else MofNCompleteColumn()
        )
        columns: list[Any] = [TextColumn("{task.description}"), BarColumn(), count]
        columns += [TextColumn(f) for f in self.fields]
        if self.rate:
            columns.append(TextColumn(f"{{task.fields[rate]}} {self.rate}"))
            fields.setdefault("rate", "-")
        if self.elapsed:
            columns += [TimeElapsedColumn(), TextColumn("ETA")]
        columns.append(TimeRemainingColumn())
        self._bar = Progress(*columns, console=err_console, transient=self.transient)
        self._bar.start()
        self._task = self._bar.add_task(description, total=total, **fields)
        self._t0, self._count = time.perf_counter(), 0

    def started(self, description: str, total: int, **fields: Any) -> ProgressBar:
        self.start(description, total, **fields)
        return self

    def advance(self, n: int = 1, **fields: Any) -> None:
        if self._bar is None:
            return
        if self.rate:
            self._count += n
            rate = self._count / max(time.perf_counter() - self._t0, 1e-9)
            fields["rate"] = f"{rate:.1f}"
        self._bar.update(self._task, advance=n, **fields)

    def stop(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None

    def log(self, text: str) -> None:
        if self.enabled:
            from east.cli.common import err_console

            err_console.print(text, highlight=False)

    def __enter__(self) -> ProgressBar:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
