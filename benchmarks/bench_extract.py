"""Benchmark `east extract` against the naive per-clip way, on real ESC-50 clips.

Measured in one run (same teacher object, warm file cache):

* east: :func:`east.extract.runner.extract` (decode workers, length-bucketed batches, float16
  zstd Zarr store);
* naive (the reference code's way): per clip ``load_audio`` + resample, a batch-1 eager
  forward, one ``np.save`` of the float32 embedding per clip;
* pure forward: east's teacher (with its frozen CPU inference graph, ``--optimize``) alone on
  pre-decoded audio in the same batches as east (the floor east's end-to-end time is
  compared with);
* bytes on disk of the east store vs the naive ``.npy`` files;
* peak RSS of ``east extract`` for a small and a large subset (fresh subprocesses).

Usage (weights found through EAST_WEIGHTS_DIR, e.g. ``$EAST_SHARED/weights``)::

    EAST_WEIGHTS_DIR=../shared/weights python benchmarks/bench_extract.py \
        --root ../shared/data/esc50-fold4 --teacher fcn-msd
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


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


def run_east(
    manifest, teacher_name: str, store: Path, batch_size: int, workers: int, optimize: bool = True
) -> Clock:
    from east.extract.runner import ExtractConfig, TeacherSpec, extract

    cfg = ExtractConfig(batch_size=batch_size, num_workers=workers, device="cpu",
                        progress=False, overwrite=True, optimize=optimize)  # fmt: skip
    with Clock() as clock:
        summary = extract(manifest, TeacherSpec(teacher_name), store, cfg)
    assert summary.done_total == len(manifest), summary.line()
    return clock


def run_naive(manifest, teacher, out: Path) -> Clock:
    import torch

    from east.audio import load_audio

    out.mkdir(parents=True, exist_ok=True)
    with Clock() as clock:
        for i in range(len(manifest)):
            wave = load_audio(manifest.audio_path(i), teacher.sample_rate)
            with torch.inference_mode():
                res = teacher.embed(torch.from_numpy(wave)[None], torch.tensor([len(wave)]))
            emb = res.embeddings[0, : int(res.num_frames[0])].float().numpy()
            np.save(out / f"{manifest.clip_ids[i]}.npy", emb)
    return clock


def run_pure_forward(manifest, teacher, batch_size: int) -> Clock:
    """Teacher forward only, on audio decoded beforehand, in east's batches."""
    import torch

    from east.audio import load_audio
    from east.extract.runner import chunk_batches

    waves = [load_audio(manifest.audio_path(i), teacher.sample_rate) for i in range(len(manifest))]
    lengths = np.array([len(w) for w in waves])
    batches = []
    for start in range(0, len(waves), 64):  # east's store chunks of 64 clips
        rows = range(start, min(start + 64, len(waves)))
        for b in chunk_batches(rows, lengths, batch_size):
            x = np.zeros((len(b), lengths[b].max()), np.float32)
            for k, r in enumerate(b):
                x[k, : lengths[r]] = waves[r]
            batches.append((torch.from_numpy(x), torch.from_numpy(lengths[b])))
    with Clock() as clock, torch.inference_mode():
        for x, n in batches:
            teacher.embed(x, n)
    return clock


def peak_rss_child(args: argparse.Namespace, clips: int, store: Path) -> float:
    """Peak RSS (MiB, VmHWM of the main process) of a fresh process running east extract on
    the first ``clips`` clips. (ru_maxrss would carry the parent's peak across fork+exec.)"""
    code = (
        "import sys, resource; sys.argv=['x']\n"
        "from east.datasets import load_manifest\n"
        "from east.extract.runner import ExtractConfig, TeacherSpec, extract\n"
        f"m = load_manifest('esc50', {str(args.root)!r}).select(range({clips}))\n"
        f"extract(m, TeacherSpec({args.teacher!r}), {str(store)!r}, ExtractConfig("
        f"batch_size={args.batch_size}, num_workers={args.workers}, device='cpu', "
        "progress=False, overwrite=True))\n"
        "print([l for l in open('/proc/self/status') if l.startswith('VmHWM')][0].split()[1])\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return int(out.stdout.split()[-1]) / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--root", type=Path, required=True)
    parser.add_argument("--teacher", default="fcn-msd")
    parser.add_argument("--clips", type=int, default=None, help="first N clips (default all)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--rss", type=int, nargs=2, default=(100, 400), metavar=("SMALL", "LARGE"))
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()

    import torch

    from east.audio import load_audio
    from east.datasets import load_manifest
    from east.extract.runner import TeacherSpec, cached_teacher

    manifest = load_manifest("esc50", args.root)
    if args.clips:
        manifest = manifest.select(range(min(args.clips, len(manifest))))
    n = len(manifest)
    # the naive loop runs the teacher as the reference code does: eager PyTorch
    teacher = cached_teacher(TeacherSpec(args.teacher), "cpu", optimize=False)
    for i in range(n):  # warm the file cache so no method pays the first read
        load_audio(manifest.audio_path(i))
    tmp = Path(tempfile.mkdtemp(prefix="east-bench-"))
    res: dict[str, float | int | str] = {"clips": n, "teacher": args.teacher,
                                         "torch_threads": torch.get_num_threads()}  # fmt: skip
    east = run_east(manifest, args.teacher, tmp / "east.zarr", args.batch_size, args.workers)
    # the same without the frozen CPU graph: how much of the gain is batching + overlap
    eager = run_east(
        manifest, args.teacher, tmp / "eager.zarr", args.batch_size, args.workers, optimize=False
    )
    naive = run_naive(manifest, teacher, tmp / "naive")
    # the floor for east: the same teacher object east ran (its frozen CPU graph, if any)
    east_teacher = cached_teacher(TeacherSpec(args.teacher), "cpu", optimize=True)
    forward = run_pure_forward(manifest, east_teacher, args.batch_size)
    for name, clock in (("east", east), ("east_no_optimize", eager), ("naive", naive),
                        ("forward", forward)):  # fmt: skip
        res[f"{name}_s"] = clock.wall
        res[f"{name}_cpu_s"] = clock.cpu
        res[f"{name}_clips_s"] = n / clock.wall
    res["speedup"] = naive.wall / east.wall
    res["speedup_no_optimize"] = naive.wall / eager.wall
    res["speedup_cpu"] = naive.cpu / east.cpu
    res["overhead"] = east.wall / forward.wall - 1
    res["overhead_cpu"] = east.cpu / forward.cpu - 1
    res["east_bytes"] = folder_bytes(tmp / "east.zarr")
    res["npy_bytes"] = folder_bytes(tmp / "naive")
    res["bytes_ratio"] = res["east_bytes"] / res["npy_bytes"]
    small, large = (min(c, len(load_manifest("esc50", args.root))) for c in args.rss)
    res[f"rss_mib_{small}"] = peak_rss_child(args, small, tmp / "rss_small.zarr")
    res[f"rss_mib_{large}"] = peak_rss_child(args, large, tmp / "rss_large.zarr")
    res["ru_maxrss_self_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(res, indent=1))
    print(
        f"\n| method | wall s | clips/s | CPU s |\n|---|---|---|---|\n"
        f"| east extract | {east.wall:.1f} | {n / east.wall:.2f} | {east.cpu:.1f} |\n"
        f"| east extract --no-optimize | {eager.wall:.1f} | {n / eager.wall:.2f} | "
        f"{eager.cpu:.1f} |\n"
        f"| naive (load, batch-1 forward, np.save) | {naive.wall:.1f} | {n / naive.wall:.2f} | "
        f"{naive.cpu:.1f} |\n"
        f"| pure batched forward (pre-decoded) | {forward.wall:.1f} | {n / forward.wall:.2f} | "
        f"{forward.cpu:.1f} |\n\n"
        f"speed-up {res['speedup']:.2f}× wall ({res['speedup_cpu']:.2f}× CPU; "
        f"{res['speedup_no_optimize']:.2f}× without the frozen graph), overhead vs pure "
        f"forward {100 * res['overhead']:.1f} % wall ({100 * res['overhead_cpu']:.1f} % CPU), "
        f"bytes {res['east_bytes']} vs {res['npy_bytes']} (.npy float32) = "
        f"{res['bytes_ratio']:.2f}×, peak RSS {res[f'rss_mib_{small}']:.0f} MiB ({small} clips) "
        f"vs {res[f'rss_mib_{large}']:.0f} MiB ({large} clips)"
    )
    if args.json:
        args.json.write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
