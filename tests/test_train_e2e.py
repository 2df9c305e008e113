"""A tiny end-to-end run on a fixture ESC-50 layout with a tiny teacher cache:
teacher_lr → east_kd (KD from the probe + dCor, mixup) → eval → predict → export."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from east.config import load_config_dict
from east.errors import ConfigError
from train_helpers import make_cache, make_dataset, tiny_config, write_config


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    # the CI machine is shared: one intra-op thread is faster than two fighting ones
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from east.train.trainer import train

    base = tmp_path_factory.mktemp("e2e")
    manifest = make_dataset(base / "esc", num_classes=4, clips_per_class=6, seconds=2.0)
    cache = make_cache(manifest, base / "tiny.zarr", dim=8)
    probe_cfg = load_config_dict(
        tiny_config(base / "esc", cache, base / "runs", system="teacher_lr")
    )
    probe_run = train(probe_cfg, progress=False)
    kd_cfg = load_config_dict(
        tiny_config(
            base / "esc",
            cache,
            base / "runs",
            system="east_kd",
            teacher_lr_run=str(probe_run),
            augment={"mixup_alpha": 0.3},
        )
    )
    kd_run = train(kd_cfg, progress=False)
    return {"base": base, "root": base / "esc", "cache": cache, "probe": probe_run, "kd": kd_run}


def run_cli(args: list[str], monkeypatch, capsys) -> tuple[int, str, str]:
    from east.cli.main import main

    monkeypatch.setattr(sys, "argv", ["east", *args])
    code = 0
    try:
        main()
    except SystemExit as exc:
        code = int(exc.code or 0)
    out = capsys.readouterr()
    return code, out.out, out.err


def test_run_directory_layout(runs) -> None:
    run = runs["kd"]
    for name in (
        "config.yaml",
        "run_info.json",
        "last.pt",
        "best.pt",
        "metrics.jsonl",
        "test_results.json",
    ):
        assert (run / name).is_file(), name
    assert any((run / "tb").iterdir())  # TensorBoard events
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in lines] == list(range(len(lines)))
    assert lines[-1]["step"] == 6  # max_steps
    assert all(np.isfinite(r["train_reg"]) and r["train_reg"] > 0 for r in lines)
    info = json.loads((run / "run_info.json").read_text())
    assert info["num_classes"] == 4 and info["teacher_dims"] == [8]
    probe = json.loads((runs["probe"] / "test_results.json").read_text())
    assert 0.0 <= probe["test_accuracy"] <= 1.0


def test_eval_reproduces_test_results(runs, monkeypatch, capsys) -> None:
    code, out, err = run_cli(["eval", str(runs["kd"]), "--device", "cpu"], monkeypatch, capsys)
    assert code == 0, err
    result = json.loads(out)
    saved = json.loads((runs["kd"] / "test_results.json").read_text())
    assert result["clips"] == saved["clips"]
    assert result["accuracy"] == pytest.approx(saved["test_accuracy"], abs=1e-9)
    assert result["mAP"] == pytest.approx(saved["test_mAP"], abs=1e-6)


def test_eval_through_a_label_map(runs, tmp_path, monkeypatch, capsys) -> None:
    label_map = tmp_path / "map.yaml"
    label_map.write_text("dog: dog\nrooster: rooster\n")
    code, out, err = run_cli(
        [
            "eval",
            str(runs["kd"]),
            "--dataset",
            "esc50",
            "--root",
            str(runs["root"]),
            "--option",
            "split=stratified",
            "--split",
            "all",
            "--label-map",
            str(label_map),
        ],
        monkeypatch,
        capsys,
    )
    assert code == 0, err
    result = json.loads(out)
    assert result["classes"] == ["dog", "rooster"] and result["clips"] == 24
    assert 0.0 <= result["mAP"] <= 1.0
    bad = tmp_path / "bad.yaml"
    bad.write_text("dog: unicorn\n")
    code, _, err = run_cli(["eval", str(runs["kd"]), "--label-map", str(bad)], monkeypatch, capsys)
    assert code == 2 and "unicorn" in err and "Traceback" not in err


def test_predict_json_matches_the_student(runs, monkeypatch, capsys) -> None:
    from east.audio import load_audio
    from east.train.evaluation import load_run

    files = sorted((runs["root"] / "audio").glob("*.wav"))[:2]
    code, out, err = run_cli(
        ["predict", str(runs["kd"]), *map(str, files), "--json", "--device", "cpu", "--top-k", "4"],
        monkeypatch,
        capsys,
    )
    assert code == 0, err
    result = json.loads(out)
    _, info, student = load_run(runs["kd"])
    for item, path in zip(result, files, strict=True):
        probs = [x["probability"] for x in item["labels"]]
        assert sum(probs) == pytest.approx(1.0, abs=1e-5)  # softmax over all 4 classes
        with torch.no_grad():
            logits = student(
                torch.from_numpy(load_audio(path, sr=student.sample_rate))[None]
            ).logits
        assert item["labels"][0]["label"] == info["class_names"][int(logits.argmax())]


@pytest.mark.parametrize("fmt", ["torchscript", "onnx"])
def test_export_equals_the_run(runs, fmt, monkeypatch, capsys) -> None:
    pytest.importorskip("onnxruntime") if fmt == "onnx" else None
    from east.train.evaluation import load_run

    code, _out, err = run_cli(
        ["export", str(runs["kd"]), "--format", fmt, "--seconds", "2"], monkeypatch, capsys
    )
    assert code == 0, err
    _, _, student = load_run(runs["kd"])
    wave = torch.randn(2, 3 * student.sample_rate) * 0.1  # another length than the export's
    with torch.no_grad():
        expected = student(wave).logits.numpy()
    if fmt == "torchscript":
        got = torch.jit.load(str(runs["kd"] / "model.ts"))(wave).detach().numpy()
    else:
        import onnxruntime as ort

        session = ort.InferenceSession(str(runs["kd"] / "model.onnx"))
        got = session.run(None, {"waveform": wave.numpy()})[0]
    np.testing.assert_allclose(got, expected, atol=1e-4)


def test_existing_run_is_not_overwritten(runs) -> None:
    from east.train.trainer import train

    cfg = load_config_dict(
        json.loads(
            json.dumps(
                {
                    **tiny_config(
                        runs["root"], runs["cache"], runs["base"] / "runs", system="teacher_lr"
                    )
                }
            )
        )
    )
    with pytest.raises(ConfigError, match="already exists"):
        train(cfg, progress=False)


def test_kd_with_probe_of_other_dim_is_refused(runs, tmp_path, monkeypatch, capsys) -> None:
    from east.datasets import load_manifest

    manifest = load_manifest("esc50", runs["root"], split="stratified")
    wide = make_cache(manifest, tmp_path / "wide.zarr", dim=16)
    cfg = tiny_config(
        runs["root"], wide, tmp_path / "runs", system="kd", teacher_lr_run=str(runs["probe"])
    )
    path = write_config(tmp_path / "kd.yaml", cfg)
    code, _, err = run_cli(["train", "--config", str(path), "--check"], monkeypatch, capsys)
    assert code == 2 and "teacher_lr_run" in err and "16" in err and "Traceback" not in err
