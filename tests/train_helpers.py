"""Helpers of the training tests: a tiny ESC-50 layout, a tiny teacher cache written with
``east.cache_schema.create_store`` and a tiny run config."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import yaml

TINY_TEACHER_SR = 16000
TINY_WINDOW_S = 0.5
TINY_HOP_S = 0.25


def tiny_band_embeddings(wave: np.ndarray, sr: int, dim: int) -> np.ndarray:
    """A deterministic "teacher": log energies of ``dim`` linear frequency bands per frame."""
    win, hop = int(TINY_WINDOW_S * sr), int(TINY_HOP_S * sr)
    n = max(1, 1 + (len(wave) - win) // hop)
    out = np.zeros((n, dim), dtype=np.float32)
    for t in range(n):
        frame = wave[t * hop : t * hop + win]
        spec = np.abs(np.fft.rfft(frame, n=win)) ** 2
        bands = np.array_split(spec, dim)
        out[t] = np.log([b.sum() + 1e-6 for b in bands])
    return out


def make_dataset(
    root: Path, *, num_classes: int = 4, clips_per_class: int = 10, seconds: float = 2.0
):
    """ESC-50 layout with a stratified seeded split; returns the manifest."""
    from east.datasets import load_manifest
    from east.testing.layouts import make_esc50

    make_esc50(
        root,
        num_classes=num_classes,
        clips_per_class=clips_per_class,
        folds=(1, 2),
        seconds=seconds,
        sr=TINY_TEACHER_SR,
    )
    return load_manifest("esc50", root, split="stratified", seed=0)


def make_cache(
    manifest: Any, path: Path, *, dim: int = 8, teacher: str = "tiny-bands", chunk_clips: int = 8
) -> Path:
    """Run the tiny teacher over every clip of ``manifest`` into an embedding store."""
    from east.audio import load_audio
    from east.cache_schema import create_store

    embs = [
        tiny_band_embeddings(
            load_audio(manifest.audio_path(i), sr=TINY_TEACHER_SR), TINY_TEACHER_SR, dim
        )
        for i in range(len(manifest))
    ]
    max_frames = max(len(e) for e in embs)
    store = create_store(
        path,
        provenance={
            "teacher": teacher,
            "weights_sha256": "none",
            "sample_rate": TINY_TEACHER_SR,
            "window_s": TINY_WINDOW_S,
            "hop_s": TINY_HOP_S,
            "dataset": manifest.name,
            "manifest_hash": manifest.hash,
        },
        clip_ids=manifest.clip_ids,
        max_frames=max_frames,
        dim=dim,
        chunk_clips=chunk_clips,
        dtype="float32",
    )
    for chunk in range(store.num_chunks):
        start, stop = store.chunk_bounds(chunk)
        n = stop - start
        emb = np.zeros((n, max_frames, dim), np.float32)
        times = np.zeros((n, max_frames, 2))
        frames = np.zeros(n, np.int32)
        for j, e in enumerate(embs[start:stop]):
            emb[j, : len(e)] = e
            starts = np.arange(len(e)) * TINY_HOP_S
            times[j, : len(e)] = np.stack([starts, starts + TINY_WINDOW_S], axis=1)
            frames[j] = len(e)
        store.write_chunk(
            chunk,
            {
                "embeddings": emb,
                "frame_times": times,
                "num_frames": frames,
                "num_samples": np.full(n, 2 * TINY_TEACHER_SR, np.int64),
            },
            np.ones(n, np.uint8),
            [""] * n,
        )
    return path


def tiny_config(
    root: Path, cache: Path | None, out: Path, system: str = "east_final", **extra: Any
) -> dict:
    cfg: dict[str, Any] = {
        "system": system,
        "seed": 3,
        "device": "cpu",
        "output_dir": str(out),
        "dataset": {
            "name": "esc50",
            "root": str(root),
            "options": {"split": "stratified", "seed": 0},
        },
        "student": {"name": "mobile_fcn"},
        "teachers": [] if cache is None else [{"cache": str(cache), "weight": 1.0}],
        "loss": {"lambda": 0.0 if system in ("baseline", "teacher_lr") else 0.5},
        "train": {
            "max_steps": 6,
            "batch_size": 4,
            "num_workers": 0,
            "shuffle_buffer": 8,
            "log_every": 1,
        },
        "early_stopping": {"patience": 5},
    }
    for key, value in extra.items():
        cfg[key] = {**cfg.get(key, {}), **value} if isinstance(value, dict) else value
    return cfg


def write_config(path: Path, cfg: dict) -> Path:
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path
