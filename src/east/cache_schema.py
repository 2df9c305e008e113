"""The embedding cache: the one contract between ``east extract`` and ``east train``.

A cache is a Zarr v3 group (local folder by default, any fsspec URL such as ``s3://`` or
``memory://`` works) holding one teacher's embeddings of one dataset, with clips along the
first axis **in manifest order**. See ``docs/cache_schema.md`` for the full description; in
short (``N`` clips, ``T`` = ``max_frames``, ``D`` = ``dim``, ``C`` = ``chunk_clips``):

=================  ============  =========  ==================================================
array              shape         dtype      meaning
=================  ============  =========  ==================================================
``embeddings``     (N, T, D)     float16    frame embeddings; frames past ``num_frames`` are 0
``frame_times``    (N, T, 2)     float64    start/end seconds of each valid frame, 0 past it
``num_frames``     (N,)          int32      valid frames per clip (T = 1 for clip-level)
``num_samples``    (N,)          int64      decoded samples (at ``sample_rate``) embedded
``length_hint``    (N,)          int64      samples from the file header (-1: unreadable)
``status``         (N,)          uint8      0 pending, 1 done, 2 failed
``failure``        (N,)          str        failure reason ('' unless status 2)
``clip_id``        (N,)          str        the manifest's clip ids
``chunk_digest``   (n_chunks,)   uint64     checksum of each written store chunk (0: none)
=================  ============  =========  ==================================================

Every array is chunked by ``C`` clips (one object/file per chunk, so a 20k-clip dataset is
~20k/C files), and every array's chunk ``k`` covers the same rows ``[k*C, (k+1)*C)``: a
*store chunk*, the unit of writing, of done markers and of training reads.

Crash safety: a store chunk is written in this order: (1) if it holds earlier results, its
``status`` entries are reset to pending; (2) the old data objects of the chunk are deleted;
(3) all data arrays of the chunk are written as whole chunk-aligned blocks; (4) the chunk's
checksum (``chunk_digest``, over the data, ``failure`` and ``status`` as they will read back)
is written; (5) ``failure`` and ``status`` are written last. A reader trusts data only where
``status`` says done, so a SIGKILL at any moment loses at most the store chunk in flight; the
checksum lets :func:`validate` tell a missing, corrupt or changed chunk from a sound one (a
missing chunk object reads as zeros otherwise). Writers of different store chunks touch
disjoint objects, so dask workers can write one store concurrently. An unreadable (torn)
``status`` chunk reads as pending.

Creation never touches what east did not make: a path that holds anything but an east store
of the same kind (a file, a non-empty folder, another zarr group) is refused, with or without
``overwrite``. A local store is built in a hidden sibling folder and renamed into place, so it
appears complete or not at all; a remote one is marked ``east_creating`` until its provenance
attribute ``"east"`` (see :data:`IDENTITY_KEYS`) is written, last. One writer per store is the
caller's job (``east extract`` holds :mod:`east.locking`'s lock while it writes).
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import glob
import hashlib
import math
import os
import shutil
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from east.errors import CacheError

if TYPE_CHECKING:
    import zarr

    from east.datasets.base import Manifest

# 2: chunk checksums (``chunk_digest``); version-1 stores are read, their chunks unchecked
SCHEMA_VERSION = 2
PENDING, DONE, FAILED = 0, 1, 2
DIGEST = "chunk_digest"
DEFAULT_CHUNK_CLIPS = 64
Kind = Literal["embeddings", "audio"]

# attrs that must match for a run to resume into (or a reader to trust) an existing store
IDENTITY_KEYS: dict[str, tuple[str, ...]] = {
    "embeddings": (
        "kind",
        "teacher",
        "weights_sha256",
        "dataset",
        "manifest_hash",
        "num_clips",
        "sample_rate",
        "window_s",
        "hop_s",
        "framing",
        "dim",
        "dtype",
        "max_seconds",
    ),
    "audio": (
        "kind",
        "dataset",
        "manifest_hash",
        "num_clips",
        "sample_rate",
        "dtype",
        "max_seconds",
    ),
}
_DTYPES = ("float16", "float32")

# ---------------------------------------------------------------------------- store access


def _is_url(path: str | Path) -> bool:
    return "://" in str(path)


def _local_path(path: str | Path) -> Path | None:
    """Local folder of ``path`` (``file://`` URLs included), ``None`` for remote URLs."""
    text = str(path)
    if text.startswith("file://"):
        return Path(text[len("file://") :])
    if _is_url(text):
        return None
    return Path(text).expanduser()


def _store(path: str | Path, read_only: bool, storage_options: dict[str, Any] | None) -> Any:
    # LocalStore writes every object atomically (temp file + rename); fsspec's local file
    # system does not, so ``file://`` URLs are served by LocalStore too.
    from zarr.storage import FsspecStore, LocalStore

    local = _local_path(path)
    if local is not None:
        return LocalStore(local, read_only=read_only)
    return FsspecStore.from_url(str(path), storage_options=storage_options, read_only=read_only)


def _open_group(
    path: str | Path, mode: str, storage_options: dict[str, Any] | None = None
) -> zarr.Group | None:
    """The zarr group at ``path``, or ``None`` when nothing is there (modes r / r+)."""
    import zarr

    if mode in ("r", "r+"):
        local = _local_path(path)
        if local is not None and not (local / "zarr.json").is_file():
            return None
        try:
            return zarr.open_group(
                store=_store(path, mode == "r", storage_options), mode=mode, zarr_format=3
            )
        except (FileNotFoundError, KeyError, zarr.errors.GroupNotFoundError):
            return None
        except (ValueError, zarr.errors.NodeTypeValidationError) as exc:
            raise CacheError(f"{path} is not a zarr v3 group ({exc})") from None
    return zarr.open_group(store=_store(path, False, storage_options), mode=mode, zarr_format=3)


def _compressors() -> Any:
    from zarr.codecs import ZstdCodec

    return ZstdCodec(level=3)


# ---------------------------------------------------------------------------- reader


@dataclass
class StoreBatch:
    """Rows read from an embedding store (all numpy, in the order requested)."""

    embeddings: np.ndarray  # (n, T, D) float32
    num_frames: np.ndarray  # (n,) int64
    frame_times: np.ndarray  # (n, T, 2) float64 seconds


@dataclass
class AudioBatch:
    waveforms: list[np.ndarray]  # each (L_i,) int16, or float32 in [-1, 1) with as_float
    sample_rate: int


@dataclass
class ValidationReport:
    """What :func:`validate` found; ``problems`` is empty for a complete, sound store.

    ``damaged_chunks``: store chunks whose done clips cannot be trusted (missing, unreadable or
    changed objects, NaN/Inf); ``east cache verify --repair`` marks them pending again.
    ``notes``: facts that are not problems (e.g. chunks written without a checksum).
    """

    num_clips: int
    done: int
    failed: int
    pending: int
    nonfinite_rows: list[int] = field(default_factory=list)
    damaged_chunks: list[int] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def digest_blocks(blocks: Sequence[np.ndarray], failure: Sequence[str], status: np.ndarray) -> int:
    """The checksum of one store chunk (64-bit BLAKE2b, never 0): its data blocks in the
    stored dtypes, its failure reasons and its status, exactly as they read back."""
    h = hashlib.blake2b(digest_size=8)
    for block in blocks:
        arr = np.ascontiguousarray(block)
        h.update(f"{arr.dtype.str}{arr.shape}".encode())
        h.update(arr.tobytes())
    h.update("\x00".join(str(x) for x in failure).encode("utf-8", "surrogatepass"))
    h.update(np.ascontiguousarray(status, dtype=np.uint8).tobytes())
    return int.from_bytes(h.digest(), "little") or 1


class _ClipStore:
    """Common part of the embedding and audio stores: rows, chunks, status, provenance."""

    kind: Kind
    data_arrays: tuple[str, ...] = ()
    int_attrs: tuple[str, ...] = ("num_clips", "chunk_clips", "sample_rate")

    def __init__(self, group: zarr.Group, path: str | Path, mode: str) -> None:
        self.group = group
        self.path = str(path)
        self.mode = mode
        attrs = dict(group.attrs).get("east")
        if not isinstance(attrs, dict):
            if isinstance(dict(group.attrs).get("east_creating"), dict):
                raise CacheError(f"{path}: its creation was interrupted; re-run the extraction")
            raise CacheError(f"{path} is a zarr group without east provenance: not an east store")
        if attrs.get("kind") != self.kind:
            raise CacheError(f"{path} is an east {attrs.get('kind')} store, not {self.kind}")
        version = attrs.get("schema_version", 0)
        if not isinstance(version, int) or isinstance(version, bool):
            raise CacheError(
                f"{path}: schema_version {version!r} is not a number; not an east store"
            )
        if version > SCHEMA_VERSION:
            raise CacheError(
                f"{path} has cache schema version {version}; this east reads up to "
                f"{SCHEMA_VERSION} (upgrade east)"
            )
        bad = [k for k in self.int_attrs if not _is_count(attrs.get(k), minimum=k == "chunk_clips")]
        if bad:
            raise CacheError(
                f"{path}: provenance {', '.join(f'{k}={attrs.get(k)!r}' for k in bad)} "
                "is not a valid count; not a valid east cache"
            )
        missing = [
            name
            for name in (*self.data_arrays, "num_samples", "status", "failure", "clip_id")
            if name not in group
        ]
        if missing:
            raise CacheError(f"{path} lacks array(s) {', '.join(missing)}; not a valid east cache")
        self.attrs: dict[str, Any] = attrs

    # --- geometry
    @property
    def num_clips(self) -> int:
        return int(self.attrs["num_clips"])

    @property
    def chunk_clips(self) -> int:
        """Clips per store chunk: the unit of writing, of done markers and of chunks."""
        return int(self.attrs["chunk_clips"])

    @property
    def num_chunks(self) -> int:
        return math.ceil(self.num_clips / self.chunk_clips)

    @property
    def sample_rate(self) -> int:
        return int(self.attrs["sample_rate"])

    def chunk_bounds(self, chunk: int) -> tuple[int, int]:
        start = chunk * self.chunk_clips
        return start, min(start + self.chunk_clips, self.num_clips)

    def array(self, name: str) -> zarr.Array:
        return self.group[name]  # type: ignore[return-value]

    # --- status
    def _read_small(self, name: str, chunk: int) -> np.ndarray:
        start, stop = self.chunk_bounds(chunk)
        return self.array(name)[start:stop]

    def chunk_status(self, chunk: int) -> np.ndarray:
        """``status`` of one store chunk; an unreadable (torn) chunk reads as pending."""
        try:
            return np.asarray(self._read_small("status", chunk), dtype=np.uint8)
        except Exception:  # (torn object: trust nothing in this chunk)
            start, stop = self.chunk_bounds(chunk)
            return np.zeros(stop - start, dtype=np.uint8)

    @property
    def status(self) -> np.ndarray:
        """``(N,)`` uint8: 0 pending, 1 done, 2 failed."""
        try:
            return np.asarray(self.array("status")[:], dtype=np.uint8)
        except Exception:
            return np.concatenate([self.chunk_status(k) for k in range(self.num_chunks)])

    @property
    def done(self) -> np.ndarray:
        """``(N,)`` bool: the clip's data is complete and may be read."""
        return self.status == DONE

    @property
    def failed(self) -> np.ndarray:
        return self.status == FAILED

    @property
    def clip_ids(self) -> list[str]:
        return [str(x) for x in self.array("clip_id")[:]]

    def failures(self) -> list[tuple[str, str]]:
        """The failures table: ``(clip_id, reason)`` of every failed clip, in row order."""
        rows = np.flatnonzero(self.failed)
        if rows.size == 0:
            return []
        ids = self.array("clip_id").oindex[rows]
        reasons = self.array("failure").oindex[rows]
        return [(str(i), str(r)) for i, r in zip(ids, reasons, strict=True)]

    # --- provenance
    def check_manifest(self, manifest: Manifest) -> None:
        """Raise :class:`CacheError` unless this store was made for exactly ``manifest``."""
        if self.attrs.get("manifest_hash") != manifest.hash or self.num_clips != len(manifest):
            raise CacheError(
                f"cache {self.path} was made for {self.attrs.get('dataset')} manifest "
                f"{self.attrs.get('manifest_hash')} ({self.num_clips} clips), not this "
                f"{manifest.name} manifest {manifest.hash} ({len(manifest)} clips)"
            )

    def check_identity(self, expected: dict[str, Any]) -> None:
        """Raise :class:`CacheError` when ``expected`` differs in an identity key."""
        diffs = [
            f"{key} {self.attrs.get(key)!r} (wanted {expected[key]!r})"
            for key in IDENTITY_KEYS[self.kind]
            if key in expected and _norm(self.attrs.get(key)) != _norm(expected[key])
        ]
        if diffs:
            raise CacheError(
                f"cache {self.path} was made with {'; '.join(diffs)}; "
                "use --overwrite to start over or another --cache-dir"
            )

    # --- reading rows
    def _rows(self, rows: Sequence[int] | np.ndarray | slice) -> np.ndarray:
        if isinstance(rows, slice):
            return np.arange(self.num_clips)[rows]
        out = np.asarray(rows, dtype=np.int64).reshape(-1)
        if out.size and (out.min() < -self.num_clips or out.max() >= self.num_clips):
            raise IndexError(f"row out of range for a store of {self.num_clips} clips")
        return out % max(self.num_clips, 1)

    def _gather(self, name: str, rows: np.ndarray) -> np.ndarray:
        # orthogonal indexing reads only the chunks holding the rows; it wants sorted unique
        # indices, so read those and put them back in the requested order
        unique, inverse = np.unique(rows, return_inverse=True)
        arr = self.array(name)
        if unique.size and unique[-1] - unique[0] + 1 == unique.size:
            values = arr[int(unique[0]) : int(unique[-1]) + 1]  # contiguous: one slice
        else:
            values = arr.oindex[unique]
        return values[inverse]

    # --- writing (extraction only)
    def delete_chunk_objects(self, chunk: int) -> None:
        """Remove the stored objects of store chunk ``chunk`` in every data array."""
        from zarr.core.sync import sync

        for name in (*self.data_arrays, "num_samples"):
            arr = self.array(name)
            coords = (chunk,) + (0,) * (arr.ndim - 1)
            key = arr.metadata.encode_chunk_key(coords)
            with contextlib.suppress(FileNotFoundError, KeyError):
                sync((arr.store_path / key).delete())

    def write_chunk(
        self,
        chunk: int,
        data: dict[str, np.ndarray],
        status: np.ndarray,
        failure: Sequence[str],
    ) -> None:
        """Write one whole store chunk with the crash-safe protocol of the module docstring.

        ``data`` maps every name of :attr:`data_arrays` plus ``num_samples`` to a block of
        the chunk's rows; ``status``/``failure`` are the chunk's final markers.
        """
        start, stop = self.chunk_bounds(chunk)
        n = stop - start
        if len(status) != n or len(failure) != n:
            raise ValueError(f"chunk {chunk} has {n} rows")
        if self.chunk_status(chunk).any():
            self.array("status")[start:stop] = np.zeros(n, dtype=np.uint8)
        self.delete_chunk_objects(chunk)
        blocks = []
        for name in self.digest_arrays:
            arr = self.array(name)
            block = np.asarray(data[name], dtype=arr.dtype)
            if block.shape[0] != n:
                raise ValueError(f"{name} block has {block.shape[0]} rows, chunk has {n}")
            arr[start:stop] = block
            blocks.append(block)
        failure = [str(x) for x in failure]
        status = np.asarray(status, dtype=np.uint8)
        if DIGEST in self.group:
            self.array(DIGEST)[chunk] = digest_blocks(blocks, failure, status)
        self.array("failure")[start:stop] = np.asarray(failure, dtype=str)
        self.array("status")[start:stop] = status

    @property
    def digest_arrays(self) -> tuple[str, ...]:
        """The arrays a chunk checksum covers (with ``failure`` and ``status``), in order."""
        return (*self.data_arrays, "num_samples")

    def ensure_digests(self) -> None:
        """Give a version-1 store the checksum array before writing into it (one writer)."""
        if DIGEST not in self.group:
            _create_digest_array(self.group, self.num_chunks)

    def chunk_digests(self) -> np.ndarray:
        """``(num_chunks,)`` uint64 recorded checksums; 0 where none was recorded."""
        if DIGEST not in self.group:
            return np.zeros(self.num_chunks, np.uint64)
        return np.asarray(self.array(DIGEST)[:], dtype=np.uint64)

    def chunk_problem(self, chunk: int, recorded: int | None = None) -> str | None:
        """Why the written data of ``chunk`` cannot be trusted, or ``None`` when it is sound
        (or carries no checksum and reads). ``recorded``: its checksum, if already read."""
        return self.read_verified(chunk, recorded)[1]

    def read_verified(
        self, chunk: int, recorded: int | None = None
    ) -> tuple[dict[str, np.ndarray] | None, str | None]:
        """``(blocks, why)``: the chunk's data blocks, ``failure`` and ``status`` (``None`` when
        unreadable) and why they cannot be trusted (``None`` when they match the checksum)."""
        start, stop = self.chunk_bounds(chunk)
        try:
            data = {name: np.asarray(self.array(name)[start:stop]) for name in self.digest_arrays}
            failure = [str(x) for x in self.array("failure")[start:stop]]
            status = np.asarray(self.array("status")[start:stop], dtype=np.uint8)
        except Exception as exc:  # (zstd/zarr errors of a corrupt object: report, don't crash)
            return None, f"unreadable ({type(exc).__name__}: {str(exc).splitlines()[0][:120]})"
        if recorded is None:
            recorded = int(self.chunk_digests()[chunk])
        blocks = {**data, "failure": np.asarray(failure, dtype=object), "status": status}
        if recorded and digest_blocks(list(data.values()), failure, status) != recorded:
            missing = self.missing_objects(chunk)
            if missing:
                return blocks, f"missing object(s) of {', '.join(missing)}"
            return blocks, "contents differ from their checksum (changed or corrupt objects)"
        return blocks, None

    def missing_objects(self, chunk: int) -> list[str]:
        """Data arrays whose object for ``chunk`` is absent (an all-zero block is never
        written by zarr, so absence alone is no damage: the checksum decides)."""
        from zarr.core.sync import sync

        out = []
        for name in self.digest_arrays:
            arr = self.array(name)
            key = arr.metadata.encode_chunk_key((chunk,) + (0,) * (arr.ndim - 1))
            if not sync((arr.store_path / key).exists()):
                out.append(name)
        return out

    def reset_chunks(self, chunks: Iterable[int]) -> None:
        """Mark every clip of ``chunks`` pending, so the next extraction recomputes them."""
        for chunk in chunks:
            start, stop = self.chunk_bounds(chunk)
            self.array("status")[start:stop] = np.zeros(stop - start, np.uint8)

    def read_chunk_data(self, chunk: int) -> dict[str, np.ndarray] | None:
        """Stored blocks of one chunk (data arrays, ``num_samples``, ``failure``, ``status``),
        or ``None`` when they are unreadable or do not match the chunk's checksum."""
        data, why = self.read_verified(chunk)
        return None if why else data

    def set_attrs(self, **values: Any) -> None:
        """Update provenance entries (single writer only, e.g. the end-of-run summary)."""
        self.attrs = {**self.attrs, **values}
        self.group.attrs["east"] = self.attrs


def _is_count(value: Any, minimum: int = 0) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= minimum


def _norm(value: Any) -> Any:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else value


class EmbeddingStore(_ClipStore):
    """Reader (and chunk writer) of one teacher's embeddings of one dataset."""

    kind: Kind = "embeddings"
    data_arrays = ("embeddings", "frame_times", "num_frames")
    int_attrs = (*_ClipStore.int_attrs, "dim", "max_frames")

    @property
    def dim(self) -> int:
        return int(self.attrs["dim"])

    @property
    def max_frames(self) -> int:
        return int(self.attrs["max_frames"])

    @property
    def embeddings(self) -> zarr.Array:
        """The raw ``(N, T, D)`` zarr array (e.g. for ``dask.array.from_zarr``)."""
        return self.array("embeddings")

    @property
    def num_frames(self) -> np.ndarray:
        return np.asarray(self.array("num_frames")[:], dtype=np.int64)

    def read(self, rows: Sequence[int] | np.ndarray | slice) -> StoreBatch:
        """Rows in the order given (any order, repeats allowed), as float32 embeddings."""
        idx = self._rows(rows)
        if idx.size == 0:
            t, d = self.max_frames, self.dim
            return StoreBatch(
                np.zeros((0, t, d), np.float32), np.zeros(0, np.int64), np.zeros((0, t, 2))
            )
        return StoreBatch(
            embeddings=self._gather("embeddings", idx).astype(np.float32, copy=False),
            num_frames=self._gather("num_frames", idx).astype(np.int64),
            frame_times=self._gather("frame_times", idx).astype(np.float64, copy=False),
        )

    def __repr__(self) -> str:
        return (
            f"EmbeddingStore({self.path!r}, teacher={self.attrs.get('teacher')!r}, "
            f"dataset={self.attrs.get('dataset')!r}, clips={self.num_clips}, "
            f"frames={self.max_frames}, dim={self.dim})"
        )


class AudioStore(_ClipStore):
    """Decoded, resampled int16 audio of a dataset (``east cache audio``).

    ``audio`` is ``(N, max_samples)`` int16 padded with zeros past ``num_samples``; one inner
    chunk per clip, so padding costs almost nothing after zstd and reading a clip reads only it.
    """

    kind: Kind = "audio"
    data_arrays = ("audio",)
    int_attrs = (*_ClipStore.int_attrs, "max_samples")

    @property
    def max_samples(self) -> int:
        return int(self.attrs["max_samples"])

    @property
    def num_samples(self) -> np.ndarray:
        return np.asarray(self.array("num_samples")[:], dtype=np.int64)

    def read(self, rows: Sequence[int] | np.ndarray | slice, as_float: bool = False) -> AudioBatch:
        idx = self._rows(rows)
        if idx.size == 0:
            return AudioBatch([], self.sample_rate)
        audio = self._gather("audio", idx)
        lengths = self._gather("num_samples", idx)
        waves = []
        for row, n in zip(audio, lengths, strict=True):
            clip = row[: int(n)]
            waves.append(clip.astype(np.float32) / 32768.0 if as_float else clip.copy())
        return AudioBatch(waves, self.sample_rate)


# ---------------------------------------------------------------------------- create / open


def _base_attrs(kind: Kind, provenance: dict[str, Any]) -> dict[str, Any]:
    from east import __version__

    return {
        "schema_version": SCHEMA_VERSION,
        "kind": kind,
        "code_version": __version__,
        "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        **provenance,
    }


def _create(
    path: str | Path,
    kind: Kind,
    attrs: dict[str, Any],
    arrays: dict[str, tuple[tuple[int, ...], str]],
    clip_ids: Sequence[str],
    length_hint: np.ndarray | None,
    overwrite: bool,
    storage_options: dict[str, Any] | None,
) -> zarr.Group | None:
    """Create the group or return ``None`` when a complete store is there (caller checks it).

    Refuses (:class:`CacheError`) any path that holds something east did not make."""
    state = path_state(path, kind, storage_options)
    if state == "store" and not overwrite:
        return None
    if len(clip_ids) != int(attrs["num_clips"]):
        raise ValueError("clip_ids and num_clips differ")
    local = _local_path(path)
    if local is None:  # remote: mark the group as ours first, provenance last
        group = _open_group(path, "w", storage_options)
        assert group is not None
        group.attrs["east_creating"] = {"kind": kind, "created": attrs["created"]}
        _fill_group(group, attrs, arrays, clip_ids, length_hint)
        return group
    _build_and_rename(local, state, attrs, arrays, clip_ids, length_hint)
    return _open_group(local, "r+")


def path_state(
    path: str | Path, kind: Kind, storage_options: dict[str, Any] | None = None
) -> Literal["absent", "store", "interrupted"]:
    """What is at ``path`` for a writer of ``kind``: nothing (or an empty folder), a complete
    east store of that kind, or an interrupted east creation. Anything else — a file, a
    folder or zarr group east did not make, an east store of another kind — raises
    :class:`CacheError`: east never writes into (or deletes) what it did not make."""
    check_store_location(path)
    group = _open_group(path, "r", storage_options)
    if group is None:
        if _holds_anything(path, storage_options):
            raise CacheError(
                f"{path} exists and is not an east store; east never writes into a folder it "
                "did not make (choose another --store or --cache-dir)"
            )
        return "absent"
    attrs = dict(group.attrs)
    east = attrs.get("east")
    if isinstance(east, dict):
        if east.get("kind") != kind:
            raise CacheError(
                f"{path} is an east {east.get('kind')} store, not an {kind} store; "
                "choose another path (--overwrite only replaces a store of the same kind)"
            )
        return "store"
    if isinstance(attrs.get("east_creating"), dict):
        return "interrupted"
    raise CacheError(
        f"{path} is a zarr group that east did not make; east never writes into it "
        "(choose another --store or --cache-dir)"
    )


def check_store_location(path: str | Path) -> None:
    """One-line :class:`CacheError` when a local store path, or a folder above it, is a file."""
    local = _local_path(path)
    if local is None:
        return
    for folder in (local, *local.parents):
        if folder.exists():
            if not folder.is_dir():
                what = "the store path" if folder == local else f"a folder of {path}"
                raise CacheError(f"{folder} is a file, not a folder ({what}); choose another path")
            return


def _holds_anything(path: str | Path, storage_options: dict[str, Any] | None) -> bool:
    local = _local_path(path)
    if local is not None:
        return local.is_dir() and any(local.iterdir())
    from zarr.core.sync import sync

    return not sync(_store(path, True, storage_options).is_empty(""))


def _build_and_rename(
    path: Path,
    state: str,
    attrs: dict[str, Any],
    arrays: dict[str, tuple[tuple[int, ...], str]],
    clip_ids: Sequence[str],
    length_hint: np.ndarray | None,
) -> None:
    """Build a local store in a hidden sibling folder, then rename it into place: the path
    holds a complete store or none. An east store being replaced is moved aside first and
    deleted after (it is ours: ``state`` says so)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    _remove_leftovers(path)
    tmp = path.with_name(f".{path.name}.creating-{uuid.uuid4().hex[:8]}")
    try:
        group = _open_group(tmp, "w")
        assert group is not None
        _fill_group(group, attrs, arrays, clip_ids, length_hint)
        trash = None
        if state in ("store", "interrupted"):
            trash = path.with_name(f".{path.name}.replaced-{uuid.uuid4().hex[:8]}")
            os.rename(path, trash)
        elif path.is_dir():
            path.rmdir()  # empty (path_state checked): rename wants no target
        os.rename(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    if trash is not None:
        shutil.rmtree(trash, ignore_errors=True)


def _remove_leftovers(path: Path) -> None:
    """Hidden build/replace folders of this store left by a killed creation (ours by name)."""
    name = glob.escape(path.name)
    for pattern in (f".{name}.creating-*", f".{name}.replaced-*"):
        for old in path.parent.glob(pattern):
            shutil.rmtree(old, ignore_errors=True)


def _fill_group(
    group: zarr.Group,
    attrs: dict[str, Any],
    arrays: dict[str, tuple[tuple[int, ...], str]],
    clip_ids: Sequence[str],
    length_hint: np.ndarray | None,
) -> None:
    n = int(attrs["num_clips"])
    chunk = int(attrs["chunk_clips"])
    for name, (row_shape, dtype) in arrays.items():
        # one chunk (one object/file) per store chunk: training reads whole store chunks, and
        # one decompression of C clips is ~9x faster than C per-clip inner chunks of a shard
        # (benchmarks/bench_train_data.py)
        group.create_array(
            name,
            shape=(n, *row_shape),
            chunks=(chunk, *row_shape),
            dtype=dtype,
            compressors=_compressors(),
            fill_value=0,
        )
    for name, dtype in (("num_samples", "int64"), ("length_hint", "int64"), ("status", "uint8")):
        group.create_array(
            name, shape=(n,), chunks=(chunk,), dtype=dtype, compressors=_compressors(), fill_value=0
        )
    for name in ("failure", "clip_id"):
        group.create_array(name, shape=(n,), chunks=(chunk,), dtype=str)
    _create_digest_array(group, math.ceil(n / chunk))
    if n:
        group["clip_id"][:] = np.asarray(list(clip_ids), dtype=str)
        hints = np.full(n, -1, np.int64) if length_hint is None else np.asarray(length_hint)
        group["length_hint"][:] = hints.astype(np.int64)
    # provenance last: its presence marks a completely created store
    group.attrs.put({"east": attrs})


def _create_digest_array(group: zarr.Group, num_chunks: int) -> None:
    # one object per store chunk, so writers of different chunks stay disjoint
    group.create_array(
        DIGEST, shape=(num_chunks,), chunks=(1,), dtype="uint64", fill_value=0, compressors=None
    )


def create_store(
    path: str | Path,
    *,
    provenance: dict[str, Any],
    clip_ids: Sequence[str],
    max_frames: int,
    dim: int,
    chunk_clips: int = DEFAULT_CHUNK_CLIPS,
    dtype: str = "float16",
    length_hint: np.ndarray | None = None,
    overwrite: bool = False,
    storage_options: dict[str, Any] | None = None,
) -> EmbeddingStore:
    """Create an embedding store, or reopen a matching one to resume.

    ``provenance`` holds at least ``teacher, weights_sha256, sample_rate, window_s, hop_s,
    dataset, manifest_hash`` (plus anything else worth keeping, e.g. ``max_seconds``). An
    existing complete store is reopened when its identity (:data:`IDENTITY_KEYS`) matches and
    refused with :class:`CacheError` otherwise; ``overwrite=True`` deletes it first.
    """
    if dtype not in _DTYPES:
        raise CacheError(f"cache dtype {dtype!r} not supported; use one of {', '.join(_DTYPES)}")
    if max_frames < 1 or dim < 1 or chunk_clips < 1:
        raise ValueError("max_frames, dim and chunk_clips must be positive")
    attrs = _base_attrs(
        "embeddings",
        {
            "max_seconds": None,
            "framing": None,
            **provenance,
            "num_clips": len(clip_ids),
            "dim": int(dim),
            "max_frames": int(max_frames),
            "chunk_clips": int(chunk_clips),
            "dtype": dtype,
        },
    )
    arrays = {
        "embeddings": ((max_frames, dim), dtype),
        "frame_times": ((max_frames, 2), "float64"),
        "num_frames": ((), "int32"),
    }
    group = _create(
        path, "embeddings", attrs, arrays, clip_ids, length_hint, overwrite, storage_options
    )
    if group is None:  # a complete store exists: resume into it if it is the same extraction
        store = open_store(path, mode="r+", storage_options=storage_options)
        store.check_identity(attrs)
        return store
    return EmbeddingStore(group, path, "r+")


def create_audio_store(
    path: str | Path,
    *,
    provenance: dict[str, Any],
    clip_ids: Sequence[str],
    max_samples: int,
    chunk_clips: int = DEFAULT_CHUNK_CLIPS,
    length_hint: np.ndarray | None = None,
    overwrite: bool = False,
    storage_options: dict[str, Any] | None = None,
) -> AudioStore:
    """Create (or reopen a matching) audio store; ``provenance`` holds ``sample_rate, dataset,
    manifest_hash`` and optionally ``max_seconds``."""
    attrs = _base_attrs(
        "audio",
        {
            "max_seconds": None,
            **provenance,
            "num_clips": len(clip_ids),
            "max_samples": int(max_samples),
            "chunk_clips": int(chunk_clips),
            "dtype": "int16",
        },
    )
    arrays = {"audio": ((max(int(max_samples), 1),), "int16")}
    group = _create(path, "audio", attrs, arrays, clip_ids, length_hint, overwrite, storage_options)
    if group is None:
        store = open_audio_store(path, mode="r+", storage_options=storage_options)
        store.check_identity(attrs)
        return store
    return AudioStore(group, path, "r+")


def _open(
    cls: type[_ClipStore], path: str | Path, mode: str, storage_options: dict[str, Any] | None
) -> Any:
    if mode not in ("r", "r+"):
        raise ValueError("mode must be 'r' or 'r+'")
    group = _open_group(path, mode, storage_options)
    if group is None:
        raise CacheError(f"no east cache at {path}")
    return cls(group, path, mode)


def open_store(
    path: str | Path, mode: str = "r", storage_options: dict[str, Any] | None = None
) -> EmbeddingStore:
    """Open an embedding store (``mode`` ``"r"`` or ``"r+"``); :class:`CacheError` if invalid."""
    return _open(EmbeddingStore, path, mode, storage_options)


def open_audio_store(
    path: str | Path, mode: str = "r", storage_options: dict[str, Any] | None = None
) -> AudioStore:
    """Open an audio store written by ``east cache audio``."""
    return _open(AudioStore, path, mode, storage_options)


def open_any(
    path: str | Path, storage_options: dict[str, Any] | None = None, mode: str = "r"
) -> EmbeddingStore | AudioStore:
    """Open whichever kind of east store is at ``path`` (read-only unless ``mode="r+"``)."""
    group = _open_group(path, mode, storage_options)
    if group is None:
        raise CacheError(f"no east cache at {path}")
    kind = (
        (group.attrs.get("east") or {}).get("kind")
        if isinstance(group.attrs.get("east"), dict)
        else None
    )
    cls: type[_ClipStore] = AudioStore if kind == "audio" else EmbeddingStore
    return cls(group, path, mode)  # type: ignore[return-value]


def store_exists(path: str | Path, storage_options: dict[str, Any] | None = None) -> bool:
    """Whether a completely created east store is at ``path``."""
    group = _open_group(path, "r", storage_options)
    return group is not None and isinstance(group.attrs.get("east"), dict)


# ---------------------------------------------------------------------------- validation


def validate(
    store: EmbeddingStore | AudioStore | str | Path,
    manifest: Manifest | None = None,
    *,
    check_values: bool = True,
    allow_failed: bool = True,
) -> ValidationReport:
    """Check coverage, integrity, values and (given ``manifest``) provenance of a store.

    Problems: clips still pending; failed clips (unless ``allow_failed``); with
    ``check_values`` (the default) every store chunk holding done clips is read whole and
    checked against its checksum (missing, unreadable or changed objects), its embeddings or
    audio for NaN/Inf, its valid-frame and sample counts and frame times; clip ids or
    manifest hash that differ from ``manifest``. Each problem is one line naming the clips.
    """
    if not isinstance(store, _ClipStore):
        store = open_any(store)
    status = store.status
    report = ValidationReport(
        num_clips=store.num_clips,
        done=int((status == DONE).sum()),
        failed=int((status == FAILED).sum()),
        pending=int((status == PENDING).sum()),
    )
    if report.pending:
        report.problems.append(f"{report.pending} of {store.num_clips} clips not extracted yet")
    if report.failed and not allow_failed:
        report.problems.append(f"{report.failed} clips failed (see `east cache info`)")
    if manifest is not None:
        try:
            store.check_manifest(manifest)
        except CacheError as exc:
            report.problems.append(str(exc))
        else:
            if store.clip_ids != list(manifest.clip_ids):
                report.problems.append("clip ids differ from the manifest's")
    if check_values:
        _check_values(store, status, report)
    return report


def _check_values(store: _ClipStore, status: np.ndarray, report: ValidationReport) -> None:
    digests = store.chunk_digests()
    ids = store.clip_ids
    unchecked = 0
    for chunk in range(store.num_chunks):
        start, stop = store.chunk_bounds(chunk)
        written = status[start:stop] != PENDING
        if not written.any():
            continue
        unchecked += int(digests[chunk] == 0)
        data, why = store.read_verified(chunk, int(digests[chunk]))
        done = [r for r in range(start, stop) if status[r] == DONE]
        values_why = None if data is None else _value_problem(store, data, status[start:stop])
        if values_why and values_why.startswith("NaN"):
            values = data[store.data_arrays[0]][np.asarray(done) - start]  # type: ignore[index]
            finite = np.isfinite(values).reshape(len(done), -1).all(axis=1)
            done = [r for r, ok in zip(done, finite, strict=True) if not ok]
            report.nonfinite_rows.extend(done)
        why = "; ".join(filter(None, [values_why, why])) or None
        if why is not None:
            report.damaged_chunks.append(chunk)
            done = [ids[r] for r in done]
            shown = ", ".join(done[:3]) + (f" and {len(done) - 3} more" if len(done) > 3 else "")
            report.problems.append(
                f"store chunk {chunk} (rows {start}-{stop - 1}; clips {shown or 'none done'}): "
                f"{why}"
            )
    if unchecked:
        report.notes.append(
            f"{unchecked} store chunks carry no checksum (written by an east before schema 2); "
            "they were checked for readability and values only"
        )


def _value_problem(
    store: _ClipStore, data: dict[str, np.ndarray], status: np.ndarray
) -> str | None:
    """Why the done clips of a readable chunk (``status``: its rows) hold impossible values."""
    rows = np.flatnonzero(status == DONE)
    if rows.size == 0:
        return None
    if (data["num_samples"][rows] < 1).any():
        return "done clips with no samples"
    values = data["embeddings" if isinstance(store, EmbeddingStore) else "audio"][rows]
    if values.dtype.kind == "f" and not np.isfinite(values).all():
        return "NaN/Inf values in done clips"
    if not isinstance(store, EmbeddingStore):
        return None
    nf = data["num_frames"][rows]
    if (nf < 1).any() or (nf > store.max_frames).any():
        return f"valid-frame counts outside 1..{store.max_frames}"
    for t, n in zip(data["frame_times"][rows], nf, strict=True):
        valid = t[: int(n)]
        if (
            not np.isfinite(valid).all()
            or (np.diff(valid[:, 0]) < 0).any()
            or (valid[:, 1] < valid[:, 0]).any()
        ):
            return "frame times not increasing"
    return None


def iter_chunks(store: _ClipStore, rows: Iterable[int]) -> dict[int, list[int]]:
    """Group row indices by store chunk (ascending), e.g. to read chunk by chunk."""
    out: dict[int, list[int]] = {}
    for r in rows:
        out.setdefault(int(r) // store.chunk_clips, []).append(int(r))
    return dict(sorted(out.items()))
