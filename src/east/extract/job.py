"""One extraction job: how one store chunk is computed, whichever executor runs it.

A run is planned as :class:`ChunkWork` items (one per store chunk it writes, from the store's
``status``); each is computed batch by batch by a :class:`JobSpec` — decode, then embed with
the teacher (embedding stores) or convert to int16 (audio stores) — and assembled and written
whole by a :class:`ChunkAssembler` with the crash-safe protocol of :mod:`east.cache_schema`.
The executors of :mod:`east.extract.executors` and :mod:`east.extract.distributed` only decide
*where* each step runs (this process, local worker processes, dask workers, the service), so
every executor writes the same store.

Determinism (why a resumed store equals an uninterrupted one): the batches are a pure
function of the store chunk: its rows sorted by their header length (``length_hint``, then
row) and cut every ``batch_size`` rows. A batch is always computed whole, even when some of its
rows are done already (they are recomputed to the same values and not rewritten), so padding
and batch shapes — and therefore the numbers — never depend on where a run stopped. Keep
``batch_size`` (and the device) when resuming.

Teachers are built once per process in a :class:`TeacherPool` (``default_pool``): a forked
worker finds its parent's teachers there, a dask worker builds each once and keeps it.
"""

from __future__ import annotations

import contextlib
import importlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from east.cache_schema import DONE, FAILED, PENDING, _ClipStore
from east.errors import AudioError, EastError

__all__ = [
    "AudioClip",
    "ChunkAssembler",
    "ChunkWork",
    "ClipResult",
    "DecodedBatch",
    "JobSpec",
    "TeacherPool",
    "TeacherSpec",
    "cached_teacher",
    "chunk_batches",
    "decode_batch",
    "decode_clip",
    "default_pool",
    "embed_batch",
    "import_plugin",
    "plan_work",
    "process_chunk",
    "to_int16",
]

# ---------------------------------------------------------------------------- teachers


@dataclass(frozen=True)
class TeacherSpec:
    """How to build a teacher anywhere (also in a dask worker): registry name, weights
    (path, ``"random"`` or ``None`` for the pinned official file) and an optional module to
    import first that registers extra teachers (plugins, tests)."""

    name: str
    weights: str | None = None
    plugin: str | None = None

    def build(self, device: str) -> Any:
        from east.extract.teachers import create_teacher

        if self.plugin:
            import_plugin(self.plugin)
        return create_teacher(self.name, self.weights, device)


def import_plugin(name: str) -> None:
    """Import a ``--plugin`` module; a missing one is a one-line error, its own bugs are not."""
    try:
        importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name is None or not (name == exc.name or name.startswith(exc.name + ".")):
            raise  # the plugin exists but one of its imports is missing: its traceback helps
        raise EastError(
            f"--plugin {name}: no module of that name (is it installed or on PYTHONPATH?)"
        ) from None


class TeacherPool:
    """Built teachers, one per ``(spec, device, optimize)``, kept for the life of the process
    (or of the pool: the service keeps one per device)."""

    def __init__(self) -> None:
        self._teachers: dict[tuple[TeacherSpec, str, bool], Any] = {}

    def get(
        self,
        spec: TeacherSpec,
        device: str,
        optimize: bool = False,
        on_built: Callable[[Any], None] | None = None,
    ) -> Any:
        """The teacher of ``spec`` on ``device``, built on first use.

        ``optimize``: on CPU, let the teacher swap in its frozen inference graph
        (:meth:`Teacher.optimize_for_cpu`; same values within float rounding).
        ``on_built(teacher)`` runs when a new teacher is built, before it is optimised (to
        start work that needs only its facts, e.g. the header scan).
        """
        key = (spec, device, optimize)
        if key not in self._teachers:
            teacher = spec.build(device)
            if on_built is not None:
                on_built(teacher)
            if optimize:
                teacher.optimize_for_cpu()  # a no-op off the CPU and for teachers without one
            self._teachers[key] = teacher
        return self._teachers[key]

    def clear(self) -> None:
        self._teachers.clear()


default_pool = TeacherPool()
cached_teacher = default_pool.get  # the process's pool (forked workers inherit it)


# ---------------------------------------------------------------------------- planning


@dataclass
class ChunkWork:
    """What one run does in one store chunk."""

    chunk: int
    start: int
    stop: int
    todo: list[int]  # rows written by this run
    batches: list[list[int]]  # rows decoded and embedded together (always whole plan batches)
    keep_existing: bool  # the chunk holds earlier results that must be carried over


def chunk_batches(rows: Sequence[int], length_hint: np.ndarray, batch_size: int) -> list[list[int]]:
    """The fixed batch plan of a store chunk: rows by (header length, row), cut every
    ``batch_size``. Similar lengths share a batch (little padding)."""
    order = sorted(rows, key=lambda r: (int(length_hint[r]), r))
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


def plan_work(
    store: _ClipStore, batch_size: int, limit: int | None = None, retry_failed: bool = False
) -> list[ChunkWork]:
    status = store.status
    pending = (status == PENDING) | ((status == FAILED) if retry_failed else False)
    todo_rows = np.flatnonzero(pending)
    if limit is not None:
        todo_rows = todo_rows[: max(int(limit), 0)]
    hints = np.asarray(store.array("length_hint")[:])
    works = []
    for chunk in np.unique(todo_rows // store.chunk_clips):
        start, stop = store.chunk_bounds(int(chunk))
        lo, hi = np.searchsorted(todo_rows, [start, stop])
        todo = [int(r) for r in todo_rows[lo:hi]]
        todo_set = set(todo)
        batches = [
            b
            for b in chunk_batches(range(start, stop), hints, batch_size)
            if todo_set.intersection(b)
        ]
        keep = bool((status[start:stop] != PENDING).any())
        if keep and store.chunk_problem(int(chunk)) is not None:
            # its earlier results cannot be carried over (missing or changed objects): the
            # whole chunk is computed again, so this run repairs it
            todo, keep = list(range(start, stop)), False
            batches = chunk_batches(todo, hints, batch_size)
        works.append(ChunkWork(int(chunk), start, stop, todo, batches, keep))
    return works


# ---------------------------------------------------------------------------- decoding


@dataclass
class DecodedBatch:
    rows: list[int]  # rows that decoded, in batch order
    waveforms: Any  # torch (B, L) float32, zero padded
    lengths: Any  # torch (B,) int64
    errors: dict[int, str]  # rows that failed to decode → reason
    cached: dict[int, Any] = field(default_factory=dict)  # rows found in the clip cache
    shas: dict[int, str] = field(default_factory=dict)  # file sha256 of rows to cache

    def fields(self) -> dict[str, Any]:
        """A plain dict of tensors (a DataLoader pins those), see :meth:`of`."""
        return {name: getattr(self, name) for name in self.__dataclass_fields__}

    @classmethod
    def of(cls, item: dict[str, Any]) -> DecodedBatch:
        return cls(**item)


def decode_clip(
    path: str | Path, sample_rate: int, max_samples: int, max_seconds: float | None
) -> np.ndarray | str:
    """Float32 mono audio at ``sample_rate`` cropped to ``max_samples``, or a failure reason."""
    from east.audio import load_audio

    try:
        wave = load_audio(path, sample_rate, duration=max_seconds)
    except AudioError as exc:
        return exc.reason
    except Exception as exc:  # (any decoder crash is this clip's failure)
        return f"cannot decode ({type(exc).__name__}: {exc})"
    if wave.size == 0:
        return "contains no audio samples"
    return wave[:max_samples]


def decode_batch(
    rows: Sequence[int],
    paths: Sequence[str] | dict[int, str],
    sample_rate: int,
    max_samples: int,
    max_seconds: float | None,
) -> DecodedBatch:
    import torch

    waves: list[np.ndarray] = []
    ok_rows: list[int] = []
    errors: dict[int, str] = {}
    for row in rows:
        out = decode_clip(paths[row], sample_rate, max_samples, max_seconds)
        if isinstance(out, str):
            errors[row] = out
        else:
            ok_rows.append(row)
            waves.append(out)
    longest = max((len(w) for w in waves), default=0)
    batch = np.zeros((len(waves), longest), np.float32)
    for i, w in enumerate(waves):
        batch[i, : len(w)] = w
    return DecodedBatch(
        ok_rows,
        torch.from_numpy(batch),
        torch.tensor([len(w) for w in waves], dtype=torch.int64),
        errors,
    )


@dataclass
class ClipResult:
    """A clip's embeddings (embedding stores)."""

    embedding: np.ndarray  # (num_frames, D) in the store dtype
    frame_times: np.ndarray  # (num_frames, 2) float64
    num_samples: int

    def row(self) -> dict[str, Any]:
        """The clip's values per store array (padded by the assembler)."""
        return {
            "embeddings": self.embedding,
            "frame_times": self.frame_times,
            "num_frames": len(self.embedding),
            "num_samples": self.num_samples,
        }


@dataclass
class AudioClip:
    """A clip's decoded audio (audio stores)."""

    audio: np.ndarray  # (num_samples,) int16
    num_samples: int

    def row(self) -> dict[str, Any]:
        return {"audio": self.audio, "num_samples": self.num_samples}


def to_int16(wave: np.ndarray) -> np.ndarray:
    """Float audio in [-1, 1) → int16 (scale 32768, clipped), the audio store's format."""
    return np.clip(np.round(wave * 32768.0), -32768, 32767).astype(np.int16)


# ---------------------------------------------------------------------------- embedding


def _forward(teacher: Any, waveforms: Any, lengths: Any, amp: bool) -> Any:
    import torch

    device = teacher.device
    use_amp = amp and device.type == "cuda"
    waveforms = waveforms.to(device, non_blocking=True)
    lengths = lengths.to(device, non_blocking=True)
    with torch.inference_mode(), torch.autocast(device.type, enabled=use_amp):
        return teacher.embed(waveforms, lengths)


def embed_batch(
    teacher: Any,
    batch: DecodedBatch,
    *,
    max_frames: int,
    dtype: str,
    amp: bool = True,
    strict: bool = False,
) -> dict[int, ClipResult | str]:
    """Run the teacher on one decoded batch: row → result, or row → failure reason.

    A batch that raises is retried clip by clip so that one bad clip does not fail the rest.
    """
    out: dict[int, ClipResult | str] = dict(batch.errors)
    if not batch.rows:
        return out
    try:
        results = _embed_rows(teacher, batch, range(len(batch.rows)), max_frames, dtype, amp)
    except Exception as exc:
        if strict:
            raise EastError(
                f"teacher failed on rows {batch.rows}: {type(exc).__name__}: {exc} "
                "(stopping because of --strict)"
            ) from exc
        if len(batch.rows) == 1:
            return {**out, batch.rows[0]: f"teacher failed ({type(exc).__name__}: {exc})"}
        results = {}
        for i in range(len(batch.rows)):
            one = DecodedBatch(
                [batch.rows[i]],
                batch.waveforms[i : i + 1, : int(batch.lengths[i])],
                batch.lengths[i : i + 1],
                {},
            )
            results.update(embed_batch(teacher, one, max_frames=max_frames, dtype=dtype, amp=amp))
    out.update(results)
    return out


def _embed_rows(
    teacher: Any, batch: DecodedBatch, idx: range, max_frames: int, dtype: str, amp: bool
) -> dict[int, ClipResult | str]:
    output = _forward(teacher, batch.waveforms, batch.lengths, amp)
    emb = output.embeddings.float().cpu().numpy()
    frames = output.num_frames.cpu().numpy().astype(np.int64)
    times = output.frame_times.double().cpu().numpy()
    clip_level = teacher.info.clip_level
    sr = teacher.sample_rate
    results: dict[int, ClipResult | str] = {}
    for i in idx:
        row = batch.rows[i]
        n = int(batch.lengths[i])
        nf = min(int(frames[i]), max_frames, emb.shape[1])
        if nf < 1:
            results[row] = "teacher returned no frames"
            continue
        values = emb[i, :nf].astype(dtype)
        if not np.isfinite(values).all():
            why = "NaN/Inf" if not np.isfinite(emb[i, :nf]).all() else f"values beyond {dtype}"
            results[row] = f"teacher output holds {why}"
            continue
        # a clip-level frame spans its own clip, not the longest clip of the batch
        t = np.array([[0.0, n / sr]]) if clip_level else times[:nf].astype(np.float64)
        results[row] = ClipResult(values, t, n)
    return results


# ---------------------------------------------------------------------------- the job


@dataclass(frozen=True)
class JobSpec:
    """What every chunk of one run shares (small and picklable: it travels to workers).

    ``teacher`` is ``None`` for an audio store; ``device`` is resolved where the teacher is
    built (``None``/``"auto"``: that process's best device).
    """

    kind: Literal["embeddings", "audio"]
    sample_rate: int
    max_samples: int
    max_seconds: float | None
    teacher: TeacherSpec | None = None
    device: str | None = None
    optimize: bool = False
    max_frames: int = 0
    dtype: str = "float16"
    amp: bool = True
    strict: bool = False
    # a clip cache (east.clip_cache) consulted before decoding and filled after embedding
    clip_cache: str | None = None
    clip_identity: dict[str, Any] | None = field(default=None, compare=False, hash=False)

    def build_teacher(self, pool: TeacherPool | None = None) -> Any:
        from east.settings import best_device

        assert self.teacher is not None, "an audio job has no teacher"
        return (pool or default_pool).get(self.teacher, best_device(self.device), self.optimize)

    def decode(self, rows: Sequence[int], paths: Sequence[str] | dict[int, str]) -> DecodedBatch:
        """Decode the batch's clips — those not already in the clip cache."""
        if self.clip_cache is None:
            return decode_batch(rows, paths, self.sample_rate, self.max_samples, self.max_seconds)
        hits, shas, todo = self._lookup(rows, paths)
        batch = decode_batch(todo, paths, self.sample_rate, self.max_samples, self.max_seconds)
        batch.cached, batch.shas = hits, shas
        return batch

    def _lookup(
        self, rows: Sequence[int], paths: Sequence[str] | dict[int, str]
    ) -> tuple[dict[int, ClipResult], dict[int, str], list[int]]:
        from east.clip_cache import sha256_file

        cache, identity = _clip_cache(self.clip_cache), self.clip_identity
        hits: dict[int, ClipResult] = {}
        shas: dict[int, str] = {}
        todo = []
        for row in rows:
            try:
                sha = sha256_file(paths[row])
            except OSError:  # (decoding reports the missing or unreadable file)
                todo.append(row)
                continue
            entry = cache.get(sha, identity)
            if entry is None:
                shas[row] = sha
                todo.append(row)
            else:
                nf = min(len(entry.embeddings), self.max_frames)
                hits[row] = ClipResult(entry.embeddings[:nf].astype(self.dtype),
                                       np.asarray(entry.frame_times[:nf]), entry.num_samples)  # fmt: skip
        return hits, shas, todo

    def finish(
        self, batch: DecodedBatch, teacher: Any = None, amp: bool | None = None
    ) -> dict[int, Any]:
        """Row → result (or failure reason) of a decoded batch: embedded by ``teacher``, or
        converted to int16 for an audio store."""
        if self.kind == "audio":
            out: dict[int, Any] = dict(batch.errors)
            for i, row in enumerate(batch.rows):
                n = int(batch.lengths[i])
                out[row] = AudioClip(to_int16(batch.waveforms[i, :n].numpy()), n)
            return out
        results = embed_batch(
            teacher if teacher is not None else self.build_teacher(),
            batch,
            max_frames=self.max_frames,
            dtype=self.dtype,
            amp=self.amp if amp is None else amp,
            strict=self.strict,
        )
        if self.clip_cache is not None:
            self._keep(results, batch.shas)
            results.update(batch.cached)
        return results

    def _keep(self, results: dict[int, Any], shas: dict[int, str]) -> None:
        """Put the newly computed clips into the clip cache (a failed write costs a later
        recomputation, never this run)."""
        from east.errors import CacheError

        cache = _clip_cache(self.clip_cache)
        for row, result in results.items():
            if isinstance(result, ClipResult) and row in shas:
                with contextlib.suppress(CacheError, ValueError):
                    cache.put(shas[row], self.clip_identity, result.embedding,
                              result.frame_times, result.num_samples)  # fmt: skip


_CLIP_CACHES: dict[str, Any] = {}


def _clip_cache(root: str | None) -> Any:
    """The process's handle of the clip cache at ``root`` (opened once)."""
    from east.clip_cache import ClipCache

    assert root is not None
    if root not in _CLIP_CACHES:
        _CLIP_CACHES[root] = ClipCache(root)
    return _CLIP_CACHES[root]


# ---------------------------------------------------------------------------- chunk assembly


class ChunkAssembler:
    """Collects the results of one store chunk and writes it (crash-safe, see cache_schema)."""

    def __init__(self, store: _ClipStore, work: ChunkWork) -> None:
        self.store = store
        self.work = work
        n = work.stop - work.start
        self.data = {
            name: np.zeros((n, *store.array(name).shape[1:]), store.array(name).dtype)
            for name in store.digest_arrays
        }
        self.status = np.zeros(n, np.uint8)
        self.failure = [""] * n
        self.todo = set(work.todo)
        self.failures: list[tuple[int, str]] = []

    def add(self, row: int, result: ClipResult | AudioClip | str) -> None:
        if row not in self.todo:  # recomputed only to keep the batch whole
            return
        i = row - self.work.start
        if isinstance(result, str):
            self.status[i] = FAILED
            self.failure[i] = result
            self.failures.append((row, result))
            return
        for name, value in result.row().items():
            if np.ndim(value) == 0:
                self.data[name][i] = value
            else:
                self.data[name][i, : len(value)] = value
        self.status[i] = DONE

    def add_all(self, results: dict[int, Any], strict: bool = False) -> int:
        """Add a batch's results; returns how many of them this run writes. ``strict``: a
        failure stops the run (naming the clip)."""
        if strict:
            check_strict({r: v for r, v in results.items() if isinstance(v, str)}, self.store)
        for row, result in results.items():
            self.add(row, result)
        return sum(1 for row in results if row in self.todo)

    def write(self) -> None:
        if self.work.keep_existing:
            self._carry_over()
        self.store.write_chunk(self.work.chunk, self.data, self.status, self.failure)

    def _carry_over(self) -> None:
        old_status = self.store.chunk_status(self.work.chunk)
        old = self.store.read_chunk_data(self.work.chunk)
        if old is None:  # unreadable or damaged: those rows become pending again
            return
        for i, st in enumerate(old_status):
            if st == PENDING or (self.work.start + i) in self.todo:
                continue
            for name, block in self.data.items():
                block[i] = old[name][i]
            self.status[i] = st
            self.failure[i] = str(old["failure"][i])


def process_chunk(
    store: _ClipStore,
    spec: JobSpec,
    work: ChunkWork,
    paths: Sequence[str] | dict[int, str],
    teacher: Any = None,
) -> list[tuple[int, str]]:
    """Compute and write one whole store chunk in this process; returns its failures."""
    asm = ChunkAssembler(store, work)
    if spec.kind == "embeddings" and teacher is None:
        teacher = spec.build_teacher()
    for rows in work.batches:
        batch = spec.decode(rows, paths)
        if spec.strict:
            check_strict(batch.errors, store)
        asm.add_all(spec.finish(batch, teacher), spec.strict)
    asm.write()
    return asm.failures


def check_strict(errors: dict[int, Any], store: _ClipStore | None) -> None:
    """``--strict``: the first failure stops the run, naming its clip."""
    if errors:
        row, reason = next(iter(errors.items()))
        clip = store.array("clip_id")[row] if store is not None else f"row {row}"
        raise EastError(f"clip {clip} (row {row}): {reason} (stopping because of --strict)")


def probe_frames(teacher: Any, num_samples: int) -> tuple[int, int]:
    """``(frames, dim)`` the teacher gives for the longest clip (zeros of that length)."""
    import torch

    wave = torch.zeros(1, max(int(num_samples), 1))
    out = _forward(teacher, wave, torch.tensor([wave.shape[1]]), amp=False)
    return int(out.embeddings.shape[1]), int(out.embeddings.shape[2])
