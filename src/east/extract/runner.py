"""The extraction runner: manifest → decoded audio → teacher → embedding store.

Pipeline (local): worker processes of a torch ``DataLoader`` decode and resample whole
batches while the teacher runs on the previous one (under ``torch.inference_mode()``), and a
writer thread compresses and writes finished store chunks while the next chunk is computed.

* On CUDA the workers only decode; the main process runs the teacher (autocast, pinned memory,
  non-blocking copies).
* On a CPU the teacher and the decoders share the same cores. With at least one worker per
  torch thread (the default 2 workers on 2 cores; ``-j <cores>`` on a bigger machine), each
  worker decodes *and* embeds its batches with a single-threaded replica of the teacher
  (forked, so it costs no extra build), and the main process only assembles and writes. One
  job per core at a time beats decoding processes that pre-empt the teacher's thread pool
  mid-operation (benchmarks/RESULTS.md). With fewer workers the workers only decode.

Determinism (why a resumed store equals an uninterrupted one): the batches are a pure
function of the store chunk: its rows sorted by their header length (``length_hint``, then
row) and cut every ``batch_size`` rows. A batch is always computed whole, even when some of its
rows are done already (they are recomputed to the same values and not rewritten), so padding
and batch shapes — and therefore the numbers — never depend on where a run stopped. Keep
``batch_size`` (and the device) when resuming.
"""

from __future__ import annotations

import contextlib
import errno
import importlib
import math
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from east.cache_schema import (
    DEFAULT_CHUNK_CLIPS,
    DONE,
    FAILED,
    PENDING,
    CacheError,
    EmbeddingStore,
    Kind,
    _ClipStore,
    check_store_location,
    create_store,
    open_store,
    path_state,
)
from east.errors import AudioError, EastError
from east.locking import WriterLock, die_with_parent, store_lock_path

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


_TEACHERS: dict[tuple[TeacherSpec, str, bool], Any] = {}


def cached_teacher(
    spec: TeacherSpec,
    device: str,
    optimize: bool = False,
    on_built: Callable[[Any], None] | None = None,
) -> Any:
    """The teacher of ``spec`` on ``device``, built once per process (dask workers reuse it).

    ``optimize``: on CPU, let the teacher swap in its frozen inference graph
    (:meth:`Teacher.optimize_for_cpu`; same values within float rounding).
    ``on_built(teacher)`` runs when a new teacher is built, before it is optimised (to start
    work that needs only its facts, e.g. the header scan).
    """
    key = (spec, device, optimize)
    if key not in _TEACHERS:
        teacher = spec.build(device)
        if on_built is not None:
            on_built(teacher)
        if optimize:
            teacher.optimize_for_cpu()  # a no-op off the CPU and for teachers without one
        _TEACHERS[key] = teacher
    return _TEACHERS[key]


# ---------------------------------------------------------------------------- options


@dataclass
class ExtractConfig:
    """Options of one extraction run (see ``east extract --help``)."""

    batch_size: int = 16
    num_workers: int = 2  # decode processes (0: decode in the main process)
    device: str | None = None  # None/"auto": best available
    chunk_clips: int = DEFAULT_CHUNK_CLIPS
    dtype: str = "float16"
    max_seconds: float | None = None  # crop clips to their first max_seconds
    strict: bool = False  # a bad clip aborts the run
    limit: int | None = None  # process at most this many more clips
    overwrite: bool = False
    retry_failed: bool = False  # re-attempt clips recorded as failed
    amp: bool = True  # autocast on CUDA
    optimize: bool = True  # CPU: the teacher's frozen TorchScript inference graph, if it has one
    progress: bool = True
    storage_options: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        """Refuse impossible values in one line, named as the command-line options."""
        checks = [
            (self.batch_size >= 1, f"--batch-size must be at least 1 (got {self.batch_size})"),
            (self.num_workers >= 0, f"--num-workers must be 0 or more (got {self.num_workers})"),
            (self.chunk_clips >= 1, f"--chunk-clips must be at least 1 (got {self.chunk_clips})"),
            (self.limit is None or self.limit >= 0, f"--limit must be 0 or more (got {self.limit})"),
            (
                self.max_seconds is None or (math.isfinite(self.max_seconds) and self.max_seconds > 0),
                f"--max-seconds must be a positive number of seconds (got {self.max_seconds})",
            ),
            (self.dtype in ("float16", "float32"), f"--dtype must be float16 or float32 (got {self.dtype!r})"),
        ]  # fmt: skip
        for ok, message in checks:
            if not ok:
                raise EastError(message)


@dataclass
class ExtractSummary:
    path: str
    num_clips: int
    processed: int  # clips written this run (done + failed)
    failed_now: int
    done_total: int
    failed_total: int
    pending: int
    seconds: float
    failures: list[tuple[str, str]] = field(default_factory=list)  # this run: (clip, reason)

    @classmethod
    def of_run(
        cls,
        path: str | Path,
        store: Any,
        manifest: Any,
        processed: int,
        failures: list[tuple[int, str]],
        seconds: float,
    ) -> ExtractSummary:
        """The summary of a run that wrote ``processed`` clips, ``failures`` (row, reason)
        among them; totals read from the store's status."""
        status = store.status
        ids = manifest.clip_ids
        return cls(
            path=str(path),
            num_clips=store.num_clips,
            processed=processed,
            failed_now=len(failures),
            done_total=int((status == DONE).sum()),
            failed_total=int((status == FAILED).sum()),
            pending=int((status == PENDING).sum()),
            seconds=seconds,
            failures=[(ids[r], reason) for r, reason in failures],
        )

    @property
    def clips_per_s(self) -> float:
        return self.processed / self.seconds if self.seconds > 0 else 0.0

    def line(self) -> str:
        return (
            f"{self.processed} clips in {self.seconds:.1f} s ({self.clips_per_s:.1f} clips/s): "
            f"{self.processed - self.failed_now} done, {self.failed_now} failed this run; "
            f"store {self.done_total}/{self.num_clips} done, {self.failed_total} failed, "
            f"{self.pending} pending"
        )


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
class _DecodeDataset:
    """Item ``i`` = batch ``i`` of the plan, decoded (runs in DataLoader worker processes)."""

    batches: list[list[int]]
    paths: list[str]
    sample_rate: int
    max_samples: int
    max_seconds: float | None

    def __len__(self) -> int:
        return len(self.batches)

    def decoded(self, index: int) -> DecodedBatch:
        return decode_batch(
            self.batches[index], self.paths, self.sample_rate, self.max_samples, self.max_seconds
        )

    def __getitem__(self, index: int) -> dict[str, Any]:
        b = self.decoded(index)
        return {"rows": b.rows, "waveforms": b.waveforms, "lengths": b.lengths, "errors": b.errors}


@dataclass
class _DecodeEmbedDataset:
    """CPU: item ``i`` = batch ``i`` decoded and embedded (row → result or failure reason).

    The worker takes the teacher from :func:`cached_teacher`: a forked worker finds the main
    process's (already optimised) teacher there, any other start method builds it once.
    Failures come back as reasons; the main process applies ``--strict``.
    """

    decode: _DecodeDataset
    teacher_key: tuple[TeacherSpec, str, bool]
    max_frames: int
    dtype: str

    def __len__(self) -> int:
        return len(self.decode)

    def __getitem__(self, index: int) -> dict[str, Any]:
        teacher = cached_teacher(*self.teacher_key)
        batch = self.decode.decoded(index)
        results = embed_batch(
            teacher, batch, max_frames=self.max_frames, dtype=self.dtype, amp=False
        )
        return {"results": results}


def teacher_in_workers(device_type: str, workers: int) -> bool:
    """Whether the decode workers also run the teacher (one single-threaded replica each).

    Only on a CPU with at least one worker per torch thread (see the module doc). With fewer
    workers the teacher stays multi-threaded in the main process: a forked worker must not
    start OpenMP threads after its parent used them (libgomp deadlocks), so a replica can only
    have one thread.
    """
    import torch

    return device_type == "cpu" and workers > 0 and workers >= torch.get_num_threads()


def _init_worker(worker_id: int) -> None:
    import torch

    from east.malloc import keep_freed_memory

    die_with_parent()  # a SIGKILLed east must not leave its workers (and its lock) behind
    torch.set_num_threads(1)  # (the DataLoader does it too; a teacher replica relies on it)
    keep_freed_memory()  # the worker is ours: no page faults for every batch's buffers


def _identity(item: Any) -> Any:
    return item


# ---------------------------------------------------------------------------- embedding


@dataclass
class ClipResult:
    embedding: np.ndarray  # (num_frames, D) in the store dtype
    frame_times: np.ndarray  # (num_frames, 2) float64
    num_samples: int


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


# ---------------------------------------------------------------------------- chunk assembly


class ChunkAssembler:
    """Collects the results of one store chunk and writes it (crash-safe, see cache_schema)."""

    def __init__(self, store: EmbeddingStore, work: ChunkWork) -> None:
        self.store = store
        self.work = work
        n = work.stop - work.start
        t, d = store.max_frames, store.dim
        self.data = {
            "embeddings": np.zeros((n, t, d), store.attrs["dtype"]),
            "frame_times": np.zeros((n, t, 2), np.float64),
            "num_frames": np.zeros(n, np.int32),
            "num_samples": np.zeros(n, np.int64),
        }
        self.status = np.zeros(n, np.uint8)
        self.failure = [""] * n
        self.todo = set(work.todo)
        self.failures: list[tuple[int, str]] = []

    def add(self, row: int, result: ClipResult | str) -> None:
        if row not in self.todo:  # recomputed only to keep the batch whole
            return
        i = row - self.work.start
        if isinstance(result, str):
            self.status[i] = FAILED
            self.failure[i] = result
            self.failures.append((row, result))
            return
        nf = len(result.embedding)
        self.data["embeddings"][i, :nf] = result.embedding
        self.data["frame_times"][i, :nf] = result.frame_times
        self.data["num_frames"][i] = nf
        self.data["num_samples"][i] = result.num_samples
        self.status[i] = DONE

    def write(self) -> None:
        if self.work.keep_existing:
            self._carry_over()
        self.store.write_chunk(self.work.chunk, self.data, self.status, self.failure)

    def _carry_over(self) -> None:
        old_status = self.store.chunk_status(self.work.chunk)
        old = self.store.read_chunk_data(self.work.chunk)
        if old is None:  # unreadable: those rows become pending again
            return
        for i, st in enumerate(old_status):
            if st == PENDING or (self.work.start + i) in self.todo:
                continue
            for name, block in self.data.items():
                block[i] = old[name][i]
            self.status[i] = st
            self.failure[i] = str(old["failure"][i])


def process_chunk(
    store: EmbeddingStore,
    work: ChunkWork,
    paths: Sequence[str] | dict[int, str],
    teacher: Any,
    cfg: ExtractConfig,
) -> list[tuple[int, str]]:
    """Decode, embed and write one store chunk in this process (used by dask workers).

    Returns this chunk's failures ``(row, reason)``.
    """
    asm = ChunkAssembler(store, work)
    sr, max_samples = store.sample_rate, int(store.attrs["max_samples"])
    for rows in work.batches:
        batch = decode_batch(rows, paths, sr, max_samples, cfg.max_seconds)
        _check_strict(cfg, batch.errors, store)
        results = embed_batch(
            teacher,
            batch,
            max_frames=store.max_frames,
            dtype=store.attrs["dtype"],
            amp=cfg.amp,
            strict=cfg.strict,
        )
        for row, res in results.items():
            asm.add(row, res)
        _check_strict(cfg, {r: v for r, v in results.items() if isinstance(v, str)}, store)
    asm.write()
    return asm.failures


def _check_strict(cfg: ExtractConfig, errors: dict[int, Any], store: EmbeddingStore) -> None:
    if cfg.strict and errors:
        row, reason = next(iter(errors.items()))
        clip = store.array("clip_id")[row]
        raise EastError(f"clip {clip} (row {row}): {reason} (stopping because of --strict)")


# ---------------------------------------------------------------------------- store set-up


def scan_lengths(
    paths: Sequence[str], sample_rate: int, max_seconds: float | None, threads: int = 8
) -> np.ndarray:
    """Length (samples at ``sample_rate``) of every file from its header; -1 if unreadable."""
    from east.audio import audio_info

    cap = None if max_seconds is None else math.ceil(max_seconds * sample_rate)

    def one(path: str) -> int:
        try:
            native, frames, _ = audio_info(path)
        except Exception:  # (the clip fails properly when it is decoded)
            return -1
        n = math.ceil(frames * sample_rate / native)  # soxr gives round(), never more
        return n if cap is None else min(n, cap)

    with ThreadPoolExecutor(max(1, threads)) as pool:
        return np.fromiter(pool.map(one, paths), dtype=np.int64, count=len(paths))


def probe_frames(teacher: Any, num_samples: int) -> tuple[int, int]:
    """``(frames, dim)`` the teacher gives for the longest clip (zeros of that length)."""
    import torch

    wave = torch.zeros(1, max(int(num_samples), 1))
    out = _forward(teacher, wave, torch.tensor([wave.shape[1]]), amp=False)
    return int(out.embeddings.shape[1]), int(out.embeddings.shape[2])


def provenance_for(manifest: Any, spec: TeacherSpec, teacher: Any, cfg: ExtractConfig) -> dict:
    info = teacher.info
    return {
        "teacher": spec.name,
        "teacher_family": info.family,
        "weights_sha256": teacher.weights_sha256,
        "sample_rate": int(info.sample_rate),
        "window_s": info.window_s,
        "hop_s": info.hop_s,
        "clip_level": info.clip_level,
        "dataset": manifest.name,
        "manifest_hash": manifest.hash,
        "num_clips": len(manifest),
        "dtype": cfg.dtype,
        "max_seconds": cfg.max_seconds,
        "batch_size": cfg.batch_size,
    }


def prepare_store(
    manifest: Any,
    path: str | Path,
    spec: TeacherSpec,
    teacher: Any,
    cfg: ExtractConfig,
    hints: np.ndarray | None = None,
) -> EmbeddingStore:
    """Reopen a matching store to resume, or create one shaped for the whole manifest.

    ``hints``: the clips' lengths from :func:`scan_lengths`, when already scanned. Call it
    inside :func:`writing` (the store's lock).
    """
    provenance = provenance_for(manifest, spec, teacher, cfg)
    if not cfg.overwrite and path_state(path, "embeddings", cfg.storage_options) == "store":
        store = open_store(path, mode="r+", storage_options=cfg.storage_options)
        store.check_identity(provenance)
        store.ensure_digests()
        started = store.attrs.get("batch_size")
        if started not in (None, cfg.batch_size):
            warnings.warn(
                f"resuming {path} with batch size {cfg.batch_size}, the store was started with "
                f"{started}: the remaining clips may differ from an uninterrupted run in the "
                "last bits",
                stacklevel=2,
            )
        return store
    if hints is None:
        paths = [str(manifest.audio_path(i)) for i in range(len(manifest))]
        hints = scan_lengths(paths, teacher.sample_rate, cfg.max_seconds)
    max_samples = int(max(hints.max(initial=0), 1))
    frames, dim = probe_frames(teacher, max_samples)
    return create_store(
        path,
        provenance={**provenance, "max_samples": max_samples},
        clip_ids=manifest.clip_ids,
        max_frames=frames,
        dim=dim,
        chunk_clips=cfg.chunk_clips,
        dtype=cfg.dtype,
        length_hint=hints,
        overwrite=cfg.overwrite,
        storage_options=cfg.storage_options,
    )


# ---------------------------------------------------------------------------- the run


def extract(
    manifest: Any,
    teacher: str | TeacherSpec,
    path: str | Path,
    cfg: ExtractConfig | None = None,
    *,
    scheduler: str | None = None,
    on_progress: Callable[[int], None] | None = None,
) -> ExtractSummary:
    """Extract ``teacher``'s embeddings of every pending clip of ``manifest`` into ``path``.

    ``scheduler`` (``"local:N"`` or ``"tcp://host:port"``) runs the chunks on dask.distributed
    instead of in this process. Returns the run's summary.
    """
    from east.settings import best_device

    cfg = cfg or ExtractConfig()
    spec = teacher if isinstance(teacher, TeacherSpec) else TeacherSpec(teacher)
    device = best_device(cfg.device)
    if scheduler:
        from east.extract.distributed import local_workers

        local_workers(scheduler)  # a malformed --scheduler is refused before the store
    with writing(path, "embeddings", cfg) as state:
        t0 = time.perf_counter()
        # with a scheduler this copy only probes the frame count; the workers build their own
        teacher_key = (spec, "cpu" if scheduler else device, cfg.optimize and not scheduler)
        paths = [str(manifest.audio_path(i)) for i in range(len(manifest))]
        new_store = cfg.overwrite or state != "store"
        with ThreadPoolExecutor(1, thread_name_prefix="east-scan") as pool:
            scan: list[Future[np.ndarray]] = []

            def start_scan(built: Any) -> None:  # the header scan overlaps optimising it
                if new_store:
                    scan.append(
                        pool.submit(scan_lengths, paths, built.sample_rate, cfg.max_seconds)
                    )

            model = cached_teacher(*teacher_key, on_built=start_scan)
            hints = scan[0].result() if scan else None
        store = prepare_store(manifest, path, spec, model, cfg, hints)
        works = plan_work(store, cfg.batch_size, cfg.limit, cfg.retry_failed)
        total = sum(len(w.todo) for w in works)
        with _progress(cfg.progress, total, f"{spec.name} → {Path(str(path)).name}") as advance:

            def tick(n: int) -> None:
                advance(n)
                if on_progress:
                    on_progress(n)

            if scheduler:
                from east.extract.distributed import run_distributed

                failures = run_distributed(scheduler, str(path), works, paths, spec, cfg, tick)
            else:
                failures = _run_local(store, works, paths, teacher_key, cfg, tick)
        seconds = time.perf_counter() - t0
        if total:  # accumulated over resumed runs; read by `east report`'s cost plot
            previous = float(store.attrs.get("extract_seconds", 0.0))
            store.set_attrs(extract_seconds=round(previous + seconds, 3))
        return ExtractSummary.of_run(path, store, manifest, total, failures, seconds)


# errors of the disk a store is on: one line, not a traceback (the chunk protocol keeps every
# finished chunk, so the same command resumes once the disk is fixed)
_DISK_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EFBIG, errno.EIO}


@contextlib.contextmanager
def writing(path: str | Path, kind: Kind, cfg: ExtractConfig) -> Iterator[str]:
    """The frame of every run that writes a store: refuse a path east did not make, hold the
    store's writer lock (local stores; :mod:`east.locking`) and turn disk errors into one
    line. Yields :func:`~east.cache_schema.path_state` of the path, read under the lock."""
    check_store_location(path)
    lock_file = store_lock_path(path)
    lock = WriterLock(lock_file, f"store {path}") if lock_file else contextlib.nullcontext()
    with lock:
        try:
            yield path_state(path, kind, cfg.storage_options)
        except OSError as exc:
            if exc.errno not in _DISK_ERRNOS:
                raise
            where = exc.filename or path
            raise CacheError(
                f"cannot write {where}: {exc.strerror}; every finished chunk of {path} is kept: "
                "fix the disk (free space) and run the same command again to resume"
            ) from None


def _run_local(
    store: EmbeddingStore,
    works: list[ChunkWork],
    paths: list[str],
    teacher_key: tuple[TeacherSpec, str, bool],
    cfg: ExtractConfig,
    tick: Callable[[int], None],
) -> list[tuple[int, str]]:
    import torch
    from torch.utils.data import DataLoader

    batches = [b for w in works for b in w.batches]
    if not batches:
        return []
    teacher = cached_teacher(*teacher_key)
    dtype = store.attrs["dtype"]
    decode = _DecodeDataset(
        batches, paths, store.sample_rate, int(store.attrs["max_samples"]), cfg.max_seconds
    )
    workers = max(0, min(cfg.num_workers, len(batches)))
    embed_in_workers = teacher_in_workers(teacher.device.type, workers)
    dataset: _DecodeDataset | _DecodeEmbedDataset = decode
    if embed_in_workers:
        dataset = _DecodeEmbedDataset(decode, teacher_key, store.max_frames, dtype)
    loader = DataLoader(
        dataset,  # type: ignore[arg-type]
        batch_size=None,
        shuffle=False,
        num_workers=workers,
        collate_fn=_identity,
        pin_memory=teacher.device.type == "cuda",
        prefetch_factor=2 if workers else None,
        worker_init_fn=_init_worker,
    )
    failures: list[tuple[int, str]] = []
    pending_writes: list[Future[None]] = []
    items: Iterator[dict[str, Any]] = iter(loader)
    with ThreadPoolExecutor(1, thread_name_prefix="east-writer") as writer:
        try:
            for work in works:
                asm = ChunkAssembler(store, work)
                for _ in work.batches:
                    item = next(items)
                    if embed_in_workers:
                        results = item["results"]
                    else:
                        batch = DecodedBatch(
                            item["rows"], item["waveforms"], item["lengths"], item["errors"]
                        )
                        _check_strict(cfg, batch.errors, store)
                        results = embed_batch(
                            teacher,
                            batch,
                            max_frames=store.max_frames,
                            dtype=dtype,
                            amp=cfg.amp,
                            strict=cfg.strict,
                        )
                    _check_strict(
                        cfg, {r: v for r, v in results.items() if isinstance(v, str)}, store
                    )
                    for row, res in results.items():
                        asm.add(row, res)
                    tick(sum(1 for r in results if r in asm.todo))
                failures.extend(asm.failures)
                # bound memory: at most one chunk waiting to be written behind this one
                while len(pending_writes) >= 2:
                    pending_writes.pop(0).result()
                pending_writes.append(writer.submit(asm.write))
        finally:
            for fut in pending_writes:
                fut.result()
            del items, loader  # stops the decode workers
            if teacher.device.type == "cuda":
                torch.cuda.empty_cache()
    return failures


class _progress:
    """A rich progress bar on stderr (clips, clips/s, ETA); a no-op when disabled."""

    def __init__(self, enabled: bool, total: int, label: str) -> None:
        self.enabled = enabled and total > 0
        self.total = total
        self.label = label

    def __enter__(self) -> Callable[[int], None]:
        if not self.enabled:
            return lambda n: None
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self.bar = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[rate]} clips/s"),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            console=Console(stderr=True),
        )
        self.bar.start()
        self.task = self.bar.add_task(self.label, total=self.total, rate="-")
        self.t0 = time.perf_counter()
        self.count = 0

        def advance(n: int) -> None:
            self.count += n
            rate = self.count / max(time.perf_counter() - self.t0, 1e-9)
            self.bar.update(self.task, advance=n, rate=f"{rate:.1f}")

        return advance

    def __exit__(self, *exc: object) -> None:
        if self.enabled:
            self.bar.stop()


# ---------------------------------------------------------------------------- audio store


def to_int16(wave: np.ndarray) -> np.ndarray:
    """Float audio in [-1, 1) → int16 (scale 32768, clipped), the audio store's format."""
    return np.clip(np.round(wave * 32768.0), -32768, 32767).astype(np.int16)


class _AudioChunkDataset:
    """Item ``i`` = store chunk ``works[i]`` decoded to int16 (runs in worker processes)."""

    def __init__(self, works: list[ChunkWork], paths: list[str], sr: int, max_samples: int,
                 max_seconds: float | None) -> None:  # fmt: skip
        self.works, self.paths, self.sr = works, paths, sr
        self.max_samples, self.max_seconds = max_samples, max_seconds

    def __len__(self) -> int:
        return len(self.works)

    def __getitem__(self, index: int) -> dict[int, np.ndarray | str]:
        out: dict[int, np.ndarray | str] = {}
        for row in self.works[index].todo:
            wave = decode_clip(self.paths[row], self.sr, self.max_samples, self.max_seconds)
            out[row] = wave if isinstance(wave, str) else to_int16(wave)
        return out


def extract_audio(
    manifest: Any, path: str | Path, sample_rate: int, cfg: ExtractConfig | None = None
) -> ExtractSummary:
    """Decode and resample every clip once into an int16 audio store (``east cache audio``).

    Same crash-safe, resumable chunk protocol, lock and refusals as :func:`extract`.
    """
    cfg = cfg or ExtractConfig()
    if not 1000 <= sample_rate <= 768_000:
        raise EastError(f"--sr must be a sample rate in Hz, 1000 to 768000 (got {sample_rate})")
    with writing(path, "audio", cfg) as state:
        t0 = time.perf_counter()
        paths = [str(manifest.audio_path(i)) for i in range(len(manifest))]
        store = _audio_store_for(manifest, path, paths, sample_rate, cfg, state)
        works = plan_work(store, 1, cfg.limit, cfg.retry_failed)
        failures = _write_audio_chunks(store, works, paths, manifest, cfg)
        total = sum(len(w.todo) for w in works)
        seconds = time.perf_counter() - t0
        return ExtractSummary.of_run(path, store, manifest, total, failures, seconds)


def _audio_store_for(
    manifest: Any, path: str | Path, paths: list[str], sample_rate: int, cfg: ExtractConfig,
    state: str,
) -> Any:  # fmt: skip
    """Reopen the matching audio store to resume, or create it (``state``: path_state)."""
    from east.cache_schema import create_audio_store, open_audio_store

    provenance = {
        "dataset": manifest.name,
        "manifest_hash": manifest.hash,
        "sample_rate": int(sample_rate),
        "max_seconds": cfg.max_seconds,
    }
    if not cfg.overwrite and state == "store":
        store = open_audio_store(path, mode="r+", storage_options=cfg.storage_options)
        store.check_identity({**provenance, "kind": "audio", "num_clips": len(manifest)})
        store.ensure_digests()
        return store
    hints = scan_lengths(paths, sample_rate, cfg.max_seconds)
    return create_audio_store(
        path,
        provenance=provenance,
        clip_ids=manifest.clip_ids,
        max_samples=int(max(hints.max(initial=0), 1)),
        chunk_clips=cfg.chunk_clips,
        length_hint=hints,
        overwrite=cfg.overwrite,
        storage_options=cfg.storage_options,
    )


def _write_audio_chunks(
    store: Any, works: list[ChunkWork], paths: list[str], manifest: Any, cfg: ExtractConfig
) -> list[tuple[int, str]]:
    from torch.utils.data import DataLoader

    total = sum(len(w.todo) for w in works)
    workers = max(0, min(cfg.num_workers, len(works)))
    loader = DataLoader(
        _AudioChunkDataset(works, paths, store.sample_rate, store.max_samples, cfg.max_seconds),  # type: ignore[arg-type]
        batch_size=None,
        num_workers=workers,
        collate_fn=_identity,
        prefetch_factor=2 if workers else None,
        worker_init_fn=_init_worker,
    )
    failures: list[tuple[int, str]] = []
    with _progress(cfg.progress, total, f"audio → {Path(store.path).name}") as advance:
        for work, decoded in zip(works, loader, strict=True):
            n = work.stop - work.start
            data = {"audio": np.zeros((n, store.max_samples), np.int16),
                    "num_samples": np.zeros(n, np.int64)}  # fmt: skip
            status, failure = np.zeros(n, np.uint8), [""] * n
            for row, wave in decoded.items():
                i = row - work.start
                if isinstance(wave, str):
                    if cfg.strict:
                        raise EastError(f"clip {manifest.clip_ids[row]}: {wave} (--strict)")
                    status[i], failure[i] = FAILED, wave
                    failures.append((row, wave))
                else:
                    data["audio"][i, : len(wave)] = wave
                    data["num_samples"][i] = len(wave)
                    status[i] = DONE
            if work.keep_existing:
                old_status = store.chunk_status(work.chunk)
                old = store.read_chunk_data(work.chunk)
                for i, st in enumerate(old_status):
                    if old is not None and st != PENDING and (work.start + i) not in decoded:
                        data["audio"][i] = old["audio"][i]
                        data["num_samples"][i] = old["num_samples"][i]
                        status[i], failure[i] = st, str(old["failure"][i])
            store.write_chunk(work.chunk, data, status, failure)
            advance(len(work.todo))
    return failures
