"""The clip cache: per-clip teacher embeddings, content-addressed (version 1).

A persistent cache that ``east serve`` and ``east extract --clip-cache`` share, so the same
audio embedded by the same teacher is computed once. See ``docs/clip_cache.md``; in short::

    <root>/clip_cache.json                      {"kind": "east-clip-cache", "version": 1}
    <root>/<identity-id>/identity.json          the teacher identity of the group
    <root>/<identity-id>/<sha[:2]>/<sha>.npz    one clip: embeddings, frame_times, ...

* **Key**: the sha256 of the audio file's bytes (``sha``) and the teacher's *identity*
  (:func:`identity_of`: teacher name, weights sha256, sample rate, window, hop, clip level,
  stored dtype, crop, this module's :data:`VERSION`), hashed canonically into ``identity-id``.
* **Value** (:class:`ClipEntry`): ``embeddings`` (T, D) in the identity's dtype,
  ``frame_times`` (T, 2) float64 seconds, ``num_samples`` (samples the teacher saw).
* **Integrity**: each entry stores a BLAKE2b checksum over its key and arrays; an entry that is
  torn, truncated, corrupt, changed or moved to another key reads as absent (``get`` returns
  ``None``) and :meth:`ClipCache.verify` names it.
* **Concurrency and crashes**: an entry is written to a unique temp file in its own folder
  (``.east-tmp-<32 hex>.<ext>``), fsynced and renamed into place, so any number of threads
  and processes may write at once (the same key holds the same value; the last rename wins)
  and a writer killed at any moment leaves at most a temp file, which readers never look at
  and :meth:`ClipCache.repair` removes once it is older than :data:`TEMP_GRACE_S`.
* **Your files are safe**: a root that is a file, or a non-empty folder without
  ``clip_cache.json``, is refused; nothing but east's own entries and temp files is ever
  removed or replaced.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from east import __version__
from east.errors import CacheError

__all__ = [
    "DTYPES",
    "MARKER",
    "TEMP_GRACE_S",
    "VERSION",
    "CacheSummary",
    "ClipCache",
    "ClipEntry",
    "GroupSummary",
    "VerifyReport",
    "identity_id",
    "identity_of",
    "is_clip_cache",
    "make_identity",
    "sha256_bytes",
    "sha256_file",
]

VERSION = 1
KIND = "east-clip-cache"
MARKER = "clip_cache.json"
IDENTITY_FILE = "identity.json"
DTYPES = ("float16", "float32")
TEMP_GRACE_S = 600.0  # a temp file younger than this may belong to a live writer
IDENTITY_KEYS = (
    "teacher",
    "weights_sha256",
    "sample_rate",
    "window_s",
    "hop_s",
    "clip_level",
    "framing",
    "dtype",
    "max_seconds",
    "clip_cache_version",
)

_SHA_RE = re.compile(r"[0-9a-f]{64}")
_GROUP_RE = re.compile(r"[0-9a-f]{16}")
_SHARD_RE = re.compile(r"[0-9a-f]{2}")
_ENTRY_RE = re.compile(r"([0-9a-f]{64})\.npz")
_TEMP_RE = re.compile(r"\.east-tmp-[0-9a-f]{32}\.(npz|json)")
_ARRAYS = ("embeddings", "frame_times", "num_samples", "version", "digest")

# ---------------------------------------------------------------------------- hashing


def sha256_bytes(data: bytes | bytearray | memoryview) -> str:
    """Hex sha256 of ``data`` (the clip key of an uploaded file)."""
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | os.PathLike[str], block: int = 1 << 20) -> str:
    """Hex sha256 of a file's bytes, read in blocks (the clip key of a file on disk)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(block):
            h.update(chunk)
    return h.hexdigest()


# ---------------------------------------------------------------------------- identity


def make_identity(
    teacher: str,
    weights_sha256: str,
    sample_rate: int,
    window_s: float | None,
    hop_s: float | None,
    *,
    clip_level: bool | None = None,
    dtype: str = "float16",
    max_seconds: float | None = None,
    framing: str | None = None,
) -> dict[str, Any]:
    """The identity of a teacher's embeddings, normalised (ints stay ints, times are floats).

    ``max_seconds``: the crop the caller applies before embedding (``None``: whole clips); a
    cropped embedding is another value for the same file, so it is another identity."""
    if dtype not in DTYPES:
        raise ValueError(f"clip cache dtype must be one of {', '.join(DTYPES)}, not {dtype!r}")
    return {
        "teacher": str(teacher),
        "weights_sha256": str(weights_sha256),
        "sample_rate": int(sample_rate),
        "window_s": None if window_s is None else float(window_s),
        "hop_s": None if hop_s is None else float(hop_s),
        "clip_level": bool(window_s is None if clip_level is None else clip_level),
        # how windows are cut (PaSST/OpenL3: official centred or uncentred): other frames
        "framing": None if framing is None else str(framing),
        "dtype": dtype,
        "max_seconds": None if max_seconds is None else float(max_seconds),
        "clip_cache_version": VERSION,
    }


def identity_of(
    teacher: Any, dtype: str = "float16", max_seconds: float | None = None
) -> dict[str, Any]:
    """The identity of an east teacher object (``teacher.info`` and ``teacher.weights_sha256``)."""
    info = teacher.info
    return make_identity(
        info.name,
        getattr(teacher, "weights_sha256", "random"),
        info.sample_rate,
        info.window_s,
        info.hop_s,
        clip_level=info.clip_level,
        dtype=dtype,
        max_seconds=max_seconds,
        framing=getattr(info, "framing", None),
    )


def _canonical(identity: dict[str, Any]) -> str:
    missing = [k for k in IDENTITY_KEYS if k not in identity]
    if missing:
        raise ValueError(f"clip cache identity lacks {', '.join(missing)} (use identity_of)")
    if identity["dtype"] not in DTYPES:
        raise ValueError(f"clip cache identity dtype {identity['dtype']!r} is not supported")
    picked = {k: identity[k] for k in IDENTITY_KEYS}
    return json.dumps(picked, sort_keys=True, separators=(",", ":"), allow_nan=False)


def identity_id(identity: dict[str, Any]) -> str:
    """The short id (16 hex chars) of an identity: sha256 of its canonical (sorted) JSON."""
    return hashlib.sha256(_canonical(identity).encode()).hexdigest()[:16]


# ---------------------------------------------------------------------------- values


@dataclass(frozen=True)
class ClipEntry:
    """One cached clip: ``embeddings`` (T, D), ``frame_times`` (T, 2) float64 seconds."""

    embeddings: np.ndarray
    frame_times: np.ndarray
    num_samples: int

    @property
    def num_frames(self) -> int:
        return int(self.embeddings.shape[0])


def _digest(group: str, clip_sha256: str, arrays: list[np.ndarray]) -> np.ndarray:
    """16-byte BLAKE2b over the entry's key and arrays (dtype, shape and bytes of each)."""
    h = hashlib.blake2b(digest_size=16)
    h.update(f"{KIND}\0{VERSION}\0{group}\0{clip_sha256}".encode())
    for arr in arrays:
        arr = np.ascontiguousarray(arr)
        h.update(f"\0{arr.dtype.str}{arr.shape}\0".encode())
        h.update(arr.tobytes())
    return np.frombuffer(h.digest(), dtype=np.uint8)


def _check_sha(clip_sha256: str) -> str:
    if not isinstance(clip_sha256, str) or not _SHA_RE.fullmatch(clip_sha256):
        raise ValueError(f"clip key must be 64 lowercase hex chars (a sha256), not {clip_sha256!r}")
    return clip_sha256


def _prepare(
    identity: dict[str, Any], embeddings: Any, frame_times: Any, num_samples: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    emb = np.ascontiguousarray(np.asarray(embeddings).astype(identity["dtype"], copy=False))
    times = np.ascontiguousarray(np.asarray(frame_times, dtype=np.float64))
    if emb.ndim != 2 or emb.shape[0] < 1:
        raise ValueError(f"embeddings must be (T, D) with T >= 1, not {emb.shape}")
    if times.shape != (emb.shape[0], 2):
        raise ValueError(f"frame_times must be ({emb.shape[0]}, 2), not {times.shape}")
    if not (np.isfinite(emb).all() and np.isfinite(times).all()):
        raise ValueError("embeddings and frame_times must be finite")
    if int(num_samples) < 0:
        raise ValueError(f"num_samples must be >= 0, not {num_samples}")
    return emb, times, np.asarray(int(num_samples), dtype=np.int64)


def _read_entry(
    path: Path, group: str, clip_sha256: str, dtype: str | None = None
) -> tuple[ClipEntry | None, str]:
    """``(entry, "")`` for a sound entry, ``(None, reason)`` otherwise; never raises."""
    try:
        with np.load(path, allow_pickle=False) as z:
            if sorted(z.files) != sorted(_ARRAYS):
                return None, f"unexpected arrays {sorted(z.files)}"
            arrays = {name: z[name] for name in _ARRAYS}
    except FileNotFoundError:
        return None, "missing"
    except Exception as exc:  # torn/garbage zip, bad npy header, I/O error
        return None, f"unreadable ({type(exc).__name__})"
    return _check_entry(arrays, group, clip_sha256, dtype)


def _check_entry(
    a: dict[str, np.ndarray], group: str, clip_sha256: str, dtype: str | None
) -> tuple[ClipEntry | None, str]:
    emb, times, ns = a["embeddings"], a["frame_times"], a["num_samples"]
    if a["version"].shape != () or int(a["version"]) != VERSION:
        return None, f"entry version {a['version']!r}, not {VERSION}"
    if emb.dtype.name not in DTYPES or (dtype is not None and emb.dtype.name != dtype):
        return None, f"embeddings dtype {emb.dtype}, not {dtype or ' or '.join(DTYPES)}"
    if emb.ndim != 2 or times.shape != (emb.shape[0], 2) or times.dtype != np.float64:
        return None, f"shapes {emb.shape} / {times.shape} do not fit"
    if ns.shape != () or ns.dtype != np.int64:
        return None, "num_samples is not an int64 scalar"
    if not np.array_equal(a["digest"], _digest(group, clip_sha256, [emb, times, ns])):
        return None, "checksum mismatch (changed, corrupt or moved)"
    return ClipEntry(emb, times, int(ns)), ""


# ---------------------------------------------------------------------------- atomic writes


def _temp_name(suffix: str) -> str:
    return f".east-tmp-{uuid.uuid4().hex}.{suffix}"


def _fsync_dir(folder: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _atomic_write(final: Path, write: Callable[[BinaryIO], object], suffix: str) -> None:
    """Write ``final`` through a unique temp file in its folder: write, fsync, rename."""
    tmp = final.parent / _temp_name(suffix)
    try:
        with open(tmp, "xb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, final)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    _fsync_dir(final.parent)


def _write_json(final: Path, record: dict[str, Any]) -> None:
    data = (json.dumps(record, indent=2, sort_keys=True) + "\n").encode()
    _atomic_write(final, lambda f: f.write(data), "json")


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def is_clip_cache(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is a local folder marked as a clip cache (holds ``clip_cache.json``)."""
    text = os.fspath(path)
    if "://" in text and not text.startswith("file://"):
        return False
    return (Path(text.removeprefix("file://")).expanduser() / MARKER).is_file()


# ---------------------------------------------------------------------------- reports


@dataclass
class GroupSummary:
    """One identity group: its id, identity (``None`` when ``identity.json`` is unreadable)."""

    id: str
    identity: dict[str, Any] | None
    entries: int
    bytes: int


@dataclass
class CacheSummary:
    root: Path
    version: int
    groups: list[GroupSummary]

    @property
    def entries(self) -> int:
        return sum(g.entries for g in self.groups)

    @property
    def bytes(self) -> int:
        return sum(g.bytes for g in self.groups)


@dataclass
class VerifyReport:
    """What :meth:`ClipCache.verify` found; ``ok`` when no entry or identity is damaged.

    ``damaged``: ``(group id, clip sha256, reason)`` of each entry that reads as absent;
    ``stale_temp``: east temp files older than :data:`TEMP_GRACE_S` (killed writers);
    ``notes``: facts that are not problems (temp files in flight, foreign files left alone).
    """

    root: Path
    groups: int = 0
    entries: int = 0
    damaged: list[tuple[str, str, str]] = field(default_factory=list)
    bad_identity: list[str] = field(default_factory=list)
    stale_temp: list[Path] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def sound(self) -> int:
        return self.entries - len(self.damaged)

    @property
    def problems(self) -> list[str]:
        out = [f"group {g} entry {sha}: {reason}" for g, sha, reason in self.damaged]
        out += [f"group {g}: {IDENTITY_FILE} is missing or damaged" for g in self.bad_identity]
        return out

    @property
    def ok(self) -> bool:
        return not self.problems


# ---------------------------------------------------------------------------- the cache


class ClipCache:
    """The clip cache at ``root`` (a local folder), created when absent or empty if ``create``.

    Refuses (:class:`CacheError`, one line) a root that is a file, a non-empty folder that is
    not a clip cache, or a clip cache of a newer version."""

    def __init__(self, root: str | os.PathLike[str], create: bool = True) -> None:
        self.root = Path(os.fspath(root).removeprefix("file://")).expanduser()
        self._known_groups: set[str] = set()
        self.version: int = VERSION
        self._open(create)

    # --- opening
    def _open(self, create: bool) -> None:
        root = self.root
        if root.exists() and not root.is_dir():
            raise CacheError(f"clip cache root {root} is a file; name a folder")
        if (root / MARKER).is_file():
            self._check_marker()
        elif not create:
            raise CacheError(f"no clip cache at {root} (no {MARKER})")
        elif root.is_dir() and self._foreign_entries():
            if (root / MARKER).is_file():  # another process created the cache meanwhile
                self._check_marker()
                return
            raise CacheError(
                f"{root} is a non-empty folder that is not a clip cache (no {MARKER}); "
                "name an empty or new folder"
            )
        else:
            self._create()

    def _foreign_entries(self) -> list[str]:
        return [p.name for p in self.root.iterdir() if not _TEMP_RE.fullmatch(p.name)]

    def _create(self) -> None:
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            _write_json(self.root / MARKER, {"kind": KIND, "version": VERSION, "east": __version__})
            self.version = VERSION
        except OSError as exc:
            raise CacheError(
                f"cannot create clip cache {self.root}: {exc.strerror or exc}"
            ) from None

    def _check_marker(self) -> None:
        record = _read_json(self.root / MARKER)
        if record is None or record.get("kind") != KIND:
            raise CacheError(f"{self.root / MARKER} is not an east clip-cache marker")
        version = record.get("version")
        if not isinstance(version, int) or isinstance(version, bool) or version < 1:
            raise CacheError(f"{self.root / MARKER}: version {version!r} is not valid")
        if version > VERSION:
            raise CacheError(
                f"clip cache {self.root} has version {version}; this east reads up to "
                f"{VERSION} (upgrade east)"
            )
        self.version = version

    # --- paths
    def path_of(self, clip_sha256: str, identity: dict[str, Any]) -> Path:
        """Where the entry of ``(clip_sha256, identity)`` lives (whether or not it exists)."""
        sha = _check_sha(clip_sha256)
        return self.root / identity_id(identity) / sha[:2] / f"{sha}.npz"

    # --- reading
    def get(self, clip_sha256: str, identity: dict[str, Any]) -> ClipEntry | None:
        """The cached entry, or ``None`` when absent, torn, corrupt or for another key.

        Raises only :class:`ValueError` for a malformed key or identity (a caller's bug)."""
        path = self.path_of(clip_sha256, identity)
        entry, _ = _read_entry(path, path.parent.parent.name, clip_sha256, identity["dtype"])
        return entry

    def __contains__(self, key: tuple[str, dict[str, Any]]) -> bool:
        return self.get(*key) is not None

    # --- writing
    def put(
        self,
        clip_sha256: str,
        identity: dict[str, Any],
        embeddings: Any,
        frame_times: Any,
        num_samples: int,
    ) -> Path:
        """Store one clip atomically (embeddings cast to the identity's dtype); returns its path.

        Bad arguments raise :class:`ValueError`; a failed write (full disk, permissions) raises
        :class:`CacheError` and leaves no partial entry behind."""
        path = self.path_of(clip_sha256, identity)
        emb, times, ns = _prepare(identity, embeddings, frame_times, num_samples)
        group = path.parent.parent.name
        digest = _digest(group, clip_sha256, [emb, times, ns])
        arrays = {"embeddings": emb, "frame_times": times, "num_samples": ns}
        version = np.asarray(VERSION, dtype=np.int64)

        def write(f: BinaryIO) -> None:
            np.savez(f, version=version, digest=digest, **arrays)

        try:
            self._ensure_group(group, identity)
            path.parent.mkdir(exist_ok=True)
            _atomic_write(path, write, "npz")
        except OSError as exc:
            raise CacheError(
                f"cannot write clip cache entry {path}: {exc.strerror or exc}"
            ) from None
        return path

    def _ensure_group(self, group: str, identity: dict[str, Any]) -> None:
        """Create the group folder and (re)write its ``identity.json`` unless it is sound."""
        if group in self._known_groups:
            return
        folder = self.root / group
        folder.mkdir(exist_ok=True)
        record = _read_json(folder / IDENTITY_FILE)
        if record is None or _safe_id(record) != group:
            _write_json(folder / IDENTITY_FILE, {k: identity[k] for k in IDENTITY_KEYS})
        self._known_groups.add(group)

    # --- walking
    def _groups(self, notes: list[str] | None = None) -> Iterator[Path]:
        for p in sorted(self.root.iterdir()):
            if p.is_dir() and _GROUP_RE.fullmatch(p.name):
                yield p
            elif notes is not None and p.name != MARKER and not _TEMP_RE.fullmatch(p.name):
                notes.append(f"{p.name}: not part of the clip cache (left alone)")

    def _files(self, group: Path, notes: list[str] | None = None) -> Iterator[tuple[str, Path]]:
        """``(kind, path)`` for each file of a group: ``entry``, ``temp`` (foreign: noted)."""
        for shard in sorted(group.iterdir()):
            if shard.name == IDENTITY_FILE or _TEMP_RE.fullmatch(shard.name):
                if shard.name != IDENTITY_FILE:
                    yield "temp", shard
                continue
            if not (shard.is_dir() and _SHARD_RE.fullmatch(shard.name)):
                _note_foreign(notes, shard, self.root)
                continue
            for p in sorted(shard.iterdir()):
                m = _ENTRY_RE.fullmatch(p.name)
                if m and m.group(1)[:2] == shard.name and p.is_file():
                    yield "entry", p
                elif _TEMP_RE.fullmatch(p.name) and p.is_file():
                    yield "temp", p
                else:
                    _note_foreign(notes, p, self.root)

    # --- summaries
    def info(self) -> CacheSummary:
        """Groups (identity, entries, bytes on disk); reads no entry."""
        groups = []
        for folder in self._groups():
            entries = [p for kind, p in self._files(folder) if kind == "entry"]
            size = sum(_size(p) for p in entries)
            identity = _read_json(folder / IDENTITY_FILE)
            if identity is not None and _safe_id(identity) != folder.name:
                identity = None
            groups.append(GroupSummary(folder.name, identity, len(entries), size))
        return CacheSummary(self.root, self.version, groups)

    def verify(self) -> VerifyReport:
        """Read every entry and check it (checksum, key, shapes, dtype); changes nothing."""
        report = VerifyReport(self.root)
        fresh = 0
        for folder in self._groups(report.notes):
            report.groups += 1
            identity = _read_json(folder / IDENTITY_FILE)
            if identity is None or _safe_id(identity) != folder.name:
                report.bad_identity.append(folder.name)
                identity = None
            dtype = identity["dtype"] if identity else None
            for kind, path in self._files(folder, report.notes):
                if kind == "temp":
                    if _age(path) >= TEMP_GRACE_S:
                        report.stale_temp.append(path)
                    else:
                        fresh += 1
                    continue
                report.entries += 1
                sha = path.name[:64]
                entry, reason = _read_entry(path, folder.name, sha, dtype)
                if entry is None:
                    report.damaged.append((folder.name, sha, reason))
        if report.stale_temp:
            report.notes.append(
                f"{len(report.stale_temp)} leftover temp files of interrupted writers "
                "(removed by repair)"
            )
        if fresh:
            report.notes.append(f"{fresh} temp files of writers in progress (left alone)")
        return report

    def repair(self, report: VerifyReport | None = None) -> tuple[int, int]:
        """Remove the damaged entries (recomputed on demand) and stale east temp files; returns
        ``(entries removed, temp files removed)``. An entry rewritten soundly since the report
        is kept; a damaged ``identity.json`` is left for the next put to the group to rewrite."""
        report = report or self.verify()
        removed = 0
        for group, sha, _ in report.damaged:
            path = self.root / group / sha[:2] / f"{sha}.npz"
            if _read_entry(path, group, sha)[0] is None and _unlink(path):
                removed += 1
        temps = sum(1 for p in report.stale_temp if _TEMP_RE.fullmatch(p.name) and _unlink(p))
        return removed, temps


# ---------------------------------------------------------------------------- small helpers


def _safe_id(record: dict[str, Any]) -> str | None:
    try:
        return identity_id(record)
    except (ValueError, TypeError):
        return None


def _note_foreign(notes: list[str] | None, path: Path, root: Path) -> None:
    if notes is not None:
        notes.append(f"{path.relative_to(root)}: not part of the clip cache (left alone)")


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _age(path: Path) -> float:
    try:
        return time.time() - path.stat().st_mtime
    except OSError:
        return 0.0


def _unlink(path: Path) -> bool:
    try:
        path.unlink()
    except OSError:
        return False
    return True
