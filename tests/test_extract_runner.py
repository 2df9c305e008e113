"""The extraction runner: values, resume after SIGKILL, limit, failures, CLI."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

import east_tiny_teacher as tiny
from east.audio import load_audio
from east.cache_schema import DONE, FAILED, open_store
from east.errors import CacheError, EastError
from east.extract.runner import ExtractConfig, TeacherSpec, extract
from east_tiny_teacher import assert_stores_equal

SPEC = TeacherSpec("tiny-test", plugin="east_tiny_teacher")


def _cfg(**kw):
    return ExtractConfig(**{"batch_size": 3, "chunk_clips": 4, "num_workers": 0,
                            "progress": False, "device": "cpu", **kw})  # fmt: skip


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return tiny.make_dataset(tmp_path_factory.mktemp("tiny"), 14, bad=(5,))


@pytest.fixture(scope="module")
def clean_store(dataset, tmp_path_factory):
    path = tmp_path_factory.mktemp("clean") / "s.zarr"
    summary = extract(dataset, SPEC, path, _cfg(num_workers=2))
    assert summary.processed == 14 and summary.failed_now == 1
    return path


def test_values_frames_and_provenance(dataset, clean_store):
    store = open_store(clean_store)
    teacher = tiny.TinyTeacher()
    store.check_manifest(dataset)
    assert store.attrs["teacher"] == "tiny-test"
    assert store.attrs["weights_sha256"] == "tiny-test-weights"
    assert (store.attrs["sample_rate"], store.attrs["window_s"], store.attrs["hop_s"]) == (
        8000, 0.064, 0.032)  # fmt: skip
    good = [i for i in range(len(dataset)) if i != 5]
    assert store.done[good].all() and not store.done[5]
    got = store.read(good)
    longest = 0
    for k, row in enumerate(good):
        # independent reference: this clip alone through the teacher, stored as float16
        wave = load_audio(dataset.audio_path(row), 8000)
        longest = max(longest, len(wave))
        out = teacher.embed(torch.from_numpy(wave)[None], torch.tensor([len(wave)]))
        nf = int(out.num_frames[0])
        assert got.num_frames[k] == nf == 1 + max(0, -(-(len(wave) - 512) // 256))
        ref = out.embeddings[0, :nf].detach().numpy()
        np.testing.assert_allclose(got.embeddings[k, :nf], ref, atol=2e-3, rtol=2e-3)
        assert not got.embeddings[k, nf:].any()  # padding frames are zero
        np.testing.assert_allclose(got.frame_times[k, :nf], out.frame_times[:nf].numpy())
    assert store.max_frames == int(teacher.frames_for(torch.tensor([longest]))[0])
    assert store.array("num_samples")[good[0]] == len(load_audio(dataset.audio_path(good[0]), 8000))


def test_bad_clips_in_failures_table(dataset, clean_store, tmp_path):
    store = open_store(clean_store)
    assert store.status[5] == FAILED
    [(clip, reason)] = store.failures()
    assert clip == "c005" and "not an audio file" in reason
    with pytest.raises(EastError, match=r"c005.*--strict"):
        extract(dataset, SPEC, tmp_path / "strict.zarr", _cfg(strict=True))
    with pytest.raises(EastError, match=r"c005.*--strict"):  # failure reported by a worker
        extract(dataset, SPEC, tmp_path / "strict2.zarr", _cfg(strict=True, num_workers=2))


def test_teacher_failure_is_per_clip(tmp_path):
    manifest = tiny.make_dataset(tmp_path / "d", 6)
    loud = np.full(4000, 20.0, np.float32)  # float WAV keeps it; the tiny teacher refuses it
    sf.write(manifest.audio_path(2), loud, 16000, subtype="FLOAT")
    summary = extract(manifest, SPEC, tmp_path / "s.zarr", _cfg())
    store = open_store(tmp_path / "s.zarr")
    assert [c for c, _ in summary.failures] == ["c002"]
    assert "input too loud" in store.failures()[0][1]
    assert store.done.sum() == 5


def test_limit_then_resume_equals_clean_run(dataset, clean_store, tmp_path):
    path = tmp_path / "s.zarr"
    first = extract(dataset, SPEC, path, _cfg(limit=5))
    assert first.processed == 5 and first.pending == 9
    # the store is shaped for the whole manifest from the start
    assert open_store(path).num_clips == 14
    second = extract(dataset, SPEC, path, _cfg(limit=2))
    assert second.processed == 2
    extract(dataset, SPEC, path, _cfg(num_workers=1))
    assert_stores_equal(path, clean_store)
    again = extract(dataset, SPEC, path, _cfg())
    assert again.processed == 0  # nothing left


def test_resume_after_sigkill_equals_clean_run(tmp_path):
    root, path = tmp_path / "d", tmp_path / "s.zarr"
    cmd = [sys.executable, "-m", "east_tiny_teacher", str(root), str(path), "--n", "24"]
    env = {**os.environ, "PYTHONPATH": str(Path(tiny.__file__).parent), "EAST_TINY_SLEEP": "0.2"}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    done_at_kill = 0
    deadline = time.monotonic() + 60
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                done_at_kill = int(open_store(path).done.sum())
            except CacheError:
                done_at_kill = 0
            if done_at_kill >= 8:
                break
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()
    assert proc.returncode == -signal.SIGKILL, proc.stderr.read().decode()
    done_before = int(open_store(path).done.sum())
    assert 8 <= done_before < 24  # it really stopped partway
    manifest = tiny.make_dataset(root, 24)
    resumed = extract(manifest, SPEC, path, _cfg())
    assert resumed.processed == 24 - done_before  # done clips are skipped
    clean = tmp_path / "clean.zarr"
    extract(manifest, SPEC, clean, _cfg())
    assert_stores_equal(path, clean)


def test_clip_level_teacher_and_fsspec_url(tmp_path):
    manifest = tiny.make_dataset(tmp_path / "d", 4)
    extract(manifest, TeacherSpec("tiny-clip-test"), tmp_path / "s.zarr", _cfg())
    url = "memory://east-runner-test/s.zarr"
    extract(manifest, TeacherSpec("tiny-clip-test"), url, _cfg(overwrite=True))
    assert_stores_equal(tmp_path / "s.zarr", url)
    store = open_store(tmp_path / "s.zarr")
    assert store.max_frames == 1 and store.attrs["clip_level"]
    got = store.read(range(4))
    assert (got.num_frames == 1).all()
    for i in range(4):
        seconds = len(load_audio(manifest.audio_path(i), 8000)) / 8000
        np.testing.assert_allclose(got.frame_times[i, 0], [0.0, seconds])


def test_other_teacher_refused_then_overwrite(dataset, clean_store, tmp_path):
    import shutil

    path = tmp_path / "s.zarr"
    shutil.copytree(clean_store, path)
    with pytest.raises(CacheError, match="tiny-test"):
        extract(dataset, TeacherSpec("tiny-clip-test"), path, _cfg())
    extract(dataset, TeacherSpec("tiny-clip-test"), path, _cfg(overwrite=True))
    assert open_store(path).attrs["teacher"] == "tiny-clip-test"


def test_cli_extract_info_verify(tmp_path):
    from typer.testing import CliRunner

    from east.cli.main import app

    root = tmp_path / "folder"
    for label in ("a", "b"):
        tiny.make_dataset(root / label, 3)
    runner = CliRunner()
    args = ["extract", "--teacher", "tiny-test", "--plugin", "east_tiny_teacher", "--dataset",
            "folder", "--root", str(root), "--cache-dir", str(tmp_path / "c"), "--device", "cpu",
            "-q", "--num-workers", "0", "--batch-size", "2"]  # fmt: skip
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    path = tmp_path / "c" / "folder" / "tiny-test.zarr"
    assert str(path) in result.stdout
    info = runner.invoke(app, ["cache", "info", str(path)])
    assert info.exit_code == 0 and "6/6 done" in info.stdout and "tiny-test" in info.stdout
    verify = ["cache", "verify", str(path), "--dataset", "folder", "--root", str(root)]
    assert runner.invoke(app, verify).exit_code == 0
    # a NaN in a done clip and an unfinished clip are both problems → exit 1
    store = open_store(path, mode="r+")
    bad = store.read([0]).embeddings.astype(np.float16)
    bad[0, 0, 0] = np.nan
    store.array("embeddings")[0:1] = bad
    result = runner.invoke(app, verify)
    assert result.exit_code == 1 and "NaN" in result.output


def test_audio_store_from_cli(tmp_path):
    from typer.testing import CliRunner

    from east.cache_schema import open_audio_store
    from east.cli.main import app

    root = tmp_path / "folder"
    tiny.make_dataset(root / "a", 3)
    out = tmp_path / "a.zarr"
    args = ["cache", "audio", "--dataset", "folder", "--root", str(root), "--sr", "8000",
            "--store", str(out), "-q", "--num-workers", "0"]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    store = open_audio_store(out)
    assert store.done.all() and store.sample_rate == 8000
    waves = store.read([1, 0], as_float=True).waveforms
    from east.datasets import load_manifest

    m = load_manifest("folder", root)
    for w, row in zip(waves, [1, 0], strict=True):
        ref = load_audio(m.audio_path(row), 8000)
        assert len(w) == len(ref)
        np.testing.assert_allclose(w, ref, atol=1 / 32768 + 1e-7)
    assert (store.status == DONE).all()


def test_optimized_cpu_teacher_writes_the_same_store(dataset, tmp_path):
    from east.extract.runner import cached_teacher

    spec = TeacherSpec("fcn-msd", "random")
    fast, eager = tmp_path / "fast.zarr", tmp_path / "eager.zarr"
    extract(dataset, spec, fast, _cfg())  # optimize=True is the default
    extract(dataset, spec, eager, _cfg(optimize=False))
    optimized = cached_teacher(spec, "cpu", optimize=True)
    assert isinstance(optimized._body, torch.jit.ScriptModule)  # the frozen graph ran
    plain = cached_teacher(spec, "cpu", optimize=False)
    assert plain is not optimized and not isinstance(plain._body, torch.jit.ScriptModule)
    assert_stores_close(fast, eager)


def assert_stores_close(a_path, b_path):
    """Same clips done with the same frame counts; embeddings equal up to float16 rounding."""
    a, b = open_store(a_path), open_store(b_path)
    np.testing.assert_array_equal(a.status, b.status)
    np.testing.assert_array_equal(a.array("num_frames")[:], b.array("num_frames")[:])
    np.testing.assert_allclose(
        a.array("embeddings")[:].astype(np.float32),
        b.array("embeddings")[:].astype(np.float32),
        atol=2e-3,
        rtol=2e-3,
    )


@pytest.fixture
def two_torch_threads():
    old = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(old)


def test_teacher_replicas_in_cpu_workers_write_the_same_store(dataset, tmp_path, two_torch_threads):
    from east.extract.runner import teacher_in_workers

    # 2 workers for 2 torch threads: the workers decode and embed; 1 worker only decodes
    assert teacher_in_workers("cpu", 2) and not teacher_in_workers("cpu", 1)
    assert not teacher_in_workers("cpu", 0) and not teacher_in_workers("cuda", 8)
    spec = TeacherSpec("fcn-msd", "random")
    stores = {w: tmp_path / f"w{w}.zarr" for w in (0, 1, 2)}
    for w, path in stores.items():
        extract(dataset, spec, path, _cfg(num_workers=w))
    # one thread per replica vs two in the main process
    assert_stores_close(stores[1], stores[0])
    assert_stores_close(stores[2], stores[0])


def test_a_worker_without_the_teacher_builds_it(dataset):
    """Under a spawn/forkserver start method a worker does not inherit the main process's
    teacher: it builds its own from the spec, once."""
    from east.extract.executors import _BatchDataset
    from east.extract.job import ClipResult, JobSpec, TeacherPool

    pool = TeacherPool()  # an empty pool: what a spawned worker has
    paths = [str(dataset.audio_path(i)) for i in range(len(dataset))]
    job = JobSpec("embeddings", 8000, 10**6, None, SPEC, "cpu", True, max_frames=100)
    items = _BatchDataset(job, [[0, 1], [5]], paths, finish=True, pool=pool)
    first = items[0]["results"]
    assert set(first) == {0, 1}
    assert all(isinstance(r, ClipResult) and r.embedding.dtype == np.float16
               for r in first.values())  # fmt: skip
    assert list(pool._teachers) == [(SPEC, "cpu", True)]
    assert "not an audio file" in items[1]["results"][5]
