"""``east export RUN --format hear``: a student as an installable HEAR 2021 module.

The checks of the official ``hear-validator`` that need no TensorFlow (shapes, dtypes, regular
millisecond timestamps; here also batch independence), the installed package imported in a
fresh interpreter outside the checkout (torch only, never east), and the round trip: the
exported student used back as ``--teacher hear:NAME`` gives the student's own frames.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from east.errors import ConfigError
from train_helpers import make_dataset, tiny_config

NAME = "east_tiny_hear"


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    # the CI machine is shared: one intra-op thread is faster than two fighting ones
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> dict:
    from east.config import load_config_dict
    from east.train.export import export_run
    from east.train.trainer import train

    base = tmp_path_factory.mktemp("hear_export")
    make_dataset(base / "esc", num_classes=3, clips_per_class=4, seconds=2.0)
    cfg = tiny_config(base / "esc", None, base / "runs", system="baseline")
    cfg["train"]["max_steps"] = 2
    run = train(load_config_dict(cfg), progress=False)
    out, diff = export_run(run, "hear", base / "pkg", seconds=2.0, name=NAME)
    return {"base": base, "run": run, "out": out, "diff": diff}


@pytest.fixture(scope="module")
def module(exported):
    from east.train.hear_export import _import_from

    return _import_from(exported["out"] / NAME)


@pytest.fixture(scope="module")
def student(exported):
    from east.train.evaluation import load_run

    return load_run(exported["run"])[2]


def test_package_layout(exported) -> None:
    out = exported["out"]
    assert exported["diff"] < 1e-4
    for rel in ("pyproject.toml", f"{NAME}/__init__.py", f"{NAME}/model.ts"):
        assert (out / rel).is_file(), rel
    meta = json.loads((out / NAME / "east_student.json").read_text())
    assert meta["sample_rate"] == 16000 and meta["student"] == "mobile_fcn"
    source = (out / NAME / "__init__.py").read_text()
    assert "import east" not in source and "from east" not in source
    assert meta["model_sha256"] in source  # the source hash (HEAR provenance) names the weights


def test_load_model_with_a_model_file(exported, module) -> None:
    """hear-validator's ``-m FILE``: load_model(FILE) loads that TorchScript file."""
    model = module.load_model(str(exported["out"] / NAME / "model.ts"))
    emb, _ = module.get_timestamp_embeddings(torch.zeros(1, 32000), model)
    assert emb.shape[-1] == model.timestamp_embedding_size
    with pytest.raises(ValueError, match="not a TorchScript model file"):
        module.load_model(str(exported["out"] / "pyproject.toml"))


def test_validator_checks_without_tensorflow(module) -> None:
    """hear-validator's torch checks, verbatim in substance, plus batch independence."""
    model = module.load_model()
    assert isinstance(model, torch.nn.Module)
    assert model.sample_rate in (16000, 22050, 44100, 48000)
    assert isinstance(model.scene_embedding_size, int)
    assert isinstance(model.timestamp_embedding_size, int)
    audio = torch.rand(16, int(2.0 * model.sample_rate)) * 2 - 1
    emb, ts = module.get_timestamp_embeddings(audio, model)
    assert emb.dtype == torch.float32 and emb.shape[0] == 16
    assert emb.shape[:2] == ts.shape and emb.shape[2] == model.timestamp_embedding_size
    diff = torch.diff(ts)
    assert (diff > 0).all() and torch.all(torch.abs(diff - diff.mean()) < 1e-3)
    # batch independence: one clip alone gives its frames in the batch
    alone, ts_alone = module.get_timestamp_embeddings(audio[5:6], model)
    torch.testing.assert_close(alone[0], emb[5], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(ts_alone[0], ts[5])
    scene_audio = torch.rand(8, int(3.74 * model.sample_rate)) * 2 - 1
    scene = module.get_scene_embeddings(scene_audio, model)
    assert scene.dtype == torch.float32 and scene.shape == (8, model.scene_embedding_size)


def test_frames_equal_the_student(module, student) -> None:
    model = module.load_model()
    wave = torch.randn(2, int(3.3 * student.sample_rate)) * 0.1
    emb, ts = module.get_timestamp_embeddings(wave, model)
    with torch.no_grad():
        ref = student(wave)
    torch.testing.assert_close(emb, ref.features[-1], atol=1e-4, rtol=1e-4)
    centres_ms = ref.frame_times[-1].mean(dim=1) * 1000
    torch.testing.assert_close(ts[1], centres_ms)
    torch.testing.assert_close(
        module.get_scene_embeddings(wave, model), ref.features[-1].mean(dim=1), atol=1e-4, rtol=0
    )
    short = torch.randn(1, 100) * 0.1  # shorter than one frame: padded like the student pads
    emb_short, _ = module.get_timestamp_embeddings(short, model)
    with torch.no_grad():
        torch.testing.assert_close(emb_short, student(short).features[-1], atol=1e-4, rtol=1e-4)


def test_installed_package_in_a_fresh_interpreter(exported, tmp_path: Path) -> None:
    """pip install (no downloads) into a folder; import it from outside the checkout."""
    target = tmp_path / "site"
    pip = [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation"]
    done = subprocess.run(
        [*pip, "--target", str(target), str(exported["out"])],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    script = textwrap.dedent(
        f"""
        import sys, torch, numpy
        import {NAME} as m
        assert m.__file__.startswith({str(target)!r}), m.__file__
        model = m.load_model()
        emb, ts = m.get_timestamp_embeddings(torch.zeros(2, 32000), model)
        numpy.save("emb.npy", emb.numpy())
        assert not any(k == "east" or k.startswith("east.") for k in sys.modules), "imported east"
        print(tuple(emb.shape), model.sample_rate)
        """
    )
    env = {"PYTHONPATH": str(target), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    run = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    assert "16000" in run.stdout
    from east.train.evaluation import load_run

    student = load_run(exported["run"])[2]
    with torch.no_grad():
        expected = student(torch.zeros(2, 32000)).features[-1].numpy()
    np.testing.assert_allclose(np.load(tmp_path / "emb.npy"), expected, atol=1e-4)


def test_round_trip_as_a_hear_teacher(exported, student, monkeypatch) -> None:
    from east.extract.teachers import create_teacher

    monkeypatch.syspath_prepend(str(exported["out"]))
    teacher = create_teacher(f"hear:{NAME}")
    wave = torch.randn(2, int(2.5 * student.sample_rate)) * 0.1
    got = teacher.embed(wave, torch.tensor([wave.shape[1]] * 2))
    with torch.no_grad():
        ref = student(wave)
    assert teacher.info.sample_rate == student.sample_rate
    assert teacher.info.embedding_dim == ref.features[-1].shape[-1]
    torch.testing.assert_close(got.embeddings, ref.features[-1], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(got.frame_times, ref.frame_times[-1], atol=1e-9, rtol=0)
    sys.modules.pop(NAME, None)


def test_bad_export_arguments(exported) -> None:
    from east.train.export import export_run

    with pytest.raises(ConfigError, match="not an empty folder"):
        export_run(exported["run"], "hear", exported["out"])
    with pytest.raises(ConfigError, match="--name"):
        export_run(exported["run"], "torchscript", name="x")
    with pytest.raises(ConfigError, match="identifier"):
        export_run(exported["run"], "hear", exported["base"] / "new", name="not-a-name")
    with pytest.raises(ConfigError, match="shadow"):
        export_run(exported["run"], "hear", exported["base"] / "new2", name="east")


def test_cli_export_hear(exported, monkeypatch, capsys) -> None:
    from east.cli.main import main

    out = exported["base"] / "cli_pkg"
    monkeypatch.setattr(
        sys, "argv", ["east", "export", str(exported["run"]), "--format", "hear", "--out", str(out)]
    )
    try:
        main()
    except SystemExit as exc:
        assert not exc.code, capsys.readouterr().err
    assert f"wrote {out}" in capsys.readouterr().out
    assert (out / "cli_pkg" / "__init__.py").is_file()  # the name comes from the folder
    monkeypatch.setattr(sys, "argv", ["east", "export", str(exported["run"]), "--format", "hear"])
    try:
        main()
    except SystemExit as exc:
        assert not exc.code, capsys.readouterr().err
    default = exported["run"] / "east_mobile_fcn_hear"
    assert (default / "east_mobile_fcn_hear" / "model.ts").is_file()  # default: in the run


# mobile_fcn is the run's student above
@pytest.mark.parametrize("name", ["cp_resnet", "short_chunk_cnn", "harmonic_cnn"])
def test_every_student_exports(name: str, tmp_path: Path) -> None:
    """Each registered student's final tap and frame times survive the export (checked inside
    export_hear against the student on another input length; it raises when they differ)."""
    from east.train.hear_export import export_hear
    from east.train.students import STUDENTS

    torch.manual_seed(0)
    student = STUDENTS[name].factory(num_classes=3).eval()
    out, diff = export_hear(student, {"class_names": ["a", "b", "c"]}, tmp_path / "pkg", None, 0.5)
    assert diff < 1e-4, diff
    assert (out / "pkg" / "model.ts").is_file()
