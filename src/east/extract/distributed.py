"""Scale extraction out on dask.distributed.

``--scheduler local:N`` starts a ``LocalCluster`` of N worker processes (one thread each, with
east's malloc setting, :mod:`east.malloc`); ``--scheduler tcp://host:port`` uses a running
cluster, whose processes are left as they are. One task = one store chunk: the worker
decodes the chunk's clips, runs the teacher and writes the whole chunk (data, then its done
markers), so tasks write disjoint objects of the same store and a lost worker loses at most
its chunk. Each worker process builds the teacher once and keeps it between tasks.

Workers of a remote cluster must see the audio files and the store at the same paths (a
shared file system, or an fsspec URL such as ``s3://`` for the store).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from east.cache_schema import _ClipStore
from east.errors import EastError
from east.extract.job import ChunkWork, JobSpec, process_chunk
from east.malloc import keep_freed_memory

__all__ = ["Dask", "connect", "local_workers"]


@dataclass
class ChunkOutcome:
    chunk: int
    written: int
    failures: list[tuple[int, str]]


def _chunk_task(
    store_path: str,
    kind: str,
    storage_options: dict[str, Any] | None,
    spec: JobSpec,
    work: ChunkWork,
    paths: dict[int, str],
) -> ChunkOutcome:
    """Runs in a dask worker: one store chunk; the teacher is built once per worker process
    (its :data:`~east.extract.job.default_pool`)."""
    from east.cache_schema import open_audio_store, open_store

    # opened per task (cheap): a cached handle could outlive an --overwrite of the same path
    opener = open_audio_store if kind == "audio" else open_store
    store = opener(store_path, mode="r+", storage_options=storage_options)
    failures = process_chunk(store, spec, work, paths)
    return ChunkOutcome(work.chunk, len(work.todo), failures)


def local_workers(scheduler: str) -> int | None:
    """N of ``local:N``, ``None`` for a scheduler address; a one-line error for anything else
    (checked before a store is touched)."""
    if scheduler.startswith("local:"):
        try:
            n = int(scheduler.split(":", 1)[1])
        except ValueError:
            n = 0
        if n < 1:
            raise EastError(f"--scheduler {scheduler!r}: use local:N with N ≥ 1 workers")
        return n
    if "://" in scheduler:
        return None
    raise EastError(f"--scheduler {scheduler!r}: use local:N or tcp://host:port")


def connect(scheduler: str) -> tuple[Any, Any]:
    """``(client, cluster_or_None)`` for ``local:N`` or a scheduler address."""
    from distributed import Client, LocalCluster

    n = local_workers(scheduler)
    if n is not None:
        cluster = LocalCluster(
            n_workers=n,
            threads_per_worker=1,  # one forward pass at a time per worker process
            processes=True,
            dashboard_address=None,
            silence_logs=40,  # logging.ERROR
        )
        client = Client(cluster)
        client.run(keep_freed_memory)  # these worker processes are ours (see east.malloc)
        return client, cluster
    try:
        return Client(scheduler, timeout="20s"), None
    except OSError as exc:
        raise EastError(f"cannot reach dask scheduler {scheduler}: {exc}") from None


@dataclass
class Dask:
    """One task per store chunk on a dask cluster: ``local:N`` or ``tcp://host:port``.

    The coordinating process holds the store's lock; workers write disjoint chunks."""

    scheduler: str
    storage_options: dict[str, Any] | None = None  # for the workers to open the store

    def run(
        self,
        store: _ClipStore,
        spec: JobSpec,
        works: list[ChunkWork],
        paths: list[str],
        tick: Callable[[int], None],
    ) -> list[tuple[int, str]]:
        if not works:
            return []
        from distributed import as_completed

        client, cluster = connect(self.scheduler)
        run_id = uuid.uuid4().hex[:8]
        failures: list[tuple[int, str]] = []
        try:
            futures = [
                client.submit(
                    _chunk_task,
                    store.path,
                    store.kind,
                    self.storage_options,
                    spec,
                    work,
                    {r: paths[r] for batch in work.batches for r in batch},
                    key=f"east-chunk-{work.chunk}-{run_id}",
                    pure=False,
                    retries=0,
                )
                for work in works
            ]
            for future in as_completed(futures):
                outcome: ChunkOutcome = future.result()
                failures.extend(outcome.failures)
                tick(outcome.written)
        finally:
            client.close()
            if cluster is not None:
                cluster.close()
        return sorted(failures)
