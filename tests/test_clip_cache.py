"""The clip cache (``east.clip_cache``): round trips, identity separation, torn entries,
concurrent writers, SIGKILLed writers, refused roots and ``east cache info/verify``."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from east.clip_cache import (
    MARKER,
    TEMP_GRACE_S,
    ClipCache,
    identity_id,
    identity_of,
    make_identity,
    sha256_bytes,
    sha256_file,
)
from east.errors import CacheError
from east.extract.teachers.base import TeacherInfo
from hostile import assert_one_line_error, assert_unchanged, east, snapshot

W1, W2 = "a" * 64, "b" * 64


def ident(weights: str = W1, dtype: str = "float16", **kw: object) -> dict:
    return make_identity("fcn-msd", weights, 16000, 1.024, 1.024, dtype=dtype, **kw)


def key(name: str) -> str:
    return sha256_bytes(name.encode())


def value(sha: str, dim: int = 16) -> tuple[np.ndarray, np.ndarray, int]:
    """Deterministic (embeddings float32, frame_times, num_samples) of a key."""
    seed = int(sha[:8], 16)
    frames = 1 + seed % 7
    emb = np.random.default_rng(seed).standard_normal((frames, dim)).astype(np.float32)
    starts = np.arange(frames) * 1.024
    return emb, np.stack([starts, starts + 1.024], axis=1), 16384 * frames + seed % 100


def assert_entry(cache: ClipCache, sha: str, identity: dict, dim: int = 16) -> None:
    entry = cache.get(sha, identity)
    assert entry is not None, sha
    emb, times, n = value(sha, dim)
    assert entry.embeddings.dtype == np.dtype(identity["dtype"])
    assert np.array_equal(entry.embeddings, emb.astype(identity["dtype"]))
    assert entry.frame_times.dtype == np.float64 and np.array_equal(entry.frame_times, times)
    assert entry.num_samples == n and entry.num_frames == emb.shape[0]


def put(cache: ClipCache, sha: str, identity: dict, dim: int = 16) -> Path:
    return cache.put(sha, identity, *value(sha, dim))


def temp_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob(".east-tmp-*") if p.is_file())


# ---------------------------------------------------------------------------- basics


@pytest.mark.parametrize("dtype", ["float16", "float32"])
def test_round_trip_exact(tmp_path: Path, dtype: str) -> None:
    cache = ClipCache(tmp_path / "cc")
    identity = ident(dtype=dtype)
    shas = [key(f"clip{i}") for i in range(5)]
    for sha in shas:
        put(cache, sha, identity)
    reopened = ClipCache(tmp_path / "cc", create=False)
    for sha in shas:
        assert_entry(reopened, sha, identity)
    assert reopened.get(key("never stored"), identity) is None
    summary = reopened.info()
    assert summary.entries == 5 and len(summary.groups) == 1
    assert summary.groups[0].identity == identity and summary.bytes > 0
    assert reopened.verify().ok and reopened.verify().sound == 5


def test_layout_and_identity_file(tmp_path: Path) -> None:
    cache = ClipCache(tmp_path / "cc")
    identity = ident()
    sha = key("x")
    path = put(cache, sha, identity)
    gid = identity_id(identity)
    assert path == tmp_path / "cc" / gid / sha[:2] / f"{sha}.npz" == cache.path_of(sha, identity)
    assert json.loads((tmp_path / "cc" / gid / "identity.json").read_text()) == identity
    marker = json.loads((tmp_path / "cc" / MARKER).read_text())
    assert marker["kind"] == "east-clip-cache" and marker["version"] == 1
    with np.load(path, allow_pickle=False) as z:  # a plain npz, readable without east
        assert z["embeddings"].dtype == np.float16 and z["frame_times"].shape[1] == 2
    assert temp_files(tmp_path) == []


def test_identity_of_teacher_and_canonical_id() -> None:
    info = TeacherInfo("fcn-msd", "taggers", 16000, 128, 1.024, 1.024)
    teacher = SimpleNamespace(info=info, weights_sha256=W1)
    identity = identity_of(teacher)
    assert identity == ident()
    assert identity["clip_level"] is False and identity["dtype"] == "float16"
    assert identity["clip_cache_version"] == 1
    reordered = dict(reversed(list(identity.items())))
    assert identity_id(reordered) == identity_id(identity) and len(identity_id(identity)) == 16
    # 1 and 1.0 are the same framing; a string sample rate is the same rate
    same = make_identity("fcn-msd", W1, "16000", 1.024, 1.024)  # type: ignore[arg-type]
    assert identity_id(same) == identity_id(identity)
    panns = SimpleNamespace(info=TeacherInfo("panns", "panns", 32000, 2048, None, None))
    clip = identity_of(panns)
    assert clip["clip_level"] is True and clip["weights_sha256"] == "random"
    ids = {
        identity_id(x)
        for x in (
            identity,
            ident(W2),
            ident(dtype="float32"),
            ident(max_seconds=10),
            clip,
            {**identity, "clip_cache_version": 2},
        )
    }
    assert len(ids) == 6
    with pytest.raises(ValueError, match="dtype"):
        make_identity("t", W1, 16000, 1.0, 1.0, dtype="int8")
    with pytest.raises(ValueError, match="lacks"):
        identity_id({"teacher": "t"})


def test_identity_separation(tmp_path: Path) -> None:
    cache = ClipCache(tmp_path / "cc")
    sha = key("shared audio")
    put(cache, sha, ident(W1))
    assert cache.get(sha, ident(W2)) is None  # other weights: a miss
    assert cache.get(sha, ident(W1, dtype="float32")) is None
    assert cache.get(sha, ident(W1, max_seconds=2.0)) is None
    assert cache.get(sha, ident(W1, framing="uncentred")) is None  # other windows: a miss
    other = np.ones((3, 16), np.float32), np.array([[0, 1], [1, 2], [2, 3]], float), 7
    cache.put(sha, ident(W2), *other)
    assert_entry(cache, sha, ident(W1))  # untouched by the other group
    assert np.array_equal(cache.get(sha, ident(W2)).embeddings, other[0])  # type: ignore[union-attr]
    assert len(cache.info().groups) == 2


def test_bad_arguments_write_nothing(tmp_path: Path) -> None:
    cache = ClipCache(tmp_path / "cc")
    emb, times, n = value(key("a"))
    for bad in ("../../../etc/passwd", "A" * 64, key("a")[:63], 5):
        with pytest.raises(ValueError, match="64 lowercase hex"):
            cache.put(bad, ident(), emb, times, n)  # type: ignore[arg-type]
        with pytest.raises(ValueError):
            cache.get(bad, ident())  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="frame_times"):
        cache.put(key("a"), ident(), emb, times[:-1], n)
    with pytest.raises(ValueError, match="T, D"):
        cache.put(key("a"), ident(), emb[0], times, n)
    with pytest.raises(ValueError, match="finite"):
        cache.put(key("a"), ident(), np.full_like(emb, np.nan), times, n)
    with pytest.raises(ValueError, match="num_samples"):
        cache.put(key("a"), ident(), emb, times, -1)
    assert sorted(p.name for p in (tmp_path / "cc").rglob("*")) == [MARKER]


def test_sha256_helpers(tmp_path: Path) -> None:
    data = np.random.default_rng(0).bytes(3 * (1 << 20) + 17)
    path = tmp_path / "clip.wav"
    path.write_bytes(data)
    assert sha256_bytes(data) == hashlib.sha256(data).hexdigest() == sha256_file(path)
    assert sha256_file(path, block=1000) == sha256_bytes(data)


def test_hit_latency(tmp_path: Path) -> None:
    """A hit of a 5 s clip (PaSST-sized: 50 frames x 768 dims) is well under 10 ms."""
    cache = ClipCache(tmp_path / "cc")
    sha = key("five seconds")
    times = np.stack([np.arange(50) * 0.1, np.arange(50) * 0.1 + 1.0], axis=1)
    cache.put(sha, ident(), np.ones((50, 768), np.float32), times, 160000)
    laps = []
    for _ in range(200):
        start = time.perf_counter()
        assert cache.get(sha, ident()) is not None
        laps.append(time.perf_counter() - start)
    p50 = float(np.median(laps))
    assert p50 < 0.005, f"cache hit p50 {p50 * 1e3:.2f} ms"


# ---------------------------------------------------------------------------- damage


class Planted:
    """Unpickling it makes a folder: proof that an entry was unpickled."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple:
        return os.mkdir, (str(self.path),)


def _damage(cache: ClipCache, identity: dict) -> dict[str, str]:
    """Damage five entries in five ways (one holds a pickle); returns ``sha -> how``."""
    shas = {how: key(how) for how in ("truncated", "garbage", "changed", "moved", "pickle")}
    for sha in [*shas.values(), key("sound")]:
        put(cache, sha, identity)
    path = {how: cache.path_of(sha, identity) for how, sha in shas.items()}
    data = path["truncated"].read_bytes()
    path["truncated"].write_bytes(data[: len(data) // 2])
    path["garbage"].write_bytes(np.random.default_rng(1).bytes(len(data)))
    with np.load(path["changed"], allow_pickle=False) as z:
        arrays = {name: z[name] for name in z.files}
    arrays["embeddings"][0, 0] += 1  # same checksum, other values
    with open(path["changed"], "wb") as f:
        np.savez(f, **arrays)
    path["moved"].write_bytes(cache.path_of(key("sound"), identity).read_bytes())
    arrays["embeddings"] = np.array([Planted(path["pickle"].parent / "PWNED")], dtype=object)
    with open(path["pickle"], "wb") as f:
        np.savez(f, **arrays)
    return {sha: how for how, sha in shas.items()}


def test_torn_entries_read_as_absent_verify_and_repair(tmp_path: Path) -> None:
    cache = ClipCache(tmp_path / "cc")
    identity = ident()
    damaged = _damage(cache, identity)
    for sha in damaged:
        assert cache.get(sha, identity) is None, damaged[sha]
    assert_entry(cache, key("sound"), identity)
    report = cache.verify()
    assert not (cache.path_of(key("pickle"), identity).parent / "PWNED").exists()
    assert not report.ok and report.entries == 6 and report.sound == 1
    assert {sha for _, sha, _ in report.damaged} == set(damaged)
    assert all(g == identity_id(identity) for g, _, _ in report.damaged)
    assert len(report.problems) == 5 and all(" entry " in p for p in report.problems)
    assert cache.repair(report) == (5, 0)
    for sha in damaged:
        assert not cache.path_of(sha, identity).exists()
    assert_entry(cache, key("sound"), identity)
    assert cache.verify().ok
    for sha in damaged:  # recomputed on demand
        put(cache, sha, identity)
        assert_entry(cache, sha, identity)


def test_repair_keeps_an_entry_rewritten_since_the_report(tmp_path: Path) -> None:
    cache = ClipCache(tmp_path / "cc")
    sha = key("c")
    path = put(cache, sha, ident())
    path.write_bytes(b"torn")
    report = cache.verify()
    put(cache, sha, ident())  # a writer fixed it meanwhile
    assert cache.repair(report) == (0, 0)
    assert_entry(cache, sha, ident())


def test_damaged_identity_file_is_reported_and_rewritten(tmp_path: Path) -> None:
    cache = ClipCache(tmp_path / "cc")
    put(cache, key("a"), ident())
    ident_file = tmp_path / "cc" / identity_id(ident()) / "identity.json"
    ident_file.write_text('{"teacher": "forged"}')
    report = ClipCache(tmp_path / "cc").verify()
    assert report.bad_identity == [identity_id(ident())] and not report.ok
    assert report.damaged == []  # the entries themselves are sound
    assert ClipCache(tmp_path / "cc").info().groups[0].identity is None
    put(ClipCache(tmp_path / "cc"), key("b"), ident())  # a new writer rewrites it
    assert json.loads(ident_file.read_text()) == ident()
    assert ClipCache(tmp_path / "cc").verify().ok


def test_temp_files_ignored_and_only_stale_ones_removed(tmp_path: Path) -> None:
    cache = ClipCache(tmp_path / "cc")
    sha = key("t")
    path = put(cache, sha, ident())
    stale = path.parent / f".east-tmp-{'0' * 32}.npz"
    fresh = path.parent / f".east-tmp-{'1' * 32}.npz"
    user = [path.parent / "notes.txt", path.parent / ".east-tmp-mine.npz", tmp_path / "cc" / "x"]
    for p in (stale, fresh, *user):
        p.write_bytes(b"partial")
    old = time.time() - TEMP_GRACE_S - 5
    os.utime(stale, (old, old))
    os.utime(user[1], (old, old))
    assert_entry(cache, sha, ident())
    report = cache.verify()
    assert report.ok and report.stale_temp == [stale] and report.entries == 1
    assert any("leftover temp" in n for n in report.notes)
    assert sum("left alone" in n for n in report.notes) == 4  # 3 foreign files + 1 fresh temp
    assert cache.repair(report) == (0, 1)
    assert not stale.exists() and fresh.exists() and all(p.exists() for p in user)


# ---------------------------------------------------------------------------- roots


def test_refuses_a_file_root(tmp_path: Path) -> None:
    root = tmp_path / "file"
    root.write_bytes(b"user data")
    with pytest.raises(CacheError, match="is a file"):
        ClipCache(root)
    assert root.read_bytes() == b"user data"


def test_refuses_a_foreign_folder(tmp_path: Path) -> None:
    root = tmp_path / "mine"
    (root / "sub").mkdir(parents=True)
    (root / "photo.jpg").write_bytes(b"jpeg")
    (root / "sub" / "identity.json").write_text("{}")
    before = snapshot(root)
    with pytest.raises(CacheError, match="not a clip cache") as exc:
        ClipCache(root)
    assert "\n" not in str(exc.value)
    with pytest.raises(CacheError, match="no clip cache"):
        ClipCache(root, create=False)
    assert_unchanged(root, before)


def test_refuses_foreign_or_newer_marker(tmp_path: Path) -> None:
    root = tmp_path / "cc"
    ClipCache(root)
    (root / MARKER).write_text(json.dumps({"kind": "east-clip-cache", "version": 99}))
    with pytest.raises(CacheError, match="upgrade east"):
        ClipCache(root)
    (root / MARKER).write_text(json.dumps({"kind": "something-else", "version": 1}))
    with pytest.raises(CacheError, match="not an east clip-cache marker"):
        ClipCache(root)
    (root / MARKER).write_text("not json")
    with pytest.raises(CacheError):
        ClipCache(root)


def test_creates_in_empty_or_new_folder_only_when_asked(tmp_path: Path) -> None:
    with pytest.raises(CacheError, match="no clip cache"):
        ClipCache(tmp_path / "new", create=False)
    assert not (tmp_path / "new").exists()
    (tmp_path / "empty").mkdir()
    ClipCache(tmp_path / "empty")
    assert (tmp_path / "empty" / MARKER).is_file()
    # a racing creator's temp marker does not make the folder foreign
    (tmp_path / "racing").mkdir()
    (tmp_path / "racing" / f".east-tmp-{'2' * 32}.json").write_text("{}")
    ClipCache(tmp_path / "racing")
    ClipCache(tmp_path / "deep" / "er")
    assert (tmp_path / "deep" / "er" / MARKER).is_file()


# ---------------------------------------------------------------------------- concurrency

WRITER = """
import sys
from east.clip_cache import ClipCache, make_identity, sha256_bytes
sys.path.insert(0, {tests!r})
from test_clip_cache import ident, key, value
cache = ClipCache({root!r})
names = {names!r}
for i in range({rounds}):
    for name in names:
        sha = key(name)
        cache.put(sha, ident(), *value(sha))
print("done", flush=True)
"""


def test_concurrent_writers_processes_and_threads(tmp_path: Path) -> None:
    root = tmp_path / "cc"
    shared = [f"shared{i}" for i in range(6)]
    procs = []
    for w in range(3):
        names = shared + [f"own{w}-{i}" for i in range(4)]
        script = WRITER.format(
            tests=str(Path(__file__).parent), root=str(root), names=names, rounds=6
        )
        procs.append(subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE))
    stop = threading.Event()

    def thread_writer(t: int) -> None:
        cache = ClipCache(root)
        while not stop.is_set():
            for name in shared:
                put(cache, key(name), ident())

    def read_while_writing() -> int:
        """Every hit during the writes holds exactly the right value."""
        cache, hits = ClipCache(root), 0
        while not stop.is_set():
            for name in shared:
                if cache.get(key(name), ident()) is not None:
                    assert_entry(cache, key(name), ident())
                    hits += 1
        return hits

    with ThreadPoolExecutor(3) as pool:
        futures = [pool.submit(thread_writer, t) for t in range(2)]
        reader = pool.submit(read_while_writing)
        try:
            outs = [proc.communicate(timeout=60)[0] for proc in procs]
        finally:
            stop.set()
            for proc in procs:
                proc.kill()
        assert all(p.returncode == 0 and b"done" in out for p, out in zip(procs, outs, strict=True))
        for f in futures:
            f.result()
        assert reader.result() > 0
    cache = ClipCache(root, create=False)
    report = cache.verify()
    assert report.ok and report.entries == 6 + 3 * 4 and report.stale_temp == []
    for name in [*shared, *(f"own{w}-{i}" for w in range(3) for i in range(4))]:
        assert_entry(cache, key(name), ident())
    assert temp_files(root) == []


HANG_BEFORE_RENAME = """
import os, sys, time
import numpy as np
from east.clip_cache import ClipCache, make_identity
real = os.replace
def replace(src, dst):
    if str(dst).endswith(".npz"):
        print("ready", flush=True)
        time.sleep(60)
    real(src, dst)
os.replace = replace
ident = make_identity("fcn-msd", "a" * 64, 16000, 1.024, 1.024)
cache = ClipCache({root!r})
cache.put({sha!r}, ident, np.ones((5, 16), np.float32), np.zeros((5, 2)), 10)
"""


def test_sigkill_before_rename_leaves_no_entry(tmp_path: Path) -> None:
    root = tmp_path / "cc"
    cache = ClipCache(root)
    put(cache, key("other"), ident())
    sha = key("killed")
    script = HANG_BEFORE_RENAME.format(root=str(root), sha=sha)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE)
    assert proc.stdout is not None and proc.stdout.readline() == b"ready\n"
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    assert cache.get(sha, ident()) is None and not cache.path_of(sha, ident()).exists()
    (temp,) = temp_files(root)  # the written, fsynced, never renamed temp file
    assert temp.parent == cache.path_of(sha, ident()).parent and temp.stat().st_size > 0
    report = cache.verify()
    assert report.ok and report.entries == 1 and report.stale_temp == []
    assert cache.repair(report) == (0, 0) and temp.exists()  # may be a live writer's
    old = time.time() - TEMP_GRACE_S - 1
    os.utime(temp, (old, old))
    assert cache.repair() == (0, 1) and temp_files(root) == []
    assert_entry(cache, key("other"), ident())


KILL_LOOP = """
import numpy as np
from east.clip_cache import ClipCache, make_identity, sha256_bytes
ident = make_identity("fcn-msd", "a" * 64, 16000, 1.024, 1.024, dtype="float32")
cache = ClipCache({root!r})
base = np.arange(4000 * 512, dtype=np.float32).reshape(4000, 512)
for i in range(10_000):
    sha = sha256_bytes(str({seed} + i % 5).encode())
    cache.put(sha, ident, base + int(sha[:4], 16), np.zeros((4000, 2)), int(sha[:4], 16))
    print(sha, flush=True)
"""


def test_sigkill_mid_put_at_random_times(tmp_path: Path) -> None:
    """8 MB entries written in a loop, SIGKILLed at random moments: every entry that is there
    is exactly right, and the cache verifies."""
    root = tmp_path / "cc"
    ClipCache(root)
    identity = ident(dtype="float32")
    rng = np.random.default_rng(0)
    written: set[str] = set()
    for round_ in range(6):
        script = KILL_LOOP.format(root=str(root), seed=round_ * 3)
        proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE)
        assert proc.stdout is not None
        written.add(proc.stdout.readline().decode().strip())  # it is writing the next one now
        time.sleep(float(rng.uniform(0.0, 0.1)))
        proc.send_signal(signal.SIGKILL)
        out, _ = proc.communicate(timeout=10)
        written |= {line for line in out.decode().split() if len(line) == 64}
    cache = ClipCache(root, create=False)
    report = cache.verify()
    assert report.ok, report.problems
    base = np.arange(4000 * 512, dtype=np.float32).reshape(4000, 512)
    for sha in written:  # every finished put reads back, exactly
        entry = cache.get(sha, identity)
        assert entry is not None and entry.num_samples == int(sha[:4], 16)
        assert np.array_equal(entry.embeddings, base + int(sha[:4], 16))
    assert report.entries >= len(written)


# ---------------------------------------------------------------------------- CLI


def test_cli_info_verify_repair(tmp_path: Path) -> None:
    root = tmp_path / "cc"
    cache = ClipCache(root)
    for i in range(3):
        put(cache, key(f"a{i}"), ident())
    panns = make_identity("panns", W2, 32000, None, None)
    put(cache, key("p"), panns)

    info = east("cache", "info", root)
    assert info.code == 0, str(info)
    lines = info.stdout.splitlines()
    assert "2 groups, 4 entries" in lines[0]
    fcn = next(line for line in lines if identity_id(ident()) in line)
    assert "fcn-msd" in fcn and W1[:12] in fcn and "3 entries" in fcn and "1.024" in fcn
    pan = next(line for line in lines if identity_id(panns) in line)
    assert "panns" in pan and W2[:12] in pan and "1 entries" in pan and "clip level" in pan

    sound = east("cache", "verify", root)
    assert sound.code == 0 and "4/4 entries sound" in sound.stdout and "ok" in sound.stdout

    bad = cache.path_of(key("a1"), ident())
    bad.write_bytes(bad.read_bytes()[:-10])
    stale = bad.parent / f".east-tmp-{'3' * 32}.npz"
    stale.write_bytes(b"x")
    old = time.time() - TEMP_GRACE_S - 5
    os.utime(stale, (old, old))
    broken = east("cache", "verify", root)
    assert broken.code == 1 and "Traceback" not in broken.stderr, str(broken)
    assert len(broken.err_lines) == 1 and identity_id(ident()) in broken.err_lines[0]
    assert key("a1") in broken.err_lines[0] and "leftover temp" in broken.stdout

    repaired = east("cache", "verify", root, "--repair")
    assert repaired.code == 1 and "removed 1 damaged entries" in repaired.stdout, str(repaired)
    assert not bad.exists() and not stale.exists()
    again = east("cache", "verify", root)
    assert again.code == 0 and "3/3 entries sound" in again.stdout, str(again)

    mixed = east("cache", "verify", root, "--dataset", "esc50", "--root", tmp_path)
    assert_one_line_error(mixed, "clip cache")
    assert "clip cache" in east("cache", "verify", "--help").stdout


def test_cli_store_behaviour_kept_for_other_folders(tmp_path: Path) -> None:
    (tmp_path / "plain").mkdir()
    (tmp_path / "plain" / "clip.wav").write_bytes(b"RIFF")
    before = snapshot(tmp_path / "plain")
    assert_one_line_error(east("cache", "info", tmp_path / "plain"), "no east cache")
    assert_one_line_error(east("cache", "verify", tmp_path / "plain"), "no east cache")
    assert_unchanged(tmp_path / "plain", before)
