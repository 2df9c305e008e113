"""Decode every clip of a manifest in worker processes and collect the unreadable ones."""

from __future__ import annotations

import os
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing import get_context

from east.datasets.base import Manifest


@dataclass(frozen=True)
class BadClip:
    index: int  # row in the manifest
    clip_id: str
    rel_path: str
    reason: str


def check_clip(path: str) -> str | None:
    """``None`` when ``path`` decodes, else the reason it does not."""
    from east.audio import load_audio
    from east.errors import AudioError

    try:
        load_audio(path)
    except AudioError as exc:
        return exc.reason
    except Exception as exc:  # a check reports every failure, it never crashes
        return f"unexpected {type(exc).__name__}: {exc}"
    return None


def _silence_native_stderr() -> None:
    # libmpg123 prints warnings straight to file descriptor 2 from C; in workers they would
    # garble the progress bar, and every problem is reported as a reason anyway.
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    os.close(devnull)


def default_workers() -> int:
    return max(1, min(8, os.cpu_count() or 1))


def check_manifest_audio(
    manifest: Manifest,
    workers: int | None = None,
    on_progress: Callable[[int], None] | None = None,
) -> list[BadClip]:
    """Decode every clip (``workers`` processes; 1 = in this process); return the bad ones.

    ``on_progress(n)`` is called after every ``n`` clips checked, in manifest order.
    """
    workers = workers or default_workers()
    paths = [str(manifest.audio_path(i)) for i in range(len(manifest))]
    bad: list[BadClip] = []

    def record(i: int, reason: str | None) -> None:
        if reason is not None:
            bad.append(BadClip(i, manifest.clip_ids[i], manifest.rel_paths[i], reason))
        if on_progress is not None:
            on_progress(1)

    if workers == 1 or len(paths) < 2:
        for i, path in enumerate(paths):
            record(i, check_clip(path))
        return bad
    # spawn, not fork: the parent may run threads (the progress bar) that fork would copy
    chunk = max(1, min(16, len(paths) // (4 * workers)))
    with ProcessPoolExecutor(
        max_workers=min(workers, len(paths)),
        mp_context=get_context("spawn"),
        initializer=_silence_native_stderr,
    ) as pool:
        for i, reason in enumerate(pool.map(check_clip, paths, chunksize=chunk)):
            record(i, reason)
    return bad
