"""Weights module: checksums, lookup, one-line errors, resumable download from a local server."""

from __future__ import annotations

import hashlib
import http.server
import shutil
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from east.errors import WeightsError
from east.extract.teachers.base import TeacherInfo, WeightFile
from east.extract.weights import (
    checksum_problem,
    download,
    load_state_dict,
    load_strict,
    md5_file,
    resolve_weights,
    sha256_file,
    weights_path,
    weights_present,
)

PAYLOAD = bytes(range(256)) * 4096 + b"tail"  # ~1 MiB + 4 bytes: several read blocks


class _Server(http.server.ThreadingHTTPServer):
    payload: bytes = PAYLOAD
    honour_range: bool = True
    cut_after: int | None = None  # close the connection after this many body bytes
    requests: list[str | None]


class _Handler(http.server.BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, *args: object) -> None:  # keep test output quiet
        pass

    def do_GET(self) -> None:
        if self.path != "/model.pth":
            self.send_error(404)
            return
        data = self.server.payload
        rng = self.headers.get("Range")
        self.server.requests.append(rng)
        start = 0
        if rng and self.server.honour_range:
            start = int(rng.removeprefix("bytes=").split("-")[0])
            if start >= len(data):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        self.send_header("Content-Length", str(len(data) - start))
        self.end_headers()
        body = data[start:]
        if self.server.cut_after is not None:
            body = body[: self.server.cut_after]
            self.server.cut_after = None  # the next request (the resume) completes
            self.close_connection = True
        self.wfile.write(body)


@pytest.fixture
def server() -> Iterator[_Server]:
    srv = _Server(("127.0.0.1", 0), _Handler)
    srv.requests = []
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield srv
    finally:
        srv.shutdown()
        srv.server_close()


def _wf(server: _Server, payload: bytes = PAYLOAD, **kw: object) -> WeightFile:
    host, port = server.server_address[:2]
    return WeightFile(
        filename=kw.pop("filename", "fam/model.pth"),  # type: ignore[arg-type]
        url=f"http://{host}:{port}/model.pth",
        sha256=kw.pop("sha256", hashlib.sha256(payload).hexdigest()),  # type: ignore[arg-type]
        **kw,  # type: ignore[arg-type]
    )


@pytest.fixture(autouse=True)
def weights_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    wdir = tmp_path / "weights"
    monkeypatch.setenv("EAST_WEIGHTS_DIR", str(wdir))
    return wdir


def test_hashes_match_hashlib(tmp_path: Path) -> None:
    f = tmp_path / "x.bin"
    f.write_bytes(PAYLOAD)
    assert sha256_file(f) == hashlib.sha256(PAYLOAD).hexdigest()
    assert md5_file(f) == hashlib.md5(PAYLOAD).hexdigest()
    # memo is keyed by size/mtime: rewriting the file gives the new digest
    f.write_bytes(b"other content")
    assert sha256_file(f) == hashlib.sha256(b"other content").hexdigest()


def test_prefix_and_md5_pins(tmp_path: Path) -> None:
    f = tmp_path / "vggish-10086976.pth"
    f.write_bytes(PAYLOAD)
    full = hashlib.sha256(PAYLOAD).hexdigest()
    md5 = hashlib.md5(PAYLOAD).hexdigest()
    ok = WeightFile(f.name, "http://x", sha256=full[:8], md5=md5, size=len(PAYLOAD))
    assert checksum_problem(f, ok) is None
    wrong_prefix = "0" * 8 if not full.startswith("0" * 8) else "f" * 8
    assert "sha256" in checksum_problem(f, WeightFile(f.name, "u", sha256=wrong_prefix))
    assert "md5" in checksum_problem(f, WeightFile(f.name, "u", sha256=full[:10], md5="0" * 32))
    assert "size" in checksum_problem(f, WeightFile(f.name, "u", sha256=full, size=3))
    with pytest.raises(ValueError, match="hex"):
        checksum_problem(f, WeightFile(f.name, "u", sha256=full[:7]))  # too short to mean much


def test_git_blob_pin_without_sha256(tmp_path: Path) -> None:
    f = tmp_path / "model.pth.tar"
    f.write_bytes(PAYLOAD)
    # independent reference: git itself
    git = shutil.which("git")
    if git is None:
        pytest.skip("git not installed")
    blob = subprocess.run(
        [git, "hash-object", str(f)], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert checksum_problem(f, WeightFile(f.name, "u", sha256="", git_blob_sha1=blob)) is None
    other = hashlib.sha1(PAYLOAD).hexdigest()
    problem = checksum_problem(f, WeightFile(f.name, "u", sha256="", git_blob_sha1=other))
    assert problem is not None and "git blob" in problem
    with pytest.raises(ValueError, match="no sha256, md5 or git blob id"):
        checksum_problem(f, WeightFile(f.name, "u", sha256=""))


def test_missing_file_is_one_line_naming_file_url_folder(weights_env: Path) -> None:
    wf = WeightFile("fam/model.pth", "https://example.org/model.pth", sha256="ab" * 32)
    info = TeacherInfo("mine", "fam", 16000, 8, 1.0, 1.0, weights=(wf,))
    with pytest.raises(WeightsError) as err:
        resolve_weights(info)
    msg = str(err.value)
    assert "\n" not in msg
    assert "fam/model.pth" in msg and "https://example.org/model.pth" in msg
    assert str(weights_env / "fam") in msg
    assert "east teachers download mine" in msg


def test_resolve_verifies_checksum_and_override_wins(weights_env: Path, tmp_path: Path) -> None:
    wf = WeightFile("fam/model.pth", "https://example.org/m", hashlib.sha256(PAYLOAD).hexdigest())
    path = weights_path(wf)
    path.parent.mkdir(parents=True)
    path.write_bytes(PAYLOAD[:-1] + b"X")
    assert weights_present(wf)
    with pytest.raises(WeightsError, match=r"not the pinned model\.pth") as err:
        resolve_weights(wf)
    assert "\n" not in str(err.value)
    path.write_bytes(PAYLOAD)
    assert resolve_weights(wf) == path
    # a local override is taken as is (fine-tuned files are allowed), but must exist
    own = tmp_path / "finetuned.pth"
    own.write_bytes(b"anything")
    assert resolve_weights(wf, own) == own
    with pytest.raises(WeightsError, match="does not exist"):
        resolve_weights(wf, tmp_path / "nope.pth")


def test_download_verifies_and_renames(server: _Server, weights_env: Path) -> None:
    wf = _wf(server)
    path = download(wf, progress=False)
    assert path == weights_env / "fam" / "model.pth"
    assert path.read_bytes() == PAYLOAD
    assert not path.with_name("model.pth.part").exists()
    # already there and verified: no second request
    download(wf, progress=True)
    assert server.requests == [None]


def test_download_resumes_from_part_file(server: _Server, tmp_path: Path) -> None:
    wf = _wf(server)
    dest = tmp_path / "elsewhere"
    part = dest / "fam" / "model.pth.part"
    part.parent.mkdir(parents=True)
    part.write_bytes(PAYLOAD[:300_000])
    path = download(wf, dest_dir=dest, progress=False)
    assert server.requests == ["bytes=300000-"]
    assert path.read_bytes() == PAYLOAD


def test_download_cut_midway_then_resumed(server: _Server, tmp_path: Path) -> None:
    server.cut_after = 400_000
    wf = _wf(server)
    with pytest.raises(
        WeightsError, match=r"closed after 400000 of .*partial data kept in .*model\.pth\.part"
    ) as err:
        download(wf, dest_dir=tmp_path, progress=False)
    assert "\n" not in str(err.value)
    part = tmp_path / "fam" / "model.pth.part"
    assert 0 < part.stat().st_size < len(PAYLOAD)
    assert not (tmp_path / "fam" / "model.pth").exists()
    assert download(wf, dest_dir=tmp_path, progress=False).read_bytes() == PAYLOAD
    assert server.requests == [None, "bytes=400000-"]


def test_download_restarts_when_server_ignores_range(server: _Server, tmp_path: Path) -> None:
    server.honour_range = False
    wf = _wf(server)
    part = tmp_path / "fam" / "model.pth.part"
    part.parent.mkdir(parents=True)
    part.write_bytes(b"garbage that must not stay in front")
    assert download(wf, dest_dir=tmp_path, progress=False).read_bytes() == PAYLOAD


def test_download_complete_part_file_gets_416(server: _Server, tmp_path: Path) -> None:
    wf = _wf(server)
    part = tmp_path / "fam" / "model.pth.part"
    part.parent.mkdir(parents=True)
    part.write_bytes(PAYLOAD)
    assert download(wf, dest_dir=tmp_path, progress=False).read_bytes() == PAYLOAD


def test_download_checksum_mismatch_keeps_nothing(server: _Server, tmp_path: Path) -> None:
    wf = _wf(server, sha256="0123456789abcdef")
    with pytest.raises(WeightsError, match="does not match its pin") as err:
        download(wf, dest_dir=tmp_path, progress=False)
    assert "\n" not in str(err.value)
    assert not (tmp_path / "fam" / "model.pth").exists()
    assert not (tmp_path / "fam" / "model.pth.part").exists()


def test_download_offline_is_one_line(tmp_path: Path) -> None:
    # port 9 on localhost: connection refused, like a machine without internet
    wf = WeightFile("m.pth", "http://127.0.0.1:9/m.pth", sha256="ab" * 32)
    with pytest.raises(WeightsError, match=r"cannot download http://127\.0\.0\.1:9/m\.pth"):
        download(wf, dest_dir=tmp_path, progress=False, timeout=5)


def test_load_state_dict_and_strict(tmp_path: Path) -> None:
    module = torch.nn.Linear(3, 2)
    good = tmp_path / "good.pth"
    torch.save({"state_dict": module.state_dict(), "epoch": 3}, good)
    sd = load_state_dict(good)
    assert set(sd) == {"weight", "bias"}
    load_strict(torch.nn.Linear(3, 2), sd, good)

    with pytest.raises(WeightsError, match=r"1 missing keys \(bias\)"):
        load_strict(torch.nn.Linear(3, 2), {"weight": sd["weight"]}, good)
    with pytest.raises(WeightsError, match="1 shape mismatches"):
        load_strict(torch.nn.Linear(4, 2), sd, good)

    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"this is not a checkpoint")
    with pytest.raises(WeightsError, match="not a loadable PyTorch checkpoint") as err:
        load_state_dict(bad)
    assert "\n" not in str(err.value)
    # pickled arbitrary objects are refused by weights_only loading
    evil = tmp_path / "evil.pth"
    torch.save({"obj": _Server}, evil)
    with pytest.raises(WeightsError):
        load_state_dict(evil)


def test_load_error_keeps_the_reason_without_ansi_codes(tmp_path: Path) -> None:
    import fractions

    from east.extract.weights import load_state_dict

    path = tmp_path / "pickled.pt"
    torch.save({"w": torch.zeros(2), "extra": fractions.Fraction(1, 2)}, path)
    with pytest.raises(WeightsError) as info:
        load_state_dict(path)
    message = str(info.value)
    assert "Unsupported global" in message and "fractions.Fraction" in message
    assert "\x1b[" not in message and "\n" not in message
    (tmp_path / "text.pt").write_text("garbage\n")
    with pytest.raises(WeightsError, match="not a loadable PyTorch checkpoint"):
        load_state_dict(tmp_path / "text.pt")
