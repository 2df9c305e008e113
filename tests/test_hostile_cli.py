"""Hostile tests of the command line outside training and extraction internals: devices,
``east report``, ``east teachers``, ``east students``, ``east cache info/verify``, the help of
every command, the error printing of ``east.cli.main`` and impossible ``east extract`` /
``east cache audio`` values. Every refusal must be one line on stderr with exit code 2, no
traceback, and leave every file the user gave unchanged."""

from __future__ import annotations

import csv
import errno
import json
import os
import subprocess
import zipfile
from pathlib import Path

import pytest

from east.errors import EastError
from east.settings import best_device
from hostile import (
    assert_one_line_error,
    assert_unchanged,
    east,
    east_env,
    small_disk,
    snapshot,
    unmount,
)

# ------------------------------------------------------------------------------ devices


class _FakeCuda:
    """Stands in for ``torch.cuda`` with ``count`` GPUs."""

    def __init__(self, count: int) -> None:
        self.count = count

    def is_available(self) -> bool:
        return self.count > 0

    def device_count(self) -> int:
        return self.count


@pytest.fixture
def gpus(monkeypatch: pytest.MonkeyPatch):
    """``gpus(n, mps=False)`` makes this process look like a machine with n GPUs."""
    import torch

    def make(count: int, mps: bool = False) -> None:
        monkeypatch.setattr(torch, "cuda", _FakeCuda(count))
        monkeypatch.setattr(torch.backends.mps, "is_available", lambda: mps)

    return make


@pytest.mark.parametrize("requested", ["cuda", "cuda:0", "cuda:7", "mps", "tpu", "gpu", "", "xla"])
def test_best_device_refuses_what_a_cpu_machine_lacks(gpus, requested: str) -> None:
    gpus(0)
    with pytest.raises(EastError) as info:
        best_device(requested)
    message = str(info.value)
    assert "\n" not in message
    assert repr(requested) in message and "auto, cpu" in message, message


def test_best_device_names_the_gpus_there_are(gpus) -> None:
    gpus(2)
    assert best_device("cuda") == "cuda"
    assert best_device("cuda:1") == "cuda:1"
    assert best_device("auto") == "cuda"
    with pytest.raises(EastError, match=r"'cuda:7'.*cuda:0, cuda:1"):
        best_device("cuda:7")
    with pytest.raises(EastError, match="'mps'"):
        best_device("mps")


def test_best_device_auto_and_cpu_always_work(gpus) -> None:
    gpus(0)
    assert best_device(None) == "cpu"
    assert best_device("auto") == "cpu"
    assert best_device("cpu") == "cpu"
    assert best_device(" CPU ") == "cpu"
    gpus(0, mps=True)
    assert best_device("auto") == "mps"
    assert best_device("mps") == "mps"


def _cuda_here() -> bool:
    import torch

    return torch.cuda.is_available()


@pytest.fixture(scope="module")
def esc50(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny ESC-50 layout (2 classes × 2 clips, folds 1–2, 1 s at 8 kHz)."""
    from east.testing.layouts import make_esc50

    root = tmp_path_factory.mktemp("esc50")
    return make_esc50(root, num_classes=2, clips_per_class=2, folds=(1, 2), seconds=1.0, sr=8000)


def _extract(esc50: Path, *args: str | Path) -> tuple[str | Path, ...]:
    return (
        "extract",
        "--plugin",
        "east_tiny_teacher",
        "--teacher",
        "tiny-test",
        "--dataset",
        "esc50",
        "--root",
        esc50,
        "--num-workers",
        "0",
        "--quiet",
        *args,
    )


def test_extract_with_an_unknown_device(esc50: Path, tmp_path: Path) -> None:
    before = snapshot(esc50)
    store = tmp_path / "tiny.zarr"
    result = east(*_extract(esc50, "--store", store, "--device", "tpu"))
    assert_one_line_error(result, "'tpu'", "auto, cpu")
    assert not store.exists()
    assert_unchanged(esc50, before)


@pytest.mark.skipif(_cuda_here(), reason="this machine has CUDA")
def test_eval_on_cuda_without_cuda(tmp_path: Path) -> None:
    result = east("eval", tmp_path / "run", "--device", "cuda")
    assert_one_line_error(result, "'cuda'", "auto, cpu")


@pytest.mark.skipif(_cuda_here(), reason="this machine has CUDA")
def test_students_list_on_cuda_without_cuda() -> None:
    assert_one_line_error(east("students", "list", "--device", "cuda", "--iters", "0"), "'cuda'")


def test_students_list_on_a_device_that_does_not_exist() -> None:
    assert_one_line_error(east("students", "list", "--device", "tpu", "--iters", "0"), "'tpu'")


def test_students_list_with_an_unknown_mode() -> None:
    assert_one_line_error(east("students", "list", "--mode", "fly", "--iters", "0"), "--mode")


# ------------------------------------------------------------------------------ report


def _write_run(folder: Path, seed: int = 1, accuracy: float = 0.5) -> Path:
    """A minimal finished run directory (config.yaml + test_results.json + run_info.json)."""
    folder.mkdir(parents=True)
    (folder / "config.yaml").write_text(
        f"system: baseline\nseed: {seed}\ndataset:\n  name: esc50\n  train_fraction: 1.0\n"
        "student:\n  name: mobile_fcn\n"
    )
    (folder / "run_info.json").write_text(json.dumps({"dataset": "esc50", "task": "multiclass"}))
    (folder / "metrics.jsonl").write_text(json.dumps({"step": 10, "seconds": 2.0}) + "\n")
    (folder / "test_results.json").write_text(json.dumps({"test_accuracy": accuracy}))
    return folder


def _report(runs: Path, out: Path, *more: str) -> tuple[str | Path, ...]:
    return ("report", runs, "--out", out, "--no-figures", "--no-count-params", *more)


def test_report_out_naming_a_file(tmp_path: Path) -> None:
    _write_run(tmp_path / "runs" / "a")
    out = tmp_path / "report.txt"
    out.write_text("my notes")
    before = snapshot(tmp_path)
    assert_one_line_error(east(*_report(tmp_path / "runs", out)), str(out), "--out")
    assert_unchanged(tmp_path, before)


def test_report_out_below_a_file(tmp_path: Path) -> None:
    _write_run(tmp_path / "runs" / "a")
    (tmp_path / "notes").write_text("mine")
    before = snapshot(tmp_path)
    out = tmp_path / "notes" / "report"
    assert_one_line_error(east(*_report(tmp_path / "runs", out)), "notes", "--out")
    assert_unchanged(tmp_path, before)


def test_report_of_a_missing_folder(tmp_path: Path) -> None:
    result = east(*_report(tmp_path / "nope", tmp_path / "out"))
    assert_one_line_error(result, str(tmp_path / "nope"))
    assert not (tmp_path / "out").exists()


def test_report_of_a_folder_without_runs_keeps_the_previous_report(tmp_path: Path) -> None:
    _write_run(tmp_path / "runs" / "a")
    out = tmp_path / "out"
    assert east(*_report(tmp_path / "runs", out)).code == 0
    (tmp_path / "empty").mkdir()
    before = snapshot(out)
    assert_one_line_error(east(*_report(tmp_path / "empty", out)), "no finished runs")
    assert_unchanged(out, before)


def test_report_leaves_user_files_in_out_alone(tmp_path: Path) -> None:
    """Only what an earlier east report wrote is cleared; a user's own tables stay."""
    _write_run(tmp_path / "runs" / "a")
    out = tmp_path / "out"
    (out / "tables").mkdir(parents=True)
    (out / "tables" / "mine.csv").write_text("a,b\n1,2\n")
    (out / "figures").mkdir()
    (out / "figures" / "photo.png").write_bytes(b"\x89PNG not ours")
    before = snapshot(out)
    assert east(*_report(tmp_path / "runs", out)).code == 0
    after = snapshot(out)
    assert {k: after[k] for k in before} == before


BROKEN_RUN_FILES = {
    "run_info_truncated": ("run_info.json", '{"dataset": "esc'),
    "run_info_a_list": ("run_info.json", "[1, 2]"),
    "results_truncated": ("test_results.json", '{"test_accuracy": 0.'),
    "results_a_number": ("test_results.json", "0.5"),
    "results_wrong_type": ("test_results.json", '{"test_accuracy": "high"}'),
    "metrics_truncated": ("metrics.jsonl", '{"step": 10, "seconds": 2.0}\n{"step": 2'),
    "metrics_lists": ("metrics.jsonl", "[1, 2]\n[3]\n"),
    "metrics_wrong_types": ("metrics.jsonl", '{"step": "ten", "seconds": "long"}\n'),
    "metrics_binary": ("metrics.jsonl", "\udcff\udcfe garbage"),
    "config_seed_text": ("config.yaml", "system: baseline\nseed: abc\ndataset: {name: esc50}\n"),
    "config_dataset_list": ("config.yaml", "system: baseline\nseed: 1\ndataset: [esc50]\n"),
    "config_student_number": ("config.yaml", "system: baseline\nseed: 1\nstudent: 5\n"),
    "config_fraction_text": (
        "config.yaml",
        "system: baseline\nseed: 1\ndataset: {name: esc50, train_fraction: half}\n",
    ),
    "config_teachers_text": ("config.yaml", "system: kd\nseed: 1\nteachers: [5, {cache: 7}]\n"),
    "config_truncated": ("config.yaml", "system: [baseline\n"),
}


def _break(run: Path, name: str, text: str) -> None:
    (run / name).write_bytes(text.encode("utf-8", "surrogateescape"))


#: broken optional metrics.jsonl: the run counts, its speed is "not recorded"
COUNTED_ANYWAY = {"metrics_truncated", "metrics_lists", "metrics_wrong_types", "metrics_binary"}


@pytest.mark.parametrize("case", sorted(BROKEN_RUN_FILES))
def test_report_skips_a_broken_run_and_says_so(tmp_path: Path, case: str) -> None:
    """Beside a good run a broken one is one note line naming it; the report is written."""
    name, text = BROKEN_RUN_FILES[case]
    _write_run(tmp_path / "runs" / "good", seed=1)
    bad = _write_run(tmp_path / "runs" / "bad", seed=2)
    _break(bad, name, text)
    before = snapshot(tmp_path / "runs")
    result = east(*_report(tmp_path / "runs", tmp_path / "out"))
    assert "Traceback" not in result.stderr, str(result)
    assert result.code == 0, str(result)
    with open(tmp_path / "out" / "results.csv") as f:
        counts = [row["n"] for row in csv.DictReader(f)]
    named = [line for line in result.err_lines if str(bad) in line]
    if case in COUNTED_ANYWAY:
        assert counts == ["2"] and not named, str(result)
    else:
        assert counts == ["1"], str(result)
        assert len(named) == 1 and name in named[0], str(result)
    assert_unchanged(tmp_path / "runs", before)


@pytest.mark.parametrize("case", ["run_info_truncated", "results_truncated", "config_seed_text"])
def test_report_of_only_broken_runs_is_one_line_naming_them(tmp_path: Path, case: str) -> None:
    name, text = BROKEN_RUN_FILES[case]
    bad = _write_run(tmp_path / "runs" / "bad")
    _break(bad, name, text)
    before = snapshot(tmp_path / "runs")
    result = east(*_report(tmp_path / "runs", tmp_path / "out"))
    assert_one_line_error(result, "no finished runs", str(bad), name)
    assert_unchanged(tmp_path / "runs", before)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "text",
    [
        "paper,table\n",  # missing columns
        "paper,table,dataset,system,teacher,metric,value\nding2023,t1,esc50,kd,vggish,mAP\n",
        "paper,table,dataset,system,teacher,metric,value\nding2023,t1,esc50,kd,x,mAP,big\n",
        "\udcff\udcfe\x00 not text",
    ],
    ids=["missing_columns", "short_row", "not_a_number", "binary"],
)
def test_report_with_a_bad_published_results_file(tmp_path: Path, text: str) -> None:
    _write_run(tmp_path / "runs" / "a")
    published = tmp_path / "paper.csv"
    published.write_bytes(text.encode("utf-8", "surrogateescape"))
    result = east(*_report(tmp_path / "runs", tmp_path / "out", "--paper-results", str(published)))
    assert_one_line_error(result, str(published))


@pytest.mark.parametrize(
    "text",
    [
        '{"models": [5, "x"]}',
        '{"models": [{"kind": "student", "name": "mobile_fcn", "params": "many"}]}',
        '{"models": [{"kind": "teacher", "name": 5, "params": [1]}]}',
        '{"models": ',
    ],
    ids=["not_objects", "params_text", "teacher_wrong_types", "truncated"],
)
def test_report_with_a_bad_complexity_json(tmp_path: Path, text: str) -> None:
    """A broken complexity.json is one note naming it; the report goes on without it."""
    _write_run(tmp_path / "runs" / "a")
    (tmp_path / "runs" / "complexity.json").write_text(text)
    result = east(*_report(tmp_path / "runs", tmp_path / "out"))
    assert "Traceback" not in result.stderr and result.code == 0, str(result)
    named = [line for line in result.err_lines if "complexity.json" in line]
    assert len(named) == 1 and str(tmp_path / "runs") in named[0], str(result)
    assert (tmp_path / "out" / "report.md").is_file()


def test_report_unknown_format(tmp_path: Path) -> None:
    _write_run(tmp_path / "runs" / "a")
    result = east(*_report(tmp_path / "runs", tmp_path / "out", "--format", "pdf"))
    assert_one_line_error(result, "--format", "pdf")
    assert not (tmp_path / "out").exists()
    result = east(*_report(tmp_path / "runs", tmp_path / "out", "--format", ","))
    assert_one_line_error(result, "--format")
    assert not (tmp_path / "out").exists()


def test_report_on_a_full_disk(tmp_path: Path) -> None:
    _write_run(tmp_path / "runs" / "a")
    disk = small_disk(tmp_path / "disk", "64k")
    try:
        (disk / "ballast").write_bytes(b"\0" * (60 * 1024))
        before = snapshot(tmp_path / "runs")
        result = east("report", tmp_path / "runs", "--out", disk / "out", "--no-count-params")
        assert_one_line_error(result, "no space left on device", str(disk))
        assert_unchanged(tmp_path / "runs", before)
    finally:
        unmount(disk)


def test_report_on_a_read_only_disk(tmp_path: Path) -> None:
    _write_run(tmp_path / "runs" / "a")
    disk = small_disk(tmp_path / "disk", "1m")
    try:
        proc = subprocess.run(["mount", "-o", "remount,ro", str(disk)], capture_output=True)
        if proc.returncode != 0:
            pytest.skip("cannot remount the tmpfs read-only")
        result = east(*_report(tmp_path / "runs", disk / "out"))
        assert_one_line_error(result, "read-only file system", str(disk / "out"))
    finally:
        unmount(disk)


# ------------------------------------------------------------------------------ main


def test_error_message_with_markup_is_printed_literally(tmp_path: Path) -> None:
    missing = tmp_path / "runs[red]x[/red]"
    line = assert_one_line_error(east("report", missing, "--out", tmp_path / "out"))
    assert str(missing) in line


def test_error_message_with_newlines_is_one_line(tmp_path: Path) -> None:
    missing = tmp_path / "two\nlines"
    line = assert_one_line_error(east("report", missing, "--out", tmp_path / "out"))
    assert "two" in line and "lines" in line


def _main_with(monkeypatch: pytest.MonkeyPatch, capsys, exc: BaseException) -> tuple[int, str]:
    """Run ``east.cli.main.main`` with a command that raises ``exc``."""
    from east.cli import main as cli_main

    def boom() -> None:
        raise exc

    monkeypatch.setattr(cli_main, "app", boom)
    with pytest.raises(SystemExit) as info:
        cli_main.main()
    return int(info.value.code), capsys.readouterr().err


@pytest.mark.parametrize(
    "code", [errno.ENOSPC, errno.EACCES, errno.EROFS, errno.ENOENT, errno.EDQUOT]
)
def test_main_turns_path_errors_into_one_line(monkeypatch, capsys, code: int) -> None:
    exc = OSError(code, os.strerror(code), "/data/[bold]out/x.csv")
    status, err = _main_with(monkeypatch, capsys, exc)
    assert status == 2
    assert err.strip() == f"error: {os.strerror(code)}: /data/[bold]out/x.csv"


def test_main_names_both_paths_of_a_failed_rename(monkeypatch, capsys) -> None:
    exc = OSError(errno.EACCES, "Permission denied", "/a/x.tmp", None, "/a/x")
    status, err = _main_with(monkeypatch, capsys, exc)
    assert status == 2 and err.strip() == "error: Permission denied: /a/x.tmp -> /a/x"


def test_main_disk_full_without_a_path(monkeypatch, capsys) -> None:
    status, err = _main_with(monkeypatch, capsys, OSError(errno.ENOSPC, "No space left on device"))
    assert status == 2 and err.strip() == "error: No space left on device"


def test_main_keeps_the_traceback_of_other_errors(monkeypatch, capsys) -> None:
    from east.cli import main as cli_main

    def boom() -> None:
        raise OSError(errno.EIO, "Input/output error", "/x")

    monkeypatch.setattr(cli_main, "app", boom)
    with pytest.raises(OSError):
        cli_main.main()
    monkeypatch.setattr(cli_main, "app", lambda: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        cli_main.main()


def test_main_east_error_lines(monkeypatch, capsys) -> None:
    status, err = _main_with(
        monkeypatch, capsys, EastError("bad config:\n  a: wrong\n\n  b: [red]worse[/red]\n")
    )
    assert status == 2
    assert err.strip() == "error: bad config: a: wrong; b: [red]worse[/red]"


def test_usage_errors_exit_2_and_say_what_is_wrong() -> None:
    result = east("students", "list", "--batch-size", "0")
    assert result.code == 2 and "Traceback" not in result.stderr
    assert "--batch-size" in result.stderr
    result = east("no-such-command")
    assert result.code == 2 and "no-such-command" in result.stderr


# ------------------------------------------------------------------------------ help


def _command_paths() -> list[tuple[str, ...]]:
    import typer.main

    from east.cli.main import app

    paths: list[tuple[str, ...]] = []

    def walk(cmd, prefix: tuple[str, ...]) -> None:
        paths.append(prefix)
        for name, sub in sorted(getattr(cmd, "commands", {}).items()):
            walk(sub, (*prefix, name))

    walk(typer.main.get_command(app), ())
    return paths


@pytest.mark.parametrize("path", _command_paths(), ids=lambda p: " ".join(p) or "east")
def test_help_of_every_command(path: tuple[str, ...]) -> None:
    result = east(*path, "--help")
    assert result.code == 0 and not result.stderr.strip(), str(result)
    assert "Usage" in result.stdout


# ------------------------------------------------------------------------------ teachers


def test_teachers_download_unknown_name(tmp_path: Path) -> None:
    result = east("teachers", "download", "no-such-teacher", "--dest", tmp_path / "w")
    assert_one_line_error(result, "no-such-teacher")
    assert not (tmp_path / "w").exists()


def test_teachers_download_dest_is_a_file(tmp_path: Path) -> None:
    dest = tmp_path / "weights"
    dest.write_text("mine")
    before = snapshot(tmp_path)
    result = east("teachers", "download", "fcn-msd", "--dest", dest, "-q")
    assert_one_line_error(result, str(dest), "--dest")
    assert_unchanged(tmp_path, before)


def test_teachers_download_into_a_weights_dir_that_is_a_file(tmp_path: Path) -> None:
    weights = tmp_path / "weights"
    weights.write_text("mine")
    result = east(
        "teachers", "download", "fcn-msd", "-q", env=east_env(EAST_WEIGHTS_DIR=str(weights))
    )
    assert_one_line_error(result, "EAST_WEIGHTS_DIR", str(weights))
    assert weights.read_text() == "mine"


def test_teachers_convert_unknown_teacher() -> None:
    assert_one_line_error(east("teachers", "convert", "vggish-xl"), "vggish-xl", "mule")


def _zip(path: Path, files: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    return path


CONVERT_SOURCES = {
    "missing": None,
    "garbage": b"not a zip at all",
    "empty_zip": {},
    "bad_config": {"config.json": b"\xff\xfe", "model.weights.h5": b""},
    "bad_h5": {"config.json": b'{"config": {"layers": []}}', "model.weights.h5": b"garbage"},
    "lfs_pointer": b"version https://git-lfs.github.com/spec/v1\noid sha256:00\nsize 1\n",
}


@pytest.mark.parametrize("case", sorted(CONVERT_SOURCES))
def test_teachers_convert_a_bad_source(tmp_path: Path, case: str) -> None:
    content = CONVERT_SOURCES[case]
    source = tmp_path / "in" / "model.keras"
    source.parent.mkdir()
    if isinstance(content, bytes):
        source.write_bytes(content)
    elif isinstance(content, dict):
        _zip(source, content)
    before = snapshot(tmp_path)
    out = tmp_path / "mule.pt"
    result = east("teachers", "convert", "mule", "--from", source, "--out", out)
    assert_one_line_error(result, str(source))
    assert_unchanged(tmp_path, before)


def test_teachers_convert_a_folder_without_the_model(tmp_path: Path) -> None:
    (tmp_path / "clone").mkdir()
    (tmp_path / "clone" / "README").write_text("x")
    before = snapshot(tmp_path)
    result = east("teachers", "convert", "mule", "--from", tmp_path / "clone")
    assert_one_line_error(result, "no model.keras", str(tmp_path / "clone"))
    assert_unchanged(tmp_path, before)


@pytest.mark.parametrize("case", ["folder", "missing_folder", "below_a_file"])
def test_teachers_convert_a_bad_out(tmp_path: Path, case: str) -> None:
    """A bad --out is refused before converting (the source here would convert badly too,
    so only a check of --out first gives an --out message)."""
    source = tmp_path / "model.keras"
    source.write_bytes(b"not a zip")
    (tmp_path / "mine").write_text("x")
    out = {
        "folder": tmp_path,
        "missing_folder": tmp_path / "no" / "such" / "mule.pt",
        "below_a_file": tmp_path / "mine" / "mule.pt",
    }[case]
    before = snapshot(tmp_path)
    result = east("teachers", "convert", "mule", "--from", source, "--out", out)
    assert_one_line_error(result, "--out", str(out))
    assert_unchanged(tmp_path, before)


# ------------------------------------------------------------------------------ cache info / verify


def _zarr_group(path: Path, attrs: dict) -> Path:
    import zarr

    group = zarr.open_group(str(path), mode="w", zarr_format=3)
    group.attrs.update(attrs)
    group.create_array("x", shape=(3,), dtype="f4")
    return path


def _cache_target(tmp_path: Path, case: str) -> Path:
    path = tmp_path / "target"
    if case == "plain_file":
        path.write_text("hello")
    elif case == "empty_folder":
        path.mkdir()
    elif case == "unrelated_files":
        path.mkdir()
        (path / "notes.txt").write_text("mine")
        (path / "sub").mkdir()
        (path / "sub" / "a.wav").write_bytes(b"RIFF")
    elif case == "other_zarr":
        _zarr_group(path, {"foo": 1})
    elif case == "east_attrs_wrong_types":
        _zarr_group(path, {"east": {"kind": "embeddings", "schema_version": "new"}})
    elif case == "east_attrs_incomplete":
        _zarr_group(path, {"east": {"kind": "embeddings", "schema_version": 1}})
    elif case == "bad_zarr_json":
        path.mkdir()
        (path / "zarr.json").write_text('{"zarr_format": 3, "node_type": "gr')
    return path


CACHE_CASES = [
    "missing",
    "plain_file",
    "empty_folder",
    "unrelated_files",
    "other_zarr",
    "east_attrs_wrong_types",
    "east_attrs_incomplete",
    "bad_zarr_json",
]


@pytest.mark.parametrize("command", ["info", "verify"])
@pytest.mark.parametrize("case", CACHE_CASES)
def test_cache_command_on_something_that_is_not_a_cache(
    tmp_path: Path, command: str, case: str
) -> None:
    target = _cache_target(tmp_path, case)
    before = snapshot(tmp_path)
    result = east("cache", command, target)
    line = assert_one_line_error(result, str(target))
    # never suggest --overwrite for something east did not make: it would delete it
    if case != "missing":
        assert "--overwrite" not in line, line
    assert_unchanged(tmp_path, before)


# ------------------------------------------------------------------------------ extract / cache audio

IMPOSSIBLE_VALUES = {
    "max_seconds_zero": (("--max-seconds", "0"), "--max-seconds"),
    "max_seconds_negative": (("--max-seconds", "-1"), "--max-seconds"),
    "limit_negative": (("--limit", "-5"), "--limit"),
    "num_workers_negative": (("--num-workers", "-1"), "--num-workers"),
    "chunk_clips_zero": (("--chunk-clips", "0"), "--chunk-clips"),
    "batch_size_zero": (("--batch-size", "0"), "--batch-size"),
    "dtype_int8": (("--dtype", "int8"), "--dtype"),
    "plugin_missing": (("--plugin", "no_such_module"), "no_such_module"),
    "scheduler_local_0": (("--scheduler", "local:0"), "--scheduler"),
}


@pytest.mark.parametrize("case", sorted(IMPOSSIBLE_VALUES))
def test_extract_refuses_impossible_values(esc50: Path, tmp_path: Path, case: str) -> None:
    args, fragment = IMPOSSIBLE_VALUES[case]
    store = tmp_path / "tiny.zarr"
    before = snapshot(esc50)
    result = east(*_extract(esc50, "--store", store, *args), timeout=120)
    assert_one_line_error(result, fragment)
    assert not store.exists()
    assert_unchanged(esc50, before)


@pytest.mark.parametrize("option", ["--store", "--cache-dir"])
def test_extract_store_or_cache_dir_naming_a_file(esc50: Path, tmp_path: Path, option: str) -> None:
    target = tmp_path / "mine.txt"
    target.write_text("my file")
    before = snapshot(tmp_path)
    data = snapshot(esc50)
    result = east(*_extract(esc50, option, target), timeout=120)
    assert_one_line_error(result, str(target))
    assert_unchanged(tmp_path, before)
    assert_unchanged(esc50, data)


AUDIO_IMPOSSIBLE = {
    "max_seconds_zero": (("--max-seconds", "0"), "--max-seconds"),
    "max_seconds_negative": (("--max-seconds", "-1"), "--max-seconds"),
    "limit_negative": (("--limit", "-5"), "--limit"),
    "num_workers_negative": (("--num-workers", "-1"), "--num-workers"),
    "sr_zero": (("--sr", "0"), "--sr"),
}


@pytest.mark.parametrize("case", sorted(AUDIO_IMPOSSIBLE))
def test_cache_audio_refuses_impossible_values(esc50: Path, tmp_path: Path, case: str) -> None:
    args, fragment = AUDIO_IMPOSSIBLE[case]
    store = tmp_path / "audio.zarr"
    before = snapshot(esc50)
    result = east(
        "cache", "audio", "--dataset", "esc50", "--root", esc50, "--store", store, "-q", *args
    )
    assert_one_line_error(result, fragment)
    assert not store.exists()
    assert_unchanged(esc50, before)


@pytest.mark.parametrize("option", ["--store", "--cache-dir"])
def test_cache_audio_store_or_cache_dir_naming_a_file(
    esc50: Path, tmp_path: Path, option: str
) -> None:
    target = tmp_path / "mine.txt"
    target.write_text("my file")
    before = snapshot(tmp_path)
    result = east("cache", "audio", "--dataset", "esc50", "--root", esc50, option, target, "-q")
    assert_one_line_error(result, str(target))
    assert_unchanged(tmp_path, before)
