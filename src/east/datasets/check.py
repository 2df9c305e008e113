"""Decode every clip of a manifest in worker processes and collect the unreadable ones, and
the clips whose length is far from the dataset's nominal clip length."""

from __future__ import annotations

import os
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from multiprocessing import get_context

from east.datasets.base import Manifest

# A clip is "off length" below half or above twice the nominal length: truncated Ogg and CBR
# MP3 files decode without error (their headers cannot tell), but not to half their length.
SHORT_FRACTION = 0.5
LONG_FACTOR = 2.0


@dataclass(frozen=True)
class BadClip:
    index: int  # row in the manifest
    clip_id: str
    rel_path: str
    reason: str


@dataclass(frozen=True)
class OffLengthClip:
    index: int  # row in the manifest
    clip_id: str
    rel_path: str
    seconds: float  # decoded duration


@dataclass
class CheckReport:
    bad: list[BadClip] = field(default_factory=list)
    off_length: list[OffLengthClip] = field(default_factory=list)


def probe_clip(path: str) -> tuple[str | None, float | None]:
    """``(None, seconds)`` when ``path`` decodes, else ``(reason, None)``."""
    from east.audio import audio_info, load_audio
    from east.errors import AudioError

    try:
        sr = audio_info(path)[0]
        return None, len(load_audio(path)) / sr
    except AudioError as exc:
        return exc.reason, None
    except Exception as exc:  # a check reports every failure, it never crashes
        return f"unexpected {type(exc).__name__}: {exc}", None


def check_clip(path: str) -> str | None:
    """``None`` when ``path`` decodes, else the reason it does not."""
    return probe_clip(path)[0]


def is_off_length(seconds: float, nominal: float) -> bool:
    return seconds < SHORT_FRACTION * nominal or seconds > LONG_FACTOR * nominal


def _silence_native_stderr() -> None:
    # libmpg123 prints warnings straight to file descriptor 2 from C; in workers they would
    # garble the progress bar, and every problem is reported as a reason anyway.
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    os.close(devnull)


def default_workers() -> int:
    return max(1, min(8, os.cpu_count() or 1))


def check_manifest(
    manifest: Manifest,
    workers: int | None = None,
    on_progress: Callable[[int], None] | None = None,
    nominal_seconds: float | None = None,
) -> CheckReport:
    """Decode every clip (``workers`` processes; 1 = in this process).

    Returns the clips that do not decode and, given ``nominal_seconds``, those that decode to
    less than half or more than twice that. ``on_progress(n)`` is called after every ``n``
    clips checked, in manifest order.
    """
    workers = workers or default_workers()
    paths = [str(manifest.audio_path(i)) for i in range(len(manifest))]
    report = CheckReport()

    def record(i: int, result: tuple[str | None, float | None]) -> None:
        reason, seconds = result
        cid, rel = manifest.clip_ids[i], manifest.rel_paths[i]
        if reason is not None:
            report.bad.append(BadClip(i, cid, rel, reason))
        elif nominal_seconds and seconds is not None and is_off_length(seconds, nominal_seconds):
            report.off_length.append(OffLengthClip(i, cid, rel, seconds))
        if on_progress is not None:
            on_progress(1)

    if workers == 1 or len(paths) < 2:
        for i, path in enumerate(paths):
            record(i, probe_clip(path))
        return report
    # spawn, not fork: the parent may run threads (the progress bar) that fork would copy
    chunk = max(1, min(16, len(paths) // (4 * workers)))
    with ProcessPoolExecutor(
        max_workers=min(workers, len(paths)),
        mp_context=get_context("spawn"),
        initializer=_silence_native_stderr,
    ) as pool:
        for i, result in enumerate(pool.map(probe_clip, paths, chunksize=chunk)):
            record(i, result)
    return report


def check_manifest_audio(
    manifest: Manifest,
    workers: int | None = None,
    on_progress: Callable[[int], None] | None = None,
) -> list[BadClip]:
    """The clips of ``manifest`` that do not decode (see :func:`check_manifest`)."""
    return check_manifest(manifest, workers, on_progress).bad
