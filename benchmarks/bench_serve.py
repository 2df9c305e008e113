"""Benchmark `east serve` against offline `east extract` on the same clips and teacher.

One run, ratios against the naive ways, on real ESC-50 fold-4 clips with the real `fcn-msd`
tagger (``--teacher``/``--root`` to change):

* offline: ``east extract`` of the clips (fresh process, teacher build included), clips/s;
* the service at 1, 4 and 16 concurrent clients (each client posts its share of the clips,
  every clip once, no cache), clips/s and p50/p99 latency per clip — and the same service
  with ``--max-batch 1`` at 16 clients (what dynamic batching buys);
* cache hits: the same clips again from the clip cache, p50/p99 latency;
* memory: the server's RSS after 1,000 and after ``--soak`` (10,000) cache-hit requests.

Every server is a fresh process on a free loopback port. Loops are bounded in count.

    EAST_WEIGHTS_DIR=../shared/weights .venv/bin/python benchmarks/bench_serve.py \\
        --root ../shared/data/esc50-fold4 --clips 414
"""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np


def _serve(teacher: str, *extra: str) -> tuple[subprocess.Popen, str]:
    cmd = [sys.executable, "-m", "east", "serve", "--teacher", teacher, "--port", "0", *extra]
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        if "serving on" in line:
            return proc, line.split("serving on", 1)[1].strip()
        if not line and proc.poll() is not None:
            raise SystemExit(f"east serve exited {proc.returncode}")
    raise SystemExit("east serve did not start")


def _stop(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGTERM)
    proc.wait(60)


def _rss_mib(pid: int) -> float:
    import psutil

    return psutil.Process(pid).memory_info().rss / 2**20


def _post_all(url: str, teacher: str, bodies: list[bytes], clients: int) -> tuple[float, list]:
    import httpx

    http = httpx.Client(timeout=300, limits=httpx.Limits(max_connections=clients))

    def one(body: bytes) -> float:
        t = time.perf_counter()
        r = http.post(f"{url}/v1/embed", params={"teacher": teacher, "format": "npy"},
                      content=body)  # fmt: skip
        r.raise_for_status()
        return time.perf_counter() - t

    t0 = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        latencies = list(pool.map(one, bodies))
    seconds = time.perf_counter() - t0
    http.close()
    return seconds, latencies


def _pct(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values) * 1000, q))


def offline(root: Path, teacher: str, clips: int, tmp: Path) -> tuple[float, float]:
    """clips/s of `east extract` on the first ``clips``: as a user sees it (fresh process,
    start-up and teacher build included) and at steady state (less a 1-clip run's time)."""
    seconds = _offline_seconds(root, teacher, clips, tmp / "n")
    one = _offline_seconds(root, teacher, 1, tmp / "one")
    return clips / seconds, (clips - 1) / max(seconds - one, 1e-9)


def _offline_seconds(root: Path, teacher: str, clips: int, tmp: Path) -> float:
    subset = tmp / "subset"
    src = sorted((root / "audio").glob("*"))[:clips]
    (subset / "audio").mkdir(parents=True)
    for f in src:
        (subset / "audio" / f.name).symlink_to(f.resolve())
    (subset / "meta").mkdir()
    lines = (root / "meta" / "esc50.csv").read_text().splitlines()
    keep = {f.name for f in src}
    rows = [lines[0]] + [x for x in lines[1:] if x.split(",")[0] in keep]
    (subset / "meta" / "esc50.csv").write_text("\n".join(rows) + "\n")
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "east", "extract", "--teacher", teacher, "--dataset",
                    "esc50", "--root", str(subset), "--store", str(tmp / "offline.zarr"), "-q"],
                   check=True, capture_output=True)  # fmt: skip
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--root", type=Path, required=True, help="ESC-50 layout")
    parser.add_argument("--teacher", default="fcn-msd")
    parser.add_argument("--clips", type=int, default=414)
    parser.add_argument("--soak", type=int, default=10_000)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    files = sorted((args.root / "audio").glob("*"))[: args.clips]
    bodies = [f.read_bytes() for f in files]
    out: dict = {"teacher": args.teacher, "clips": len(bodies)}
    with tempfile.TemporaryDirectory() as tmp:
        total, steady = offline(args.root, args.teacher, len(bodies), Path(tmp))
        out["offline_clips_per_s"], out["offline_steady_clips_per_s"] = total, steady
        for clients, extra in ((1, ()), (4, ()), (16, ()), (16, ("--max-batch", "1"))):
            proc, url = _serve(args.teacher, *extra)
            _post_all(url, args.teacher, bodies[:4], 1)  # warm (first batches, pools)
            seconds, lat = _post_all(url, args.teacher, bodies, clients)
            _stop(proc)
            key = f"{clients}{'_batch1' if extra else ''}"
            out[f"serve_{key}"] = {"clips_per_s": len(bodies) / seconds,
                                   "p50_ms": _pct(lat, 50), "p99_ms": _pct(lat, 99)}  # fmt: skip
        cache = Path(tmp) / "cache"
        proc, url = _serve(args.teacher, "--cache-dir", str(cache))
        _post_all(url, args.teacher, bodies, 16)  # fill the cache
        _, hits = _post_all(url, args.teacher, bodies, 1)
        out["cache_hit"] = {"p50_ms": _pct(hits, 50), "p99_ms": _pct(hits, 99)}
        n = len(bodies)
        _post_all(url, args.teacher, [bodies[i % n] for i in range(1000)], 4)
        rss_1k = _rss_mib(proc.pid)
        _post_all(url, args.teacher, [bodies[i % n] for i in range(args.soak - 1000)], 4)
        out["rss_mib"] = {"after_1000": rss_1k, f"after_{args.soak}": _rss_mib(proc.pid)}
        _stop(proc)
    for key in ("1", "4", "16"):
        rate = out[f"serve_{key}"]["clips_per_s"]
        out[f"serve_{key}"]["vs_offline"] = rate / out["offline_clips_per_s"]
        out[f"serve_{key}"]["vs_offline_steady"] = rate / out["offline_steady_clips_per_s"]
    out["batching_gain_16"] = out["serve_16"]["clips_per_s"] / out["serve_16_batch1"]["clips_per_s"]
    text = json.dumps(out, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text)


if __name__ == "__main__":
    main()
