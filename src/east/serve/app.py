"""The HTTP service: FastAPI routes over loaded teachers, a batcher and the clip cache.

Routes (``docs/serve.md``): ``GET /health``, ``GET /v1/teachers``, ``POST /v1/embed``,
``POST/GET/DELETE /v1/jobs``, ``GET /metrics``. Every error answers ``{"error": "<one
line>"}`` with its status: 400 audio that cannot be used, 401 a missing or wrong token, 403 a
job root outside ``--allow-root``, 404 an unknown teacher or job, 413 a body over the limit,
429 a full queue (with ``Retry-After``).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import io
import time
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field

from east.errors import EastError
from east.extract.job import ClipResult, TeacherPool, TeacherSpec
from east.serve.batcher import DecodePool, QueueFull, TeacherQueue

__all__ = ["ServeConfig", "Service", "create_app"]


@dataclass
class ServeConfig:
    """Options of ``east serve`` (see ``east serve --help``)."""

    teachers: dict[str, TeacherSpec]
    devices: list[str] = field(default_factory=lambda: ["cpu"])
    max_batch: int = 32
    max_wait_ms: float = 20.0
    max_queue: int = 256
    cache_dir: Path | None = None
    allow_roots: list[Path] = field(default_factory=list)
    token: str | None = None
    max_body_bytes: int = 100 * 2**20
    decode_workers: int = 2
    optimize: bool = True
    scheduler: str | None = None  # batches on dask workers with resident teachers


class Service:
    """Loaded teachers, their queues, the decode pool, the clip cache, the jobs, the metrics."""

    def __init__(self, cfg: ServeConfig, pool: TeacherPool | None = None) -> None:
        from east.serve.metrics import Metrics

        self.cfg = cfg
        self.pool = pool or TeacherPool()
        self.replicas: dict[str, list[Any]] = {}
        self.queues: dict[str, TeacherQueue] = {}
        self.metrics = Metrics()
        self.decoder: DecodePool | None = None
        self.cache: Any = None
        self.jobs: Any = None

    def load(self) -> None:
        """Build every teacher on every device (verified weights, frozen CPU graph): before
        the server accepts anything, so ``/health`` answering means ready. With a dask
        scheduler the local copy only gives the facts; each worker builds its own."""
        for name, spec in self.cfg.teachers.items():
            self.replicas[name] = [
                self.pool.get(spec, device, self.cfg.optimize) for device in self.cfg.devices
            ]
        if self.cfg.scheduler:
            self._use_dask()
        if self.cfg.cache_dir is not None:
            from east.clip_cache import ClipCache

            self.cache = ClipCache(self.cfg.cache_dir / "clips")
        from east.serve.jobs import JobManager

        self.jobs = JobManager(self)

    def _use_dask(self) -> None:
        from east.extract.distributed import connect
        from east.serve.batcher import DaskTeacher

        self._dask, self._cluster = connect(self.cfg.scheduler)  # type: ignore[arg-type]
        workers = max(1, len(self._dask.scheduler_info().get("workers", {})))
        for name, spec in self.cfg.teachers.items():
            local = self.replicas[name][0]
            facts = (local.info, local.weights_sha256, None, self.cfg.optimize)
            self.replicas[name] = [DaskTeacher(self._dask, spec, *facts) for _ in range(workers)]

    async def start(self) -> None:
        self.decoder = DecodePool(self.cfg.decode_workers)
        for name, replicas in self.replicas.items():
            queue = TeacherQueue(
                replicas,
                max_batch=self.cfg.max_batch,
                max_wait_s=self.cfg.max_wait_ms / 1000,
                max_queue=self.cfg.max_queue,
                on_batch=self.metrics.batch,
            )
            queue.start()
            self.queues[name] = queue

    async def stop(self) -> None:
        for queue in self.queues.values():
            await queue.stop()
        if self.jobs is not None:
            self.jobs.stop()
        if self.decoder is not None:
            self.decoder.close()
        if getattr(self, "_dask", None) is not None:
            self._dask.close()
            if self._cluster is not None:
                self._cluster.close()

    # --- facts
    def teacher(self, name: str) -> Any:
        if name not in self.replicas:
            known = ", ".join(sorted(self.replicas))
            raise HTTPException(404, f"unknown teacher {name!r}; this service has: {known}")
        return self.replicas[name][0]

    def facts(self, name: str) -> dict[str, Any]:
        t = self.teacher(name)
        return {
            "name": name,
            "family": t.info.family,
            "sample_rate": int(t.info.sample_rate),
            "window_s": t.info.window_s,
            "hop_s": t.info.hop_s,
            "dim": int(t.info.embedding_dim),
            "weights_sha256": t.weights_sha256,
        }

    # --- embedding
    async def embed(self, name: str, body: bytes) -> tuple[dict[str, Any], np.ndarray]:
        """``(facts of the answer, (T, D) float16 embeddings)``; cache first."""
        teacher = self.teacher(name)
        clip_sha = hashlib.sha256(body).hexdigest()
        identity = self._identity(teacher)
        entry = await self._cached(clip_sha, identity)
        if entry is not None:
            self.metrics.cache(hit=True)
            emb, times, num_samples = entry.embeddings, entry.frame_times, entry.num_samples
        else:
            self.metrics.cache(hit=False)
            result = await self._compute(name, teacher, body)
            emb, times, num_samples = result.embedding, result.frame_times, result.num_samples
            if self.cache is not None:
                await asyncio.to_thread(self._put, clip_sha, identity, result)
        facts = {
            "teacher": name,
            "weights_sha256": teacher.weights_sha256,
            "dim": int(emb.shape[1]),
            "clip_sha256": clip_sha,
            "cached": entry is not None,
            "num_samples": int(num_samples),
            "frame_times": np.asarray(times, np.float64).tolist(),
        }
        return facts, emb

    def _identity(self, teacher: Any) -> dict[str, Any]:
        from east.clip_cache import identity_of

        return identity_of(teacher)

    def _put(self, clip_sha: str, identity: dict[str, Any], result: ClipResult) -> None:
        """Keep a computed clip; a cache that cannot be written (full disk) costs the next
        repeat a recomputation, never this answer."""
        try:
            self.cache.put(clip_sha, identity, result.embedding, result.frame_times,
                           result.num_samples)  # fmt: skip
        except (OSError, EastError):
            self.metrics.cache_write_failed()

    async def _cached(self, clip_sha: str, identity: dict[str, Any]) -> Any:
        if self.cache is None:
            return None
        return await asyncio.to_thread(self.cache.get, clip_sha, identity)

    async def _compute(self, name: str, teacher: Any, body: bytes) -> ClipResult:
        assert self.decoder is not None
        wave = await self.decoder.decode(body, int(teacher.sample_rate))
        if isinstance(wave, str):
            raise HTTPException(400, f"cannot use the audio: {wave}")
        try:
            result = await self.queues[name].embed(wave)
        except QueueFull:
            self.metrics.rejected()
            raise HTTPException(
                429, f"the queue of {name} is full; retry later", headers={"Retry-After": "1"}
            ) from None
        if not isinstance(result, ClipResult):
            raise HTTPException(400, f"cannot embed the audio: {result}")
        return result


# ---------------------------------------------------------------------------- the app


class JobRequest(BaseModel):
    teacher: str
    dataset: str
    root: str
    options: dict[str, Any] = Field(default_factory=dict)  # the dataset's options (-o)
    batch_size: int = Field(16, ge=1, le=4096)
    chunk_clips: int = Field(64, ge=1, le=65536)


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    line = " ".join(str(message).split())  # one line, whatever the message held
    return JSONResponse({"error": line}, status_code=status, headers=headers)


def create_app(service: Service) -> FastAPI:
    """The FastAPI app of a loaded :class:`Service`."""

    @asynccontextmanager
    async def lifespan(app: FastAPI):  # type: ignore[no-untyped-def]
        await service.start()
        yield
        await service.stop()

    async def check_token(request: Request) -> None:
        token = service.cfg.token
        if token is None:
            return
        given = request.headers.get("authorization", "")
        if not hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
            raise HTTPException(401, "missing or wrong token (Authorization: Bearer TOKEN)")

    app = FastAPI(title="east serve", lifespan=lifespan, dependencies=[Depends(check_token)])

    @app.middleware("http")
    async def count(request: Request, call_next):  # type: ignore[no-untyped-def]
        response = await call_next(request)
        route = request.scope.get("route")
        service.metrics.request(getattr(route, "path", "other"), response.status_code)
        return response

    _add_error_handlers(app)
    _add_routes(app, service)
    return app


def _add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        return _error(exc.status_code, str(exc.detail), exc.headers)

    @app.exception_handler(RequestValidationError)
    async def bad_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        err = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(x) for x in err.get("loc", ()))
        return _error(422, f"{where}: {err.get('msg', 'invalid request')}")

    @app.exception_handler(Exception)
    async def crash(request: Request, exc: Exception) -> JSONResponse:
        return _error(500, f"internal error ({type(exc).__name__}: {exc})")


async def _read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise HTTPException(413, f"body of {declared} bytes is over the limit of {limit}")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise HTTPException(413, f"body is over the limit of {limit} bytes")
        chunks.append(chunk)
    if size == 0:
        raise HTTPException(400, "empty body: send the bytes of one audio file")
    return b"".join(chunks)


def _add_routes(app: FastAPI, service: Service) -> None:
    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "teachers": sorted(service.replicas)}

    @app.get("/v1/teachers")
    async def teachers() -> list[dict[str, Any]]:
        return [service.facts(name) for name in sorted(service.replicas)]

    @app.post("/v1/embed", response_model=None)
    async def embed(request: Request, teacher: str, format: str = "json") -> Any:
        if format not in ("json", "npy"):
            raise HTTPException(400, f"format {format!r}: use json or npy")
        started = time.perf_counter()
        service.teacher(teacher)  # 404 before reading a large body
        body = await _read_body(request, service.cfg.max_body_bytes)
        facts, emb = await service.embed(teacher, body)
        service.metrics.latency(time.perf_counter() - started, facts["cached"])
        if format == "json":
            return {**facts, "embeddings": emb.astype(np.float32).tolist()}
        buf = io.BytesIO()
        np.save(buf, np.ascontiguousarray(emb), allow_pickle=False)
        headers = {
            "X-East-Teacher": teacher,
            "X-East-Weights-Sha256": str(facts["weights_sha256"]),
            "X-East-Clip-Sha256": facts["clip_sha256"],
            "X-East-Cached": "true" if facts["cached"] else "false",
            "X-East-Num-Samples": str(facts["num_samples"]),
            "X-East-Frame-Times": _frame_times_header(facts["frame_times"]),
        }
        return Response(buf.getvalue(), media_type="application/x-npy", headers=headers)

    @app.post("/v1/jobs")
    async def submit(job: JobRequest) -> dict[str, str]:
        return {"id": await asyncio.to_thread(service.jobs.submit, job)}

    @app.get("/v1/jobs/{job_id}")
    async def job_state(job_id: str) -> dict[str, Any]:
        return service.jobs.state(job_id)

    @app.delete("/v1/jobs/{job_id}")
    async def cancel(job_id: str) -> dict[str, Any]:
        return service.jobs.cancel(job_id)

    @app.get("/metrics")
    async def metrics() -> Response:
        depths = {name: q.depth for name, q in service.queues.items()}
        text, media = service.metrics.render(depths)
        return Response(text, media_type=media)


def _frame_times_header(times: list[list[float]]) -> str:
    import json

    return json.dumps(times, separators=(",", ":"))
