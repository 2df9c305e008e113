"""CLI: ``east serve`` — the embedding extraction service (``docs/serve.md``)."""

from __future__ import annotations

import signal
import threading
from pathlib import Path

import typer

from east.cli.common import err_console
from east.errors import ConfigError

LOOPBACK = ("127.0.0.1", "localhost", "::1")


def serve_command(
    teacher: list[str] = typer.Option(
        ..., "--teacher", "-t", help="Teacher to load (repeatable; `east teachers list`)."
    ),
    weights: list[str] = typer.Option(
        [], "--weights", help="NAME=PATH: a local weights file for teacher NAME (repeatable)."
    ),
    plugin: str = typer.Option(
        None, "--plugin", help="Python module to import first (registers extra teachers)."
    ),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to bind (others need a token)."),
    port: int = typer.Option(8750, "--port", help="Port (0: any free port, printed at start)."),
    cache_dir: Path = typer.Option(
        None, "--cache-dir", help="Clip cache (<dir>/clips) and job stores; default none."
    ),
    device: str = typer.Option(
        "auto", "--device", help="cpu, cuda, cuda:1, mps or auto (auto: one replica per GPU)."
    ),
    max_batch: int = typer.Option(32, "--max-batch", help="Most clips in one teacher batch."),
    max_wait_ms: float = typer.Option(
        20.0, "--max-wait-ms", help="Longest a clip waits for others to share its batch."
    ),
    max_queue: int = typer.Option(
        256, "--max-queue", help="Clips waiting per teacher before requests get 429."
    ),
    allow_root: list[Path] = typer.Option(
        [], "--allow-root", help="Folder dataset jobs may read (repeatable); none: no jobs."
    ),
    token: str = typer.Option(
        None, "--token", envvar="EAST_SERVE_TOKEN", help="Bearer token requests must carry."
    ),
    decode_workers: int = typer.Option(2, "--decode-workers", help="Decoder processes."),
    max_body_mb: float = typer.Option(100.0, "--max-body-mb", help="Largest request body."),
    optimize: bool = typer.Option(
        True, "--optimize/--no-optimize", help="On CPU, the teachers' frozen TorchScript graphs."
    ),
    scheduler: str = typer.Option(
        None, "--scheduler", help="Run the batches on dask: local:N or tcp://host:port."
    ),
) -> None:
    """Serve teacher embeddings over HTTP: dynamic batching across requests, a
    content-addressed clip cache, dataset jobs, Prometheus metrics.

    Prints `serving on http://HOST:PORT` on stderr once /health answers; SIGTERM or Ctrl-C
    finishes the batches in flight and exits 0.
    """
    from east.extract.job import import_plugin

    if plugin:
        import_plugin(plugin)
    cfg = _config(teacher, weights, plugin, host, cache_dir, device, max_batch, max_wait_ms,
                  max_queue, allow_root, token, decode_workers, max_body_mb, optimize)  # fmt: skip
    if scheduler:
        from east.extract.distributed import local_workers

        local_workers(scheduler)  # one line for a malformed --scheduler
        cfg.scheduler = scheduler  # type: ignore[attr-defined]
    _serve(cfg, host, port)


def _config(
    teachers: list[str], weights: list[str], plugin: str | None, host: str,
    cache_dir: Path | None, device: str, max_batch: int, max_wait_ms: float, max_queue: int,
    allow_root: list[Path], token: str | None, decode_workers: int, max_body_mb: float,
    optimize: bool,
) -> object:  # fmt: skip
    from east.extract.job import TeacherSpec
    from east.extract.teachers.registry import teacher_info
    from east.serve.app import ServeConfig

    if host not in LOOPBACK and not host.startswith("127.") and not token:
        raise ConfigError(
            f"--host {host} serves beyond this machine: give --token (or EAST_SERVE_TOKEN)"
        )
    checks = [
        (max_batch >= 1, f"--max-batch must be at least 1 (got {max_batch})"),
        (max_wait_ms >= 0, f"--max-wait-ms must be 0 or more (got {max_wait_ms})"),
        (max_queue >= 1, f"--max-queue must be at least 1 (got {max_queue})"),
        (decode_workers >= 1, f"--decode-workers must be at least 1 (got {decode_workers})"),
        (max_body_mb > 0, f"--max-body-mb must be positive (got {max_body_mb})"),
    ]
    for ok, message in checks:
        if not ok:
            raise ConfigError(message)
    paths = _weights_by_name(weights, teachers)
    for name in teachers:
        teacher_info(name)  # one line for an unknown name
    if cache_dir is not None and cache_dir.exists() and not cache_dir.is_dir():
        raise ConfigError(f"--cache-dir {cache_dir} is a file, not a folder")
    for root in allow_root:
        if not root.is_dir():
            raise ConfigError(f"--allow-root {root} is not a folder")
    return ServeConfig(
        teachers={n: TeacherSpec(n, paths.get(n), plugin) for n in dict.fromkeys(teachers)},
        devices=_devices(device),
        max_batch=max_batch,
        max_wait_ms=max_wait_ms,
        max_queue=max_queue,
        cache_dir=cache_dir,
        allow_roots=list(allow_root),
        token=token,
        max_body_bytes=int(max_body_mb * 2**20),
        decode_workers=decode_workers,
        optimize=optimize,
    )


def _weights_by_name(items: list[str], teachers: list[str]) -> dict[str, str]:
    out = {}
    for item in items:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise ConfigError(f"--weights {item!r}: use NAME=PATH")
        if name not in teachers:
            raise ConfigError(f"--weights {item!r}: {name} is not a --teacher of this service")
        out[name] = path
    return out


def _devices(device: str) -> list[str]:
    """One replica per GPU for ``auto`` on a CUDA machine, else the one device."""
    import torch

    from east.settings import best_device

    name = best_device(device)
    if device in ("auto", "") and name.startswith("cuda") and torch.cuda.device_count() > 1:
        return [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    return [name]


def _serve(cfg: object, host: str, port: int) -> None:
    import uvicorn

    from east.serve.app import Service, create_app

    service = Service(cfg)  # type: ignore[arg-type]
    service.load()
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(service), host=host, port=port, log_level="warning",
            timeout_graceful_shutdown=25, access_log=False,
        )
    )  # fmt: skip
    threading.Thread(target=_announce, args=(server, host, cfg), daemon=True).start()
    # uvicorn shuts down gracefully on SIGTERM/SIGINT, then re-raises the signal to the
    # handlers it found: make those a no-op, so that a graceful stop exits 0
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: None)
    server.run()


def _announce(server: object, host: str, cfg: object) -> None:
    """Print ``serving on http://HOST:PORT`` once ``/health`` answers."""
    import time

    import httpx

    while not getattr(server, "started", False):
        time.sleep(0.02)
    port = server.servers[0].sockets[0].getsockname()[1]  # type: ignore[attr-defined]
    shown = f"[{host}]" if ":" in host else host
    url = f"http://{shown}:{port}"
    token = getattr(cfg, "token", None)
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    probe = "127.0.0.1" if host in ("0.0.0.0", "") else ("[::1]" if host == "::" else shown)
    for _ in range(500):
        try:
            if httpx.get(f"http://{probe}:{port}/health", headers=headers, timeout=2).is_success:
                break
        except httpx.HTTPError:
            time.sleep(0.02)
    err_console.print(f"serving on {url}", highlight=False, soft_wrap=True)


def register(app: typer.Typer) -> None:
    """Add this module's commands to the root app."""
    app.command("serve")(serve_command)
