"""Training data path: Zarr caches (east.train.data.ClipStream) vs the reference's per-clip files.

Two measurements on a synthetic dataset (random audio and embeddings; sizes are the point):

1. **samples/s of the data path** — what one DataLoader worker delivers per second:
   * ``east``: ClipStream over an embedding store (float16, zstd, chunked by 64 clips) plus an
     audio store (int16), whole chunks read and shuffled in a buffer;
   * ``reference``: per clip, ``soundfile.read`` of a WAV plus ``np.load`` of one ``.npy`` of
     embeddings (float32), in random order — the EAsT reference's ``LatentSpaceDataset``.
   Both are measured for embeddings only and for audio + embeddings.
2. **data wait fraction of a Mobile-FCN training step** — the real training loop
   (``east.train.trainer.train``, worker processes, the run's ``metrics.jsonl`` field
   ``data_wait_fraction`` = time blocked waiting for the next batch / epoch time).

    .venv/bin/python benchmarks/bench_train_data.py [--clips 512] [--seconds 10] [--dim 768]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf

SR = 16000


def _real_clips(clips: int) -> list[Path]:
    """The real ESC-50 fold-4 FLAC files (44.1 kHz) of ../shared, when present."""
    from east.settings import shared_dir

    files = sorted((shared_dir() / "data" / "esc50-fold4" / "audio").glob("*.flac"))
    return [files[i % len(files)] for i in range(clips)] if files else []


def make_data(base: Path, clips: int, seconds: float, frames: int, dim: int) -> dict:
    from east.cache_schema import create_audio_store, create_store
    from east.datasets.base import Manifest

    rng = np.random.default_rng(0)
    originals = _real_clips(clips)
    (base / "audio").mkdir(parents=True)
    (base / "npy").mkdir()
    ids = [f"clip{i:05d}" for i in range(clips)]
    length = int(seconds * SR)
    manifest = Manifest(
        name="bench",
        root=base,
        task="multiclass",
        class_names=[f"c{i}" for i in range(10)],
        clip_ids=ids,
        rel_paths=[f"audio/{i}.wav" for i in ids],
        splits=np.array(["train"] * (clips - 32) + ["valid"] * 16 + ["test"] * 16),
        targets=rng.integers(0, 10, clips),
    )
    prov = {
        "teacher": "bench",
        "weights_sha256": "none",
        "sample_rate": SR,
        "window_s": 0.96,
        "hop_s": 0.96,
        "dataset": "bench",
        "manifest_hash": manifest.hash,
    }
    emb_store = create_store(
        base / "emb.zarr", provenance=prov, clip_ids=ids, max_frames=frames, dim=dim
    )
    audio_store = create_audio_store(
        base / "audio.zarr",
        provenance={"sample_rate": SR, "dataset": "bench", "manifest_hash": manifest.hash},
        clip_ids=ids,
        max_samples=length,
    )
    c = emb_store.chunk_clips
    for chunk in range(emb_store.num_chunks):
        a, b = emb_store.chunk_bounds(chunk)
        n = b - a
        emb = rng.normal(size=(n, frames, dim)).astype(np.float32)
        audio = (rng.normal(size=(n, length)) * 3000).astype(np.int16)
        if originals:  # real clips, decoded and resampled once (what `east cache audio` does)
            from east.audio import crop_or_pad, load_audio

            audio = np.stack(
                [
                    (crop_or_pad(load_audio(originals[a + j], sr=SR), length) * 32767).astype(
                        np.int16
                    )
                    for j in range(n)
                ]
            )
        times = np.stack([np.arange(frames) * 0.96, np.arange(frames) * 0.96 + 0.96], -1)
        for j in range(n):
            sf.write(base / manifest.rel_paths[a + j], audio[j], SR, subtype="PCM_16")
            np.save(base / "npy" / f"{ids[a + j]}.npy", emb[j])
        emb_store.write_chunk(
            chunk,
            {
                "embeddings": emb,
                "frame_times": np.repeat(times[None], n, 0),
                "num_frames": np.full(n, frames, np.int32),
                "num_samples": np.full(n, length, np.int64),
            },
            np.ones(n, np.uint8),
            [""] * n,
        )
        audio_store.write_chunk(
            chunk,
            {"audio": audio, "num_samples": np.full(n, length, np.int64)},
            np.ones(n, np.uint8),
            [""] * n,
        )
    del c
    if originals:
        manifest.extra["original"] = np.array([str(p) for p in originals])
    return {"manifest": manifest, "emb": base / "emb.zarr", "audio": base / "audio.zarr"}


def bench_reference(base: Path, manifest, audio: str | None) -> float:
    """Per clip, random order: np.load of the clip's .npy (+ its audio: ``wav`` = soundfile.read
    of a pre-resampled 16 kHz WAV, ``decode`` = east.audio.load_audio of the original file
    with resampling to 16 kHz, what a loader without an audio cache does)."""
    from east.audio import load_audio

    rng = np.random.default_rng(1)
    order = rng.permutation(len(manifest))
    t = time.perf_counter()
    for i in order:
        np.load(base / "npy" / f"{manifest.clip_ids[i]}.npy")
        if audio == "wav":
            sf.read(manifest.audio_path(int(i)), dtype="float32")
        elif audio == "decode":
            load_audio(manifest.extra["original"][int(i)], sr=SR)
    return len(order) / (time.perf_counter() - t)


def bench_east(data: dict, with_audio: bool) -> float:
    from east.config import CropConfig
    from east.train.data import ClipStream, TeacherSource

    manifest = data["manifest"]
    stream = ClipStream(
        manifest,
        np.arange(len(manifest)),
        [TeacherSource(data["emb"])],
        SR,
        crop=CropConfig(),
        training=True,
        shuffle=True,
        buffer_size=128,
        audio_store=data["audio"] if with_audio else None,
    )
    if not with_audio:  # embeddings only: skip audio reading entirely
        stream._read_audio = lambda rows: [np.zeros(1, np.float32)] * len(rows)  # type: ignore[method-assign]
    t = time.perf_counter()
    n = sum(1 for _ in stream)
    return n / (time.perf_counter() - t)


def bench_wait_fraction(data: dict, base: Path, steps: int, workers: int) -> dict:
    from east.config import load_config_dict
    from east.train.trainer import train

    cfg = load_config_dict(
        {
            "system": "east_final",
            "device": "cpu",
            "output_dir": str(base / "runs"),
            "dataset": {"name": "bench", "root": str(base), "audio_cache": str(data["audio"])},
            "student": {"name": "mobile_fcn"},
            "teachers": [{"cache": str(data["emb"])}],
            "loss": {"lambda": 0.6},
            "train": {
                "max_steps": steps,
                "max_epochs": 1,
                "batch_size": 16,
                "num_workers": workers,
            },
        }
    )
    import east.train.plan as loop

    loop.load_dataset = lambda cfg: data["manifest"]  # the synthetic manifest is not registered
    run = train(cfg, progress=False)
    record = json.loads((run / "metrics.jsonl").read_text().splitlines()[0])
    return {
        "steps": record["step"],
        "epoch_seconds": record["seconds"],
        "data_wait_fraction": record["data_wait_fraction"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=512)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--frames", type=int, default=10)
    parser.add_argument("--dim", type=int, default=768)
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    import torch

    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        data = make_data(base, args.clips, args.seconds, args.frames, args.dim)
        results = {"setup": vars(args), "torch_threads": torch.get_num_threads()}
        for key, audio in (
            ("embeddings", None),
            ("audio_wav+embeddings", "wav"),
            ("audio_decode+embeddings", "decode"),
        ):
            if audio == "decode" and "original" not in data["manifest"].extra:
                continue
            # alternate the two paths and keep the median: the machine is shared and noisy
            refs, ours_runs = [], []
            for _ in range(args.repeats):
                refs.append(bench_reference(base, data["manifest"], audio))
                ours_runs.append(bench_east(data, audio is not None))
            ref, ours = float(np.median(refs)), float(np.median(ours_runs))
            results[key] = {
                "reference_clips_per_s": round(ref, 1),
                "east_clips_per_s": round(ours, 1),
                "speedup": round(ours / ref, 2),
            }
            print(key, results[key], flush=True)
        results["mobile_fcn_step"] = bench_wait_fraction(data, base, args.steps, args.workers)
        print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
