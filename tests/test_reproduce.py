"""`make reproduce` (east.reproduce): the plan, the missing-inputs check, PARTIAL skipping and
re-running. Commands are executed by a stand-in `east` that records its arguments."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from east.extract.teachers.registry import teacher_info
from east.reproduce import (
    EXTENSION_TEACHERS,
    Options,
    build_plan,
    main,
    run,
)
from east.testing.layouts import make_esc50

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "configs"
PAPER_TEACHERS = ("vggish", "openl3", "passt", "panns", "mule")

# a stand-in for `east` (and the complexity module): records argv; `train` writes the
# run's test_results.json, the complexity module its --out file; `extract` of a teacher named in
# FAKE_FAIL exits 1
FAKE_EAST = """
import json, os, sys
from pathlib import Path
args = sys.argv[1:]
with open(os.environ["FAKE_LOG"], "a") as f:
    f.write(json.dumps(args) + "\\n")
def opt(name):
    return args[args.index(name) + 1]
if args[0] == "extract" and opt("--teacher") in os.environ.get("FAKE_FAIL", "-"):
    sys.exit(1)
if args[0] == "train":
    if "--resume" in args:
        run_dir = Path(opt("--resume"))
    else:  # the run directory the plan expects for exactly these arguments
        run_dir = Path(json.loads(Path(os.environ["FAKE_RUNS"]).read_text())[json.dumps(args)])
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "test_results.json").write_text("{}")
if args[:2] == ["-m", "east.report.complexity"]:
    Path(opt("--out")).write_text("{}")
"""


def _lines(capsys: pytest.CaptureFixture[str]) -> list[str]:
    return capsys.readouterr().out.splitlines()


@pytest.fixture(scope="module")
def configs_ready() -> None:
    if not (CONFIGS / "paper1" / "openmic" / "baseline.yaml").is_file():
        pytest.skip("configs/ not generated (python configs/generate.py)")


def options(tmp_path: Path, data_root: Path, weights: Path, **kw: object) -> Options:
    fake = tmp_path / "fake_east.py"
    fake.write_text(FAKE_EAST)
    return Options(
        data_root=data_root,
        cache=tmp_path / "cache",
        runs=tmp_path / "runs",
        report=tmp_path / "report",
        configs=CONFIGS,
        weights=weights,
        east=(sys.executable, str(fake)),
        python=(sys.executable, str(fake)),
        **kw,  # type: ignore[arg-type]
    )


def tagger_weights(folder: Path) -> Path:
    """Files of the right size where the tagger weights go (presence is checked by size)."""
    for teacher in EXTENSION_TEACHERS:
        for wf in teacher_info(teacher).weights:
            path = folder / wf.filename
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(path, "wb") as f:
                f.truncate(wf.size or 1)
    return folder


def test_dry_run_lists_every_step_then_what_is_missing(
    configs_ready: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    nowhere = tmp_path / "nonexistent"
    rc = main(
        [
            "--data-root",
            str(nowhere),
            "--dry-run",
            "--runs",
            str(tmp_path / "runs"),
            "--cache",
            str(tmp_path / "cache"),
            "--weights",
            str(tmp_path / "weights"),
            "--configs",
            str(CONFIGS),
        ]
    )
    lines = _lines(capsys)
    assert rc == 2
    steps = [i for i, line in enumerate(lines) if line.startswith("[")]
    total = int(lines[steps[0]].split("/")[1].split("]")[0])
    assert len(steps) == total > 200
    commands = "\n".join(lines)
    # every stage of the plan is there, with its exact command
    assert "extract --teacher vggish --dataset openmic" in commands
    assert "--set dataset.train_fraction=0.25" in commands
    assert "--set teacher_lr_run=" in commands
    assert "configs/paper2/fma_small/short_chunk_cnn/east_dc_linear_mule.yaml" in commands
    assert "--label-map" in commands and "mtat_to_openmic.yaml" in commands
    assert "[our extension]" in commands and "east.report.complexity" in commands
    assert lines[steps[-1]].startswith(f"[{total}/{total}] report")
    # then the missing items, after the last step: every dataset and every teacher's weights
    start = next(i for i, line in enumerate(lines) if line.startswith("missing ("))
    assert start > steps[-1]
    missing = lines[start + 1 :]
    for dataset in ("openmic", "mtat", "esc50", "fma_small"):
        assert any(
            m.startswith(f"  - dataset {dataset}: expected at {nowhere}/{dataset}") for m in missing
        )
    for teacher in (*PAPER_TEACHERS, *EXTENSION_TEACHERS):
        line = next(m for m in missing if m.startswith(f"  - weights {teacher}: put "))
        assert str(tmp_path / "weights") in line
    assert not (tmp_path / "runs").exists()


def test_missing_inputs_stop_before_any_work(
    configs_ready: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    opts = options(tmp_path, tmp_path / "nonexistent", tmp_path / "weights")
    log = tmp_path / "log.jsonl"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FAKE_LOG", str(log))
        assert run(opts, out=print) == 2
    assert "nothing was run" in capsys.readouterr().out
    assert not log.exists() and not opts.runs.exists()


def test_partial_runs_the_esc50_steps_and_lists_the_skipped(
    configs_ready: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "data"
    # an ESC-50 subset without whole folds (like ../shared's fold 4): stratified split
    make_esc50(data / "esc50", clips_per_class=3, num_classes=4, folds=(4,), seconds=0.2)
    opts = options(tmp_path, data, tagger_weights(tmp_path / "weights"))
    steps, notes = build_plan(opts)
    assert any("stratified" in n for n in notes)
    runs_file = tmp_path / "runs.json"
    runs_file.write_text(
        json.dumps({json.dumps(s.argv[2:]): str(s.run_dir) for s in steps if s.run_dir is not None})
    )
    log = tmp_path / "log.jsonl"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FAKE_LOG", str(log))
        mp.setenv("FAKE_RUNS", str(runs_file))
        rc = run(opts, partial=True, out=print)
        out = capsys.readouterr().out
        assert rc == 0
        ran = [json.loads(line) for line in log.read_text().splitlines()]

        by_kind: dict[str, list[list[str]]] = {}
        for args in ran:
            by_kind.setdefault(args[0] if args[0] != "-m" else args[1], []).append(args)
        assert sorted(a[a.index("--teacher") + 1] for a in by_kind["extract"]) == sorted(
            EXTENSION_TEACHERS
        )
        assert all("esc50" in a for a in by_kind["extract"])
        trains = by_kind["train"]
        # ESC-50: the paper-2 baseline plus 5 systems × 2 tagger teachers, nothing else
        assert len(trains) == 1 + 5 * len(EXTENSION_TEACHERS)
        assert all(f"dataset.root={data / 'esc50'}" in a for a in trains)
        assert all("dataset.options.split=stratified" in a for a in trains)
        ext = [a for a in trains if "/extension/" in a[a.index("--out") + 1]]
        assert len(ext) == 5 * len(EXTENSION_TEACHERS)
        assert all("teachers.0.rescale=standardize" in a for a in ext)
        assert "east.report.complexity" in by_kind and "report" in by_kind
        # probes run before the systems
        order = [a[a.index("--config") + 1] for a in trains]
        assert max(i for i, c in enumerate(order) if "teacher_lr" in c) < min(
            i for i, c in enumerate(order) if "east_" in c
        )
        # the rest is listed as skipped, with the reason
        skipped = out[out.index("skipped ") :]
        assert "extract/openmic/vggish: missing dataset openmic, weights vggish" in skipped
        assert "extract/esc50/passt: missing weights passt" in skipped
        assert "baseline_short_chunk_cnn_none_s1223: missing dataset fma_small" in skipped
        assert "needs extract/esc50/mule" in skipped

        # re-running skips finished steps; extraction is re-run (it resumes by itself)
        log.unlink()
        assert run(opts, partial=True, out=print) == 0
        again = [json.loads(line) for line in log.read_text().splitlines()]
        assert [a[0] for a in again] == ["extract", "extract", "report"]

        # an interrupted run resumes; a failed extraction skips what depends on it
        interrupted = next(
            s
            for s in steps
            if s.kind == "train"
            and s.run_dir is not None
            and "east_fitnet_short_chunk_cnn_fcn-msd" in s.id
        )
        (interrupted.run_dir / "test_results.json").unlink()  # type: ignore[operator]
        (interrupted.run_dir / "last.pt").write_bytes(b"")  # type: ignore[operator]
        log.unlink()
        mp.setenv("FAKE_FAIL", "fcn-msd")
        capsys.readouterr()
        assert run(opts, partial=True, out=print) == 1
        out = capsys.readouterr().out
        third = [json.loads(line) for line in log.read_text().splitlines()]
        assert not any("--resume" in a for a in third)  # it depends on the failed extraction
        assert "an earlier step failed: extract/esc50/fcn-msd" in out
        assert "1 step(s) failed: extract/esc50/fcn-msd" in out
        mp.delenv("FAKE_FAIL")
        log.unlink()
        assert run(opts, partial=True, out=print) == 0
        fourth = [json.loads(line) for line in log.read_text().splitlines()]
        assert ["train", "--resume", str(interrupted.run_dir), "--quiet"] in fourth
        assert (interrupted.run_dir / "test_results.json").is_file()  # type: ignore[operator]


def test_make_reproduce_passes_the_variables() -> None:
    result = subprocess.run(
        [
            "make",
            "-n",
            "--no-print-directory",
            "reproduce",
            "DRY_RUN=1",
            "PARTIAL=yes",
            "DATA_ROOT=/nonexistent",
            "CACHE=c",
            "RUNS=r",
            "DEVICE=cuda",
            "SEEDS=1 2",
            "SET=train.max_epochs=1",
            "ONLY=esc50",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        pytest.skip(f"make unavailable: {result.stderr.strip()[:200]}")
    command = " ".join(result.stdout.replace("\\\n", " ").split())
    for part in (
        '-m east.reproduce --data-root "/nonexistent" --cache "c" --runs "r"',
        '--device "cuda" --seeds "1 2"',
        '--set "train.max_epochs=1"',
        '--only "esc50"',
        "--dry-run --partial",
    ):
        assert part in command
