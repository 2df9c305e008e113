"""Scale-out on dask.distributed: a 2-worker LocalCluster writes the same store as a local run."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

import east_tiny_teacher as tiny
from east.cache_schema import open_store
from east.errors import EastError
from east.extract.runner import ExtractConfig, TeacherSpec, extract
from east_tiny_teacher import assert_stores_equal

pytest.importorskip("distributed")
SPEC = TeacherSpec("tiny-test", plugin="east_tiny_teacher")


def _cfg(**kw):
    return ExtractConfig(**{"batch_size": 3, "chunk_clips": 4, "num_workers": 0,
                            "progress": False, "device": "cpu", **kw})  # fmt: skip


def test_local_cluster_equals_local_run(tmp_path, monkeypatch):
    import dask.array as da

    # worker processes must import the test teacher module
    here = str(Path(tiny.__file__).parent)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([here, os.environ.get("PYTHONPATH", "")]))
    manifest = tiny.make_dataset(tmp_path / "d", 14, bad=(9,))
    local, dist = tmp_path / "local.zarr", tmp_path / "dask.zarr"
    extract(manifest, SPEC, local, _cfg())
    # part locally, the rest on the cluster: done clips are skipped, a split chunk is finished
    first = extract(manifest, SPEC, dist, _cfg(limit=6))
    assert first.processed == 6
    summary = extract(manifest, SPEC, dist, _cfg(), scheduler="local:2")
    assert summary.processed == 8 and summary.failed_total == 1
    assert [c for c, _ in summary.failures] == ["c009"]
    assert_stores_equal(local, dist)
    arr = da.from_zarr(str(dist), component="embeddings")
    store = open_store(dist)
    assert arr.shape == (14, store.max_frames, store.dim)
    np.testing.assert_array_equal(
        arr[:5].compute().astype(np.float32), store.read(range(5)).embeddings
    )


def test_bad_scheduler_is_one_line_error(tmp_path):
    manifest = tiny.make_dataset(tmp_path / "d", 2)
    with pytest.raises(EastError, match="local:N"):
        extract(manifest, SPEC, tmp_path / "s.zarr", _cfg(), scheduler="nonsense")
