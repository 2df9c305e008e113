"""Streaming training data: audio plus cached teacher embeddings, read by store chunk.

Why streaming: a teacher cache is a chunked Zarr store (``chunk_clips`` clips per chunk). Reading
clip by clip in random order would decompress a whole chunk for every clip; instead each epoch

1. groups the split's rows by cache chunk (a *block*), shuffles the order of the blocks
   (seeded by ``seed + epoch``), and deals them round-robin to DDP ranks and DataLoader workers;
2. a worker reads one whole block from every teacher store (one decompression per chunk) and
   decodes its audio, pushes the clips into a shuffle buffer of ``buffer_size`` clips and yields
   a random clip from the buffer once it is full.

Memory is bounded by ``buffer_size + chunk_clips`` clips per worker plus each teacher's
``num_frames`` and ``frame_times`` (4 + 8·T bytes a clip, read once), whatever the dataset size.
Ranks of a DDP run get exactly the same number of clips per epoch (the longer shares are
trimmed), so no rank waits for a missing batch.

**Audio**: from an audio store (``east cache audio``, already resampled int16) when the config
names one, else decoded with :func:`east.audio.load_audio` at the student's sample rate.

**Crop/pad policy** (``crop`` in the config):

* ``full`` (default, the papers): whole clips; a batch is zero-padded to its longest clip, and the
  teacher sequences to their longest valid frame count (``num_frames`` keeps the valid count);
* ``fixed``: training clips are cropped (``position`` start/center/random) or zero-padded to
  ``seconds``; the teacher frames are cut to the same window from their stored frame times (a
  clip-level teacher, T = 1, is kept as is). Evaluation keeps full clips unless ``eval_fixed``.

**Long clips** (``crop.max_seconds``, default 60 s, bounds memory): a longer training clip is
cut to one window of ``max_seconds`` (at ``position``) with its teacher frames; a longer
evaluation clip is yielded as consecutive equal windows of at most ``max_seconds`` (same
``row``), whose logits the evaluation averages (:func:`average_windows`).

**Errors in workers**: a user-facing error (``EastError``: an unreadable clip or store chunk) in
a DataLoader worker travels to the main process as an item and :func:`checked_batches` raises it there
as one line (the DataLoader would turn it into a multi-line RuntimeError).

**Teacher rescaling** (``teachers[i].rescale``): ``auto`` (default) — the reference normalises
two teachers by fixed constants, read here from the store's ``attrs["teacher"]``: VGGish's 8-bit
quantised PCA embedding ``(x − 128)/256`` and OpenL3 ``x − 2.24``; every other teacher is used
as stored. ``standardize`` — per-dimension mean/std over the training clips' valid frames
(for teachers whose raw scale stalls the Teacher_LR probe, e.g. the taggers' post-ReLU layers);
``none`` — as stored.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from east.config import CropConfig
from east.errors import CacheError, EastError

__all__ = [
    "ClipStream",
    "TeacherSource",
    "average_windows",
    "checked_batches",
    "collate",
    "make_loader",
    "normalisation",
    "steps_per_epoch",
    "subsample_rows",
    "teacher_rescale",
]


def teacher_rescale(teacher_name: str) -> tuple[float, float]:
    """(offset, scale) so that ``(x − offset)/scale`` is what the reference trains on."""
    name = teacher_name.lower()
    if name.startswith("vggish"):
        return 128.0, 256.0
    if name.startswith("openl3"):
        return 2.24, 1.0
    return 0.0, 1.0


@dataclass
class TeacherSource:
    """Where one teacher's embeddings come from and how they are normalised:
    ``(x − shift)/scale`` with scalars or per-dimension ``(D,)`` arrays; ``None`` = the
    reference's constants for the teacher named in the store attrs (teacher_rescale)."""

    path: Path
    shift: Any = None
    scale: Any = None


def normalisation(store: Any, mode: str, rows: np.ndarray | None = None) -> tuple[Any, Any]:
    """(shift, scale) of a teacher: ``auto`` — the reference's constants by teacher name;
    ``none`` — as stored; ``standardize`` — per-dimension mean and std over the valid frames
    of ``rows`` (the training clips), read chunk by chunk."""
    if mode == "none":
        return 0.0, 1.0
    if mode == "auto":
        return teacher_rescale(str(store.attrs.get("teacher", "")))
    if mode != "standardize":
        raise ValueError(f"unknown rescale mode {mode!r}")
    assert rows is not None
    dim = int(store.dim)
    total, total_sq, count = np.zeros(dim), np.zeros(dim), 0
    rows = np.sort(np.asarray(rows))
    step = max(int(store.chunk_clips), 1)
    for a in range(0, len(rows), step):
        batch = store.read(rows[a : a + step])
        for emb, n in zip(batch.embeddings, batch.num_frames, strict=True):
            frames = emb[: int(n)].astype(np.float64)
            total += frames.sum(axis=0)
            total_sq += (frames**2).sum(axis=0)
            count += len(frames)
    mean = total / max(count, 1)
    std = np.sqrt(np.maximum(total_sq / max(count, 1) - mean**2, 0.0))
    return mean.astype(np.float32), np.maximum(std, 1e-6).astype(np.float32)


def _open_store(path: Path) -> Any:
    from east.cache_schema import open_store

    return open_store(path, mode="r")


def _open_audio_store(path: Path) -> Any:
    from east.cache_schema import open_audio_store

    return open_audio_store(path)


class ClipStream(IterableDataset):
    """Iterates over ``rows`` of a manifest: dicts with ``wave`` (L,), ``target``, ``mask``,
    ``teachers`` [(emb (T, D), num_frames, times (T, 2))], ``row``.

    Stores are opened lazily inside each worker (Zarr handles are not shared across forks).
    """

    def __init__(
        self,
        manifest: Any,
        rows: Sequence[int] | np.ndarray,
        teachers: Sequence[TeacherSource],
        sample_rate: int,
        *,
        crop: CropConfig | None = None,
        training: bool = False,
        shuffle: bool = False,
        seed: int = 0,
        buffer_size: int = 256,
        audio_store: Path | None = None,
        chunk_clips: int | None = None,
        rank: int = 0,
        world_size: int = 1,
        equalize: bool | None = None,
        partners: bool = False,
    ) -> None:
        super().__init__()
        self.manifest = manifest
        self.rows = np.asarray(rows, dtype=np.int64)
        self.teachers = list(teachers)
        self.sample_rate = int(sample_rate)
        self.crop = crop or CropConfig()
        self.training = training
        self.shuffle = shuffle
        self.seed = seed
        self.buffer_size = max(1, buffer_size)
        self.audio_store = audio_store
        self.rank, self.world_size = rank, world_size
        self.equalize = world_size > 1 if equalize is None else equalize
        self.partners = partners  # each item gets a mixup partner (see _partner_items)
        self.epoch = 0
        self._stores: list[Any] | None = None
        self._audio: Any = None
        self._scales: list[tuple[Any, Any]] = []
        if chunk_clips is None:
            chunk_clips = _open_store(self.teachers[0].path).chunk_clips if self.teachers else 64
        self.chunk_clips = max(1, int(chunk_clips))

    # ---------------------------------------------------------------- epoch plan
    def set_epoch(self, epoch: int) -> None:
        """Reseed the shuffle (call before each epoch, like DistributedSampler.set_epoch)."""
        self.epoch = epoch

    def _rank_blocks(self) -> list[np.ndarray]:
        """This rank's blocks (row arrays, one per cache chunk) for the current epoch."""
        chunk_of = self.rows // self.chunk_clips
        order = np.argsort(chunk_of, kind="stable")
        starts = np.r_[0, np.flatnonzero(np.diff(chunk_of[order])) + 1]
        blocks = np.split(self.rows[order], starts[1:]) if len(self.rows) else []
        if self.shuffle:
            rng = np.random.default_rng([self.seed, self.epoch])
            blocks = [blocks[i] for i in rng.permutation(len(blocks))]
        mine = blocks[self.rank :: self.world_size]
        if self.equalize:
            # every rank yields the same count: trim to the smallest share
            share = min(
                sum(len(b) for b in blocks[r :: self.world_size]) for r in range(self.world_size)
            )
            trimmed, left = [], share
            for b in mine:
                if left <= 0:
                    break
                trimmed.append(b[:left])
                left -= len(trimmed[-1])
            mine = trimmed
        return mine

    def __len__(self) -> int:
        return sum(len(b) for b in self._rank_blocks())

    # ---------------------------------------------------------------- reading
    def _ensure_open(self) -> None:
        if self._stores is not None:
            return
        import zarr

        # stores written before chunk-per-store-chunk layout have one inner chunk per clip in
        # a shard: decode a shard's inner chunks as one batch, not one by one (~5-10x faster)
        zarr.config.set({"codec_pipeline.batch_size": max(self.chunk_clips, 1)})
        self._stores = [_open_store(t.path) for t in self.teachers]
        self._arrays: list[dict[str, Any] | None] = [None] * len(self._stores)
        self._scales = [
            normalisation(s, "auto")
            if t.shift is None
            else (t.shift, 1.0 if t.scale is None else t.scale)
            for s, t in zip(self._stores, self.teachers, strict=True)
        ]
        if self.audio_store is not None:
            self._audio = _open_audio_store(self.audio_store)
            self._audio_arrays = {n: self._audio.array(n) for n in ("audio", "num_samples")}

    def _read_block(self, rows: np.ndarray) -> list[dict[str, Any]]:
        self._ensure_open()
        assert self._stores is not None
        # sorted rows: one contiguous region of each store chunk
        rows = np.sort(rows)
        teacher_parts = []
        for i, (offset, scale) in enumerate(self._scales):
            try:
                emb, num_frames, frame_times = self._read_rows(i, rows)
            except Exception as exc:  # a chunk damaged after the checks (zarr/zstd errors)
                raise _unreadable(self.teachers[i].path, rows, exc) from None
            if np.any(np.asarray(offset) != 0.0) or np.any(np.asarray(scale) != 1.0):
                emb = (emb - offset) / scale
            teacher_parts.append((emb, num_frames, frame_times))
        waves = self._read_audio(rows)
        multilabel = self.manifest.multilabel
        items = []
        for i, row in enumerate(rows):
            teachers = []
            for emb, nf, times in teacher_parts:
                n = int(nf[i])
                teachers.append((emb[i, :n], n, times[i, :n]))
            item = {
                "row": int(row),
                "wave": waves[i],
                "target": self.manifest.targets[row],
                "mask": None if not multilabel else self.manifest.known_mask()[row],
                "teachers": teachers,
            }
            items.append(item)
        return items

    def _read_rows(self, teacher: int, rows: np.ndarray) -> tuple[np.ndarray, ...]:
        """Sorted rows of one store chunk: one contiguous slice per array (the whole chunk is
        decoded anyway), array handles opened once per worker."""
        assert self._stores is not None
        if self._arrays[teacher] is None:
            store = self._stores[teacher]
            # the small per-clip arrays (4 + 8·T bytes a clip as held) are read once per worker:
            # each zarr call costs ~1-3 ms whatever its size, so a block makes only one
            self._arrays[teacher] = {
                "embeddings": store.array("embeddings"),
                "num_frames": np.asarray(store.array("num_frames")[:]),
                "frame_times": np.asarray(store.array("frame_times")[:], dtype=np.float32),
            }
        arrays = self._arrays[teacher]
        lo, hi = int(rows[0]), int(rows[-1]) + 1
        emb = np.asarray(arrays["embeddings"][lo:hi])[rows - lo].astype(np.float32)
        num_frames = arrays["num_frames"][rows].astype(np.int64)
        times = arrays["frame_times"][rows]
        return emb, num_frames, times

    def _read_audio(self, rows: np.ndarray) -> list[np.ndarray]:
        if self._audio is not None:
            if int(self._audio.sample_rate) != self.sample_rate:
                raise CacheError(
                    f"{self.audio_store}: audio stored at {self._audio.sample_rate} Hz, the "
                    f"student needs {self.sample_rate} Hz"
                )
            # rows of one store chunk: one contiguous slice, as for the embeddings
            lo, hi = int(rows[0]), int(rows[-1]) + 1
            pick = rows - lo
            try:
                audio = np.asarray(self._audio_arrays["audio"][lo:hi])[pick]
                lengths = np.asarray(self._audio_arrays["num_samples"][lo:hi])[pick]
            except Exception as exc:
                raise _unreadable(self.audio_store, rows, exc) from None
            return [
                clip[: int(n)].astype(np.float32) / 32768.0
                for clip, n in zip(audio, lengths, strict=True)
            ]
        from east.audio import load_audio

        return [load_audio(self.manifest.audio_path(int(r)), sr=self.sample_rate) for r in rows]

    def _maybe_crop(self, item: dict[str, Any], rng: np.random.Generator) -> dict[str, Any]:
        fixed = self.crop.mode == "fixed" and (self.training or self.crop.eval_fixed)
        if not fixed:
            return item
        length = round(self.crop.seconds * self.sample_rate)  # type: ignore[operator]
        return self._cut(item, self._window_start(len(item["wave"]), length, rng), length)

    def _window_start(self, total: int, length: int, rng: np.random.Generator) -> int:
        excess = total - length
        if excess <= 0:
            return 0
        position = self.crop.position if self.training else "center"
        if position == "start":
            return 0
        if position == "center":
            return excess // 2
        return int(rng.integers(0, excess + 1))

    def _cut(self, item: dict[str, Any], begin: int, length: int) -> dict[str, Any]:
        """Samples ``[begin, begin + length)`` of a clip (zero-padded when shorter) and the
        teacher frames whose centre falls in that window (times made relative to it)."""
        wave = item["wave"][begin : begin + length]
        if len(wave) < length:
            wave = np.pad(wave, (0, length - len(wave)))
        t0, t1 = begin / self.sample_rate, (begin + length) / self.sample_rate
        teachers = []
        for emb, n, times in item["teachers"]:
            if n <= 1:  # clip-level teacher: one embedding for the whole clip
                teachers.append((emb, n, times))
                continue
            centre = times.mean(axis=1)
            keep = (centre >= t0) & (centre < t1)
            if not keep.any():  # window shorter than a frame: nearest frame
                keep = np.zeros_like(keep)
                keep[int(np.argmin(np.abs(centre - (t0 + t1) / 2)))] = True
            teachers.append((emb[keep], int(keep.sum()), times[keep] - t0))
        return {**item, "wave": wave, "teachers": teachers}

    def _pieces(self, item: dict[str, Any], rng: np.random.Generator) -> Iterator[dict[str, Any]]:
        """What the student sees of one clip: the fixed crop, or the whole clip, or — past
        ``crop.max_seconds`` — one window (training) or consecutive equal windows (evaluation)."""
        item = self._maybe_crop(item, rng)
        limit = max(1, round(self.crop.max_seconds * self.sample_rate))
        total = len(item["wave"])
        if total <= limit:
            yield item
        elif self.training:
            yield self._cut(item, self._window_start(total, limit, rng), limit)
        else:
            bounds = np.linspace(0, total, math.ceil(total / limit) + 1).round().astype(int)
            for a, b in itertools.pairwise(bounds):
                yield self._cut(item, int(a), int(b - a))

    def __iter__(self) -> Iterator[dict[str, Any]]:
        if get_worker_info() is None:  # the main process: errors raise as they are
            yield from self._iter_items()
            return
        try:
            yield from self._iter_items()
        except EastError as exc:  # to the main process as an item: see checked_batches()
            # repeated until the loader stops: a lone item in a last, partial batch would be
            # dropped (drop_last) and the broken clip skipped silently
            error = {"east_error": str(exc)}
            while True:
                yield error

    def _iter_items(self) -> Iterator[dict[str, Any]]:
        info = get_worker_info()
        worker, num_workers = (info.id, info.num_workers) if info is not None else (0, 1)
        if not self.partners:
            yield from self._own_items(worker, num_workers)
            return
        partners = self._partner_items(worker, num_workers)
        for item in self._own_items(worker, num_workers):
            yield {**item, "partner": next(partners)}

    def _partner_items(self, worker: int, num_workers: int) -> Iterator[dict[str, Any]]:
        """Endless mixup partners for this worker, drawn from the whole split (all ranks' rows,
        as the reference draws ``randint(len(data))``) yet read block by block: every (rank,
        worker) takes its share of an independent shuffle of all blocks, reshuffled each pass."""
        chunk_of = self.rows // self.chunk_clips
        order = np.argsort(chunk_of, kind="stable")
        starts = np.flatnonzero(np.diff(chunk_of[order])) + 1
        blocks = np.split(self.rows[order], starts) if len(self.rows) else []
        if not blocks:
            return
        slot, slots = self.rank * num_workers + worker, self.world_size * num_workers
        for cycle in itertools.count():
            rng = np.random.default_rng([self.seed, self.epoch, self.rank, worker, 13, cycle])
            shuffled = [blocks[i] for i in rng.permutation(len(blocks))]
            mine = shuffled[slot::slots] or [shuffled[slot % len(shuffled)]]
            for block in mine:
                items = self._read_block(block)
                for j in rng.permutation(len(items)):
                    yield next(self._pieces(items[j], rng))

    def _own_items(self, worker: int, num_workers: int) -> Iterator[dict[str, Any]]:
        blocks = self._rank_blocks()[worker::num_workers]
        rng = np.random.default_rng([self.seed, self.epoch, self.rank, worker, 7])
        buffer: list[dict[str, Any]] = []
        for block in blocks:
            items = self._read_block(block)
            if not self.shuffle:
                # keep the caller's row order inside a block (evaluation output order)
                for it in items:
                    yield from self._pieces(it, rng)
                continue
            buffer.extend(items)
            while len(buffer) >= self.buffer_size:
                j = int(rng.integers(len(buffer)))
                buffer[j], buffer[-1] = buffer[-1], buffer[j]
                yield from self._pieces(buffer.pop(), rng)
        order = rng.permutation(len(buffer)) if self.shuffle else np.arange(len(buffer))
        for j in order:
            yield from self._pieces(buffer[j], rng)


def _unreadable(path: Any, rows: np.ndarray, exc: Exception) -> CacheError:
    detail = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
    return CacheError(
        f"{path}: rows {int(rows[0])}-{int(rows[-1])} cannot be read ({detail}); "
        f"`east cache verify {path}` checks the store"
    )


def checked_batches(loader: Any) -> Iterator[dict[str, Any]]:
    """The loader's batches; raises the first user-facing error a worker met, as one line."""
    for batch in loader:
        if "east_error" in batch:
            raise EastError(batch["east_error"])
        yield batch


def average_windows(logits: torch.Tensor, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """One logit vector per clip: the mean over a clip's windows (rows in first-seen order);
    clips of one window are returned unchanged."""
    unique, first, inverse = _first_seen(rows)
    if len(unique) == len(rows):
        return logits, rows
    sums = torch.zeros(len(unique), logits.shape[1], dtype=logits.dtype)
    sums.index_add_(0, inverse, logits)
    counts = torch.bincount(inverse, minlength=len(unique)).to(logits.dtype)[:, None]
    order = torch.argsort(first)
    return (sums / counts)[order], unique[order]


def _first_seen(rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    unique, inverse = torch.unique(rows, return_inverse=True)
    first = torch.full((len(unique),), len(rows), dtype=torch.int64)
    first.scatter_reduce_(0, inverse, torch.arange(len(rows)), reduce="amin")
    return unique, first, inverse


def collate(items: list[dict[str, Any]]) -> dict[str, Any]:
    """Pad waveforms to the longest clip and teacher sequences to the longest valid count."""
    for it in items:
        if "east_error" in it:
            return it
    if "partner" in items[0]:
        # clips then their mixup partners, padded together (the log-mels are mixed frame by
        # frame); ``pairs`` = N, the number of clips
        own = [{k: v for k, v in it.items() if k != "partner"} for it in items]
        return {**collate(own + [it["partner"] for it in items]), "pairs": len(items)}
    lengths = torch.tensor([len(it["wave"]) for it in items], dtype=torch.int64)
    wave = torch.zeros(len(items), int(lengths.max()))
    for i, it in enumerate(items):
        wave[i, : len(it["wave"])] = torch.from_numpy(np.asarray(it["wave"], dtype=np.float32))
    first = items[0]
    if np.ndim(first["target"]) == 0:
        target = torch.tensor([int(it["target"]) for it in items], dtype=torch.int64)
        mask = None
    else:
        target = torch.from_numpy(np.stack([it["target"] for it in items]).astype(np.float32))
        mask = torch.from_numpy(np.stack([it["mask"] for it in items]).astype(bool))
    teachers = []
    for k in range(len(first["teachers"])):
        parts = [it["teachers"][k] for it in items]
        counts = torch.tensor([p[1] for p in parts], dtype=torch.int64)
        t_max = max(1, int(counts.max()))
        dim = parts[0][0].shape[-1]
        emb = torch.zeros(len(items), t_max, dim)
        for i, (e, n, _) in enumerate(parts):
            emb[i, :n] = torch.from_numpy(np.asarray(e[:n], dtype=np.float32))
        longest = parts[int(counts.argmax())][2]
        times = torch.from_numpy(np.asarray(longest[:t_max], dtype=np.float32)).reshape(-1, 2)
        teachers.append({"embeddings": emb, "num_frames": counts, "frame_times": times})
    return {
        "wave": wave,
        "lengths": lengths,
        "target": target,
        "mask": mask,
        "teachers": teachers,
        "rows": torch.tensor([it["row"] for it in items], dtype=torch.int64),
    }


def make_loader(
    stream: ClipStream,
    batch_size: int,
    num_workers: int,
    pin_memory: bool,
    drop_last: bool,
) -> DataLoader:
    """A DataLoader over a stream: worker processes, pinned memory on CUDA, prefetching."""
    kwargs: dict[str, Any] = {}
    if num_workers > 0:
        kwargs.update(prefetch_factor=4, persistent_workers=False)
    return DataLoader(
        stream,
        batch_size=batch_size,
        num_workers=num_workers,
        collate_fn=collate,
        pin_memory=pin_memory,
        drop_last=drop_last,
        **kwargs,
    )


def steps_per_epoch(stream: ClipStream, batch_size: int, drop_last: bool) -> int:
    n = len(stream)
    return n // batch_size if drop_last else math.ceil(n / batch_size)


def subsample_rows(
    rows: np.ndarray, fraction: float, seed: int, labels: np.ndarray | None = None
) -> np.ndarray:
    """Seeded subset of training rows for the limited-data study (sorted, manifest order).

    Single-label sets keep the class balance (the same fraction of every class).
    """
    if fraction >= 1.0:
        return np.asarray(rows)
    rng = np.random.default_rng(seed)
    rows = np.asarray(rows)
    if labels is not None and labels.ndim == 1:
        keep = []
        for c in np.unique(labels[rows]):
            members = rows[labels[rows] == c]
            k = max(1, round(fraction * len(members)))
            keep.append(rng.choice(members, size=k, replace=False))
        return np.sort(np.concatenate(keep))
    k = max(1, round(fraction * len(rows)))
    return np.sort(rng.choice(rows, size=k, replace=False))
