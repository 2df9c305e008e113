"""SIGKILL during training, then ``east train --resume`` ends with the same metrics as an
uninterrupted run (CPU, fixed seed)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from train_helpers import make_cache, make_dataset, tiny_config, write_config

EPOCHS = 3


def _east(args: list[str], **kw) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "east", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        **kw,
    )


def test_sigkill_then_resume_matches_uninterrupted(tmp_path: Path) -> None:
    manifest = make_dataset(tmp_path / "esc", num_classes=3, clips_per_class=5, seconds=2.0)
    cache = make_cache(manifest, tmp_path / "tiny.zarr", dim=8)
    cfg = tiny_config(
        tmp_path / "esc",
        cache,
        tmp_path / "runs",
        system="east_final",
        train={
            "max_steps": 1000,
            "max_epochs": EPOCHS,
            "batch_size": 3,
            "num_workers": 0,
            "shuffle_buffer": 4,
        },
        augment={"mixup_alpha": 0.3},
        early_stopping={"patience": 50},
    )
    path = write_config(tmp_path / "run.yaml", cfg)

    # killed as soon as the first epoch's checkpoint exists, i.e. in the middle of epoch 1
    proc = _east(["train", "--config", str(path), "--quiet", "--set", "name=killed"])
    killed = tmp_path / "runs" / "killed"
    deadline = time.monotonic() + 240
    while not (killed / "last.pt").exists():
        assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
        assert time.monotonic() < deadline
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    assert not (killed / "test_results.json").exists(), "the run finished before the kill"
    assert len((killed / "metrics.jsonl").read_text().splitlines()) < EPOCHS

    # the reference (uninterrupted) and the resume run in this process, one thread as the
    # subprocess (OMP_NUM_THREADS=1)
    from east.config import load_config
    from east.train.trainer import train

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        straight = train(load_config(path, ["name=straight"]), progress=False)
        train(None, resume=killed, progress=False)  # type: ignore[arg-type]
    finally:
        torch.set_num_threads(threads)

    def lines(run: Path) -> list[dict]:
        return [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]

    a, b = lines(straight), lines(killed)
    assert len(a) == len(b) == EPOCHS
    for x, y in zip(a, b, strict=True):
        for key in ("step", "train_loss", "train_reg", "val_loss", "val_accuracy", "val_mAP"):
            assert x[key] == pytest.approx(y[key], rel=1e-6, abs=1e-7), (x["epoch"], key)
    ta = json.loads((straight / "test_results.json").read_text())
    tb = json.loads((killed / "test_results.json").read_text())
    for key in ("test_accuracy", "test_mAP", "test_loss", "best_epoch"):
        assert ta[key] == pytest.approx(tb[key], rel=1e-6, abs=1e-7), key
