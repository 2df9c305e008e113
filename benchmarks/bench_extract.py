"""Benchmark `east extract` against the naive per-clip way, on real ESC-50 clips.

Measured in one run, every method in a fresh process (warm file cache), interleaved over
``--repeats`` rounds and reported by its median round:

* east: :func:`east.extract.runner.extract`, teacher build included (workers that decode, and
  on a CPU with a worker per torch thread also embed with a teacher replica each;
  length-bucketed batches; float16 zstd Zarr store);
* east ``--no-optimize``: the same without the frozen CPU graph;
* naive (the reference code's way, a plain script): per clip ``load_audio`` + resample, a
  batch-1 eager forward, one ``np.save`` of the float32 embedding per clip;
* naive with east's allocator setting (:mod:`east.malloc`): how much of the gap is malloc;
* pure forward: east's teacher (its frozen CPU inference graph, east's allocator setting)
  alone on pre-decoded audio in east's batches, one process with torch's default threads
  (the floor east's end-to-end time is compared with); and the CPU time of that decoding, as
  a share of the forward's: on a CPU whose cores the forward already fills, that is work no
  pipeline can hide;
* bytes on disk of the east store vs the naive ``.npy`` files;
* peak RSS of ``east extract`` for a small and a large subset: the main process and the
  largest worker.

Why fresh processes: the methods' speed depends on glibc's malloc state, which earlier work in
the same process changes (the eager naive loop ran 1.7× faster after the frozen forward had run
in its process). A user runs each in a new process.

Usage (weights found through EAST_WEIGHTS_DIR, e.g. ``$EAST_SHARED/weights``)::

    EAST_WEIGHTS_DIR=../shared/weights python benchmarks/bench_extract.py \
        --root ../shared/data/esc50-fold4 --teacher fcn-msd
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

METHODS = ("east", "east_no_optimize", "naive", "naive_malloc", "forward")


def folder_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


class Clock:
    """Wall seconds and CPU seconds (this process + reaped children, e.g. decode workers).

    The machine is shared, so CPU seconds are the load-independent measure of work."""

    def __enter__(self) -> Clock:
        self.wall0 = time.perf_counter()
        self.cpu0 = self._cpu()
        return self

    def __exit__(self, *exc: object) -> None:
        self.wall = time.perf_counter() - self.wall0
        self.cpu = self._cpu() - self.cpu0

    @staticmethod
    def _cpu() -> float:
        own = resource.getrusage(resource.RUSAGE_SELF)
        kids = resource.getrusage(resource.RUSAGE_CHILDREN)
        return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


# ----------------------------------------------------------------------------- one method


def run_east(manifest, args: argparse.Namespace, store: Path, optimize: bool) -> Clock:
    from east.extract.runner import ExtractConfig, TeacherSpec, extract

    cfg = ExtractConfig(batch_size=args.batch_size, num_workers=args.workers, device="cpu",
                        progress=False, overwrite=True, optimize=optimize)  # fmt: skip
    with Clock() as clock:
        summary = extract(manifest, TeacherSpec(args.teacher), store, cfg)
    assert summary.done_total == len(manifest), summary.line()
    return clock


def run_naive(manifest, args: argparse.Namespace, out: Path) -> Clock:
    import torch

    from east.audio import load_audio
    from east.extract.runner import TeacherSpec, cached_teacher

    # the reference code's teacher: eager PyTorch, built before the clock starts
    teacher = cached_teacher(TeacherSpec(args.teacher), "cpu", optimize=False)
    out.mkdir(parents=True, exist_ok=True)
    with Clock() as clock:
        for i in range(len(manifest)):
            wave = load_audio(manifest.audio_path(i), teacher.sample_rate)
            with torch.inference_mode():
                res = teacher.embed(torch.from_numpy(wave)[None], torch.tensor([len(wave)]))
            emb = res.embeddings[0, : int(res.num_frames[0])].float().numpy()
            np.save(out / f"{manifest.clip_ids[i]}.npy", emb)
    return clock


def run_pure_forward(manifest, args: argparse.Namespace) -> tuple[Clock, Clock]:
    """Teacher forward only, on audio decoded beforehand, in east's batches.

    Returns the clocks of the forward and of the decoding (load + resample) before it."""
    import torch

    from east.audio import load_audio
    from east.extract.runner import TeacherSpec, cached_teacher, chunk_batches

    teacher = cached_teacher(TeacherSpec(args.teacher), "cpu", optimize=True)
    with Clock() as decoding:
        waves = [load_audio(manifest.audio_path(i), teacher.sample_rate)
                 for i in range(len(manifest))]  # fmt: skip
    lengths = np.array([len(w) for w in waves])
    batches = []
    for start in range(0, len(waves), 64):  # east's store chunks of 64 clips
        rows = range(start, min(start + 64, len(waves)))
        for b in chunk_batches(rows, lengths, args.batch_size):
            x = np.zeros((len(b), lengths[b].max()), np.float32)
            for k, r in enumerate(b):
                x[k, : lengths[r]] = waves[r]
            batches.append((torch.from_numpy(x), torch.from_numpy(lengths[b])))
    with Clock() as clock, torch.inference_mode():
        for x, n in batches:
            teacher.embed(x, n)
    return clock, decoding


def child(args: argparse.Namespace) -> dict[str, Any]:
    """Run one method in this (fresh) process; the parent reads the JSON it prints.

    torch and east are imported before any clock starts; east's clock includes building (and
    freezing) its teacher, the naive one's does not."""
    import torch  # noqa: F401

    import east.extract.runner  # noqa: F401
    from east.datasets import load_manifest
    from east.malloc import keep_freed_memory

    manifest = load_manifest("esc50", args.root)
    method, out = args.child, Path(args.out)
    if method.startswith("rss:"):
        manifest = manifest.select(range(min(int(method[4:]), len(manifest))))
        run_east(manifest, args, out, optimize=True)
        status = Path("/proc/self/status").read_text().splitlines()
        main_kib = int(next(line for line in status if line.startswith("VmHWM")).split()[1])
        worker_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        return {"main_mib": main_kib / 1024, "worker_mib": worker_kib / 1024}
    if args.clips:
        manifest = manifest.select(range(min(args.clips, len(manifest))))
    if method in ("naive_malloc", "forward"):
        keep_freed_memory()
    if method in ("east", "east_no_optimize"):
        clock = run_east(manifest, args, out, optimize=method == "east")
        return {"wall": clock.wall, "cpu": clock.cpu, "bytes": folder_bytes(out)}
    if method.startswith("naive"):
        clock = run_naive(manifest, args, out)
        return {"wall": clock.wall, "cpu": clock.cpu, "bytes": folder_bytes(out)}
    clock, decoding = run_pure_forward(manifest, args)
    return {"wall": clock.wall, "cpu": clock.cpu, "decode_cpu": decoding.cpu}


def in_fresh_process(args: argparse.Namespace, method: str, out: Path) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--root", str(args.root), "--teacher", args.teacher,
           "--batch-size", str(args.batch_size), "--workers", str(args.workers),
           "--child", method, "--out", str(out)]  # fmt: skip
    if args.clips:
        cmd += ["--clips", str(args.clips)]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"{method} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


# ----------------------------------------------------------------------------- the run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--root", type=Path, required=True)
    parser.add_argument("--teacher", default="fcn-msd")
    parser.add_argument("--clips", type=int, default=None, help="first N clips (default all)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3, help="interleaved rounds (median)")
    parser.add_argument("--rss", type=int, nargs=2, default=(100, 400), metavar=("SMALL", "LARGE"))
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args)))
        return

    import torch

    from east.audio import load_audio
    from east.datasets import load_manifest
    from east.extract.runner import teacher_in_workers

    manifest = load_manifest("esc50", args.root)
    n = min(args.clips or len(manifest), len(manifest))
    for i in range(n):  # warm the file cache so no method pays the first read
        load_audio(manifest.audio_path(i))
    tmp = Path(tempfile.mkdtemp(prefix="east-bench-"))
    rounds: dict[str, list[dict[str, Any]]] = {m: [] for m in METHODS}
    for r in range(args.repeats):  # interleaved: the machine's speed drifts within minutes
        for method in METHODS:
            rounds[method].append(in_fresh_process(args, method, tmp / f"{method}{r}"))
            print(f"round {r + 1}/{args.repeats} {method}: {rounds[method][-1]['wall']:.2f} s",
                  file=sys.stderr, flush=True)  # fmt: skip

    def wall(method: str) -> float:
        return statistics.median(x["wall"] for x in rounds[method])

    def cpu(method: str) -> float:
        return statistics.median(x["cpu"] for x in rounds[method])

    res: dict[str, Any] = {
        "clips": n,
        "teacher": args.teacher,
        "torch_threads": torch.get_num_threads(),
        "workers": args.workers,
        "teacher_in_workers": teacher_in_workers("cpu", args.workers),
        "repeats": args.repeats,
    }
    for method in METHODS:
        res[f"{method}_s"] = wall(method)
        res[f"{method}_cpu_s"] = cpu(method)
        res[f"{method}_clips_s"] = n / wall(method)
        res[f"{method}_rounds_s"] = [round(x["wall"], 3) for x in rounds[method]]
    res["speedup"] = wall("naive") / wall("east")
    # the same ratio within each round (the two ran seconds apart)
    res["speedup_rounds"] = [round(a["wall"] / b["wall"], 3)
                             for a, b in zip(rounds["naive"], rounds["east"], strict=True)]  # fmt: skip
    res["speedup_vs_naive_malloc"] = wall("naive_malloc") / wall("east")
    res["speedup_no_optimize"] = wall("naive") / wall("east_no_optimize")
    res["speedup_cpu"] = cpu("naive") / cpu("east")
    res["overhead"] = wall("east") / wall("forward") - 1
    res["overhead_rounds"] = [round(a["wall"] / b["wall"] - 1, 3)
                              for a, b in zip(rounds["east"], rounds["forward"], strict=True)]  # fmt: skip
    res["overhead_cpu"] = cpu("east") / cpu("forward") - 1
    decode_cpu = statistics.median(x["decode_cpu"] for x in rounds["forward"])
    res["decode_cpu_ms_per_clip"] = 1000 * decode_cpu / n
    res["decode_share_of_forward_cpu"] = decode_cpu / cpu("forward")
    res["east_bytes"] = rounds["east"][0]["bytes"]
    res["npy_bytes"] = rounds["naive"][0]["bytes"]
    res["bytes_ratio"] = res["east_bytes"] / res["npy_bytes"]
    small, large = (min(c, len(manifest)) for c in args.rss)
    for clips in (small, large):
        rss = in_fresh_process(args, f"rss:{clips}", tmp / f"rss{clips}.zarr")
        res[f"rss_main_mib_{clips}"] = rss["main_mib"]
        res[f"rss_worker_mib_{clips}"] = rss["worker_mib"]
    print(json.dumps(res, indent=1))
    rows = [("east extract", "east"), ("east extract --no-optimize", "east_no_optimize"),
            ("naive (load, batch-1 eager forward, np.save)", "naive"),
            ("naive with east's malloc setting", "naive_malloc"),
            ("pure batched forward (pre-decoded)", "forward")]  # fmt: skip
    table = "\n".join(f"| {label} | {wall(m):.2f} | {n / wall(m):.1f} | {cpu(m):.1f} |"
                      for label, m in rows)  # fmt: skip
    print(
        f"\n{args.teacher}, {n} clips, median of {args.repeats} interleaved rounds\n\n"
        f"| method | wall s | clips/s | CPU s |\n|---|---|---|---|\n{table}\n\n"
        f"speed-up {res['speedup']:.2f}× wall (rounds {res['speedup_rounds']}; "
        f"{res['speedup_cpu']:.2f}× CPU; {res['speedup_vs_naive_malloc']:.2f}× vs the naive "
        f"with east's malloc; {res['speedup_no_optimize']:.2f}× without the frozen graph), "
        f"overhead vs pure forward {100 * res['overhead']:.1f} % wall (rounds "
        f"{res['overhead_rounds']}; {100 * res['overhead_cpu']:.1f} % CPU), decoding "
        f"{res['decode_cpu_ms_per_clip']:.1f} ms CPU a clip = "
        f"{100 * res['decode_share_of_forward_cpu']:.0f} % of the forward's CPU time, bytes "
        f"{res['east_bytes']} vs {res['npy_bytes']} (.npy float32) = {res['bytes_ratio']:.2f}×, "
        f"peak RSS main/largest worker {res[f'rss_main_mib_{small}']:.0f}/"
        f"{res[f'rss_worker_mib_{small}']:.0f} MiB ({small} clips) vs "
        f"{res[f'rss_main_mib_{large}']:.0f}/{res[f'rss_worker_mib_{large}']:.0f} MiB "
        f"({large} clips)"
    )
    if args.json:
        args.json.write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
