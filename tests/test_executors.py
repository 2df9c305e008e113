"""One extraction job, several executors: each writes the same store, for both store kinds,
also when a run is split across executors (resume with another one)."""

from __future__ import annotations

import numpy as np
import pytest

import east_tiny_teacher as tiny
from east.cache_schema import open_any
from east.extract.distributed import Dask
from east.extract.executors import InProcess, LocalProcesses
from east.extract.job import TeacherPool
from east.extract.runner import ExtractConfig, TeacherSpec, extract, extract_audio

SPEC = TeacherSpec("tiny-test", plugin="east_tiny_teacher")
# name -> (executor, torch threads of the main process)
EXECUTORS = {
    "in-process": (InProcess, 1),
    "1 decode worker": (lambda: LocalProcesses(1), 2),  # fewer workers than threads: decode only
    "2 embed workers": (lambda: LocalProcesses(2), 1),  # a worker per thread: workers embed
    "dask local:2": (lambda: Dask("local:2"), 1),
}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return tiny.make_dataset(tmp_path_factory.mktemp("tiny"), 11, bad=(4,))


def _cfg(**kw):
    return ExtractConfig(**{"batch_size": 3, "chunk_clips": 4, "num_workers": 0,
                            "progress": False, "device": "cpu", **kw})  # fmt: skip


def _equal(a, b) -> None:
    sa, sb = open_any(a), open_any(b)
    names = (*sa.digest_arrays, "status", "failure", "clip_id", "chunk_digest")
    for name in names:
        np.testing.assert_array_equal(sa.array(name)[:], sb.array(name)[:], err_msg=name)


@pytest.fixture(scope="module")
def reference(dataset, tmp_path_factory):
    root = tmp_path_factory.mktemp("ref")
    emb, audio = root / "e.zarr", root / "a.zarr"
    extract(dataset, SPEC, emb, _cfg(), executor=InProcess())
    extract_audio(dataset, audio, 8000, _cfg(), executor=InProcess())
    return emb, audio


@pytest.mark.usefixtures("single_thread")
@pytest.mark.parametrize("name", list(EXECUTORS))
def test_every_executor_writes_the_same_store(dataset, reference, tmp_path, name):
    import torch

    from east.extract.executors import teacher_in_workers

    make, threads = EXECUTORS[name]
    emb, audio = tmp_path / "e.zarr", tmp_path / "a.zarr"
    torch.set_num_threads(threads)
    try:
        if isinstance(make(), LocalProcesses):  # the mode the name says is the mode that runs
            assert teacher_in_workers("cpu", make().num_workers) == (name == "2 embed workers")
        extract(dataset, SPEC, emb, _cfg(), executor=make())
        extract_audio(dataset, audio, 8000, _cfg(), executor=make())
    finally:
        torch.set_num_threads(1)
    _equal(emb, reference[0])
    _equal(audio, reference[1])


@pytest.mark.usefixtures("single_thread")
def test_a_run_resumed_by_another_executor_equals_one_run(dataset, reference, tmp_path):
    emb = tmp_path / "e.zarr"
    extract(dataset, SPEC, emb, _cfg(limit=3), executor=LocalProcesses(2))
    extract(dataset, SPEC, emb, _cfg(limit=4), executor=InProcess())
    extract(dataset, SPEC, emb, _cfg(), executor=Dask("local:2"))
    _equal(emb, reference[0])


def test_an_executor_uses_its_own_teacher_pool(dataset, tmp_path):
    pool = TeacherPool()
    extract(dataset, SPEC, tmp_path / "e.zarr", _cfg(), executor=InProcess(pool))
    assert list(pool._teachers) == [(SPEC, "cpu", True)]


@pytest.mark.usefixtures("single_thread")
def test_clip_cache_skips_clips_already_embedded(dataset, reference, tmp_path, monkeypatch):
    from east.clip_cache import ClipCache

    cache = tmp_path / "clips"
    first = tmp_path / "first.zarr"
    extract(dataset, SPEC, first, _cfg(clip_cache=str(cache)), executor=InProcess())
    _equal(first, reference[0])  # filling the cache changes nothing
    assert ClipCache(cache).info().entries == 10  # every clip but the unreadable one
    # a second dataset sharing the audio: nothing reaches the teacher
    calls = []
    original = tiny.TinyTeacher.embed

    def counting(self, waves, lengths):  # (the probe of a new store is silence: not counted)
        calls.extend([1] if bool(waves.abs().sum() > 0) else [])
        return original(self, waves, lengths)

    monkeypatch.setattr(tiny.TinyTeacher, "embed", counting)
    second = tmp_path / "second.zarr"
    for executor in (InProcess(), LocalProcesses(2)):
        extract(
            dataset, SPEC, second, _cfg(clip_cache=str(cache), overwrite=True), executor=executor
        )
        emb, ref = open_any(second), open_any(reference[0])
        np.testing.assert_array_equal(emb.status, ref.status)
        np.testing.assert_array_equal(emb.array("embeddings")[:], ref.array("embeddings")[:])
    assert calls == []
