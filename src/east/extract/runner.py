"""The extraction runner: manifest → store, as one job run by an executor (lhotse-style).

``extract`` (embedding stores, ``east extract``) and ``extract_audio`` (audio stores, ``east
cache audio``) do the same four things inside the store's writer lock (:func:`writing`):
open or create the store (refusing paths east did not make), plan the chunks still to do
(:func:`~east.extract.job.plan_work`), hand the plan and one
:class:`~east.extract.job.JobSpec` to an executor (:mod:`east.extract.executors`: in this
process, local worker processes, or a dask cluster), and summarise. What a chunk holds and how
it is computed live in :mod:`east.extract.job`; where it runs is the executor's only choice.
"""

from __future__ import annotations

import contextlib
import errno
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
    check_store_location,
    create_store,
    open_store,
    path_state,
)
from east.errors import EastError
from east.extract.executors import Executor, InProcess, LocalProcesses, teacher_in_workers
from east.extract.job import (
    ChunkWork,
    JobSpec,
    TeacherPool,
    TeacherSpec,
    cached_teacher,
    chunk_batches,
    default_pool,
    import_plugin,
    plan_work,
    probe_frames,
)
from east.locking import WriterLock, store_lock_path
from east.progress import ProgressBar

__all__ = [
    "ChunkWork",
    "ExtractConfig",
    "ExtractSummary",
    "TeacherSpec",
    "cached_teacher",
    "chunk_batches",
    "executor_for",
    "extract",
    "extract_audio",
    "import_plugin",
    "plan_work",
    "teacher_in_workers",
    "writing",
]

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
    clip_cache: str | None = None  # a clip cache folder (east.clip_cache) to consult and fill

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


def provenance_for(manifest: Any, spec: TeacherSpec, teacher: Any, cfg: ExtractConfig) -> dict:
    info = teacher.info
    return {
        "teacher": spec.name,
        "teacher_family": info.family,
        "weights_sha256": teacher.weights_sha256,
        "sample_rate": int(info.sample_rate),
        "window_s": info.window_s,
        "hop_s": info.hop_s,
        # how windows are cut (centred or not): same window and hop, other frames
        "framing": getattr(info, "framing", None),
        "teacher_version": getattr(teacher, "module_version", None),  # (HEAR modules)
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
    executor: Executor | None = None,
    on_progress: Callable[[int], None] | None = None,
) -> ExtractSummary:
    """Extract ``teacher``'s embeddings of every pending clip of ``manifest`` into ``path``.

    ``executor`` runs the chunks (default :func:`executor_for`: ``scheduler`` —
    ``"local:N"`` or ``"tcp://host:port"`` — means dask, else local worker processes).
    Returns the run's summary.
    """
    from east.settings import best_device

    cfg = cfg or ExtractConfig()
    spec = teacher if isinstance(teacher, TeacherSpec) else TeacherSpec(teacher)
    device = best_device(cfg.device)
    executor = executor or executor_for(cfg, scheduler)
    remote = not isinstance(executor, InProcess | LocalProcesses)
    with writing(path, "embeddings", cfg) as state:
        t0 = time.perf_counter()
        # elsewhere (dask) this copy only probes the frame count; the workers build their own
        key = (spec, "cpu" if remote else device, cfg.optimize and not remote)
        paths = [str(manifest.audio_path(i)) for i in range(len(manifest))]
        pool = getattr(executor, "pool", default_pool)  # (a local executor's own teachers)
        scan = cfg.overwrite or state != "store"
        if hasattr(executor, "teacher"):  # a service's teacher: its facts come from there
            model, hints = executor.teacher(spec), None
        else:
            model, hints = _teacher_and_hints(pool, key, paths, cfg, scan)
        store = prepare_store(manifest, path, spec, model, cfg, hints)
        job = JobSpec(
            kind="embeddings",
            sample_rate=store.sample_rate,
            max_samples=int(store.attrs["max_samples"]),
            max_seconds=cfg.max_seconds,
            teacher=spec,
            device=cfg.device,
            optimize=cfg.optimize,
            max_frames=store.max_frames,
            dtype=str(store.attrs["dtype"]),
            amp=cfg.amp,
            strict=cfg.strict,
            **_clip_cache_fields(cfg, model, str(store.attrs["dtype"])),
        )
        return _run(store, job, executor, manifest, paths, cfg, t0, on_progress)


def _clip_cache_fields(cfg: ExtractConfig, teacher: Any, dtype: str) -> dict[str, Any]:
    """The job's clip cache and the teacher identity its entries are kept under."""
    if cfg.clip_cache is None:
        return {}
    from east.clip_cache import ClipCache, identity_of

    ClipCache(cfg.clip_cache)  # refuses a path that is not a clip cache, before any work
    identity = identity_of(teacher, dtype=dtype, max_seconds=cfg.max_seconds)
    return {"clip_cache": str(cfg.clip_cache), "clip_identity": identity}


def executor_for(cfg: ExtractConfig, scheduler: str | None = None) -> Executor:
    """The executor of the command line's options: dask for ``--scheduler``, else local
    worker processes (``--num-workers``; 0: this process)."""
    if scheduler:
        from east.extract.distributed import Dask, local_workers

        local_workers(scheduler)  # a malformed --scheduler is refused before the store
        return Dask(scheduler, cfg.storage_options)
    return LocalProcesses(cfg.num_workers) if cfg.num_workers > 0 else InProcess()


def _teacher_and_hints(
    pool: TeacherPool,
    key: tuple[TeacherSpec, str, bool],
    paths: list[str],
    cfg: ExtractConfig,
    scan: bool,
) -> tuple[Any, np.ndarray | None]:
    """The run's teacher from the pool and, for a new store, the clips' header lengths —
    scanned in a thread while the teacher is optimised."""
    with ThreadPoolExecutor(1, thread_name_prefix="east-scan") as threads:
        scans: list[Future[np.ndarray]] = []

        def start_scan(built: Any) -> None:
            if scan:
                scans.append(
                    threads.submit(scan_lengths, paths, built.sample_rate, cfg.max_seconds)
                )

        model = pool.get(*key, on_built=start_scan)
        if scan and not scans:  # (already built earlier in this process)
            scans.append(threads.submit(scan_lengths, paths, model.sample_rate, cfg.max_seconds))
        return model, scans[0].result() if scans else None


def _run(
    store: Any,
    job: JobSpec,
    executor: Executor,
    manifest: Any,
    paths: list[str],
    cfg: ExtractConfig,
    t0: float,
    on_progress: Callable[[int], None] | None,
) -> ExtractSummary:
    """Plan, execute and summarise one run into an opened store (under its lock)."""
    works = plan_work(store, cfg.batch_size, cfg.limit, cfg.retry_failed)
    total = sum(len(w.todo) for w in works)
    label = f"{job.teacher.name if job.teacher else 'audio'} → {Path(store.path).name}"
    bar = ProgressBar(cfg.progress and total > 0, rate="clips/s", elapsed=True)
    with bar.started(label, total):

        def tick(n: int) -> None:
            bar.advance(n)
            if on_progress:
                on_progress(n)

        failures = executor.run(store, job, works, paths, tick)
    seconds = time.perf_counter() - t0
    if total and job.kind == "embeddings":  # summed over resumed runs; `east report` reads it
        previous = float(store.attrs.get("extract_seconds", 0.0))
        store.set_attrs(extract_seconds=round(previous + seconds, 3))
    return ExtractSummary.of_run(store.path, store, manifest, total, failures, seconds)


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


# ---------------------------------------------------------------------------- audio store


def extract_audio(
    manifest: Any,
    path: str | Path,
    sample_rate: int,
    cfg: ExtractConfig | None = None,
    *,
    executor: Executor | None = None,
) -> ExtractSummary:
    """Decode and resample every clip once into an int16 audio store (``east cache audio``).

    The same job, executors, crash-safe protocol, lock and refusals as :func:`extract`.
    """
    cfg = cfg or ExtractConfig()
    if not 1000 <= sample_rate <= 768_000:
        raise EastError(f"--sr must be a sample rate in Hz, 1000 to 768000 (got {sample_rate})")
    executor = executor or executor_for(cfg)
    with writing(path, "audio", cfg) as state:
        t0 = time.perf_counter()
        paths = [str(manifest.audio_path(i)) for i in range(len(manifest))]
        store = _audio_store_for(manifest, path, paths, sample_rate, cfg, state)
        job = JobSpec(
            kind="audio",
            sample_rate=store.sample_rate,
            max_samples=store.max_samples,
            max_seconds=cfg.max_seconds,
            strict=cfg.strict,
        )
        return _run(store, job, executor, manifest, paths, cfg, t0, None)


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
