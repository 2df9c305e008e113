"""A tiny deterministic teacher and dataset for the extraction tests.

Importing this module registers the teacher ``tiny-test`` (8 kHz, 64 ms window, 32 ms hop,
8 dims). ``EAST_TINY_SLEEP`` (seconds per batch) makes it slow enough to be killed mid-run.
Run as ``python -m east_tiny_teacher ROOT STORE [--batch-size B] [--chunk-clips C]`` to extract
the dataset written by :func:`make_dataset` (used by the SIGKILL resume test).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from east.datasets.base import Manifest
from east.extract.teachers.base import Teacher, TeacherInfo, TeacherOutput, frame_times
from east.extract.teachers.registry import register_teacher

INFO = TeacherInfo(
    name="tiny-test",
    family="test",
    sample_rate=8000,
    embedding_dim=8,
    window_s=0.064,
    hop_s=0.032,
    description="test teacher: tanh of a fixed projection of framed audio",
)
CLIP_INFO = TeacherInfo(
    name="tiny-clip-test",
    family="test",
    sample_rate=8000,
    embedding_dim=4,
    window_s=None,
    hop_s=None,
    description="test teacher: clip-level mean of the framed projection",
)


class TinyTeacher(Teacher):
    def __init__(self, info: TeacherInfo = INFO) -> None:
        super().__init__()
        self.info = info
        self.win, self.hop = 512, 256
        g = torch.Generator().manual_seed(0)
        self.proj = torch.nn.Parameter(torch.randn(self.win, info.embedding_dim, generator=g))
        self.weights_sha256 = "tiny-test-weights"

    def frames_for(self, lengths: torch.Tensor) -> torch.Tensor:
        extra = (lengths - self.win).clamp(min=0)
        return 1 + torch.div(extra + self.hop - 1, self.hop, rounding_mode="floor")

    def embed(self, waveforms: torch.Tensor, lengths: torch.Tensor) -> TeacherOutput:
        if os.environ.get("EAST_TINY_SLEEP"):
            time.sleep(float(os.environ["EAST_TINY_SLEEP"]))
        if float(waveforms.abs().max()) > 10:  # lets tests make a clip fail inside the teacher
            raise RuntimeError("input too loud")
        frames = int(self.frames_for(torch.tensor([waveforms.shape[1]]))[0])
        need = self.win + (frames - 1) * self.hop
        x = torch.nn.functional.pad(waveforms, (0, need - waveforms.shape[1]))
        emb = torch.tanh(x.unfold(1, self.win, self.hop) @ self.proj)  # (B, T, D)
        # a clip louder than 2 (a float WAV can be) comes out as NaN: a teacher that breaks
        emb = torch.where(waveforms.abs().amax(1)[:, None, None] > 2, torch.nan, emb)
        nf = self.frames_for(lengths)
        if self.info.clip_level:
            mask = (torch.arange(frames)[None, :] < nf[:, None]).float()[..., None]
            emb = (emb * mask).sum(1, keepdim=True) / nf[:, None, None]
            times = torch.tensor([[0.0, waveforms.shape[1] / 8000]], dtype=torch.float64)
            return TeacherOutput(emb, torch.ones_like(nf), times)
        return TeacherOutput(emb, nf, frame_times(frames, 0.064, 0.032))


def tiny_test(weights: object, device: str) -> Teacher:
    return TinyTeacher().to(device)


def tiny_clip_test(weights: object, device: str) -> Teacher:
    return TinyTeacher(CLIP_INFO).to(device)


# ``python -m east_tiny_teacher`` runs this file as __main__ and may import it again by name
for _info, _factory in ((INFO, tiny_test), (CLIP_INFO, tiny_clip_test)):
    with contextlib.suppress(ValueError):  # already registered by the other copy
        register_teacher(_info)(_factory)


STORE_ARRAYS = ("embeddings", "frame_times", "num_frames", "num_samples", "status", "failure",
                "clip_id", "length_hint")  # fmt: skip


def assert_stores_equal(a: str | Path, b: str | Path) -> None:
    """Two embedding stores hold identical provenance-relevant attrs and arrays."""
    from east.cache_schema import open_store

    sa, sb = open_store(a), open_store(b)
    for key in ("teacher", "weights_sha256", "manifest_hash", "max_frames", "dim", "max_samples"):
        assert sa.attrs[key] == sb.attrs[key], key
    for name in STORE_ARRAYS:
        np.testing.assert_array_equal(sa.array(name)[:], sb.array(name)[:], err_msg=name)


def make_dataset(root: Path, n: int = 20, bad: tuple[int, ...] = ()) -> Manifest:
    """``n`` clips of 0.2–1.0 s noise + tone at 16 kHz; rows in ``bad`` are not audio."""
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1)
    rel = []
    for i in range(n):
        name = f"clip{i:03d}.wav"
        if i in bad:
            (root / name).write_bytes(b"this is not audio" * 10)
        else:
            sec = 0.2 + 0.8 * rng.random()
            t = np.arange(int(sec * 16000)) / 16000
            x = 0.3 * np.sin(2 * np.pi * (200 + 40 * i) * t) + 0.05 * rng.standard_normal(len(t))
            sf.write(root / name, x.astype(np.float32), 16000)
        rel.append(name)
    return Manifest(
        name="tiny",
        root=root,
        task="multiclass",
        class_names=["a", "b"],
        clip_ids=[f"c{i:03d}" for i in range(n)],
        rel_paths=rel,
        splits=np.array(["train"] * n),
        targets=np.arange(n) % 2,
    )


def main() -> None:
    from east.extract.runner import ExtractConfig, TeacherSpec, extract

    parser = argparse.ArgumentParser()
    parser.add_argument("root", type=Path)
    parser.add_argument("store")
    parser.add_argument("--n", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=3)
    parser.add_argument("--chunk-clips", type=int, default=4)
    parser.add_argument("--num-workers", type=int, default=0)
    args = parser.parse_args()
    manifest = make_dataset(args.root, args.n)  # deterministic: rewriting gives the same files
    cfg = ExtractConfig(
        batch_size=args.batch_size,
        chunk_clips=args.chunk_clips,
        num_workers=args.num_workers,
        progress=False,
        device="cpu",
    )
    summary = extract(
        manifest, TeacherSpec("tiny-test", plugin="east_tiny_teacher"), args.store, cfg
    )
    print(summary.line(), flush=True)


if __name__ == "__main__":
    main()
