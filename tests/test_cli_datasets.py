"""`east datasets list | show | check`, including the issue's acceptance commands."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from east.cli.main import app
from east.testing import layouts

runner = CliRunner()


def _east(*args: str) -> subprocess.CompletedProcess[str]:
    """Run the installed console script (its error handling is part of what is tested)."""
    script = Path(sys.executable).parent / "east"
    cmd = [str(script)] if script.exists() else [sys.executable, "-m", "east"]
    return subprocess.run(
        [*cmd, *args], capture_output=True, text=True, timeout=120, env=None, check=False
    )


def test_list() -> None:
    result = runner.invoke(app, ["datasets", "list"])
    assert result.exit_code == 0, result.output
    for name in ("openmic", "mtat", "esc50", "fma_small", "folder"):
        assert re.search(rf"^\s*{name}\s", result.output, re.M), name


@pytest.mark.parametrize("sub", [[], ["list"], ["show"], ["check"]])
def test_help(sub: list[str]) -> None:
    result = runner.invoke(app, ["datasets", *sub, "--help"])
    assert result.exit_code == 0
    assert "Usage" in result.output
    if sub in (["show"], ["check"]):
        assert "--root" in result.output and "--option" in result.output


def test_show_esc50_acceptance(esc50_root: Path) -> None:
    result = runner.invoke(app, ["datasets", "show", "esc50", "--root", str(esc50_root)])
    assert result.exit_code == 0, result.output
    out = result.output
    assert re.search(r"^clips: 414$", out, re.M)
    assert re.search(r"^classes: 50$", out, re.M)
    folds = re.search(r"^folds: (.*)$", out, re.M)
    assert folds is not None
    assert dict(p.split(": ") for p in folds.group(1).split(", ")) == {
        "2": "11",
        "3": "1",
        "4": "400",
        "5": "2",
    }
    assert re.search(r"^manifest hash: [0-9a-f]{16}", out, re.M)
    assert "dog" in out and "hand_saw" in out  # the per-class table


def test_show_json_and_options(esc50_root: Path) -> None:
    result = runner.invoke(
        app,
        ["datasets", "show", "esc50", "-r", str(esc50_root), "--json", "-o", "split=folds",
         "-o", "test_fold=2", "-o", "valid_fold=3"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)
    assert summary["clips"] == 414 and summary["classes"] == 50
    assert summary["splits"] == {"train": 402, "valid": 1, "test": 11}
    assert sum(v["train"] for v in summary["per_class"].values()) == 402


def test_show_multilabel_fixture(tmp_path: Path) -> None:
    root = layouts.make_mtat(tmp_path / "mtat", num_clips=20, num_tag_columns=55)
    result = runner.invoke(app, ["datasets", "show", "mtat", "--root", str(root)])
    assert result.exit_code == 0, result.output
    assert "classes: 50" in result.output and "positive per clip" in result.output


def test_check_acceptance(esc50_root: Path, tmp_path: Path) -> None:
    """A copy of the ESC-50 subset with one 0-byte clip and one text file: exactly those two."""
    root = tmp_path / "esc50"
    (root / "audio").mkdir(parents=True)
    (root / "meta").mkdir()
    (root / "meta" / "esc50.csv").write_bytes((esc50_root / "meta" / "esc50.csv").read_bytes())
    files = sorted((esc50_root / "audio").iterdir())
    empty, text = files[3].name, files[200].name
    for f in files:
        (root / "audio" / f.name).symlink_to(f)
    (root / "audio" / empty).unlink()
    (root / "audio" / empty).write_bytes(b"")
    (root / "audio" / text).unlink()
    (root / "audio" / text).write_text("Just some notes, certainly not a FLAC file.\n")

    proc = _east("datasets", "check", "esc50", "--root", str(root), "--workers", "2")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr
    reported = re.findall(r"^\s+audio/(\S+): (.+)$", proc.stdout, re.M)
    assert dict(reported) == {
        empty: "empty file (0 bytes)",
        text: "not an audio file (format not recognised)",
    }
    assert "2 of 414 clips" in proc.stdout


def test_check_clean_fixture_exits_zero(tmp_path: Path) -> None:
    root = layouts.make_folder(tmp_path / "f", classes=("a", "b"), clips_per_class=2)
    result = runner.invoke(app, ["datasets", "check", "folder", "--root", str(root), "-w", "1"])
    assert result.exit_code == 0, result.output
    assert "all 4 clips" in result.output


def test_errors_are_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from east.cli.main import main

    for args in (
        ["datasets", "show", "esc50", "--root", str(tmp_path / "nope")],
        ["datasets", "show", "esc50", "--root", str(tmp_path)],
        ["datasets", "check", "imagenet", "--root", str(tmp_path)],
        ["datasets", "show", "esc50", "--root", str(tmp_path), "-o", "bogus"],
    ):
        monkeypatch.setattr(sys, "argv", ["east", *args])
        with pytest.raises(SystemExit) as info:
            main()
        assert info.value.code == 2, args
        err = capsys.readouterr().err
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error:"), err
    # and through the real console script: one line, no traceback
    proc = _east("datasets", "show", "esc50", "--root", str(tmp_path))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.startswith("error:") and "meta/esc50.csv" in proc.stderr
