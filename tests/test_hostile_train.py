"""Hostile tests of stage 2 (`east train`, `eval`, `predict`, `export`): every bad input is one
line on stderr with exit code 2, no traceback; nothing the user made is changed; east never
trains on silently wrong data (issue 13, "Integrity at the edges")."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
import yaml

from hostile import (
    assert_one_line_error,
    assert_unchanged,
    east,
    east_env,
    small_disk,
    snapshot,
    unmount,
)
from train_helpers import TINY_TEACHER_SR, make_cache, make_dataset, tiny_config, write_config

FAST = {"max_steps": 4, "max_epochs": 2, "batch_size": 2, "num_workers": 0, "shuffle_buffer": 4}


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A 12-clip ESC-50 layout (1 s clips), its tiny teacher cache (3 store chunks) and one
    finished run, made once for the module."""
    from east.config import load_config_dict
    from east.train.trainer import train

    base = tmp_path_factory.mktemp("hostile_train")
    manifest = make_dataset(base / "esc", num_classes=3, clips_per_class=4, seconds=1.0)
    cache = make_cache(manifest, base / "tiny.zarr", dim=8, chunk_clips=4)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        run = train(load_config_dict(_cfg(base, cache, base / "runs", name="done")), progress=False)
    finally:
        torch.set_num_threads(threads)
    return {"base": base, "root": base / "esc", "cache": cache, "run": run}


def _cfg(base: Path, cache: Path | None, out: Path, **extra) -> dict:
    train = {**FAST, **extra.pop("train", {})}
    return tiny_config(base / "esc", cache, out, system="east_final", train=train, **extra)


def _config(world: dict[str, Path], tmp_path: Path, cache: Path | None = None, **extra) -> Path:
    cfg = _cfg(world["base"], cache or world["cache"], tmp_path / "runs", **extra)
    return write_config(tmp_path / "run.yaml", cfg)


def _metrics_epochs(run: Path) -> list[int]:
    return [json.loads(x)["epoch"] for x in (run / "metrics.jsonl").read_text().splitlines()]


def _copy_cache(world: dict[str, Path], tmp_path: Path) -> Path:
    dst = tmp_path / "tiny.zarr"
    shutil.copytree(world["cache"], dst)
    return dst


def _chunk_file(store: Path, array: str, chunk: int) -> Path:
    files = sorted(p for p in (store / array / "c").rglob("*") if p.is_file())
    wanted = [p for p in files if p.relative_to(store / array / "c").parts[0] == str(chunk)]
    assert wanted, files
    return wanted[0]


def _train_and_check(config: Path, *fragments: str, before: dict | None = None, folder=None):
    """`east train --check` and `east train` both refuse ``config`` in one line."""
    for extra in (["--check"], []):
        result = east("train", "--config", config, "-q", *extra)
        assert_one_line_error(result, *fragments)
        assert "config ok" not in result.stdout
    if before is not None:
        assert_unchanged(folder, before)
    runs = config.parent / "runs"
    assert not any(runs.rglob("last.pt")) if runs.exists() else True


# --------------------------------------------------------------------- 1. one writer per run


def _popen_train(config: Path, *args: str) -> subprocess.Popen:
    env = east_env(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    return subprocess.Popen(
        [sys.executable, "-m", "east", "train", "-q", *args, "--config", str(config)]
        if "--resume" not in args
        else [sys.executable, "-m", "east", "train", "-q", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_two_trainings_of_one_run_name_race(world, tmp_path) -> None:
    config = _config(world, tmp_path, train={"max_steps": 8})  # two epochs
    for attempt in range(3):
        name = f"race{attempt}"
        procs = [_popen_train(config, "--set", f"name={name}") for _ in range(2)]
        outs = [(p.wait(timeout=240), *p.communicate()) for p in procs]
        codes = sorted(code for code, _, _ in outs)
        assert codes == [0, 2], outs
        _, _, err = next(o for o in outs if o[0] == 2)
        lines = [x for x in err.splitlines() if x.strip()]
        assert len(lines) == 1 and "Traceback" not in err, err
        assert "in use" in lines[0] or "already exists" in lines[0], lines[0]
        run = tmp_path / "runs" / name
        assert _metrics_epochs(run) == [0, 1]  # one writer: no interleaved lines


def test_resume_while_the_run_trains_is_refused(world, tmp_path) -> None:
    config = _config(
        world, tmp_path, train={"max_steps": 10**6, "max_epochs": 10**4},
        early_stopping={"patience": 10**4},
    )  # fmt: skip
    proc = _popen_train(config, "--set", "name=busy")
    run = tmp_path / "runs" / "busy"
    deadline = time.monotonic() + 120
    while not (run / "last.pt").exists():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline
        time.sleep(0.05)
    try:
        result = east("train", "--resume", run, "-q")
        assert_one_line_error(result, "in use", "pid", str(proc.pid))
    finally:
        proc.kill()
        proc.wait()


# --------------------------------------------------------------------- 2. wrong data


def test_deleted_embeddings_chunk_is_refused(world, tmp_path) -> None:
    cache = _copy_cache(world, tmp_path)
    _chunk_file(cache, "embeddings", 1).unlink()
    before = snapshot(cache)
    _train_and_check(_config(world, tmp_path, cache), "teachers.0.cache", str(cache))
    assert_unchanged(cache, before)


def test_corrupt_embeddings_chunk_is_refused(world, tmp_path) -> None:
    cache = _copy_cache(world, tmp_path)
    _chunk_file(cache, "embeddings", 2).write_bytes(b"\x00garbage" * 64)
    before = snapshot(cache)
    _train_and_check(_config(world, tmp_path, cache), "teachers.0.cache", str(cache))
    assert_unchanged(cache, before)


def test_nan_embeddings_are_refused(world, tmp_path) -> None:
    import zarr

    cache = _copy_cache(world, tmp_path)
    emb = zarr.open_array(str(cache / "embeddings"), mode="r+")
    block = np.asarray(emb[4:8])
    block[1, 0, 0] = np.nan
    emb[4:8] = block
    before = snapshot(cache)
    _train_and_check(_config(world, tmp_path, cache), "teachers.0.cache", "NaN")
    assert_unchanged(cache, before)


def _audio_cache(root: Path, store: Path, *extra: str) -> Path:
    result = east(
        "cache", "audio", "--dataset", "esc50", "--root", root, "-o", "split=stratified",
        "--store", store, "-j", "0", "-q", *extra,
    )  # fmt: skip
    assert result.code == 0, str(result)
    return store


def test_partial_audio_cache_is_refused(world, tmp_path) -> None:
    store = _audio_cache(world["root"], tmp_path / "audio.zarr", "--limit", "5")
    before = snapshot(store)
    config = _config(world, tmp_path, dataset={"audio_cache": str(store)})
    _train_and_check(config, "dataset.audio_cache", "not", "7 of 12")
    assert_unchanged(store, before)


def test_audio_cache_of_another_manifest_is_refused(world, tmp_path) -> None:
    make_dataset(tmp_path / "other", num_classes=2, clips_per_class=3, seconds=1.0)
    store = _audio_cache(tmp_path / "other", tmp_path / "audio.zarr")
    before = snapshot(store)
    config = _config(world, tmp_path, dataset={"audio_cache": str(store)})
    _train_and_check(config, "dataset.audio_cache", "another clip list")
    assert_unchanged(store, before)


def test_audio_cache_at_another_rate_is_refused(world, tmp_path) -> None:
    store = _audio_cache(world["root"], tmp_path / "audio.zarr", "--sr", "8000")
    config = _config(world, tmp_path, dataset={"audio_cache": str(store)})
    _train_and_check(config, "dataset.audio_cache", "8000", "16000")


def test_a_complete_audio_cache_trains_like_decoding(world, tmp_path) -> None:
    # the control of the refusals above: a sound audio cache is accepted and read
    store = _audio_cache(world["root"], tmp_path / "audio.zarr")
    config = _config(world, tmp_path, dataset={"audio_cache": str(store)}, name="cached")
    result = east("train", "--config", config, "-q")
    assert result.code == 0, str(result)
    done = json.loads((world["run"] / "test_results.json").read_text())
    got = json.loads((tmp_path / "runs" / "cached" / "test_results.json").read_text())
    assert got["clips"] == done["clips"]
    assert got["test_loss"] == pytest.approx(done["test_loss"], rel=1e-3)


def test_clip_unreadable_in_a_loader_worker_is_one_line(world, tmp_path) -> None:
    from east.datasets import load_manifest

    root = tmp_path / "esc"
    shutil.copytree(world["root"], root)
    manifest = load_manifest("esc50", root, split="stratified", seed=0)
    bad = manifest.audio_path(int(manifest.indices("train")[0]))
    bad.write_bytes(b"RIFF but not really audio" * 40)  # broken after the checks
    cfg = _cfg(world["base"], world["cache"], tmp_path / "runs", train={"num_workers": 1})
    cfg["dataset"]["root"] = str(root)
    config = write_config(tmp_path / "run.yaml", cfg)
    before = snapshot(root)
    assert_one_line_error(east("train", "--config", config, "-q"), bad.name)
    assert_unchanged(root, before)


# --------------------------------------------------------------------- 3. non-finite loss


def test_diverging_loss_stops_in_one_line(world, tmp_path) -> None:
    config = _config(world, tmp_path, name="diverge", optimizer={"lr": 1e30})
    result = east("train", "--config", config, "-q")
    assert_one_line_error(result, "epoch 0", "step", "not finite", "optimizer.lr")
    run = tmp_path / "runs" / "diverge"
    assert not (run / "test_results.json").exists()


def test_nan_data_past_the_checks_stops_keeping_the_last_checkpoint(
    world, tmp_path, monkeypatch
) -> None:
    import zarr

    import east.cache_schema as schema
    from east.config import load_config_dict
    from east.datasets import load_manifest
    from east.errors import EastError
    from east.train.trainer import train

    cache = _copy_cache(world, tmp_path)
    cfg = _cfg(
        world["base"],
        cache,
        tmp_path / "runs",
        name="nan",
        train={"max_epochs": 1, "max_steps": 100},
    )
    run = train(load_config_dict(cfg), progress=False)
    last = (run / "last.pt").read_bytes()
    results = (run / "test_results.json").read_text()
    # the cache goes bad after epoch 0, and (say) a check misses it
    manifest = load_manifest("esc50", world["root"], split="stratified", seed=0)
    row = int(manifest.indices("train")[0])
    emb = zarr.open_array(str(cache / "embeddings"), mode="r+")
    block = np.asarray(emb[:])
    block[row] = np.nan
    emb[:] = block

    def blind(store, manifest=None, **kw):
        return schema.ValidationReport(num_clips=12, done=12, failed=0, pending=0)

    monkeypatch.setattr(schema, "validate", blind)
    saved = yaml.safe_load((run / "config.yaml").read_text())
    saved["train"]["max_epochs"] = 3
    (run / "config.yaml").write_text(yaml.safe_dump(saved, sort_keys=False))
    with pytest.raises(EastError, match="not finite") as info:
        train(None, resume=run, progress=False)  # type: ignore[arg-type]
    message = str(info.value)
    assert "epoch 1" in message and manifest.clip_ids[row] in message and "\n" not in message
    assert (run / "last.pt").read_bytes() == last  # the last good checkpoint is kept
    assert _metrics_epochs(run) == [0]
    assert (run / "test_results.json").read_text() == results  # the first run's, untouched


# --------------------------------------------------------------------- 4. --check finds all


CHECK_CASES = {
    "unknown_student": ({"student": {"name": "resnet9000"}}, ["student", "resnet9000"]),
    "bad_student_kwarg": (
        {"student": {"name": "mobile_fcn", "kwargs": {"wings": 2}}},
        ["student.kwargs", "wings"],
    ),
    "device_cuda_absent": ({"device": "cuda:7"}, ["device", "cuda:7"]),
    "device_tpu": ({"device": "tpu"}, ["device", "tpu"]),
    "missing_audio_cache": ({"dataset": {"audio_cache": "nowhere/audio.zarr"}}, ["audio_cache"]),
    "stage_weights_zero": ({"loss": {"stage_weights": [0, 0, 0]}}, ["stage_weights"]),
    "stage_weights_length": ({"loss": {"stage_weights": [1, 1]}}, ["stage_weights", "3"]),
    "teacher_weights_zero": ({"teachers": [{"cache": "@", "weight": 0.0}]}, ["weight"]),
    "lr_infinite": ({"optimizer": {"lr": float("inf")}}, ["optimizer.lr"]),
    "negative_seed": ({"seed": -1}, ["seed"]),
    "name_escapes": ({"name": "../elsewhere"}, ["name"]),
    "batch_larger_than_train_split": ({"train": {"batch_size": 64}}, ["batch_size", "8"]),
}


@pytest.mark.parametrize("case", sorted(CHECK_CASES))
def test_check_finds_what_the_run_would(world, tmp_path, case) -> None:
    extra, fragments = CHECK_CASES[case]
    extra = json.loads(json.dumps(extra).replace('"@"', json.dumps(str(world["cache"]))))
    cfg = _cfg(world["base"], world["cache"], tmp_path / "runs")
    for key, value in extra.items():
        cfg[key] = {**cfg.get(key, {}), **value} if isinstance(value, dict) else value
    config = write_config(tmp_path / "run.yaml", cfg)
    before = snapshot(world["root"])
    _train_and_check(config, *fragments)
    assert_unchanged(world["root"], before)
    assert not (tmp_path / "elsewhere").exists()


# --------------------------------------------------------------------- 5. bad files


@pytest.mark.parametrize(
    "content",
    [b"system: baseline\nname: \xff\xfe\xfa\n", bytes(range(256)) * 4],
    ids=["latin", "binary"],
)
def test_config_that_is_not_utf8_text(tmp_path, content) -> None:
    config = tmp_path / "run.yaml"
    config.write_bytes(content)
    for extra in (["--check"], []):
        assert_one_line_error(east("train", "--config", config, *extra), str(config), "UTF-8")
    assert config.read_bytes() == content


def _broken_run(world, tmp_path, name: str, content: bytes | None, truncate: bool = False) -> Path:
    run = tmp_path / "run"
    shutil.copytree(world["run"], run)
    path = run / name
    if truncate:
        path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])
    elif content is not None:
        path.write_bytes(content)
    return run


BROKEN = {
    "run_info_garbage": ("run_info.json", b"{not json"),
    "run_info_truncated": ("run_info.json", None),
    "run_info_wrong": ("run_info.json", b'{"num_classes": "many"}'),
    "best_truncated": ("best.pt", None),
    "best_garbage": ("best.pt", b"\x80\x04garbage" * 100),
    "best_wrong_content": ("best.pt", "wrong"),
}


def _write_wrong_checkpoint(path: Path) -> None:
    torch.save({"model": {"student.head.weight": torch.zeros(2, 2)}, "epoch": 0}, path)


@pytest.mark.parametrize("case", sorted(BROKEN))
@pytest.mark.parametrize("command", ["eval", "predict", "export"])
def test_broken_run_files(world, tmp_path, case, command) -> None:
    name, content = BROKEN[case]
    run = _broken_run(world, tmp_path, name, None if content == "wrong" else content,
                      truncate=content is None)  # fmt: skip
    if content == "wrong":
        _write_wrong_checkpoint(run / name)
    before = snapshot(run)
    wav = sorted((world["root"] / "audio").glob("*.wav"))[0]
    args = {
        "eval": ["eval", run, "--device", "cpu"],
        "predict": ["predict", run, wav, "--device", "cpu"],
        "export": ["export", run, "--out", tmp_path / "model.ts"],
    }[command]
    assert_one_line_error(east(*args), name)
    assert_unchanged(run, before)
    assert not (tmp_path / "model.ts").exists()


def test_export_into_a_missing_folder(world, tmp_path) -> None:
    before = snapshot(world["run"])
    out = tmp_path / "no" / "such" / "model.ts"
    assert_one_line_error(east("export", world["run"], "--out", out), "--out", str(out.parent))
    assert not (tmp_path / "no").exists()
    assert_unchanged(world["run"], before)


def _write_float_wav(path: Path, value: float) -> Path:
    data = np.full(TINY_TEACHER_SR, value, dtype=np.float32)
    data[::2] *= -1
    sf.write(path, data, TINY_TEACHER_SR, subtype="FLOAT")
    return path


@pytest.mark.parametrize("kind", ["missing", "text", "absurd"])
def test_predict_on_bad_audio(world, tmp_path, kind) -> None:
    path = tmp_path / f"{kind}.wav"
    if kind == "text":
        path.write_text("this is not audio\n" * 50)
    elif kind == "absurd":
        _write_float_wav(path, 1e30)
    before = snapshot(tmp_path)
    result = east("predict", world["run"], path, "--device", "cpu")
    assert_one_line_error(result, str(path))
    assert result.stdout.strip() == ""
    assert_unchanged(tmp_path, before)


def test_resume_from_a_truncated_last_checkpoint(world, tmp_path) -> None:
    run = _broken_run(world, tmp_path, "last.pt", None, truncate=True)
    before = snapshot(run)
    assert_one_line_error(east("train", "--resume", run, "-q"), "last.pt")
    assert_unchanged(run, before)


# --------------------------------------------------------------------- 6. disk full


def test_disk_full_then_resume(world, tmp_path) -> None:
    disk = small_disk(tmp_path / "disk", "12m")
    try:
        filler = disk / "filler"
        filler.write_bytes(b"\0" * (4 << 20))  # 8 MiB left: epoch 0 fits, epoch 1 does not
        config = write_config(
            tmp_path / "run.yaml",
            _cfg(world["base"], world["cache"], disk, name="full",
                 train={"max_epochs": 3, "max_steps": 100}),
        )  # fmt: skip
        result = east("train", "--config", config, "-q")
        run = disk / "full"
        assert_one_line_error(result, "no space left", str(run), "--resume")
        assert not list(run.glob("*.tmp"))
        ckpt = torch.load(run / "last.pt", map_location="cpu", weights_only=False)
        assert ckpt["state"]["epoch"] == 1
        torch.load(run / "best.pt", map_location="cpu", weights_only=True)
        filler.unlink()  # the user frees space
        resumed = east("train", "--resume", run, "-q")
        assert resumed.code == 0, str(resumed)
        assert _metrics_epochs(run) == [0, 1, 2]
        assert (run / "test_results.json").is_file()
    finally:
        unmount(disk)


# --------------------------------------------------------------------- 7. plain output


def test_predict_output_on_a_pipe_is_not_wrapped(world, tmp_path) -> None:
    deep = tmp_path / ("a_rather_long_folder_name_" * 3) / "with_a_clip_[1]_named_at_length.wav"
    deep.parent.mkdir(parents=True)
    shutil.copy(sorted((world["root"] / "audio").glob("*.wav"))[0], deep)
    env = east_env()
    env.pop("COLUMNS", None)
    result = east("predict", world["run"], deep, "--device", "cpu", env=env)
    assert result.code == 0, str(result)
    lines = result.stdout.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"{deep}: "), result.stdout


# --------------------------------------------------------------------- 8. long clips


def test_long_clip_is_evaluated_in_windows(world, tmp_path) -> None:
    from east.datasets import load_manifest
    from east.train.evaluation import evaluate_run

    root = tmp_path / "esc"
    shutil.copytree(world["root"], root)
    manifest = load_manifest("esc50", root, split="stratified", seed=0)
    row = int(manifest.indices("test")[0])
    seconds = 180
    rng = np.random.default_rng(0)
    sf.write(
        manifest.audio_path(row), rng.normal(0, 0.1, seconds * TINY_TEACHER_SR), TINY_TEACHER_SR
    )
    run = tmp_path / "run"
    shutil.copytree(world["run"], run)
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    cfg["crop"]["max_seconds"] = 5.0
    (run / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))

    import east.train.evaluation as loop

    seen: list[tuple[int, int]] = []  # (windows, samples) of every front-end call
    original = loop.load_run

    def spying_load_run(*args, **kw):
        cfg_, info, student = original(*args, **kw)
        student.frontend.register_forward_pre_hook(lambda m, a: seen.append(tuple(a[0].shape)))
        return cfg_, info, student

    loop.load_run = spying_load_run
    try:
        result = evaluate_run(run, root=root, device="cpu")
    finally:
        loop.load_run = original
    assert result["clips"] == len(manifest.indices("test"))
    assert max(n for _, n in seen) <= 5 * TINY_TEACHER_SR  # never more than a window
    # the whole long clip was evaluated (windows of at most 5 s), not cropped away
    assert sum(b * n for b, n in seen) >= seconds * TINY_TEACHER_SR


def test_long_clip_prediction_in_windows_matches_short_input(world, tmp_path) -> None:
    from east.train.evaluation import load_run
    from east.train.predict import predict_files

    run = tmp_path / "run"
    shutil.copytree(world["run"], run)
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    cfg["crop"]["max_seconds"] = 1.0
    (run / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    wav = tmp_path / "long.wav"
    clip, sr = sf.read(sorted((world["root"] / "audio").glob("*.wav"))[0], dtype="float32")
    sf.write(wav, np.tile(clip, 60), sr)  # the same second 60 times
    got = predict_files(run, [wav], top_k=3, device="cpu")[0]["labels"]
    _, info, student = load_run(run)
    with torch.no_grad():
        probs = torch.softmax(student(torch.from_numpy(clip)[None]).logits[0], 0)
    best = int(probs.argmax())
    assert got[0]["label"] == info["class_names"][best]
    assert got[0]["probability"] == pytest.approx(float(probs[best]), abs=1e-4)
    assert os.path.getsize(wav) > 60 * sr
