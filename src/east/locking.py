"""One writer at a time: the lock of a store or a run directory.

A :class:`WriterLock` is an exclusive, non-blocking ``flock`` (through the ``filelock``
package) on a lock file, plus an *owner record* beside it (``<lock>.owner.json``: pid, host,
start time, command) so that a refused writer can say who holds it. What it guarantees and
what it does not (``docs/cache_schema.md``, "Writers"):

* The kernel drops the lock when its process dies, however it dies (SIGKILL included), so a
  stale lock never needs cleaning: the next writer simply gets it and rewrites the record.
* Processes forked while the lock is held (decode workers) share it; east makes them die with
  their parent (:func:`die_with_parent`), so they cannot keep a dead writer's lock alive.
* Only local paths are locked. An fsspec URL (``s3://``, ``memory://``) has no lock: one writer
  per store is then the caller's job (the dask path still has one coordinator per store).
* The lock file is never deleted (deleting a held lock's path would let a second process lock a
  new file of the same name); it is an empty file east made and owns.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import os
import socket
import sys
import time
from pathlib import Path
from typing import Any

from east.errors import EastError

__all__ = ["LockBusy", "WriterLock", "die_with_parent", "store_lock_path"]


class LockBusy(EastError):
    """Another live process holds the lock; the message names it."""


def store_lock_path(store: str | os.PathLike[str]) -> Path | None:
    """``<store>.lock`` beside a local store folder; ``None`` for remote URLs (no lock)."""
    text = str(store)
    if text.startswith("file://"):
        text = text[len("file://") :]
    elif "://" in text:
        return None
    text = text.rstrip("/") or "/"
    return Path(text + ".lock").expanduser()


class WriterLock:
    """Exclusive lock on ``lock_file`` held by this process; refuses (``LockBusy``) at once when
    another process holds it. ``what`` names the locked thing in messages ("store X")."""

    def __init__(self, lock_file: str | os.PathLike[str], what: str) -> None:
        self.path = Path(lock_file)
        self.owner_path = self.path.with_name(self.path.name + ".owner.json")
        self.what = what
        self._lock: Any = None

    def acquire(self) -> WriterLock:
        from filelock import FileLock, Timeout

        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            lock = FileLock(str(self.path), timeout=0, thread_local=False)
            lock.acquire()
        except Timeout:
            raise LockBusy(f"{self.what} is in use: {self.holder()}") from None
        except OSError as exc:
            raise EastError(
                f"cannot lock {self.what} ({self.path}: {exc.strerror or exc})"
            ) from None
        self._lock = lock
        self._write_owner()
        return self

    def holder(self, wait_s: float = 2.0) -> str:
        """The owner record as words (what a refused writer prints). The holder writes its
        record just after taking the lock, so a missing record is waited for a moment."""
        deadline = time.monotonic() + wait_s
        while True:
            try:
                rec = json.loads(self.owner_path.read_text())
                return (
                    f"held by pid {rec['pid']} on {rec['host']} since {rec['since']} "
                    f"({rec.get('command', '?')}); wait for it to finish or stop it"
                )
            except (OSError, ValueError, KeyError, TypeError):
                if time.monotonic() >= deadline:
                    return f"held by another process (lock file {self.path})"
                time.sleep(0.05)

    def _write_owner(self) -> None:
        record = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "since": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
            "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]])[:300],
        }
        tmp = self.owner_path.with_name(f".{self.owner_path.name}.{os.getpid()}.tmp")
        with contextlib.suppress(OSError):  # the record is a courtesy; the flock is the lock
            tmp.write_text(json.dumps(record))
            os.replace(tmp, self.owner_path)

    def release(self) -> None:
        if self._lock is None:
            return
        with contextlib.suppress(OSError):
            self.owner_path.unlink()
        self._lock.release()
        self._lock = None

    @property
    def held(self) -> bool:
        return self._lock is not None

    def __enter__(self) -> WriterLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def die_with_parent() -> None:
    """Ask the kernel to SIGKILL this process when its parent dies (Linux; a no-op elsewhere).

    Called first thing in every worker process east forks, so that a SIGKILLed ``east``
    leaves no workers behind (holding memory and the parent's store lock)."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes
    import signal

    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, int(signal.SIGKILL), 0, 0, 0)
