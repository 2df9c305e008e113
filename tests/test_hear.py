"""HEAR 2021 modules as teachers (``hear:MODULE``) and stores exported in hear-eval-kit's layout.

The HEAR modules here are tiny real modules written to a temporary folder on ``sys.path``,
following the HEAR 2021 API (published modules cannot be downloaded in the test environment).
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from east.errors import ConfigError, EastError, WeightsError
from east.extract.teachers import create_teacher, teacher_info
from hostile import TESTS, assert_one_line_error, east, east_env

SR, WIN, HOP = 8000, 400, 200  # the tiny module: 50 ms windows every 25 ms, centred

HEAR_MODULE = textwrap.dedent(
    """
    import torch
    from torch import nn

    __version__ = "0.3.1"
    SR, WIN, HOP, DIM = 8000, 400, 200, 5
    MAX_SAMPLES = {max_samples}
    MAX_BATCH = {max_batch}
    BROKEN = {broken}


    class Model(nn.Module):
        sample_rate = SR
        timestamp_embedding_size = DIM
        scene_embedding_size = DIM

        def __init__(self, scale=1.0):
            super().__init__()
            g = torch.Generator().manual_seed(0)
            self.proj = nn.Parameter(torch.randn(WIN, DIM, generator=g) * scale)
            if MAX_SAMPLES:
                self.max_samples = MAX_SAMPLES
            if MAX_BATCH:
                self.max_batch_size = MAX_BATCH


    def load_model(model_file=""):
        scale = float(open(model_file).read()) if model_file else 1.0
        return Model(scale)


    def get_timestamp_embeddings(audio, model):
        if BROKEN:
            raise RuntimeError("kaboom in the module\\nsecond line of the trace")
        if MAX_SAMPLES and audio.shape[1] > MAX_SAMPLES:
            raise ValueError(f"at most {{MAX_SAMPLES}} samples, got {{audio.shape[1]}}")
        if MAX_BATCH and audio.shape[0] > MAX_BATCH:
            raise ValueError(f"at most {{MAX_BATCH}} clips, got {{audio.shape[0]}}")
        x = torch.nn.functional.pad(audio, (WIN // 2, WIN // 2))
        emb = torch.tanh(x.unfold(1, WIN, HOP) @ model.proj)  # T = 1 + n // HOP
        ts = torch.arange(emb.shape[1], dtype=torch.float64) * HOP / SR * 1000.0
        return emb, ts.expand(audio.shape[0], -1)


    def get_scene_embeddings(audio, model):
        emb, _ = get_timestamp_embeddings(audio, model)
        return emb.mean(1)
    """
)


def _write_module(
    folder: Path, name: str, *, max_samples: int = 0, max_batch: int = 0, broken: bool = False
) -> str:
    text = HEAR_MODULE.format(max_samples=max_samples, max_batch=max_batch, broken=broken)
    (folder / f"{name}.py").write_text(text)
    return name


@pytest.fixture
def hear_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "hearmods"
    folder.mkdir()
    _write_module(folder, "tiny_hear_mod")
    _write_module(folder, "tiny_hear_limited", max_samples=1600, max_batch=1)
    _write_module(folder, "tiny_hear_broken", broken=True)
    monkeypatch.syspath_prepend(str(folder))
    return folder


def _module_call(name: str, audio: torch.Tensor, scene: bool = False, model_file: str = ""):
    import importlib

    module = importlib.import_module(name)
    model = module.load_model(model_file)
    with torch.no_grad():
        if scene:
            return module.get_scene_embeddings(audio, model)
        return module.get_timestamp_embeddings(audio, model)


def test_timestamp_embeddings_frames_and_values(hear_dir: Path) -> None:
    teacher = create_teacher("hear:tiny_hear_mod")
    info = teacher.info
    assert (info.name, info.sample_rate, info.embedding_dim) == ("tiny_hear_mod", SR, 5)
    assert info.hop_s == pytest.approx(0.025) and info.window_s == pytest.approx(0.025)
    assert info.family == "hear:tiny_hear_mod==0.3.1"
    assert teacher_info("hear:tiny_hear_mod") == info

    g = torch.Generator().manual_seed(1)
    x = torch.rand(3, SR, generator=g) * 2 - 1
    lengths = [SR, SR // 2, SR]
    out = teacher.embed(x, torch.tensor(lengths))
    assert out.num_frames.tolist() == [41, 21, 41]
    centres = torch.arange(41, dtype=torch.float64) * 0.025
    torch.testing.assert_close(
        out.frame_times, torch.stack([centres - 0.0125, centres + 0.0125], 1)
    )
    for i, n in enumerate(lengths):  # each clip equals the module's own call on it alone
        emb, ts = _module_call("tiny_hear_mod", x[i : i + 1, :n])
        torch.testing.assert_close(out.embeddings[i, : emb.shape[1]], emb[0])
        torch.testing.assert_close(out.frame_times[: ts.shape[1]].mean(1) * 1000, ts[0])


def test_scene_mode_and_model_file(hear_dir: Path, tmp_path: Path) -> None:
    weights = tmp_path / "scale.txt"
    weights.write_text("0.5")
    spec = f"hear:tiny_hear_mod?scene=1&model_file={weights}"
    teacher = create_teacher(spec)
    assert teacher.info.clip_level and teacher.info.name == "tiny_hear_mod-scene"
    assert teacher.weights_sha256 == hashlib.sha256(b"0.5").hexdigest()
    x = torch.rand(2, SR) - 0.5
    out = teacher.embed(x, torch.tensor([SR, 3000]))
    assert out.embeddings.shape == (2, 1, 5) and out.num_frames.tolist() == [1, 1]
    for i, n in enumerate([SR, 3000]):
        expected = _module_call("tiny_hear_mod", x[i : i + 1, :n], True, str(weights))
        torch.testing.assert_close(out.embeddings[i, 0], expected[0])
    # --weights names the model file too; the digest without one is the module source's
    same = create_teacher("hear:tiny_hear_mod?scene=1", weights=str(weights))
    assert same.weights_sha256 == teacher.weights_sha256
    src = (hear_dir / "tiny_hear_mod.py").read_bytes()
    assert create_teacher("hear:tiny_hear_mod").weights_sha256 == (
        "source:" + hashlib.sha256(src).hexdigest()
    )


def test_long_clips_are_cut_to_the_module_limit(hear_dir: Path) -> None:
    limited = create_teacher("hear:tiny_hear_limited")  # accepts 1600 samples at most
    free = create_teacher("hear:tiny_hear_mod")
    x = torch.rand(1, SR) - 0.5
    out = limited.embed(x, torch.tensor([SR]))  # would raise inside the module if not cut
    ref = free.embed(x, torch.tensor([SR]))
    assert out.num_frames.tolist() == ref.num_frames.tolist() == [41]
    torch.testing.assert_close(out.frame_times, ref.frame_times)
    first, _ = _module_call("tiny_hear_limited", x[:, :1600])
    torch.testing.assert_close(out.embeddings[0, :9], first[0])
    # three clips of one length: one module call each (it accepts one clip at a time)
    short = torch.rand(3, 1200) - 0.5
    three = limited.embed(short, torch.tensor([1200] * 3))
    torch.testing.assert_close(
        three.embeddings, free.embed(short, torch.tensor([1200] * 3)).embeddings
    )
    scene = create_teacher("hear:tiny_hear_limited?scene=1")
    with pytest.raises(EastError, match="at most 1600 samples"):
        scene.embed(x, torch.tensor([SR]))
    # the spec's max_seconds caps an unlimited module the same way
    capped = create_teacher("hear:tiny_hear_mod?max_seconds=0.2")
    torch.testing.assert_close(capped.embed(x, torch.tensor([SR])).embeddings, out.embeddings)


def test_errors_are_one_line_and_name_the_module(hear_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(EastError) as err:
        create_teacher("hear:tiny_hear_broken")  # the hop probe calls the module
    assert "tiny_hear_broken" in str(err.value) and "kaboom" in str(err.value)
    assert "\n" not in str(err.value)
    with pytest.raises(ConfigError, match="cannot import HEAR module no_such_hear_mod"):
        create_teacher("hear:no_such_hear_mod")
    with pytest.raises(ConfigError, match="unknown option colour"):
        create_teacher("hear:tiny_hear_mod?colour=red")
    with pytest.raises(WeightsError, match="does not exist"):
        create_teacher(f"hear:tiny_hear_mod?model_file={tmp_path / 'nope.pt'}")
    junk = tmp_path / "junk.txt"
    junk.write_text("not a number")
    with pytest.raises(WeightsError, match="tiny_hear_mod: load_model failed") as err:
        create_teacher(f"hear:tiny_hear_mod?model_file={junk}")
    assert "\n" not in str(err.value)
    (hear_dir / "not_hear_mod.py").write_text("def load_model(model_file=''):\n    return 1\n")
    with pytest.raises(ConfigError, match="no get_timestamp_embeddings"):
        create_teacher("hear:not_hear_mod")


def _store(hear_dir: Path, tmp_path: Path, spec: str = "hear:tiny_hear_mod") -> tuple:
    from east.extract.runner import ExtractConfig, extract
    from east_tiny_teacher import make_dataset

    manifest = make_dataset(tmp_path / "data", n=5)
    path = tmp_path / "store.zarr"
    cfg = ExtractConfig(batch_size=2, chunk_clips=2, num_workers=0, progress=False, device="cpu")
    cfg.dtype = "float32"
    extract(manifest, spec, path, cfg)
    return manifest, path


def test_extract_records_the_module_provenance(hear_dir: Path, tmp_path: Path) -> None:
    from east.cache_schema import open_store

    weights = tmp_path / "scale.txt"
    weights.write_text("2.0")
    spec = f"hear:tiny_hear_mod?model_file={weights}"
    manifest, path = _store(hear_dir, tmp_path, spec)
    store = open_store(path)
    a = store.attrs
    assert a["teacher"] == spec and a["teacher_family"] == "hear:tiny_hear_mod==0.3.1"
    assert a["weights_sha256"] == hashlib.sha256(b"2.0").hexdigest()
    assert (a["sample_rate"], store.dim, a["hop_s"]) == (SR, 5, pytest.approx(0.025))
    assert store.done.all()
    from east.audio import load_audio

    wave = torch.from_numpy(load_audio(manifest.audio_path(3), sr=SR)).float()[None]
    emb, ts = _module_call("tiny_hear_mod", wave, model_file=str(weights))
    got = store.read([3])
    assert int(got.num_frames[0]) == emb.shape[1]
    np.testing.assert_allclose(got.embeddings[0, : emb.shape[1]], emb[0].numpy(), atol=1e-5)
    centres = got.frame_times[0, : emb.shape[1]].mean(1) * 1000
    np.testing.assert_allclose(centres, ts[0].numpy(), atol=1e-9)


# --------------------------------------------------------------------------- the real CLI


def _cli_env(hear_dir: Path) -> dict[str, str]:
    return east_env(PYTHONPATH=os.pathsep.join([str(hear_dir), str(TESTS)]))


def test_cli_module_errors_are_one_line(hear_dir: Path, tmp_path: Path) -> None:
    from train_helpers import make_dataset

    root = tmp_path / "esc"
    make_dataset(root, num_classes=2, clips_per_class=2, seconds=0.5)
    env = _cli_env(hear_dir)
    common = ("--dataset", "esc50", "--root", root, "--store", tmp_path / "s.zarr", "-j", "0")
    broken = east("extract", "--teacher", "hear:tiny_hear_broken", *common, "-q", env=env)
    assert_one_line_error(broken, "tiny_hear_broken", "kaboom")
    unknown = east("extract", "--teacher", "hear:no_such_hear_mod", *common, "-q", env=env)
    assert_one_line_error(unknown, "no_such_hear_mod", "cannot import")
    assert not (tmp_path / "s.zarr").exists()


# --------------------------------------------------------------------------- hear-eval-kit layout


@pytest.fixture
def tiny_store(tmp_path: Path) -> tuple:
    from train_helpers import make_cache, make_dataset

    root = tmp_path / "esc"
    manifest = make_dataset(root, num_classes=2, clips_per_class=5, seconds=1.0)
    return manifest, root, make_cache(manifest, tmp_path / "bands.zarr", dim=4, chunk_clips=4)


def _heareval_read(out: Path, split: str) -> tuple[np.ndarray, list]:
    """Read a split back the way hear-eval-kit's predictions do (SplitMemmapDataset)."""
    dims = tuple(json.loads((out / f"{split}.embedding-dimensions.json").read_text()))
    emb = np.memmap(out / f"{split}.embeddings.npy", dtype=np.float32, mode="r", shape=dims)
    labels = pickle.loads((out / f"{split}.target-labels.pkl").read_bytes())
    assert len(labels) == dims[0]
    return np.array(emb), labels


def test_export_event_layout_with_labels(tiny_store: tuple, tmp_path: Path) -> None:
    from east.cache_schema import open_store
    from east.hear_layout import MARK, export_hear

    manifest, _, path = tiny_store
    out = tmp_path / "hear" / "esc50"
    summary = export_hear(path, out, manifest)
    assert summary.clips == len(manifest) and summary.skipped == 0
    store = open_store(path)
    meta = json.loads((out / "task_metadata.json").read_text())
    assert (meta["embedding_type"], meta["split_mode"]) == ("event", "trainvaltest")
    assert meta["splits"] == ["train", "valid", "test"] and meta["prediction_type"] == "multilabel"
    vocab = (out / "labelvocabulary.csv").read_text().splitlines()
    assert vocab[0] == "idx,label" and len(vocab) == 1 + manifest.num_classes
    for split in ("train", "valid", "test"):
        truth = json.loads((out / f"{split}.json").read_text())
        rows = [i for i in range(len(manifest)) if manifest.splits[i] == split]
        assert sorted(truth) == sorted(manifest.clip_ids[i] for i in rows)
        stacked, labels = _heareval_read(out, split)
        blocks = []
        for name in truth:  # per-file arrays, in the split file's order
            row = manifest.clip_ids.index(name)
            emb = np.load(out / split / f"{name}.embedding.npy")
            nf = int(store.num_frames[row])
            assert emb.dtype == np.float32 and emb.shape == (nf, store.dim)
            np.testing.assert_array_equal(emb, store.read([row]).embeddings[0, :nf])
            stamps = json.loads((out / split / f"{name}.timestamps.json").read_text())
            np.testing.assert_allclose(stamps, 250.0 + 250.0 * np.arange(nf))  # centres, ms
            per_frame = json.loads((out / split / f"{name}.target-labels.json").read_text())
            clip_label = manifest.class_names[int(manifest.targets[row])]
            assert per_frame == [[clip_label]] * nf
            assert truth[name] == [{"label": clip_label, "start": 0.0, "end": 2000.0}]
            blocks.append(emb)
        np.testing.assert_array_equal(stacked, np.concatenate(blocks))
        assert len(json.loads((out / f"{split}.filename-timestamps.json").read_text())) == len(
            labels
        )
    assert json.loads((out / MARK).read_text())["teacher"] == "tiny-bands"


def test_export_scene_without_manifest_skips_pending(tiny_store: tuple, tmp_path: Path) -> None:
    from east.cache_schema import open_store
    from east.hear_layout import export_hear

    _, _, path = tiny_store
    open_store(path, mode="r+").reset_chunks([0])  # clips 0-3 pending
    out = tmp_path / "scene"
    summary = export_hear(path, out, embedding_type="scene")
    assert (summary.clips, summary.skipped) == (6, 4)
    store = open_store(path)
    files = sorted(p.name for p in (out / "all").iterdir())
    assert len(files) == 6 and all(f.endswith(".embedding.npy") for f in files)
    row = 7
    emb = np.load(out / "all" / f"{store.clip_ids[row]}.embedding.npy")
    nf = int(store.num_frames[row])
    np.testing.assert_allclose(emb, store.read([row]).embeddings[0, :nf].mean(0), rtol=1e-6)
    assert emb.shape == (store.dim,)
    # an earlier export is replaced; a file east did not write is never deleted
    export_hear(path, out, embedding_type="scene")
    (out / "mine.txt").write_text("keep")
    with pytest.raises(EastError, match="did not write"):
        export_hear(path, out)
    assert (out / "mine.txt").read_text() == "keep"


def test_export_of_a_hear_store_gives_the_modules_timestamps(
    hear_dir: Path, tmp_path: Path
) -> None:
    from east.audio import load_audio
    from east.hear_layout import export_hear

    manifest, path = _store(hear_dir, tmp_path)
    out = tmp_path / "hear-out"
    export_hear(path, out)
    wave = torch.from_numpy(load_audio(manifest.audio_path(2), sr=SR)).float()[None]
    emb, ts = _module_call("tiny_hear_mod", wave)
    stamps = json.loads((out / "all" / f"{manifest.clip_ids[2]}.timestamps.json").read_text())
    np.testing.assert_allclose(stamps, ts[0].numpy(), atol=1e-6)
    got = np.load(out / "all" / f"{manifest.clip_ids[2]}.embedding.npy")
    np.testing.assert_allclose(got, emb[0].numpy(), atol=1e-5)


def test_cli_export_and_its_refusals(tiny_store: tuple, tmp_path: Path) -> None:
    from hostile import assert_unchanged, snapshot

    _, root, path = tiny_store
    out = tmp_path / "cli-out"
    ok = east("cache", "export", path, "--format", "hear", "--out", out,
              "--dataset", "esc50", "--root", root, "-o", "split=stratified", "-o", "seed=0")  # fmt: skip
    assert ok.code == 0, str(ok)
    assert ok.stdout.strip() == str(out.absolute()) and (out / "train.embeddings.npy").is_file()
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    before = snapshot(foreign)
    refused = east("cache", "export", path, "--format", "hear", "--out", foreign)
    assert_one_line_error(refused, "non-empty", str(foreign))
    assert_unchanged(foreign, before)
    bad = east("cache", "export", path, "--format", "parquet", "--out", tmp_path / "x")
    assert_one_line_error(bad, "--format must be hear")
    assert not (tmp_path / "x").exists()
