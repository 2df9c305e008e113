"""Every kind of config mistake is one line naming the key or file, exit 2, no traceback."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import yaml

from east.config import load_config, load_config_dict, parse_override
from east.errors import ConfigError
from train_helpers import make_cache, make_dataset, tiny_config, write_config


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("cfg")
    manifest = make_dataset(base / "esc", num_classes=3, clips_per_class=4, seconds=1.0)
    cache = make_cache(manifest, base / "esc.zarr", dim=8)
    # a cache of another clip list: a second dataset with one class more
    other = make_dataset(base / "other", num_classes=4, clips_per_class=4, seconds=1.0)
    other_cache = make_cache(other, base / "other.zarr", dim=8)
    return {"base": base, "root": base / "esc", "cache": cache, "other_cache": other_cache}


def run_cli(args: list[str], monkeypatch: pytest.MonkeyPatch, capsys) -> tuple[int, str]:
    from east.cli.main import main

    monkeypatch.setattr(sys, "argv", ["east", *args])
    with pytest.raises(SystemExit) as info:
        main()
    err = capsys.readouterr().err
    return int(info.value.code or 0), err


def _assert_one_line(code: int, err: str, *needles: str) -> None:
    assert code == 2, err
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("error:"), err
    assert "Traceback" not in err
    for needle in needles:
        assert needle in lines[0], (needle, err)


def _cfg(world: dict[str, Path], **extra) -> dict:
    return tiny_config(world["root"], world["cache"], world["base"] / "runs", **extra)


@pytest.mark.parametrize(
    ("mutate", "needles"),
    [
        (lambda c: c["loss"].update(bogus=1), ["loss.bogus", "unknown key"]),
        (lambda c: c.update(unknown_section={}), ["unknown_section", "unknown key"]),
        (lambda c: c["train"].update(batch_size="many"), ["train.batch_size"]),
        (lambda c: c["loss"].update({"lambda": 1.5}), ["loss.lambda"]),
        (lambda c: c.update(system="east_magic"), ["system"]),
        (lambda c: c.pop("dataset"), ["dataset", "required"]),
        (lambda c: c.update(teachers=[]), ["teachers"]),
        (lambda c: c.update(system="kd"), ["teacher_lr_run"]),
        (
            lambda c: (
                c["crop"].update(mode="fixed") if "crop" in c else c.update(crop={"mode": "fixed"})
            ),
            ["crop", "seconds"],
        ),
    ],
)
def test_static_mistakes_are_one_line(
    world, tmp_path, monkeypatch, capsys, mutate, needles
) -> None:
    cfg = _cfg(world)
    mutate(cfg)
    path = write_config(tmp_path / "run.yaml", cfg)
    code, err = run_cli(["train", "--config", str(path), "--check"], monkeypatch, capsys)
    _assert_one_line(code, err, str(path), *needles)


def test_missing_config_file_and_bad_yaml(world, tmp_path, monkeypatch, capsys) -> None:
    code, err = run_cli(["train", "--config", str(tmp_path / "nope.yaml")], monkeypatch, capsys)
    _assert_one_line(code, err, "nope.yaml", "not found")
    bad = tmp_path / "bad.yaml"
    bad.write_text("system: [east_final\n")
    code, err = run_cli(["train", "--config", str(bad)], monkeypatch, capsys)
    _assert_one_line(code, err, "bad.yaml", "invalid YAML")


def test_missing_cache(world, tmp_path, monkeypatch, capsys) -> None:
    cfg = _cfg(world)
    cfg["teachers"][0]["cache"] = str(tmp_path / "absent.zarr")
    path = write_config(tmp_path / "run.yaml", cfg)
    code, err = run_cli(["train", "--config", str(path), "--check"], monkeypatch, capsys)
    _assert_one_line(code, err, "teachers.0.cache", "absent.zarr", "not found")


def test_cache_of_another_manifest_is_refused(world, tmp_path, monkeypatch, capsys) -> None:
    cfg = _cfg(world)
    cfg["teachers"][0]["cache"] = str(world["other_cache"])
    path = write_config(tmp_path / "run.yaml", cfg)
    code, err = run_cli(["train", "--config", str(path), "--check"], monkeypatch, capsys)
    _assert_one_line(code, err, "teachers.0.cache", "other.zarr", "another clip list")


def test_teacher_dim_that_does_not_fit(world, tmp_path, monkeypatch, capsys) -> None:
    cfg = _cfg(world)
    cfg["teachers"][0]["dim"] = 128
    path = write_config(tmp_path / "run.yaml", cfg)
    code, err = run_cli(["train", "--config", str(path), "--check"], monkeypatch, capsys)
    _assert_one_line(code, err, "teachers.0.dim", "128", "dim 8")


def test_valid_config_checks_ok(world, tmp_path, monkeypatch, capsys) -> None:
    path = write_config(tmp_path / "run.yaml", _cfg(world))
    code, _ = run_cli(["train", "--config", str(path), "--check"], monkeypatch, capsys)
    assert code == 0


def test_set_overrides_are_typed(world, tmp_path) -> None:
    path = write_config(tmp_path / "run.yaml", _cfg(world))
    cfg = load_config(
        path,
        [
            "loss.lambda=0.8",
            "optimizer.lr=1e-3",
            "train.amp=false",
            "teachers.0.weight=0.5",
            "loss.stage_weights=[0, 1, 2]",
            "augment.mixup_alpha=0.3",
        ],
    )
    assert cfg.loss.lam == 0.8 and isinstance(cfg.optimizer.lr, float) and cfg.optimizer.lr == 1e-3
    assert cfg.train.amp is False and cfg.teachers[0].weight == 0.5
    assert cfg.loss.stage_weights == [0, 1, 2] and cfg.augment.mixup_alpha == 0.3
    assert parse_override("a.b=3") == (["a", "b"], 3)


@pytest.mark.parametrize(
    ("override", "needle"),
    [
        ("loss.lambda", "KEY=VALUE"),
        ("teachers.5.weight=1", "teachers.5"),
        ("loss.nope=1", "loss.nope"),
        ("train.max_steps=ten", "train.max_steps"),
    ],
)
def test_bad_overrides_are_one_line(world, tmp_path, monkeypatch, capsys, override, needle) -> None:
    path = write_config(tmp_path / "run.yaml", _cfg(world))
    code, err = run_cli(
        ["train", "--config", str(path), "--set", override, "--check"], monkeypatch, capsys
    )
    _assert_one_line(code, err, needle)


def test_every_shipped_config_validates() -> None:
    root = Path(__file__).parents[1] / "configs"
    configs = sorted(p for p in root.rglob("*.yaml") if "label_maps" not in p.parts)
    assert len(configs) > 50
    for path in configs:
        load_config(path)  # raises ConfigError on any mistake


def test_loader_round_trips_resolved_config(world) -> None:
    cfg = load_config_dict(_cfg(world, loss={"lambda": 0.7}))
    again = load_config_dict(yaml.safe_load(yaml.safe_dump(cfg.to_yaml_dict())))
    assert again == cfg
    with pytest.raises(ConfigError):
        load_config_dict({**cfg.to_yaml_dict(), "seed": "x"})
