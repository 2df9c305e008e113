"""Hostile tests of the embedding/audio stores: east never deletes or overwrites what it did not
make, one writer per store (real races), workers die with their parent, what is marked done is
really there (deleted, corrupt, changed and NaN chunks), a full disk is one line and loses
nothing. Every case runs the real ``east`` command line."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import psutil
import pytest
import soundfile as sf

import east_tiny_teacher as tiny
from east.cache_schema import open_store
from hostile import (
    assert_one_line_error,
    assert_unchanged,
    east,
    east_env,
    small_disk,
    snapshot,
    unmount,
)

BASE = ["--plugin", "east_tiny_teacher", "--teacher", "tiny-test", "--dataset", "folder",
        "--device", "cpu", "-q", "--batch-size", "2", "--chunk-clips", "4", "--num-workers", "0"]  # fmt: skip


def _folder_dataset(root: Path, per_class: int = 5) -> Path:
    for label in ("a", "b"):
        tiny.make_dataset(root / label, per_class)
    return root


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return _folder_dataset(tmp_path_factory.mktemp("data"))


@pytest.fixture(scope="module")
def clean(data, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("clean") / "s.zarr"
    result = east("extract", *BASE, "--root", data, "--store", path)
    assert result.code == 0, str(result)
    return path


def _extract(data: Path, store: Path, *extra: str, **env: str):
    return east("extract", *BASE, "--root", data, "--store", store, *extra, env=east_env(**env))


# ------------------------------------------------------------------ 1. never delete what isn't ours


@pytest.mark.parametrize("flags", [(), ("--overwrite",)])
def test_folder_with_user_files_is_refused(data, tmp_path, flags):
    target = tmp_path / "mine"
    target.mkdir()
    (target / "notes.txt").write_text("a year of notes")
    before = snapshot(target)
    assert_one_line_error(_extract(data, target, *flags), str(target), "not an east store")
    assert_unchanged(target, before)


def test_dataset_folder_as_store_is_refused(data, tmp_path):
    copy = tmp_path / "dataset-copy"
    shutil.copytree(data, copy)
    before = snapshot(copy)
    assert_one_line_error(_extract(data, copy, "--overwrite"), "not an east store")
    assert_unchanged(copy, before)


@pytest.mark.parametrize("flags", [(), ("--overwrite",)])
def test_foreign_zarr_group_is_refused(data, tmp_path, flags):
    import zarr

    target = tmp_path / "theirs.zarr"
    group = zarr.open_group(target, mode="w")
    group.create_array("x", shape=(3,), dtype="int32")[:] = [1, 2, 3]
    before = snapshot(target)
    assert_one_line_error(_extract(data, target, *flags), "did not make")
    assert_unchanged(target, before)


def test_cache_audio_into_user_folder_is_refused(data, tmp_path):
    target = tmp_path / "mine"
    target.mkdir()
    (target / "notes.txt").write_text("keep me")
    before = snapshot(target)
    result = east("cache", "audio", "--dataset", "folder", "--root", data, "--store", target,
                  "-q", "--overwrite", "--num-workers", "0")  # fmt: skip
    assert_one_line_error(result, "not an east store")
    assert_unchanged(target, before)


def test_store_naming_a_file_is_refused(data, tmp_path):
    target = tmp_path / "file.zarr"
    target.write_text("not a folder")
    before = snapshot(target)
    assert_one_line_error(_extract(data, target), "is a file")
    assert_unchanged(target, before)


def test_cache_dir_naming_a_file_is_refused(data, tmp_path):
    target = tmp_path / "cachefile"
    target.write_text("not a folder")
    before = snapshot(target)
    result = east("extract", *BASE, "--root", data, "--cache-dir", target)
    assert_one_line_error(result, "is a file")
    assert_unchanged(target, before)


def test_overwrite_never_replaces_another_kind(data, tmp_path):
    audio = tmp_path / "audio.zarr"
    made = east("cache", "audio", "--dataset", "folder", "--root", data, "--store", audio, "-q",
                "--num-workers", "0")  # fmt: skip
    assert made.code == 0, str(made)
    before = snapshot(audio)
    assert_one_line_error(_extract(data, audio, "--overwrite"), "audio store")
    assert_unchanged(audio, before)


def test_overwrite_replaces_own_store_and_leaves_nothing_behind(data, clean, tmp_path):
    path = tmp_path / "s.zarr"
    shutil.copytree(clean, path)
    open_store(path, mode="r+").reset_chunks([0, 1, 2])  # (a store that differs from clean)
    result = _extract(data, path, "--overwrite")
    assert result.code == 0, str(result)
    tiny.assert_stores_equal(path, clean)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.zarr", "s.zarr.lock"]


def test_empty_folder_is_used(data, clean, tmp_path):
    path = tmp_path / "empty.zarr"
    path.mkdir()
    assert _extract(data, path).code == 0
    tiny.assert_stores_equal(path, clean)


# ------------------------------------------------------------------ 2. one writer per store


def _start(data: Path, store: Path, sleep: str = "0.15", *extra: str) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "east", "extract", *BASE, "--root", str(data), "--store",
           str(store), *extra]  # fmt: skip
    return subprocess.Popen(
        cmd,
        env=east_env(EAST_TINY_SLEEP=sleep),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.mark.parametrize("trial", range(3))
def test_two_writers_race_on_a_partly_finished_store(data, clean, tmp_path, trial):
    path = tmp_path / "s.zarr"
    assert _extract(data, path, "--limit", "4").code == 0  # partly finished
    procs = [_start(data, path), _start(data, path)]
    outs = [(p.wait(120), *p.communicate()) for p in procs]
    codes = sorted(code for code, _, _ in outs)
    assert codes == [0, 2], outs
    loser = next(err for code, _, err in outs if code == 2)
    lines = [x for x in loser.splitlines() if x.strip()]
    assert len(lines) == 1 and "in use" in lines[0] and "pid" in lines[0], loser
    assert "Traceback" not in loser
    tiny.assert_stores_equal(path, clean)  # nothing zeroed, nothing reset


@pytest.mark.parametrize("trial", range(2))
def test_two_writers_race_to_create_a_store(data, clean, tmp_path, trial):
    path = tmp_path / "new.zarr"
    procs = [_start(data, path, "0.05"), _start(data, path, "0.05")]
    outs = [(p.wait(120), *p.communicate()) for p in procs]
    for code, _, err in outs:
        assert "Traceback" not in err and code in (0, 2), outs
    assert any(code == 0 for code, _, _ in outs)
    # the loser (if it lost) said so in one line; whatever the order, one complete store
    if _extract(data, path).code == 0:
        tiny.assert_stores_equal(path, clean)


def _children(pid: int) -> list[int]:
    try:
        return [c.pid for c in psutil.Process(pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def _wait_gone(pids: list[int], seconds: float) -> list[int]:
    deadline = time.monotonic() + seconds
    alive = pids
    while alive and time.monotonic() < deadline:
        alive = [
            p for p in alive if psutil.pid_exists(p) and psutil.Process(p).status() != "zombie"
        ]
        time.sleep(0.1)
    return alive


@pytest.mark.parametrize("mode", ["workers", "dask"])
def test_sigkill_leaves_no_workers_and_a_takeable_lock(data, clean, tmp_path, mode):
    path = tmp_path / "s.zarr"
    extra = ("--num-workers", "2") if mode == "workers" else ("--scheduler", "local:2")
    proc = _start(data, path, "0.3", *extra)
    deadline = time.monotonic() + 90
    kids: list[int] = []
    while time.monotonic() < deadline and proc.poll() is None:
        kids = _children(proc.pid)
        if len(kids) >= 2 and (path / "zarr.json").exists():
            break
        time.sleep(0.1)
    assert proc.poll() is None and len(kids) >= 2, proc.communicate()
    time.sleep(1.0)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert _wait_gone(kids, 3) == [], "worker processes outlived a SIGKILLed east"
    # the dead writer's lock is taken over at once, and the resumed store equals a clean one
    result = _extract(data, path)
    assert result.code == 0, str(result)
    tiny.assert_stores_equal(path, clean)


# ------------------------------------------------------------------ 3. what is done is there


def _chunk_file(store: Path, array: str, chunk: int) -> Path:
    folder = store / array / "c" / str(chunk)
    return next(p for p in sorted(folder.rglob("*")) if p.is_file()) if folder.is_dir() else folder


def _verify(path: Path, *extra: str):
    return east("cache", "verify", path, *extra)


def test_verify_finds_a_deleted_chunk_and_repair_restores_it(data, clean, tmp_path):
    path = tmp_path / "s.zarr"
    shutil.copytree(clean, path)
    _chunk_file(path, "embeddings", 1).unlink()
    result = _verify(path)
    assert result.code == 1 and "Traceback" not in result.stderr, str(result)
    assert "store chunk 1" in result.stderr and "missing" in result.stderr
    assert "a/clip004" in result.stderr or "b/clip" in result.stderr  # names its clips
    # extraction alone cannot see it (the chunk is marked done); --repair marks it pending
    repaired = _verify(path, "--repair")
    assert repaired.code == 1 and "repaired" in repaired.stdout
    assert _extract(data, path).code == 0
    assert _verify(path).code == 0
    tiny.assert_stores_equal(path, clean)


def test_verify_reports_a_corrupt_chunk_without_traceback(clean, tmp_path):
    path = tmp_path / "s.zarr"
    shutil.copytree(clean, path)
    _chunk_file(path, "embeddings", 0).write_bytes(os.urandom(64))
    result = _verify(path)
    assert result.code == 1 and "Traceback" not in result.stderr, str(result)
    assert "store chunk 0" in result.stderr and "unreadable" in result.stderr


def test_verify_reports_changed_values(clean, tmp_path):
    import zarr

    path = tmp_path / "s.zarr"
    shutil.copytree(clean, path)
    arr = zarr.open_group(path, mode="r+")["frame_times"]
    block = arr[4:8]
    block[0, 0, 0] += 0.5  # plausible, finite, wrong
    arr[4:8] = block
    result = _verify(path)
    assert result.code == 1 and "checksum" in result.stderr and "store chunk 1" in result.stderr


def test_verify_reports_nan_by_clip(clean, tmp_path):
    import zarr

    path = tmp_path / "s.zarr"
    shutil.copytree(clean, path)
    arr = zarr.open_group(path, mode="r+")["embeddings"]
    block = arr[0:4]
    block[2, 0, 0] = np.nan
    arr[0:4] = block
    result = _verify(path)
    assert result.code == 1 and "NaN" in result.stderr
    assert open_store(path).clip_ids[2] in result.stderr


def test_verify_of_a_sound_store_reads_every_chunk(clean):
    result = _verify(clean)
    assert result.code == 0 and "ok" in result.stdout, str(result)


def test_nonfinite_teacher_output_is_a_failed_clip(tmp_path):
    root = _folder_dataset(tmp_path / "d", 3)
    loud = np.full(8000, 5.0, np.float32)  # a float WAV beyond full scale: the teacher gives NaN
    sf.write(root / "a" / "clip001.wav", loud, 16000, subtype="FLOAT")
    path = tmp_path / "s.zarr"
    result = _extract(root, path)
    assert result.code == 0, str(result)
    store = open_store(path)
    reasons = dict(store.failures())
    assert list(reasons) == ["a/clip001"], reasons
    assert "NaN" in reasons["a/clip001"] or "beyond full scale" in reasons["a/clip001"]
    assert _verify(path).code == 0  # a failed clip is recorded, not hidden


# ------------------------------------------------------------------ 4. a full disk


def test_full_disk_is_one_line_and_resumes(data, clean, tmp_path):
    disk = small_disk(tmp_path / "disk", "200k")
    try:
        path = disk / "s.zarr"
        ballast = disk / "ballast"
        ballast.write_bytes(b"\0" * 150_000)
        result = _extract(data, path)
        assert_one_line_error(result, "No space left", "run the same command again")
        ballast.unlink()
        result = _extract(data, path)
        assert result.code == 0, str(result)
        tiny.assert_stores_equal(path, clean)
    finally:
        unmount(disk)


@pytest.mark.parametrize("sr", ["0", "-5", "10"])
def test_cache_audio_impossible_sample_rate(data, tmp_path, sr):
    path = tmp_path / "a.zarr"
    result = east("cache", "audio", "--dataset", "folder", "--root", data, "--store", path,
                  "--sr", sr, "-q", "--num-workers", "0")  # fmt: skip
    assert_one_line_error(result, "--sr")
    assert not path.exists()
