"""The embedding cache contract: layout, round trip, provenance, crash safety, readers."""

from __future__ import annotations

import numpy as np
import pytest

from east.cache_schema import (
    DONE,
    FAILED,
    IDENTITY_KEYS,
    create_audio_store,
    create_store,
    open_audio_store,
    open_store,
    store_exists,
    validate,
)
from east.errors import CacheError

PROV = {
    "teacher": "t",
    "weights_sha256": "abc",
    "sample_rate": 8000,
    "window_s": 0.5,
    "hop_s": 0.25,
    "dataset": "d",
    "manifest_hash": "h1",
}


def _make(path, n=7, t=5, d=3, chunk=3, **kw):
    return create_store(
        path,
        provenance={**PROV, **kw.pop("prov", {})},
        clip_ids=[f"c{i}" for i in range(n)],
        max_frames=t,
        dim=d,
        chunk_clips=chunk,
        **kw,
    )


def _fill(store, seed=0):
    """Write every chunk with random data; returns the full float32 arrays written."""
    rng = np.random.default_rng(seed)
    n, t, d = store.num_clips, store.max_frames, store.dim
    emb = rng.standard_normal((n, t, d)).astype(np.float32)
    nf = rng.integers(1, t + 1, n)
    times = np.zeros((n, t, 2))
    for i in range(n):
        emb[i, nf[i] :] = 0
        k = np.arange(nf[i])
        times[i, : nf[i]] = np.stack([k * 0.25, k * 0.25 + 0.5], 1)
    for chunk in range(store.num_chunks):
        a, b = store.chunk_bounds(chunk)
        store.write_chunk(
            chunk,
            {
                "embeddings": emb[a:b].astype(store.attrs["dtype"]),
                "frame_times": times[a:b],
                "num_frames": nf[a:b],
                "num_samples": nf[a:b] * 100,
            },
            np.full(b - a, DONE, np.uint8),
            [""] * (b - a),
        )
    return emb, nf, times


@pytest.mark.parametrize("dtype", ["float16", "float32"])
def test_round_trip_values_times_attrs(tmp_path, dtype):
    store = _make(tmp_path / "s.zarr", dtype=dtype)
    assert not store.done.any()
    emb, nf, times = _fill(store)
    ro = open_store(tmp_path / "s.zarr")
    assert (ro.num_clips, ro.max_frames, ro.dim, ro.chunk_clips) == (7, 5, 3, 3)
    assert ro.done.all() and ro.clip_ids == [f"c{i}" for i in range(7)]
    rows = [5, 0, 5, 2, 6]  # unsorted, repeated, across chunks
    got = ro.read(rows)
    assert got.embeddings.dtype == np.float32
    expect = emb[rows].astype(dtype).astype(np.float32)
    np.testing.assert_array_equal(got.embeddings, expect)
    np.testing.assert_array_equal(got.num_frames, nf[rows])
    np.testing.assert_array_equal(got.frame_times, times[rows])
    np.testing.assert_array_equal(ro.read(slice(2, 4)).num_frames, nf[2:4])
    for key in (*IDENTITY_KEYS["embeddings"], "schema_version", "code_version", "created"):
        assert key in ro.attrs, key
    assert ro.attrs["dtype"] == dtype and ro.attrs["teacher"] == "t"
    assert validate(ro).ok
    # sharded by store chunks: one object per chunk, not per clip
    shards = list((tmp_path / "s.zarr" / "embeddings" / "c").iterdir())
    assert len(shards) == ro.num_chunks


def test_fsspec_urls(tmp_path):
    for url in ("memory://east-test/s.zarr", f"file://{tmp_path}/u.zarr"):
        store = _make(url)
        emb, _, _ = _fill(store, seed=1)
        again = open_store(url)
        np.testing.assert_array_equal(
            again.read([1, 4]).embeddings, emb[[1, 4]].astype(np.float16).astype(np.float32)
        )
        assert store_exists(url)
    assert (tmp_path / "u.zarr" / "zarr.json").is_file()


def test_other_teacher_weights_or_manifest_refused(tmp_path):
    path = tmp_path / "s.zarr"
    _fill(_make(path))
    assert _make(path).done.all()  # same identity: reopened for resuming, data kept
    for change in ({"teacher": "other"}, {"weights_sha256": "def"}, {"manifest_hash": "h2"}):
        with pytest.raises(CacheError, match="--overwrite") as err:
            _make(path, prov=change)
        assert "\n" not in str(err.value)
    with pytest.raises(CacheError, match="dtype"):
        _make(path, dtype="float32")
    fresh = _make(path, prov={"teacher": "other"}, overwrite=True)
    assert fresh.attrs["teacher"] == "other" and not fresh.done.any()


def test_check_manifest(tmp_path):
    from east.datasets.base import Manifest

    store = _make(tmp_path / "s.zarr", n=2, prov={"manifest_hash": "x"})
    m = Manifest("d", tmp_path, "multiclass", ["a"], ["c0", "c1"], ["a", "b"], ["train"] * 2,
                 np.zeros(2, np.int64))  # fmt: skip
    with pytest.raises(CacheError, match="manifest"):
        store.check_manifest(m)
    ok = _make(tmp_path / "t.zarr", n=2, prov={"manifest_hash": m.hash})
    ok.check_manifest(m)
    assert validate(ok, m).problems == ["2 of 2 clips not extracted yet"]


def test_missing_or_foreign_store(tmp_path):
    with pytest.raises(CacheError, match="no east cache"):
        open_store(tmp_path / "nothing.zarr")
    import zarr

    zarr.open_group(tmp_path / "plain.zarr", mode="w")
    with pytest.raises(CacheError, match="provenance"):
        open_store(tmp_path / "plain.zarr")
    # a zarr group east did not make is never written into (schema 2: it used to be recreated)
    with pytest.raises(CacheError, match="did not make"):
        _make(tmp_path / "plain.zarr")
    assert zarr.open_group(tmp_path / "plain.zarr", mode="r").attrs.asdict() == {}
    # an interrupted east creation (marked, no provenance yet) is simply created again
    zarr.open_group(tmp_path / "cut.zarr", mode="w").attrs["east_creating"] = {"kind": "x"}
    store = _make(tmp_path / "cut.zarr")
    assert store.num_clips == 7


def test_torn_objects_never_read_as_done(tmp_path):
    path = tmp_path / "s.zarr"
    store = _make(path)
    _fill(store)
    # a status object cut short by a crash: that chunk reads as pending, others stay done
    status_obj = path / "status" / "c" / "1"
    status_obj.write_bytes(status_obj.read_bytes()[:3])
    ro = open_store(path)
    np.testing.assert_array_equal(ro.done, [True] * 3 + [False] * 3 + [True])
    # a torn data shard is replaced whole when the chunk is rewritten
    shard = path / "embeddings" / "c" / "1" / "0" / "0"
    shard.write_bytes(shard.read_bytes()[:10])
    emb, _, _ = _fill(open_store(path, mode="r+"), seed=3)
    np.testing.assert_array_equal(
        open_store(path).read([3]).embeddings, emb[[3]].astype(np.float16).astype(np.float32)
    )


def test_failures_table_and_validate(tmp_path):
    store = _make(tmp_path / "s.zarr", n=4, chunk=4)
    blank = {
        "embeddings": np.zeros((4, 5, 3), np.float16),
        "frame_times": np.zeros((4, 5, 2)),
        "num_frames": np.ones(4, np.int32),
        "num_samples": np.ones(4, np.int64),
    }
    blank["embeddings"][2, 0, 1] = np.nan
    store.write_chunk(0, blank, np.array([DONE, FAILED, DONE, DONE]), ["", "bad file", "", ""])
    assert store.failures() == [("c1", "bad file")]
    report = validate(store)
    assert report.failed == 1 and report.nonfinite_rows == [2]
    assert any("NaN" in p for p in report.problems)
    assert not validate(store, check_values=False, allow_failed=False).ok


def test_dask_reads_embeddings(tmp_path):
    import dask.array as da

    store = _make(tmp_path / "s.zarr")
    emb, _, _ = _fill(store)
    arr = da.from_zarr(str(tmp_path / "s.zarr"), component="embeddings")
    assert arr.shape == (7, 5, 3)
    np.testing.assert_array_equal(arr[1:6].compute().astype(np.float32),
                                  emb[1:6].astype(np.float16).astype(np.float32))  # fmt: skip


def test_audio_store_round_trip(tmp_path):
    path = tmp_path / "a.zarr"
    store = create_audio_store(
        path,
        provenance={"dataset": "d", "manifest_hash": "h", "sample_rate": 16000},
        clip_ids=["a", "b", "c"],
        max_samples=6,
        chunk_clips=2,
    )
    waves = [np.array([1, -2, 3], np.int16), np.arange(6, dtype=np.int16), np.array([7], np.int16)]
    for chunk in range(store.num_chunks):
        a, b = store.chunk_bounds(chunk)
        block = np.zeros((b - a, 6), np.int16)
        for i in range(a, b):
            block[i - a, : len(waves[i])] = waves[i]
        store.write_chunk(
            chunk,
            {"audio": block, "num_samples": np.array([len(w) for w in waves[a:b]])},
            np.full(b - a, DONE, np.uint8),
            [""] * (b - a),
        )
    got = open_audio_store(path).read([2, 0, 1])
    assert got.sample_rate == 16000
    for w, e in zip(got.waveforms, [waves[2], waves[0], waves[1]], strict=True):
        np.testing.assert_array_equal(w, e)
    with pytest.raises(CacheError, match="audio store, not embeddings"):
        open_store(path)
