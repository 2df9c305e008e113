"""`east teachers list | download`."""

from __future__ import annotations

import hashlib
import http.server
import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from east.cli.main import app
from east.errors import EastError
from east.extract.teachers import registry
from east.extract.teachers.base import TeacherInfo, WeightFile

runner = CliRunner()
TAGGERS = ["fcn-msd", "fcn-mtat", "fcn-jamendo", "musicnn-mtat", "musicnn-jamendo", "crnn-msd"]


def _east(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """The installed console script: its one-line error handling is part of what is tested."""
    script = Path(sys.executable).parent / "east"
    cmd = [str(script)] if script.exists() else [sys.executable, "-m", "east"]
    return subprocess.run(
        [*cmd, *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **(env or {})},
        check=False,
    )


def test_list_shows_taggers_and_missing_weights(tmp_path: Path) -> None:
    result = runner.invoke(
        app, ["teachers", "list"], env={"EAST_WEIGHTS_DIR": str(tmp_path), "COLUMNS": "160"}
    )
    assert result.exit_code == 0, result.output
    for name in TAGGERS:
        line = next(row for row in result.output.splitlines() if row.split()[:1] == [name])
        assert " no " in line and "16000" in line and "MIT" in line
    fcn = next(row for row in result.output.splitlines() if row.startswith(" fcn-msd"))
    assert "1.024 / 1.024" in fcn and " 128 " in fcn
    assert str(tmp_path) in result.output


def test_list_json_with_shared_weights(tagger_weights: Path) -> None:
    result = runner.invoke(
        app, ["teachers", "list", "--json"], env={"EAST_WEIGHTS_DIR": str(tagger_weights.parent)}
    )
    assert result.exit_code == 0, result.output
    rows = {row["name"]: row for row in json.loads(result.output)}
    assert rows["musicnn-mtat"]["dim"] == 753
    assert rows["crnn-msd"]["hop_s"] == pytest.approx(1.536)
    assert all(rows[name]["weights_present"] for name in TAGGERS)


# --------------------------------------------------------------------------- download

PAYLOAD = os.urandom(300_000)


class _Handler(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", str(len(PAYLOAD)))
        self.end_headers()
        self.wfile.write(PAYLOAD)


@pytest.fixture
def served_teacher(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
    )
    thread.start()
    host, port = server.server_address[:2]
    wf = WeightFile(
        filename="cli-test/model.pth",
        url=f"http://{host}:{port}/model.pth",
        sha256=hashlib.sha256(PAYLOAD).hexdigest(),
        size=len(PAYLOAD),
    )
    info = TeacherInfo("cli-test-teacher", "test", 16000, 4, 1.0, 1.0, weights=(wf,))
    registry._load_families()
    monkeypatch.setitem(registry._REGISTRY, info.name, (info, lambda weights, device: None))
    try:
        yield info.name
    finally:
        server.shutdown()
        server.server_close()


def test_download_into_dest(served_teacher: str, tmp_path: Path) -> None:
    result = runner.invoke(
        app, ["teachers", "download", served_teacher, "--dest", str(tmp_path), "--quiet"]
    )
    assert result.exit_code == 0, result.output
    path = tmp_path / "cli-test" / "model.pth"
    assert path.read_bytes() == PAYLOAD
    assert str(path) in result.output
    # the weights dir is the default destination, and the list then says "yes"
    env = {"EAST_WEIGHTS_DIR": str(tmp_path / "wdir"), "COLUMNS": "160"}
    result = runner.invoke(app, ["teachers", "download", served_teacher], env=env)
    assert result.exit_code == 0, result.output
    assert (tmp_path / "wdir" / "cli-test" / "model.pth").is_file()
    listing = runner.invoke(app, ["teachers", "list"], env=env)
    line = next(r for r in listing.output.splitlines() if r.split()[:1] == [served_teacher])
    assert " yes " in line


def test_download_offline_is_one_line_exit_2(tmp_path: Path) -> None:
    # a dead proxy makes the machine offline for urllib, whatever the network is like
    env = {"https_proxy": "http://127.0.0.1:9", "HTTPS_PROXY": "http://127.0.0.1:9"}
    result = _east("teachers", "download", "fcn-msd", "--dest", str(tmp_path), "-q", env=env)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: cannot download https://github.com")
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "sota-music-taggers" / "msd" / "fcn" / "best_model.pth").exists()


def test_download_unknown_teacher_fails_before_downloading(served_teacher: str) -> None:
    result = runner.invoke(app, ["teachers", "download", served_teacher, "no-such-teacher"])
    assert isinstance(result.exception, EastError)
    assert str(result.exception).startswith("unknown teacher 'no-such-teacher'")
    assert "[green]ok" not in result.output and "ok" not in result.output
