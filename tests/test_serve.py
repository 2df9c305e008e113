"""``east serve`` on loopback: concurrent clients get what `east extract` writes, repeats come
from the clip cache (also after a restart or a SIGKILL), every error is one JSON line with its
status and the next good request still succeeds, token and allow-root rules hold, SIGTERM
exits 0, and `east extract --server` writes the store a local run writes. Every load loop is
bounded in count and time."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest

import east_tiny_teacher as tiny
from east.cache_schema import open_store
from hostile import assert_one_line_error, east, east_env

TINY = ["--plugin", "east_tiny_teacher", "--teacher", "tiny-test", "--device", "cpu",
        "--decode-workers", "1"]  # fmt: skip
EXTRACT = ["--plugin", "east_tiny_teacher", "--teacher", "tiny-test", "--dataset", "folder",
           "--device", "cpu", "-q", "--batch-size", "3", "--chunk-clips", "4",
           "--num-workers", "0"]  # fmt: skip


class Server:
    """A real ``east serve`` process on a free loopback port."""

    def __init__(self, *args: str | os.PathLike[str], env: dict[str, str] | None = None) -> None:
        cmd = [sys.executable, "-m", "east", "serve", *TINY, "--port", "0", *map(str, args)]
        self.proc = subprocess.Popen(cmd, env=env or east_env(), stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True)  # fmt: skip
        deadline = time.monotonic() + 90
        line = ""
        while time.monotonic() < deadline and "serving on" not in line:
            line = self.proc.stderr.readline()
            if not line and self.proc.poll() is not None:
                raise AssertionError(f"east serve exited {self.proc.returncode}")
        assert "serving on" in line, line
        self.url = line.split("serving on", 1)[1].strip()

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
        self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        finally:
            self.proc.stderr.close()
            self.proc.stdout.close()


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("data")
    for label in ("a", "b"):
        tiny.make_dataset(root / label, 5)
    return root


@pytest.fixture(scope="module")
def local_store(data, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("local") / "s.zarr"
    assert east("extract", *EXTRACT, "--root", data, "--store", path).code == 0
    return path


@pytest.fixture(scope="module")
def allowed(tmp_path_factory, data) -> Path:
    """The one folder jobs may read: a copy of the dataset, and a link that leads out."""
    import shutil

    root = tmp_path_factory.mktemp("allowed")
    shutil.copytree(data, root / "ds")
    outside = tmp_path_factory.mktemp("outside")
    shutil.copytree(data, outside / "ds")  # a valid dataset: only the rule can refuse it
    (root / "link").symlink_to(outside / "ds")
    return root


@pytest.fixture(scope="module")
def server(tmp_path_factory, allowed):
    cache = tmp_path_factory.mktemp("serve-cache")
    srv = Server("--cache-dir", cache, "--allow-root", allowed)
    srv.cache = cache
    yield srv
    assert srv.stop() == 0  # SIGTERM: finish, flush, exit 0


def _files(data: Path) -> list[Path]:
    return sorted(data.rglob("*.wav"))


def _post(url: str, body: bytes, teacher: str = "tiny-test", **kw) -> httpx.Response:
    return httpx.post(f"{url}/v1/embed", params={"teacher": teacher, **kw}, content=body,
                      timeout=60)  # fmt: skip


def test_health_and_teachers(server):
    assert httpx.get(f"{server.url}/health").json() == {"status": "ok", "teachers": ["tiny-test"]}
    (facts,) = httpx.get(f"{server.url}/v1/teachers").json()
    assert facts["sample_rate"] == 8000 and facts["dim"] == 8
    assert facts["weights_sha256"] == "tiny-test-weights"


def test_sixteen_concurrent_clients_get_the_rows_east_extract_writes(server, data, local_store):
    store = open_store(local_store)
    row_of = {cid: i for i, cid in enumerate(store.clip_ids)}
    files = _files(data)
    jobs = [f for _ in range(4) for f in files]  # 80 requests by 16 clients, bounded
    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(lambda f: _post(server.url, f.read_bytes()), jobs))
    for path, answer in zip(jobs, answers, strict=True):
        assert answer.status_code == 200, answer.text
        got = answer.json()
        row = row_of[f"{path.parent.name}/{path.stem}"]
        want = store.read([row])
        nf = int(want.num_frames[0])
        np.testing.assert_array_equal(np.asarray(got["embeddings"], np.float32),
                                      want.embeddings[0, :nf])  # fmt: skip
        np.testing.assert_allclose(got["frame_times"], want.frame_times[0, :nf])
    sizes = _metric(server.url, "east_batch_size_sum") / _metric(
        server.url, "east_batch_size_count"
    )
    assert sizes > 1.0  # requests really shared batches


def _metric(url: str, name: str) -> float:
    text = httpx.get(f"{url}/metrics").text
    return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith(name + " "))


def test_a_repeat_is_cached_and_npy_matches_json(server, data):
    body = _files(data)[3].read_bytes()
    first = _post(server.url, body).json()
    again = _post(server.url, body, format="npy")
    assert again.status_code == 200 and again.headers["x-east-cached"] == "true"
    values = np.load(__import__("io").BytesIO(again.content))
    assert values.dtype == np.float16
    np.testing.assert_array_equal(values.astype(np.float32), np.asarray(first["embeddings"]))
    assert json.loads(again.headers["x-east-frame-times"]) == first["frame_times"]


@pytest.mark.parametrize(
    ("params", "body", "status", "fragment"),
    [
        ({"teacher": "nope"}, b"RIFF", 404, "unknown teacher"),
        ({"teacher": "tiny-test"}, b"not audio at all", 400, "cannot use the audio"),
        ({"teacher": "tiny-test"}, b"", 400, "empty body"),
        ({"teacher": "tiny-test", "format": "xml"}, b"RIFF", 400, "format"),
        ({}, b"RIFF", 422, "teacher"),
    ],
)
def test_errors_are_one_json_line_and_the_service_goes_on(server, data, params, body, status,
                                                          fragment):  # fmt: skip
    answer = httpx.post(f"{server.url}/v1/embed", params=params, content=body, timeout=30)
    assert answer.status_code == status, answer.text
    error = answer.json()["error"]
    assert fragment in error and "\n" not in error
    assert _post(server.url, _files(data)[0].read_bytes()).status_code == 200


def test_a_body_over_the_limit_is_413(tmp_path, data):
    srv = Server("--max-body-mb", "0.001")
    try:
        answer = _post(srv.url, _files(data)[0].read_bytes())
        assert answer.status_code == 413 and "limit" in answer.json()["error"]
        assert _post(srv.url, b"x" * 100).status_code == 400  # still serving
    finally:
        assert srv.stop() == 0


def test_a_full_queue_is_429_with_retry_after(data):
    srv = Server("--max-queue", "1", "--max-batch", "1", env=east_env(EAST_TINY_SLEEP="0.3"))
    try:
        body = _files(data)[0].read_bytes()
        with ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(lambda _: _post(srv.url, body), range(8)))
        codes = sorted(a.status_code for a in answers)
        assert 429 in codes and 200 in codes, codes
        refused = next(a for a in answers if a.status_code == 429)
        assert refused.headers["retry-after"] == "1" and "full" in refused.json()["error"]
        from east.client import EastClient

        with EastClient(srv.url) as client:  # the client waits and retries
            assert client.embed(body, "tiny-test").embeddings.shape[1] == 8
    finally:
        assert srv.stop() == 0


def test_token_rules(data):
    assert_one_line_error(east("serve", *TINY, "--host", "0.0.0.0", "--port", "0"), "--token")
    srv = Server("--token", "s3cret")
    try:
        body = _files(data)[0].read_bytes()
        assert _post(srv.url, body).status_code == 401
        wrong = httpx.get(f"{srv.url}/health", headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401 and "token" in wrong.json()["error"]
        from east.client import EastClient

        with EastClient(srv.url, token="s3cret") as client:
            assert client.health()["status"] == "ok"
            assert client.embed(body, "tiny-test").cached is False
    finally:
        assert srv.stop() == 0


def _wait_job(url: str, job_id: str, seconds: float = 60) -> dict:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        state = httpx.get(f"{url}/v1/jobs/{job_id}").json()
        if state["state"] in ("done", "failed", "cancelled"):
            return state
        time.sleep(0.1)
    raise AssertionError(f"job {job_id} did not finish")


def test_jobs_and_allow_root(server, allowed, local_store):
    outside = (allowed / "link").resolve()
    escapes = (outside, allowed / ".." / outside.parent.name / "ds", allowed / "link")
    for root in escapes:
        answer = httpx.post(
            f"{server.url}/v1/jobs",
            json={"teacher": "tiny-test", "dataset": "folder", "root": str(root)},
        )
        assert answer.status_code == 403, (root, answer.text)  # fmt: skip
        assert "allow-root" in answer.json()["error"]
    job = {"teacher": "tiny-test", "dataset": "folder", "root": str(allowed / "ds")}
    answer = httpx.post(f"{server.url}/v1/jobs", json=job)
    assert answer.status_code == 200, answer.text
    state = _wait_job(server.url, answer.json()["id"])
    assert state["state"] == "done" and state["done"] == 10, state
    store, ref = open_store(state["store"]), open_store(local_store)
    np.testing.assert_array_equal(store.done, ref.done)
    np.testing.assert_allclose(store.read(range(10)).embeddings, ref.read(range(10)).embeddings,
                               atol=2e-3)  # fmt: skip
    assert httpx.get(f"{server.url}/v1/jobs/nope").status_code == 404


def test_extract_through_the_server_equals_a_local_run(server, data, local_store, tmp_path):
    path = tmp_path / "remote.zarr"
    result = east("extract", *EXTRACT, "--root", data, "--store", path, "--server", server.url)
    assert result.code == 0, str(result)
    remote, local = open_store(path), open_store(local_store)
    for key in ("teacher", "weights_sha256", "max_frames", "dim", "sample_rate"):
        assert remote.attrs[key] == local.attrs[key], key
    for name in ("status", "num_frames", "num_samples", "embeddings", "frame_times"):
        np.testing.assert_array_equal(remote.array(name)[:], local.array(name)[:], err_msg=name)


def test_repeats_survive_a_restart_and_a_sigkill(tmp_path, data):
    cache = tmp_path / "cache"
    files = _files(data)
    srv = Server("--cache-dir", cache)
    try:
        assert _post(srv.url, files[0].read_bytes()).json()["cached"] is False
        with ThreadPoolExecutor(8) as pool:  # a SIGKILL while batches are in flight
            pending = [pool.submit(_post, srv.url, f.read_bytes()) for f in files[1:]]
            time.sleep(0.05)
            srv.stop(signal.SIGKILL)
            for fut in pending:
                with contextlib.suppress(httpx.HTTPError):
                    fut.result()
    finally:
        if srv.proc.poll() is None:
            srv.stop(signal.SIGKILL)
    verify = east("cache", "verify", cache / "clips")
    assert verify.code == 0, str(verify)
    again = Server("--cache-dir", cache)
    try:
        assert _post(again.url, files[0].read_bytes()).json()["cached"] is True
        assert _post(again.url, files[5].read_bytes()).status_code == 200
    finally:
        assert again.stop() == 0


def test_a_cancelled_job_keeps_its_chunks_and_resumes(allowed, tmp_path):
    srv = Server("--cache-dir", tmp_path, "--allow-root", allowed,
                 env=east_env(EAST_TINY_SLEEP="0.15"))  # fmt: skip
    try:
        job = {"teacher": "tiny-test", "dataset": "folder", "root": str(allowed / "ds"),
               "batch_size": 2, "chunk_clips": 2}  # fmt: skip
        job_id = httpx.post(f"{srv.url}/v1/jobs", json=job).json()["id"]
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            state = httpx.get(f"{srv.url}/v1/jobs/{job_id}").json()
            if state["state"] == "running" and state["done"] >= 2:
                break
            time.sleep(0.05)
        cancelled = httpx.delete(f"{srv.url}/v1/jobs/{job_id}").json()
        assert cancelled["id"] == job_id
        state = _wait_job(srv.url, job_id)
        assert state["state"] == "cancelled", state
        store = open_store(state["store"])
        assert 0 < int(store.done.sum()) < 10  # stopped partway, finished chunks kept
        assert east("cache", "verify", state["store"]).code == 1  # (pending clips: exit 1)
        again = _wait_job(srv.url, httpx.post(f"{srv.url}/v1/jobs", json=job).json()["id"])
        assert again["state"] == "done" and int(open_store(again["store"]).done.sum()) == 10
    finally:
        assert srv.stop() == 0


def test_batches_on_dask_workers_give_the_same_rows(data, local_store):
    srv = Server("--scheduler", "local:2")
    try:
        store = open_store(local_store)
        files = _files(data)
        with ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(lambda f: _post(srv.url, f.read_bytes()), files))
        for path, answer in zip(files, answers, strict=True):
            assert answer.status_code == 200, answer.text
            row = store.clip_ids.index(f"{path.parent.name}/{path.stem}")
            nf = int(store.read([row]).num_frames[0])
            np.testing.assert_array_equal(np.asarray(answer.json()["embeddings"], np.float32),
                                          store.read([row]).embeddings[0, :nf])  # fmt: skip
    finally:
        assert srv.stop(signal.SIGINT) == 0  # Ctrl-C stops as gracefully as SIGTERM


@pytest.mark.shared
def test_real_tagger_on_real_clips_equals_east_extract(esc50_root, tagger_weights, tmp_path):
    """The real fcn-msd tagger on 32 real ESC-50 clips: 16 concurrent clients get the rows
    `east extract` writes (within float16 rounding)."""
    root = tmp_path / "real"
    clips = sorted((esc50_root / "audio").glob("*"))[:32]
    for i, clip in enumerate(clips):
        folder = root / f"c{i % 2}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / clip.name).symlink_to(clip)
    env = east_env(EAST_WEIGHTS_DIR=str(tagger_weights.parent))
    store = tmp_path / "s.zarr"
    made = east("extract", "--teacher", "fcn-msd", "--dataset", "folder", "--root", root,
                "--store", store, "-q", env=env)  # fmt: skip
    assert made.code == 0, str(made)
    cmd = [sys.executable, "-m", "east", "serve", "--teacher", "fcn-msd", "--port", "0",
           "--decode-workers", "1"]  # fmt: skip
    proc = subprocess.Popen(cmd, env=env, stderr=subprocess.PIPE, text=True)
    try:
        line = ""
        deadline = time.monotonic() + 120
        while "serving on" not in line and time.monotonic() < deadline and proc.poll() is None:
            line = proc.stderr.readline()
        url = line.split("serving on", 1)[1].strip()
        files = sorted(root.rglob("*.flac")) or sorted(root.rglob("*.*"))
        with ThreadPoolExecutor(16) as pool:
            answers = list(pool.map(lambda f: _post(url, f.read_bytes(), "fcn-msd"), files))
        ref = open_store(store)
        for path, answer in zip(files, answers, strict=True):
            assert answer.status_code == 200, answer.text
            row = ref.clip_ids.index(f"{path.parent.name}/{path.stem}")
            want = ref.read([row])
            nf = int(want.num_frames[0])
            got = np.asarray(answer.json()["embeddings"], np.float32)
            assert got.shape == want.embeddings[0, :nf].shape
            np.testing.assert_allclose(got, want.embeddings[0, :nf], atol=2e-3, rtol=2e-3)
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0


@pytest.mark.parametrize(
    ("extra", "fragment"),
    [
        (("--max-batch", "0"), "--max-batch"),
        (("--max-queue", "0"), "--max-queue"),
        (("--max-wait-ms", "-1"), "--max-wait-ms"),
        (("--max-body-mb", "0"), "--max-body-mb"),
        (("--decode-workers", "0"), "--decode-workers"),
        (("--weights", "nonsense"), "NAME=PATH"),
        (("--weights", "other=/x.pt"), "not a --teacher"),
        (("--allow-root", "/no/such/folder"), "--allow-root"),
        (("--scheduler", "bogus"), "--scheduler"),
        (("--teacher", "no-such-teacher"), "unknown teacher"),
    ],
)
def test_impossible_serve_options_are_one_line(tmp_path, extra, fragment):
    result = east("serve", *TINY, "--port", "0", *extra, timeout=60)
    assert_one_line_error(result, fragment)


def test_serve_cache_dir_naming_a_file_is_refused(tmp_path):
    target = tmp_path / "file"
    target.write_text("mine")
    assert_one_line_error(east("serve", *TINY, "--port", "0", "--cache-dir", target), "is a file")
    assert target.read_text() == "mine"
