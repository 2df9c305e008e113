"""Dataset jobs of the service: ``east extract`` of a whole dataset, run in the background.

A job extracts into the usual store ``<cache-dir>/<dataset>/<teacher>.zarr`` with the
service's loaded teacher (an :class:`~east.extract.executors.InProcess` executor over the
service's pool), holding the store's writer lock like ``east extract``. Cancelling stops it
after the batch in flight; every chunk written so far is kept, exactly as after a SIGKILL of
``east extract``, and the same job (or command) resumes it. A job may only name a ``root``
under an ``--allow-root`` folder, after resolving ``..`` and symbolic links.
"""

from __future__ import annotations

import threading
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastapi import HTTPException

from east.errors import EastError

__all__ = ["JobManager"]


class _Cancelled(Exception):
    pass


@dataclass
class Job:
    id: str
    teacher: str
    dataset: str
    store: str
    state: str = "queued"  # queued, running, done, failed, cancelled
    done: int = 0
    total: int = 0
    failed: int = 0
    error: str | None = None
    cancel: threading.Event = field(default_factory=threading.Event)

    def view(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "state": self.state,
            "teacher": self.teacher,
            "dataset": self.dataset,
            "store": self.store,
            "done": self.done,
            "total": self.total,
            "failed": self.failed,
            "error": self.error,
        }


class JobManager:
    """Jobs of one service, run one at a time on a background thread (they share the CPU or
    GPU with the embed requests)."""

    def __init__(self, service: Any) -> None:
        self.service = service
        self.jobs: dict[str, Job] = {}
        self._lock = threading.Lock()
        self._runner = threading.Semaphore(1)

    def submit(self, request: Any) -> str:
        """Check a job request, queue it and return its id (raises HTTPException)."""
        from east.cli.extract import default_store_path
        from east.datasets import load_manifest

        cfg = self.service.cfg
        if cfg.cache_dir is None:
            raise HTTPException(400, "this service has no --cache-dir to write stores into")
        self.service.teacher(request.teacher)  # 404
        root = self._allowed_root(request.root)
        try:
            manifest = load_manifest(request.dataset, root, **request.options)
        except EastError as exc:
            raise HTTPException(400, str(exc)) from None
        store = default_store_path(cfg.cache_dir, request.dataset, request.teacher)
        job = Job(uuid.uuid4().hex[:12], request.teacher, request.dataset, store)
        with self._lock:
            self.jobs[job.id] = job
        job.total = len(manifest)
        sizes = {"batch_size": request.batch_size, "chunk_clips": request.chunk_clips}
        threading.Thread(target=self._run, args=(job, manifest, sizes), daemon=True).start()
        return job.id

    def _allowed_root(self, root: str) -> Path:
        resolved = Path(root).expanduser().resolve()
        for allowed in self.service.cfg.allow_roots:
            base = Path(allowed).expanduser().resolve()
            if resolved == base or base in resolved.parents:
                return resolved
        raise HTTPException(403, f"root {root} is not under an --allow-root folder of this service")

    def _run(self, job: Job, manifest: Any, sizes: dict[str, int]) -> None:
        from east.extract.executors import InProcess
        from east.extract.runner import ExtractConfig, extract

        with self._runner:  # one job at a time
            if job.cancel.is_set():
                job.state = "cancelled"
                return
            job.state = "running"
            cfg = ExtractConfig(device=self.service.cfg.devices[0], progress=False,
                                optimize=self.service.cfg.optimize, **sizes)  # fmt: skip
            spec = self.service.cfg.teachers[job.teacher]

            def progress(n: int) -> None:
                job.done += n
                if job.cancel.is_set():
                    raise _Cancelled

            try:
                summary = extract(manifest, spec, job.store, cfg,
                                  executor=InProcess(self.service.pool), on_progress=progress)  # fmt: skip
            except _Cancelled:
                job.state = "cancelled"
            except EastError as exc:
                job.state, job.error = "failed", " ".join(str(exc).split())
            except Exception as exc:  # (a bug: reported on the job, the service goes on)
                job.state, job.error = "failed", f"{type(exc).__name__}: {exc}"
            else:
                job.state = "done"
                job.total, job.failed = summary.num_clips, summary.failed_total
                job.done = summary.done_total

    def state(self, job_id: str) -> dict[str, Any]:
        return self._job(job_id).view()

    def cancel(self, job_id: str) -> dict[str, Any]:
        job = self._job(job_id)
        job.cancel.set()
        return job.view()

    def _job(self, job_id: str) -> Job:
        with self._lock:
            job = self.jobs.get(job_id)
        if job is None:
            raise HTTPException(404, f"no job {job_id}")
        return job

    def stop(self) -> None:
        for job in list(self.jobs.values()):
            job.cancel.set()
