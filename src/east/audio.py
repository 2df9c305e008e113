"""Audio decoding: any file soundfile reads (WAV, FLAC, Ogg/Vorbis, MP3) to float32 mono.

Every problem with a file becomes an :class:`east.errors.AudioError` that names the file and
the reason (missing, empty, not audio, truncated or corrupt, non-finite or absurdly large
samples, too short), so that callers never see a raw libsndfile or soxr traceback, and the
C decoders' own warnings (libmpg123 writes them to file descriptor 2) never reach the
terminal beside east's one line. Silent audio is valid.
"""

from __future__ import annotations

import math
import os
import re
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Literal

import numpy as np
import soundfile as sf
import soxr

from east.errors import AudioError

__all__ = [
    "MAX_PEAK",
    "CropMode",
    "audio_info",
    "crop_or_pad",
    "load_audio",
    "num_samples",
    "quiet_native_stderr",
]

CropMode = Literal["start", "center", "random"]

# libsndfile logs "data : <declared> (should be <actual>)" when a WAV file ends before the
# length its header declares; it then silently reads only what is there.
_WAV_SHORT = re.compile(r"data\s*:\s*(\d+)\s*\(should be (\d+)\)")
# MP3 frame counts come from the Xing/Info header or, without one, an estimate from the file
# size and bitrate (ID3 tags included), so honest files may decode a little less than
# promised: allow a few MPEG frames (1152 samples each) or 2 % of the length.
_MP3_SLACK_FRAMES = 4 * 1152
_MP3_SLACK_FRACTION = 0.02
# Full scale is ±1. Lossy decoders overshoot it a little and float files may hold a few times
# it, but no recording reaches 64 (+36 dB): beyond that the file is corrupt or a float file
# written in integer scale (±32768), and training on it would diverge.
MAX_PEAK = 64.0

_quiet_lock = threading.Lock()
_quiet_depth = 0  # threads inside quiet_native_stderr()
_quiet_saved: int | None = None  # the real fd 2 while redirected


@contextmanager
def quiet_native_stderr() -> Iterator[None]:
    """Send what C code writes to file descriptor 2 to /dev/null while the block runs.

    libmpg123 prints warnings such as "Xing stream size off by more than 1%" straight to
    fd 2; every problem becomes an AudioError anyway. Nesting and threads are counted: the
    first one in redirects, the last one out restores, so a thread pool of decoders never
    leaves fd 2 pointing at /dev/null. While any decoder runs, other threads' stderr output is
    discarded too (Python's own ``sys.stderr`` is flushed first).
    """
    global _quiet_depth, _quiet_saved
    with _quiet_lock:
        if _quiet_depth == 0:
            _quiet_saved = _redirect_fd2()
        _quiet_depth += 1
    try:
        yield
    finally:
        with _quiet_lock:
            _quiet_depth = max(0, _quiet_depth - 1)  # 0 in a child forked inside a block
            if _quiet_depth == 0 and _quiet_saved is not None:
                os.dup2(_quiet_saved, 2)
                os.close(_quiet_saved)
                _quiet_saved = None


def _reset_after_fork() -> None:
    # a forked child has none of the parent's decoding threads: give it its real fd 2 back
    global _quiet_lock, _quiet_depth, _quiet_saved
    _quiet_lock = threading.Lock()
    if _quiet_saved is not None:
        os.dup2(_quiet_saved, 2)
        os.close(_quiet_saved)
    _quiet_depth, _quiet_saved = 0, None


os.register_at_fork(after_in_child=_reset_after_fork)


def _redirect_fd2() -> int | None:
    """Point fd 2 at /dev/null; return a copy of the old one (``None`` if fd 2 is closed)."""
    try:
        if sys.stderr is not None:
            sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):
        return None
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    os.close(devnull)
    return saved


def _check_file(path: Path) -> None:
    if not path.exists():
        raise AudioError(path, "file not found")
    if path.is_dir():
        raise AudioError(path, "is a directory, not an audio file")
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise AudioError(path, f"cannot read file ({exc.strerror})") from None
    if size == 0:
        raise AudioError(path, "empty file (0 bytes)")


def _open_reason(message: str) -> str:
    """Turn a libsndfile open error into a short reason."""
    text = message.lower()
    if "format not recognised" in text or "unimplemented format" in text:
        return "not an audio file (format not recognised)"
    if "not a regular file" in text:
        # libsndfile's mpg123 back-end says this for an MP3 stream it cannot parse
        return "not an audio file or corrupt header"
    if "malformed" in text:
        return "corrupt or truncated audio file (malformed)"
    # keep libsndfile's own wording after the "Error opening '<path>': " prefix
    detail = message.split("': ", 1)[-1].strip().rstrip(".")
    return f"cannot decode ({detail})"


def _open(path: Path) -> sf.SoundFile:
    _check_file(path)
    try:
        return sf.SoundFile(str(path))
    except (sf.SoundFileError, RuntimeError, TypeError, ValueError) as exc:
        raise AudioError(path, _open_reason(str(exc))) from None
    except OSError as exc:
        raise AudioError(path, f"cannot read file ({exc.strerror or exc})") from None


def _declared_frames(handle: sf.SoundFile, path: Path) -> int:
    """Frames the file's header promises; raises when a WAV file is shorter than declared."""
    frames = int(handle.frames)
    if handle.format in ("WAV", "WAVEX", "RF64"):
        match = _WAV_SHORT.search(handle.extra_info)
        if match and int(match.group(2)) < int(match.group(1)):
            raise AudioError(
                path,
                f"truncated: header declares {int(match.group(1))} data bytes, "
                f"file holds {int(match.group(2))}",
            )
    return frames


def audio_info(path: str | os.PathLike[str]) -> tuple[int, int, int]:
    """``(sample_rate, num_frames, channels)`` from the file header, without decoding."""
    path = Path(path)
    with quiet_native_stderr(), _open(path) as handle:
        frames = _declared_frames(handle, path)
        return int(handle.samplerate), frames, int(handle.channels)


def load_audio(
    path: str | os.PathLike[str],
    sr: int | None = None,
    *,
    offset: float = 0.0,
    duration: float | None = None,
    min_duration: float = 0.0,
) -> np.ndarray:
    """Decode ``path`` to a float32 mono ``(L,)`` array.

    Args:
        path: audio file (anything libsndfile decodes: WAV, FLAC, Ogg/Vorbis/Opus, MP3, ...).
        sr: output sample rate; resampled with soxr (``HQ``) when it differs from the file's.
            ``None`` keeps the native rate.
        offset: start, in seconds from the beginning of the file.
        duration: seconds to read from ``offset`` (to the end when ``None``); a file that ends
            earlier gives a shorter array (not an error, unless below ``min_duration``).
        min_duration: seconds the decoded segment must last at least.

    Raises:
        AudioError: missing, empty, not audio, truncated or corrupt file, non-finite samples
            or samples beyond :data:`MAX_PEAK`, offset past the end, or a segment shorter
            than ``min_duration``.
    """
    path = Path(path)
    if offset < 0 or (duration is not None and duration < 0):
        raise ValueError("offset and duration must be non-negative")
    if sr is not None and sr <= 0:
        raise ValueError(f"sample rate must be positive, got {sr}")
    with quiet_native_stderr():
        data, native_sr = _decode(path, offset, duration)
    _check_samples(path, data)
    seconds = len(data) / native_sr
    if seconds < min_duration:
        raise AudioError(path, f"too short: {seconds:.3g} s, minimum is {min_duration:g} s")

    # downmix: the mean keeps the level of a mono signal stored on two identical channels
    mono = data.mean(axis=1) if data.shape[1] > 1 else data[:, 0]
    if sr is not None and sr != native_sr:
        mono = soxr.resample(mono, native_sr, sr, quality="HQ")
    return np.ascontiguousarray(mono, dtype=np.float32)


def _check_samples(path: Path, data: np.ndarray) -> None:
    """Refuse empty, non-finite or absurdly large audio (two vectorised passes, no copy)."""
    if len(data) == 0:
        raise AudioError(path, "contains no audio samples")
    low, high = float(data.min()), float(data.max())  # NaN propagates through both
    if not (math.isfinite(low) and math.isfinite(high)):
        raise AudioError(path, "contains non-finite samples (NaN or inf)")
    peak = max(high, -low)
    if peak > MAX_PEAK:
        raise AudioError(
            path,
            f"samples reach {peak:.3g}, far outside full scale 1.0 (limit {MAX_PEAK:g}): a "
            "corrupt file, or float samples written in integer scale",
        )


def _decode(path: Path, offset: float, duration: float | None) -> tuple[np.ndarray, int]:
    """``(frames, channels)`` float32 samples of the segment and the file's sample rate."""
    with _open(path) as handle:
        native_sr = int(handle.samplerate)
        total = _declared_frames(handle, path)
        if total <= 0:
            raise AudioError(path, "contains no audio samples")
        start = round(offset * native_sr)
        if start >= total:
            raise AudioError(
                path, f"offset {offset:g} s is past the end of the file ({total / native_sr:.3g} s)"
            )
        wanted = total - start
        if duration is not None:
            wanted = min(wanted, round(duration * native_sr))
        try:
            if start:
                handle.seek(start)
            data = handle.read(wanted, dtype="float32", always_2d=True)
        except (sf.SoundFileError, RuntimeError, ValueError) as exc:
            detail = str(exc).split(": ", 1)[-1].strip().rstrip(".") or type(exc).__name__
            raise AudioError(path, f"truncated or corrupt ({detail})") from None
        slack = 0
        if handle.format == "MP3":
            slack = max(_MP3_SLACK_FRAMES, int(_MP3_SLACK_FRACTION * wanted))
        if len(data) + slack < wanted:
            raise AudioError(path, f"truncated: decoded {len(data)} of {wanted} frames")
    return data, native_sr


def crop_or_pad(
    x: np.ndarray,
    length: int,
    mode: CropMode = "start",
    rng: np.random.Generator | int | None = None,
) -> np.ndarray:
    """Crop or zero-pad the last axis of ``x`` to ``length`` samples.

    Cropping keeps the first (``start``), middle (``center``) or a uniformly drawn
    (``random``, from ``rng``) window. Padding appends zeros, except ``center`` which puts
    the signal in the middle.
    """
    if length < 0:
        raise ValueError(f"length must be non-negative, got {length}")
    if mode not in ("start", "center", "random"):
        raise ValueError(f"unknown mode {mode!r}; use 'start', 'center' or 'random'")
    x = np.asarray(x)
    n = x.shape[-1]
    if n == length:
        return x.copy()
    if n > length:
        excess = n - length
        if mode == "start":
            begin = 0
        elif mode == "center":
            begin = excess // 2
        else:
            begin = int(np.random.default_rng(rng).integers(0, excess + 1))
        return x[..., begin : begin + length].copy()
    missing = length - n
    before = missing // 2 if mode == "center" else 0
    pad = [(0, 0)] * (x.ndim - 1) + [(before, missing - before)]
    return np.pad(x, pad)


def num_samples(seconds: float, sr: int) -> int:
    """Samples in ``seconds`` at ``sr`` (rounded to the nearest sample)."""
    return math.floor(seconds * sr + 0.5)
