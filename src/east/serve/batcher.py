"""Dynamic batching: requests for one teacher are queued and run together.

A :class:`TeacherQueue` holds the decoded clips waiting for one teacher. One consumer task
per teacher replica (one per GPU, or one on a CPU) takes the first waiting clip, then keeps
taking until ``max_batch`` clips are gathered or ``max_wait_s`` has passed since the first,
and runs the batch on its own thread with :func:`east.extract.job.embed_batch` — the same
call ``east extract`` makes — so the event loop never blocks on the teacher. Decoding runs
in a process pool (:class:`DecodePool`) for the same reason.

A full queue is refused at once (:class:`QueueFull`, HTTP 429): memory stays bounded however
many clients push.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["DecodePool", "QueueFull", "TeacherQueue", "decode_bytes"]


class QueueFull(Exception):
    """The teacher's queue holds ``max_queue`` clips already."""


# ---------------------------------------------------------------------------- decoding


def decode_bytes(data: bytes, sample_rate: int) -> np.ndarray | str:
    """Float32 mono audio at ``sample_rate`` from the bytes of an audio file, or the reason it
    cannot be used (the same decoder and checks as ``east extract``)."""
    from east.extract.job import decode_clip

    fd, path = tempfile.mkstemp(prefix="east-serve-", dir=_scratch_dir())
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        out = decode_clip(path, sample_rate, 2**62, None)
    finally:
        os.unlink(path)
    if isinstance(out, str):
        return out.replace(path, "the request body")
    return out


def _scratch_dir() -> str | None:
    shm = "/dev/shm"
    return shm if os.path.isdir(shm) and os.access(shm, os.W_OK) else None


def _init_decoder() -> None:
    from east.locking import die_with_parent

    die_with_parent()


class DecodePool:
    """A pool of decoder processes (spawned: the server's threads are not forked)."""

    def __init__(self, workers: int) -> None:
        import multiprocessing as mp

        self._pool = ProcessPoolExecutor(
            max_workers=max(1, workers), mp_context=mp.get_context("spawn"),
            initializer=_init_decoder,
        )  # fmt: skip

    async def decode(self, data: bytes, sample_rate: int) -> np.ndarray | str:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, decode_bytes, data, sample_rate)

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)


# ---------------------------------------------------------------------------- batching


@dataclass
class _Waiting:
    wave: np.ndarray
    future: asyncio.Future[Any]
    since: float = field(default_factory=time.perf_counter)


@dataclass
class BatchStats:
    """What one batch cost (for ``/metrics``)."""

    size: int
    queue_wait_s: list[float]
    compute_s: float


class TeacherQueue:
    """The waiting clips of one teacher and the consumers that batch them."""

    def __init__(
        self,
        teachers: list[Any],
        *,
        max_batch: int,
        max_wait_s: float,
        max_queue: int,
        dtype: str = "float16",
        on_batch: Callable[[BatchStats], None] | None = None,
    ) -> None:
        self.teachers = teachers  # one replica per device
        self.max_batch, self.max_wait_s, self.dtype = max_batch, max_wait_s, dtype
        self._queue: asyncio.Queue[_Waiting] = asyncio.Queue(maxsize=max_queue)
        self._on_batch = on_batch
        self._threads = [ThreadPoolExecutor(1, thread_name_prefix="east-teacher") for _ in teachers]
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def depth(self) -> int:
        return self._queue.qsize()

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._tasks = [
            loop.create_task(self._consume(teacher, thread))
            for teacher, thread in zip(self.teachers, self._threads, strict=True)
        ]

    async def embed(self, wave: np.ndarray) -> Any:
        """The clip's :class:`~east.extract.job.ClipResult` (or failure reason), computed in
        a batch with whatever else is waiting; :class:`QueueFull` when the queue is full."""
        waiting = _Waiting(wave, asyncio.get_running_loop().create_future())
        try:
            self._queue.put_nowait(waiting)
        except asyncio.QueueFull:
            raise QueueFull from None
        return await asyncio.shield(waiting.future)  # (a client that leaves costs nothing)

    async def _consume(self, teacher: Any, thread: ThreadPoolExecutor) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = [await self._queue.get()]
            deadline = batch[0].since + self.max_wait_s
            while len(batch) < self.max_batch:
                left = deadline - time.perf_counter()
                if left <= 0 and self._queue.empty():
                    break
                try:
                    batch.append(await asyncio.wait_for(self._queue.get(), max(left, 0)))
                except TimeoutError:
                    break
            started = time.perf_counter()
            try:
                results = await loop.run_in_executor(thread, self._run, teacher, batch)
            except Exception as exc:  # a teacher crash fails this batch, not the service
                results = [f"teacher failed ({type(exc).__name__}: {exc})"] * len(batch)
            for waiting, result in zip(batch, results, strict=True):
                if not waiting.future.done():
                    waiting.future.set_result(result)
            if self._on_batch is not None:
                waits = [started - w.since for w in batch]
                self._on_batch(BatchStats(len(batch), waits, time.perf_counter() - started))

    def _run(self, teacher: Any, batch: list[_Waiting]) -> list[Any]:
        import torch

        from east.extract.job import DecodedBatch, embed_batch

        longest = max(len(w.wave) for w in batch)
        waves = np.zeros((len(batch), longest), np.float32)
        for i, w in enumerate(batch):
            waves[i, : len(w.wave)] = w.wave
        lengths = torch.tensor([len(w.wave) for w in batch], dtype=torch.int64)
        decoded = DecodedBatch(list(range(len(batch))), torch.from_numpy(waves), lengths, {})
        out = embed_batch(teacher, decoded, max_frames=2**31, dtype=self.dtype, amp=True)
        return [out[i] for i in range(len(batch))]

    async def stop(self) -> None:
        """Finish what is queued, then stop the consumers."""
        with contextlib.suppress(Exception):
            while not self._queue.empty():
                await asyncio.sleep(0.01)
        for task in self._tasks:
            task.cancel()
        for thread in self._threads:
            thread.shutdown(wait=True)


# ---------------------------------------------------------------------------- dask replicas


def _embed_on_worker(
    spec: Any, device: str | None, optimize: bool, waves: Any, lengths: Any
) -> Any:
    """Runs in a dask worker: the worker's resident teacher (built once) embeds one batch."""
    import torch

    from east.extract.job import JobSpec

    job = JobSpec("embeddings", 0, 0, None, spec, device, optimize)
    teacher = job.build_teacher()
    with torch.inference_mode():
        out = teacher.embed(waves, lengths)
    return out.embeddings.float(), out.num_frames, out.frame_times


class DaskTeacher:
    """A teacher whose batches run on a dask cluster's workers (``east serve --scheduler``):
    each worker keeps its own teacher resident; one of these per worker keeps them all busy.
    It looks like a teacher to :func:`~east.extract.job.embed_batch`."""

    def __init__(self, client: Any, spec: Any, info: Any, weights_sha256: str,
                 device: str | None, optimize: bool) -> None:  # fmt: skip
        import torch

        self.client, self.spec, self.info = client, spec, info
        self.weights_sha256 = weights_sha256
        self._where = (device, optimize)
        self.device = torch.device("cpu")  # (the batch travels to the worker from here)

    @property
    def sample_rate(self) -> int:
        return self.info.sample_rate

    def embed(self, waveforms: Any, lengths: Any) -> Any:
        from east.extract.teachers.base import TeacherOutput

        future = self.client.submit(_embed_on_worker, self.spec, *self._where, waveforms,
                                    lengths, pure=False)  # fmt: skip
        return TeacherOutput(*future.result())
