"""The streaming training data: chunk-aware shuffling, DDP shares, crop policy, rescaling."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from east.cache_schema import open_store
from east.config import CropConfig
from east.train.data import ClipStream, TeacherSource, collate, subsample_rows
from train_helpers import TINY_TEACHER_SR, make_cache, make_dataset


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict:
    base = tmp_path_factory.mktemp("data")
    manifest = make_dataset(base / "esc", num_classes=3, clips_per_class=5, seconds=2.0)
    cache = make_cache(manifest, base / "tiny.zarr", dim=8, chunk_clips=4)
    vggish = make_cache(manifest, base / "vggish.zarr", dim=8, chunk_clips=4, teacher="vggish")
    return {"manifest": manifest, "cache": cache, "vggish": vggish}


def _stream(world, rows, **kw) -> ClipStream:
    return ClipStream(
        world["manifest"], rows, [TeacherSource(world["cache"])], TINY_TEACHER_SR, **kw
    )


def test_each_row_once_per_epoch_and_reads_whole_chunks(world, monkeypatch) -> None:
    rows = np.arange(len(world["manifest"]))
    stream = _stream(world, rows, training=True, shuffle=True, seed=1, buffer_size=6)
    calls: list[np.ndarray] = []
    original = ClipStream._read_block

    def spy(self, block):
        calls.append(np.sort(block))
        return original(self, block)

    monkeypatch.setattr(ClipStream, "_read_block", spy)
    first = [it["row"] for it in stream]
    assert sorted(first) == rows.tolist()
    # one read per cache chunk, each one whole chunk
    assert len(calls) == -(-len(rows) // 4)
    assert all(len(np.unique(c // 4)) == 1 for c in calls)
    assert sorted(len(c) for c in calls)[1:] == [4] * (len(calls) - 1)
    again = [it["row"] for it in stream]
    assert again == first  # same epoch, same order
    stream.set_epoch(1)
    other = [it["row"] for it in stream]
    assert sorted(other) == rows.tolist() and other != first


def test_ddp_ranks_get_disjoint_equal_shares(world) -> None:
    rows = world["manifest"].indices("train")
    shares = []
    for rank in range(3):
        s = _stream(world, rows, training=True, shuffle=True, seed=4, rank=rank, world_size=3)
        shares.append([it["row"] for it in s])
        assert len(shares[-1]) == len(s)
    assert len({len(x) for x in shares}) == 1
    flat = [r for x in shares for r in x]
    assert len(flat) == len(set(flat)) and set(flat) <= set(rows.tolist())


def test_embeddings_match_the_store_and_vggish_is_rescaled(world) -> None:
    rows = np.arange(6)
    store = open_store(world["vggish"])
    raw = store.read(rows)
    plain = ClipStream(
        world["manifest"],
        rows,
        [TeacherSource(world["vggish"], shift=0.0, scale=1.0)],
        TINY_TEACHER_SR,
    )
    scaled = ClipStream(world["manifest"], rows, [TeacherSource(world["vggish"])], TINY_TEACHER_SR)
    for a, b in zip(plain, scaled, strict=True):
        n = int(raw.num_frames[a["row"]])
        np.testing.assert_array_equal(a["teachers"][0][0], raw.embeddings[a["row"], :n])
        np.testing.assert_allclose(
            b["teachers"][0][0], (a["teachers"][0][0] - 128) / 256, rtol=1e-6
        )


def test_fixed_crop_cuts_audio_and_teacher_frames_together(world) -> None:
    rows = np.arange(4)
    crop = CropConfig(mode="fixed", seconds=1.0, position="random")
    full = {it["row"]: it for it in _stream(world, rows)}
    for it in _stream(world, rows, training=True, shuffle=True, crop=crop, seed=2, buffer_size=2):
        assert len(it["wave"]) == TINY_TEACHER_SR
        emb, n, times = it["teachers"][0]
        assert n == len(emb) == len(times) >= 1
        centres = times.mean(axis=1)
        assert (centres >= 0).all() and (centres < 1.0).all()
        # the kept frames are exactly the full clip's frames whose centre lies in the window
        ref_emb, _, ref_times = full[it["row"]]["teachers"][0]
        j = int(np.flatnonzero((ref_emb == emb[0]).all(axis=1))[0])
        offset = ref_times[j, 0] - times[0, 0]
        ref_centres = ref_times.mean(axis=1) - offset
        inside = np.flatnonzero((ref_centres >= -1e-9) & (ref_centres < 1.0 - 1e-9))
        np.testing.assert_array_equal(inside, np.arange(j, j + n))
        np.testing.assert_array_equal(emb, ref_emb[j : j + n])
        np.testing.assert_allclose(times, ref_times[j : j + n] - offset, atol=1e-6)


def test_collate_pads_and_keeps_valid_counts(world) -> None:
    items = list(_stream(world, np.arange(3)))
    items[1] = {
        **items[1],
        "wave": items[1]["wave"][:1000],
        "teachers": [(items[1]["teachers"][0][0][:2], 2, items[1]["teachers"][0][2][:2])],
    }
    batch = collate(items)
    assert batch["wave"].shape == (3, len(items[0]["wave"]))
    assert float(batch["wave"][1, 1000:].abs().sum()) == 0.0
    t = batch["teachers"][0]
    assert t["num_frames"].tolist()[1] == 2 and float(t["embeddings"][1, 2:].abs().sum()) == 0
    assert batch["target"].dtype.is_floating_point is False and batch["mask"] is None


def test_subsample_keeps_class_balance(world) -> None:
    manifest = world["manifest"]
    rows = manifest.indices("train")
    half = subsample_rows(rows, 0.5, seed=0, labels=manifest.targets)
    assert set(half) <= set(rows)
    for c in np.unique(manifest.targets[rows]):
        n = int((manifest.targets[rows] == c).sum())
        assert int((manifest.targets[half] == c).sum()) == max(1, round(0.5 * n))
    assert subsample_rows(rows, 1.0, 0).tolist() == rows.tolist()


def test_stream_path_type(world) -> None:
    assert isinstance(world["cache"], Path)


def test_audio_store_gives_the_decoded_audio(world, tmp_path) -> None:
    from east.audio import load_audio
    from east.cache_schema import create_audio_store

    manifest = world["manifest"]
    waves = [load_audio(manifest.audio_path(i), sr=TINY_TEACHER_SR) for i in range(len(manifest))]
    longest = max(len(w) for w in waves)
    store = create_audio_store(
        tmp_path / "audio.zarr",
        provenance={
            "sample_rate": TINY_TEACHER_SR,
            "dataset": manifest.name,
            "manifest_hash": manifest.hash,
        },
        clip_ids=manifest.clip_ids,
        max_samples=longest,
        chunk_clips=4,
    )
    for chunk in range(store.num_chunks):
        a, b = store.chunk_bounds(chunk)
        block = np.zeros((b - a, longest), np.int16)
        for j, w in enumerate(waves[a:b]):
            block[j, : len(w)] = np.round(np.clip(w, -1, 32767 / 32768) * 32768).astype(np.int16)
        store.write_chunk(
            chunk,
            {"audio": block, "num_samples": np.array([len(w) for w in waves[a:b]])},
            np.ones(b - a, np.uint8),
            [""] * (b - a),
        )
    rows = np.arange(len(manifest))
    stream = _stream(world, rows, audio_store=tmp_path / "audio.zarr")
    for item in stream:
        ref = waves[item["row"]]
        assert item["wave"].shape == ref.shape
        np.testing.assert_allclose(item["wave"], ref, atol=1.0 / 32768 + 1e-7)
    wrong = _stream(world, rows, audio_store=tmp_path / "audio.zarr")
    wrong.sample_rate = 8000
    with pytest.raises(Exception, match="16000 Hz"):
        next(iter(wrong))
