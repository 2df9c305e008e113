"""Executors: where the steps of an extraction job (:mod:`east.extract.job`) run.

Every executor takes the same plan — :class:`~east.extract.job.ChunkWork` items and one
:class:`~east.extract.job.JobSpec` — and writes the same store (tested):

* :class:`InProcess` decodes, embeds and writes in this process (``--num-workers 0``).
* :class:`LocalProcesses` decodes in ``num_workers`` DataLoader worker processes while the
  teacher runs on the previous batch; the main process assembles, and a writer thread
  compresses and writes finished chunks while the next one is computed.

  - On CUDA the workers only decode; the main process runs the teacher (autocast, pinned
    memory, non-blocking copies).
  - On a CPU with at least one worker per torch thread (the default 2 workers on 2 cores),
    each worker decodes *and* embeds its batches with a single-threaded replica of the teacher
    (forked from the pool, so it costs no extra build): one job per core beats decoding
    processes that pre-empt the teacher's thread pool (benchmarks/RESULTS.md). With fewer
    workers they only decode. Audio stores are always finished in the workers.
* :class:`~east.extract.distributed.Dask` runs one task per store chunk on a dask cluster.

An executor is called inside the store's writer lock (:func:`east.extract.runner.writing`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Protocol

from east.cache_schema import _ClipStore
from east.extract.job import (
    ChunkAssembler,
    ChunkWork,
    DecodedBatch,
    JobSpec,
    TeacherPool,
    check_strict,
    default_pool,
)
from east.locking import die_with_parent

__all__ = ["Executor", "InProcess", "LocalProcesses", "teacher_in_workers"]

Failures = list[tuple[int, str]]


class Executor(Protocol):
    """Runs a planned extraction into ``store``; returns the failures ``(row, reason)``."""

    def run(
        self,
        store: _ClipStore,
        spec: JobSpec,
        works: list[ChunkWork],
        paths: list[str],
        tick: Callable[[int], None],
    ) -> Failures: ...


# ---------------------------------------------------------------------------- shared loop


def assemble_and_write(
    store: _ClipStore,
    spec: JobSpec,
    works: list[ChunkWork],
    results: Iterator[dict[int, Any]],
    tick: Callable[[int], None],
) -> Failures:
    """Add the results of every planned batch (in plan order) to its chunk and write each
    finished chunk in a writer thread, at most one waiting behind the one being computed."""
    failures: Failures = []
    pending: list[Future[None]] = []
    with ThreadPoolExecutor(1, thread_name_prefix="east-writer") as writer:
        try:
            for work in works:
                asm = ChunkAssembler(store, work)
                for _ in work.batches:
                    tick(asm.add_all(next(results), spec.strict))
                failures.extend(asm.failures)
                while len(pending) >= 2:  # bound memory
                    pending.pop(0).result()
                pending.append(writer.submit(asm.write))
        finally:
            for fut in pending:
                fut.result()
    return failures


# ---------------------------------------------------------------------------- in process


@dataclass
class InProcess:
    """Every step in this process, batch after batch (writing overlaps the next chunk)."""

    pool: TeacherPool = field(default_factory=lambda: default_pool)

    def run(
        self,
        store: _ClipStore,
        spec: JobSpec,
        works: list[ChunkWork],
        paths: list[str],
        tick: Callable[[int], None],
    ) -> Failures:
        teacher = spec.build_teacher(self.pool) if spec.kind == "embeddings" else None

        def results() -> Iterator[dict[int, Any]]:
            for work in works:
                for rows in work.batches:
                    batch = spec.decode(rows, paths)
                    if spec.strict:
                        check_strict(batch.errors, store)
                    yield spec.finish(batch, teacher)

        return assemble_and_write(store, spec, works, results(), tick)


# ---------------------------------------------------------------------------- worker processes


def teacher_in_workers(device_type: str, workers: int) -> bool:
    """Whether the decode workers also run the teacher (one single-threaded replica each).

    Only on a CPU with at least one worker per torch thread (see the module doc). With fewer
    workers the teacher stays multi-threaded in the main process: a forked worker must not
    start OpenMP threads after its parent used them (libgomp deadlocks), so a replica can only
    have one thread.
    """
    import torch

    return device_type == "cpu" and workers > 0 and workers >= torch.get_num_threads()


@dataclass
class _BatchDataset:
    """Item ``i`` = planned batch ``i``, decoded — and finished too when ``finish`` is set
    (runs in DataLoader worker processes). Failures come back as reasons; the main process
    applies ``--strict``. A forked worker finds the main process's (already optimised)
    teacher in the pool; any other start method builds it once."""

    spec: JobSpec
    batches: list[list[int]]
    paths: list[str]
    finish: bool
    pool: TeacherPool

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, index: int) -> dict[str, Any]:
        batch = self.spec.decode(self.batches[index], self.paths)
        if not self.finish:  # a plain dict of tensors, so that the loader can pin them
            return {"batch": batch.fields()}
        teacher = self.spec.build_teacher(self.pool) if self.spec.kind == "embeddings" else None
        return {"results": self.spec.finish(batch, teacher, amp=False), "errors": batch.errors}


def _init_worker(worker_id: int) -> None:
    import torch

    from east.malloc import keep_freed_memory

    die_with_parent()  # a SIGKILLed east must not leave its workers (and its lock) behind
    torch.set_num_threads(1)  # (the DataLoader does it too; a teacher replica relies on it)
    keep_freed_memory()  # the worker is ours: no page faults for every batch's buffers


def _identity(item: Any) -> Any:
    return item


@dataclass
class LocalProcesses:
    """Decode (and, on a CPU, embed) in ``num_workers`` local worker processes."""

    num_workers: int = 2
    pool: TeacherPool = field(default_factory=lambda: default_pool)

    def run(
        self,
        store: _ClipStore,
        spec: JobSpec,
        works: list[ChunkWork],
        paths: list[str],
        tick: Callable[[int], None],
    ) -> Failures:
        import torch
        from torch.utils.data import DataLoader

        batches = [b for w in works for b in w.batches]
        if not batches:
            return []
        teacher = spec.build_teacher(self.pool) if spec.kind == "embeddings" else None
        device = teacher.device.type if teacher is not None else "cpu"
        workers = max(0, min(self.num_workers, len(batches)))
        finish = spec.kind == "audio" or teacher_in_workers(device, workers)
        loader = DataLoader(
            _BatchDataset(spec, batches, paths, finish, self.pool),  # type: ignore[arg-type]
            batch_size=None,
            shuffle=False,
            num_workers=workers,
            collate_fn=_identity,
            pin_memory=device == "cuda",
            prefetch_factor=2 if workers else None,
            worker_init_fn=_init_worker,
        )
        items = iter(loader)
        try:
            results = self._results(items, store, spec, teacher)
            return assemble_and_write(store, spec, works, results, tick)
        finally:
            del items, loader  # stops the workers
            if device == "cuda":
                torch.cuda.empty_cache()

    @staticmethod
    def _results(
        items: Iterable[dict[str, Any]], store: _ClipStore, spec: JobSpec, teacher: Any
    ) -> Iterator[dict[int, Any]]:
        for item in items:
            if "results" in item:
                if spec.strict:
                    check_strict(item["errors"], store)
                yield item["results"]
                continue
            batch = DecodedBatch.of(item["batch"])
            if spec.strict:
                check_strict(batch.errors, store)
            yield spec.finish(batch, teacher)
