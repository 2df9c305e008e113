"""east stands alone: the published numbers, label maps and paper configs ship inside the package
(east.resources), ``east configs list | copy`` hand them out, and a wheel installed into a fresh
virtual environment outside the checkout runs ``east --version``, ``teachers list`` and
``report`` with the published numbers shown."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import site
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import yaml

from east import __version__
from east.cli.main import main
from east.errors import EastError
from east.report.published import PublishedResults
from east.resources import config_names, copy_configs, label_map, paper_configs, paper_results

REPO = Path(__file__).resolve().parents[1]


def _checkout_configs() -> list[str]:
    root = REPO / "configs"
    return sorted(
        p.relative_to(root).as_posix()
        for p in root.rglob("*")
        if p.is_file() and p.suffix in (".yaml", ".yml", ".json")
    )


def test_shipped_published_numbers_are_the_docs_file() -> None:
    # one source of truth: the package's file is docs/paper_results.csv itself
    assert paper_results().read_bytes() == (REPO / "docs" / "paper_results.csv").read_bytes()
    published = PublishedResults.load()
    assert published.source is not None and published.rows
    assert published.get("ding2023", "table1", "openmic", "east_final", "vggish", "mAP") == 0.842


def test_shipped_configs_are_the_checkout_configs() -> None:
    # in the checkout (editable install) the package's folder is configs/ itself
    assert Path(str(paper_configs())).resolve() == REPO / "configs"
    assert config_names() == _checkout_configs()
    assert "label_maps/mtat_to_openmic.yaml" in config_names("label_maps")
    assert (
        label_map("mtat_to_openmic").read_bytes()
        == (REPO / "configs" / "label_maps" / "mtat_to_openmic.yaml").read_bytes()
    )
    with pytest.raises(EastError, match="no shipped label map 'nope'"):
        label_map("nope")


def _cli(args: list[str], monkeypatch: pytest.MonkeyPatch, capsys) -> tuple[int, str, str]:
    """Exit code, stdout and stderr of ``east ARGS`` through the real entry point."""
    monkeypatch.setattr(sys, "argv", ["east", *args])
    with pytest.raises(SystemExit) as info:
        main()
    out = capsys.readouterr()
    return int(info.value.code or 0), out.out, out.err


def test_configs_list_cli_prints_every_name(monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    code, out, _ = _cli(["configs", "list"], monkeypatch, capsys)
    assert code == 0 and out.split() == _checkout_configs()
    code, out, _ = _cli(["configs", "list", "paper1/mtat"], monkeypatch, capsys)
    assert out.split() and all(n.startswith("paper1/mtat/") for n in out.split())


def test_configs_copy_keeps_paths_and_refuses_to_overwrite(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    code, out, err = _cli(
        ["configs", "copy", "paper1/mtat/baseline", str(tmp_path)], monkeypatch, capsys
    )
    assert code == 0 and out.strip() == f"copied 1 files to {tmp_path}", err
    copied = tmp_path / "paper1" / "mtat" / "baseline.yaml"
    source = REPO / "configs" / "paper1" / "mtat" / "baseline.yaml"
    assert copied.read_bytes() == source.read_bytes()
    assert yaml.safe_load(copied.read_text())["system"] == "baseline"

    args = ["configs", "copy", "paper1/mtat/baseline.yaml", str(tmp_path)]
    code, _, err = _cli(args, monkeypatch, capsys)
    assert code == 2 and "already exists (give --force" in err and len(err.splitlines()) == 1
    copied.write_text("edited")
    code, _, err = _cli([*args, "--force"], monkeypatch, capsys)
    assert code == 0 and copied.read_bytes() == source.read_bytes()

    folder = copy_configs("label_maps", tmp_path / "lm")
    assert folder == [tmp_path / "lm" / "label_maps" / "mtat_to_openmic.yaml"]
    everything = copy_configs("all", tmp_path / "all")
    assert sorted(p.relative_to(tmp_path / "all").as_posix() for p in everything) == config_names()


@pytest.mark.parametrize("name", ["paper1/mtat/basline", "../docs", "nope"])
def test_configs_copy_of_an_unknown_name_is_one_line(
    name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    code, _, err = _cli(["configs", "copy", name, str(tmp_path / "out")], monkeypatch, capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1 and err.startswith("error:")
    assert "no shipped config" in err or "give a shipped config" in err
    assert not (tmp_path / "out").exists()
    if name == "paper1/mtat/basline":
        assert "did you mean paper1/mtat/baseline" in err


# ---- the wheel, installed outside the checkout


def _source_copy(dest: Path) -> Path:
    """What a wheel is built from, copied so the build leaves no build/ or egg-info in the
    checkout; symlinks are kept (they point inside the copy, as in the checkout)."""
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info", "*.pyc")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, dest / name)
    for name in ("src", "configs", "docs"):
        shutil.copytree(REPO / name, dest / name, symlinks=True, ignore=ignore)
    return dest


def _tiny_run(root: Path) -> Path:
    """One finished OpenMIC run in the layout `east train` writes (see east.report.runs)."""
    from east.config import load_config_dict

    cfg = load_config_dict(
        {
            "system": "east_final",
            "seed": 1,
            "dataset": {"name": "openmic", "root": "data/openmic"},
            "student": {"name": "cp_resnet"},
            "teachers": [{"cache": "cache/openmic/vggish.zarr"}],
            "loss": {"lambda": 0.8},
        }
    )
    run = root / cfg.run_name()
    run.mkdir(parents=True)
    (run / "config.yaml").write_text(yaml.safe_dump(cfg.to_yaml_dict(), sort_keys=False))
    info = {"system": "east_final", "dataset": "openmic", "task": "multilabel", "num_classes": 20}
    (run / "run_info.json").write_text(json.dumps(info))
    results = {"split": "test", "clips": 10, "test_mAP": 0.8, "test_macro_f1": 0.7}
    (run / "test_results.json").write_text(json.dumps(results))
    return run


def _run(cmd: list[str | Path], cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    env["MPLBACKEND"] = "Agg"
    return subprocess.run(
        [str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )


def test_the_wheel_works_outside_the_checkout(tmp_path: Path) -> None:
    if importlib.util.find_spec("setuptools") is None:
        pytest.skip("setuptools is not installed: the wheel cannot be built offline")
    (tmp_path / "src-copy").mkdir()
    src = _source_copy(tmp_path / "src-copy")
    dist = tmp_path / "dist"
    built = _run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
         "--no-index", "-w", dist, src],
        cwd=tmp_path,
    )  # fmt: skip
    assert built.returncode == 0, built.stderr
    (wheel,) = dist.glob("east-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "east/report/paper_results.csv" in names
    assert "east/paper_configs/label_maps/mtat_to_openmic.yaml" in names

    # a fresh venv; torch and the other dependencies come from this environment (no
    # downloads) through a .pth of its site-packages, which does not run their .pth files,
    # so the checkout's editable install stays out
    venv = tmp_path / "venv"
    made = _run([sys.executable, "-m", "venv", "--without-pip", venv], cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    py = venv / "bin" / "python"
    purelib = _run(
        [py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], tmp_path
    )
    parent = [p for p in site.getsitepackages() if Path(p).is_dir()]
    (Path(purelib.stdout.strip()) / "_parent_env.pth").write_text("\n".join(parent) + "\n")
    installed = _run(
        [sys.executable, "-m", "pip", "--python", py, "install", "-q", "--no-deps", "--no-index",
         wheel],
        cwd=tmp_path,
    )  # fmt: skip
    assert installed.returncode == 0, installed.stderr

    cwd = tmp_path / "elsewhere"
    cwd.mkdir()
    where = _run([py, "-c", "import east; print(east.__file__)"], cwd)
    assert where.returncode == 0, where.stderr
    assert Path(where.stdout.strip()).is_relative_to(venv), where.stdout
    east = venv / "bin" / "east"
    version = _run([east, "--version"], cwd)
    assert version.returncode == 0 and version.stdout.strip() == f"east {__version__}"
    teachers = _run([east, "teachers", "list"], cwd)
    assert teachers.returncode == 0, teachers.stderr
    assert "vggish" in teachers.stdout.lower()

    _tiny_run(cwd / "runs")
    report = _run(
        [east, "report", "runs", "--out", "report", "--no-figures", "--no-count-params"], cwd
    )
    assert report.returncode == 0, report.stderr
    assert "paper_results.csv not found" not in report.stderr
    table = (cwd / "report" / "tables" / "paper1_table1_openmic.md").read_text()
    assert "0.800 [0.842]" in table  # ours beside the published EAsT_Final VGGish mAP
    listed = _run([east, "configs", "list", "label_maps"], cwd)
    assert listed.stdout.split() == ["label_maps/mtat_to_openmic.yaml"]


def test_label_map_by_shipped_name() -> None:
    from east.errors import ConfigError
    from east.train.evaluation import read_label_map

    assert read_label_map(Path("mtat_to_openmic")) == read_label_map(
        Path(__file__).resolve().parents[1] / "configs" / "label_maps" / "mtat_to_openmic.yaml"
    )
    with pytest.raises(ConfigError, match="no shipped label map"):
        read_label_map(Path("no_such_map"))
