"""Per-teacher CPU throughput on 10 s clips: batched forward vs one clip at a time.

Each teacher registers a case with :func:`case` — a function returning the teacher to time
(random weights: the arithmetic is the same as with the official ones, and no download is
needed). For every case the script embeds ``--clips`` clips of ``--seconds`` seconds of noise at
the teacher's rate, once in batches of ``--batch-size`` and once with batch size 1, after one
warm-up call, and reports clips/s and the real-time factor (audio seconds per wall second).

Usage::

    python benchmarks/bench_teachers.py                       # every registered case
    python benchmarks/bench_teachers.py vggish panns --clips 8 --batch-size 8 --threads 2
    python benchmarks/bench_teachers.py --markdown >> benchmarks/RESULTS.md   # a table

Times are wall-clock on whatever else the machine is doing: note the load with the results.
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable

import torch

from east.extract.teachers import Teacher, create_teacher

CASES: dict[str, Callable[[], Teacher]] = {}


def case(name: str) -> Callable[[Callable[[], Teacher]], Callable[[], Teacher]]:
    """Register ``fn`` (no arguments → the teacher to time) under ``name``."""

    def decorator(fn: Callable[[], Teacher]) -> Callable[[], Teacher]:
        if name in CASES:
            raise ValueError(f"benchmark case {name!r} registered twice")
        CASES[name] = fn
        return fn

    return decorator


@case("vggish")
def vggish_case() -> Teacher:
    return create_teacher("vggish", "random")


@case("panns")
def panns_case() -> Teacher:
    return create_teacher("panns", "random")


@case("panns-frames")
def panns_frames_case() -> Teacher:
    return create_teacher("panns-frames", "random")


@case("passt")
def passt_case() -> Teacher:
    # 10 s → 10 windows of 0.96 s, each a 110-token ViT-B pass.
    return create_teacher("passt", "random")


@case("openl3")
def openl3_case() -> Teacher:
    # 10 s → 10 windows of 1 s (0.96 s hop), each a 199-frame mel128 CNN pass.
    return create_teacher("openl3", "random")


# Won et al. taggers (helper B2): one case per architecture; the datasets share the arithmetic.
# 10 s → one fully convolutional pass over 626 STFT frames (9 FCN/Musicnn, 6 CRNN frames).
for _tagger in ("fcn-msd", "musicnn-mtat", "crnn-msd"):
    case(_tagger)(lambda name=_tagger: create_teacher(name, "random"))


def _embed_all(teacher: Teacher, waves: torch.Tensor, batch_size: int) -> float:
    lengths = torch.full((waves.shape[0],), waves.shape[1], dtype=torch.int64)
    start = time.perf_counter()
    for i in range(0, waves.shape[0], batch_size):
        teacher.embed(waves[i : i + batch_size], lengths[i : i + batch_size])
    return time.perf_counter() - start


def measure(teacher: Teacher, clips: int, seconds: float, batch_size: int) -> dict[str, float]:
    """Seconds to embed ``clips`` clips batched and one by one (after a warm-up call)."""
    generator = torch.Generator().manual_seed(0)
    samples = round(seconds * teacher.sample_rate)
    waves = 0.1 * torch.randn(clips, samples, generator=generator)
    with torch.inference_mode():
        _embed_all(teacher, waves[:1], 1)  # warm-up: allocator, lazy kernels
        batched = _embed_all(teacher, waves, batch_size)
        single = _embed_all(teacher, waves, 1)
    return {"batched_s": batched, "single_s": single}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("teachers", nargs="*", help=f"cases to run (default all: {list(CASES)})")
    parser.add_argument("--clips", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--markdown", action="store_true", help="print a Markdown table only")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    names = args.teachers or list(CASES)
    unknown = [n for n in names if n not in CASES]
    if unknown:
        parser.error(f"unknown cases {unknown}; registered: {list(CASES)}")

    header = (
        "| teacher | clips × s | batch | batched clips/s | batch-1 clips/s | speed-up "
        "| real-time × (batched) |\n|---|---|---|---|---|---|---|"
    )
    rows = []
    for name in names:
        teacher = CASES[name]()
        result = measure(teacher, args.clips, args.seconds, args.batch_size)
        batched = args.clips / result["batched_s"]
        single = args.clips / result["single_s"]
        rows.append(
            f"| {name} | {args.clips} × {args.seconds:g} | {args.batch_size} | {batched:.2f} "
            f"| {single:.2f} | {batched / single:.2f} | {batched * args.seconds:.1f} |"
        )
        if not args.markdown:
            print(rows[-1], flush=True)
        del teacher
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    if args.markdown:
        print(header)
        print("\n".join(rows))
    print(
        f"\n{os.cpu_count()} CPUs, torch {torch.__version__}, {args.threads} threads, "
        f"1-min load average {load:.1f} when done"
    )


if __name__ == "__main__":
    main()
