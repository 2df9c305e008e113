"""``make reproduce``: every experiment of both papers, from extraction to the report.

    python -m east.reproduce --data-root DATA --cache cache --runs runs [--dry-run] [--partial]

The plan (``build_plan``), in order:

1. ``east extract`` for every (dataset, teacher) pair the later steps use;
2. Teacher_LR probes (paper 1: OpenMIC, MTAT × VGGish, OpenL3, PaSST, PANNs);
3. every paper-1 system on OpenMIC (CP ResNet) and MTAT (Mobile FCN) with the papers' λ;
4. the limited-data study: 25/50/75 % of the training data, VGGish and PaSST, Baseline, KD,
   EAsT_Cos-Diff and EAsT_Final (plus the Teacher_LR probe KD takes its soft targets from);
5. every paper-2 system on MTAT (SC-CNN, HCNN; PaSST, PANNs, MULE), ESC-50 and FMA-small
   (SC-CNN; PaSST, MULE);
6. the generalizability test: ``east eval`` of the MTAT SC-CNN runs on OpenMIC through
   ``configs/label_maps/mtat_to_openmic.yaml``;
7. our extension (marked as such): the paper-2 systems with the offline tagger teachers;
8. the complexity table (``python -m east.report.complexity``) and ``east report``.

Training steps use the configs ``configs/generate.py`` writes, with the dataset root, caches,
device, seed, output folder and train fraction set by ``--set``. Datasets are expected under
``DATA_ROOT/<dataset>`` (``openmic``, ``mtat``, ``esc50``, ``fma_small``) in their official
layouts, teacher weights in the weights directory (``--weights`` / ``EAST_WEIGHTS_DIR``).

* ``--dry-run`` prints every step's exact command and then what is missing (exit 2 if anything
  is); nothing runs.
* Without ``--partial``, anything missing stops the run *before* any work, with the list of
  what is missing and where it goes (exit 2).
* ``--partial`` runs every step whose data, weights and earlier steps exist, and lists the
  skipped ones at the end.
* Re-running skips finished steps: a run directory with ``test_results.json``, an evaluation
  file, a complete cache; an interrupted run continues with ``east train --resume`` and an
  interrupted extraction resumes by itself.
"""

from __future__ import annotations

import argparse
import copy
import csv
import datetime as _dt
import json
import os
import shlex
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from east.errors import EastError
from east.experiments import EXTENSION, GENERALIZABILITY, LIMITED, PAPER1, PAPER2, Experiment
from east.run_dir import RunDir
from east.systems import system_info

__all__ = [
    "EXTENSION_TEACHERS",
    "Missing",
    "Options",
    "Planner",
    "Step",
    "TrainRun",
    "WeightsCheck",
    "build_plan",
    "config_path",
    "execute",
    "main",
    "missing_items",
    "parse_args",
    "run",
    "show",
]

# ------------------------------------------------------------------------------ the papers

DATASET_DIRS = {"openmic": "openmic", "mtat": "mtat", "esc50": "esc50", "fma_small": "fma_small"}
# files whose absence means the dataset is not there (official layouts, docs/datasets.md)
DATASET_MARKERS = {
    "openmic": (
        "openmic-2018.npz",
        "class-map.json",
        "partitions/split01_train.csv",
        "partitions/split01_test.csv",
        "audio",
    ),
    "mtat": ("annotations_final.csv",),
    "esc50": ("meta/esc50.csv", "audio"),
    "fma_small": ("fma_metadata/tracks.csv", "fma_small"),
}
DATASET_SOURCES = {
    "openmic": "OpenMIC-2018 from https://zenodo.org/record/1432913 (openmic-2018-v1.0.0.tgz)",
    "mtat": "MagnaTagATune from https://mirg.city.ac.uk/codeapps/the-magnatagatune-dataset "
    "(mp3.zip.001-003 unpacked to 0/ … f/, plus annotations_final.csv)",
    "esc50": "ESC-50 from https://github.com/karolpiczak/ESC-50 (meta/, audio/)",
    "fma_small": "FMA-small from https://github.com/mdeff/fma (fma_small.zip and fma_metadata.zip)",
}

# the grid of every experiment is east.experiments' (configs/generate.py and the report read it)
# our extension: the real pre-trained music taggers that load offline (../shared/weights)
EXTENSION_TEACHERS = EXTENSION.teachers


# config keys that RunConfig.run_name() reads
NAME_KEYS = ("name", "system", "teachers", "student", "seed")


def config_path(exp: Experiment, system: str, teacher: str | None) -> str:
    """The config ``configs/generate.py`` writes for one cell of an experiment."""
    name = f"{system}_{teacher}" if system_info(system).uses_teachers else "baseline"
    if exp.paper == "paper1":
        return f"paper1/{exp.dataset}/{name}.yaml"
    return f"{exp.paper}/{exp.dataset}/{exp.student}/{name}.yaml"


# ------------------------------------------------------------------------------ the plan


@dataclass(frozen=True)
class Missing:
    kind: str  # "dataset" | "weights" | "config"
    name: str
    detail: str

    def line(self) -> str:
        return f"{self.kind} {self.name}: {self.detail}"


@dataclass(frozen=True)
class TrainRun:
    """What a train step trains: one cell of an experiment (east.experiments) and a seed."""

    config: str  # under the configs folder
    system: str
    dataset: str
    student: str
    teacher: str | None
    seed: int
    fraction: float = 1.0


@dataclass
class Step:
    id: str
    kind: str  # extract | train | eval | complexity | report
    group: str  # paper1 | limited | paper2 | generalizability | extension | summary
    argv: list[str]
    needs: list[Missing] = field(default_factory=list)  # inputs from outside
    after: list[str] = field(default_factory=list)  # ids of steps whose outputs it reads
    marker: Path | None = None  # exists → finished
    run_dir: Path | None = None  # train steps
    store: Path | None = None  # extract steps
    resume_argv: list[str] | None = None  # an interrupted training run
    run: TrainRun | None = None  # train steps

    @property
    def finished(self) -> bool:
        if self.kind == "extract":
            return self.store is not None and store_complete(self.store)
        return self.marker is not None and self.marker.exists()

    def command(self) -> list[str]:
        if self.resume_argv is not None and self.run_dir is not None and RunDir(self.run_dir).used:
            return self.resume_argv
        return self.argv


def default_configs() -> Path:
    """``./configs`` when it is there (a checkout), else the configs shipped with east."""
    local = Path("configs")
    if local.is_dir():
        return local
    from east.resources import paper_configs

    return Path(str(paper_configs()))


@dataclass
class Options:
    data_root: Path
    cache: Path
    runs: Path
    report: Path
    configs: Path = Path("configs")
    device: str = "auto"
    seeds: tuple[int, ...] = (1223,)
    weights: Path | None = None
    only: str | None = None
    sets: tuple[str, ...] = ()  # extra `--set KEY=VALUE` for every training run
    east: tuple[str, ...] = ()  # the command that runs east (default: next to this python)
    python: tuple[str, ...] = ()  # the interpreter for `-m east.report.complexity`

    def east_cmd(self) -> list[str]:
        return list(self.east) if self.east else default_east()

    def python_cmd(self) -> list[str]:
        return list(self.python) if self.python else [python_cmd()]


def _relative(path: Path) -> str:
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def python_cmd() -> str:
    """This interpreter (relative to the CWD when inside it, e.g. ``.venv/bin/python``)."""
    return _relative(Path(sys.executable))


def default_east() -> list[str]:
    """``east`` next to this interpreter, else ``python -m east``."""
    exe = Path(sys.executable).parent / "east"
    return [_relative(exe)] if exe.is_file() else [python_cmd(), "-m", "east"]


def store_complete(path: Path) -> bool:
    """Every clip of the store is done or recorded as failed (nothing left to extract)."""
    if not (path / "zarr.json").is_file():
        return False
    try:
        from east.cache_schema import open_store

        status = open_store(path, mode="r").status
    except Exception:
        return False
    return bool((status != 0).all())


def dataset_missing(name: str, opts: Options) -> Missing | None:
    root = opts.data_root / DATASET_DIRS[name]
    absent = [m for m in DATASET_MARKERS[name] if not (root / m).exists()]
    if not absent:
        return None
    where = f"{root}/" if not root.exists() else f"{root}/ lacks {', '.join(absent)}"
    return Missing(
        "dataset",
        name,
        f"expected at {where} — {DATASET_SOURCES[name]}, official layout (docs/datasets.md)",
    )


def esc50_complete(root: Path) -> bool:
    """Whether meta/esc50.csv lists all five folds in full (the paper's fold protocol)."""
    counts: dict[int, int] = {}
    try:
        with open(root / "meta" / "esc50.csv", newline="") as f:
            for row in csv.DictReader(f):
                counts[int(row["fold"])] = counts.get(int(row["fold"]), 0) + 1
    except (OSError, KeyError, ValueError):
        return False
    if set(counts) != {1, 2, 3, 4, 5}:
        return False
    return min(counts.values()) >= 0.9 * max(counts.values())


class WeightsCheck:
    """Which teachers' weight files are present (existence and size; extraction verifies the
    sha256 itself)."""

    def __init__(self, weights_dir: Path | None) -> None:
        self.weights_dir = weights_dir
        self._memo: dict[str, Missing | None] = {}

    def __call__(self, teacher: str) -> Missing | None:
        if teacher in self._memo:
            return self._memo[teacher]
        from east.extract.teachers.registry import teacher_info
        from east.extract.weights import weights_path
        from east.settings import weights_dir

        folder = self.weights_dir or weights_dir()
        info = teacher_info(teacher)
        absent = []
        for wf in info.weights:
            path = weights_path(wf, folder)
            if not path.is_file() or (wf.size is not None and path.stat().st_size != wf.size):
                hint = f" from {wf.url}" + (f" ({wf.note})" if wf.note else "")
                absent.append(f"{path}{hint}")
        missing = Missing("weights", teacher, "put " + "; ".join(absent)) if absent else None
        self._memo[teacher] = missing
        return missing


class Planner:
    """Builds the ordered list of steps for the given options."""

    def __init__(self, opts: Options) -> None:
        self.opts = opts
        self.steps: dict[str, Step] = {}
        self.notes: list[str] = []
        self.weights = WeightsCheck(opts.weights)
        self._dataset_missing: dict[str, Missing | None] = {}
        self._options: dict[str, dict[str, str]] = {}
        self._yaml: dict[Path, object] = {}

    # ---------------------------------------------------------------- inputs

    def data(self, dataset: str) -> Missing | None:
        if dataset not in self._dataset_missing:
            self._dataset_missing[dataset] = dataset_missing(dataset, self.opts)
        return self._dataset_missing[dataset]

    def root(self, dataset: str) -> Path:
        return self.opts.data_root / DATASET_DIRS[dataset]

    def dataset_overrides(self, dataset: str) -> dict[str, str]:
        """Dataset options that differ from the configs' (an ESC-50 subset without whole
        folds gets the documented stratified split)."""
        if dataset not in self._options:
            extra = {}
            if (
                dataset == "esc50"
                and self.data("esc50") is None
                and not esc50_complete(self.root("esc50"))
            ):
                extra["split"] = "stratified"
                self.notes.append(
                    f"esc50 at {self.root('esc50')} lacks whole folds: using the stratified "
                    "split (seeded, 20 % valid / 20 % test), not the paper's folds"
                )
            self._options[dataset] = extra
        return self._options[dataset]

    def store(self, dataset: str, teacher: str) -> Path:
        return self.opts.cache / dataset / f"{teacher}.zarr"

    # ---------------------------------------------------------------- steps

    def add(self, step: Step) -> Step:
        return self.steps.setdefault(step.id, step)

    def extract(self, dataset: str, teacher: str) -> Step:
        sid = f"extract/{dataset}/{teacher}"
        if sid in self.steps:
            return self.steps[sid]
        argv = [
            *self.opts.east_cmd(),
            "extract",
            "--teacher",
            teacher,
            "--dataset",
            dataset,
            "--root",
            str(self.root(dataset)),
            "--cache-dir",
            str(self.opts.cache),
            "--device",
            self.opts.device,
            "--quiet",
        ]
        for key, value in self.dataset_overrides(dataset).items():
            argv += ["--option", f"{key}={value}"]
        needs = [m for m in (self.data(dataset), self.weights(teacher)) if m is not None]
        return self.add(
            Step(sid, "extract", "extract", argv, needs=needs, store=self.store(dataset, teacher))
        )

    def train(
        self,
        group: str,
        run: TrainRun,
        out: Path,
        *,
        teacher_lr: Step | None = None,
        extra: Sequence[str] = (),
    ) -> Step:
        path = self.opts.configs / run.config
        dataset, fraction, seed = run.dataset, run.fraction, run.seed
        sets = [f"dataset.root={self.root(dataset)}", f"device={self.opts.device}", f"seed={seed}"]
        sets += [f"dataset.options.{k}={v}" for k, v in self.dataset_overrides(dataset).items()]
        if fraction != 1.0:
            sets.append(f"dataset.train_fraction={fraction:g}")
        after = []
        needs = [m for m in (self.data(dataset),) if m is not None]
        if run.teacher is not None:
            sets.append(f"teachers.0.cache={self.store(dataset, run.teacher)}")
            after.append(self.extract(dataset, run.teacher).id)
        if teacher_lr is not None:
            assert teacher_lr.run_dir is not None
            sets.append(f"teacher_lr_run={teacher_lr.run_dir}")
            after.append(teacher_lr.id)
        sets += [*extra, *self.opts.sets]  # the user's overrides win
        if not path.is_file():
            sid = f"train {run.config} seed {seed} fraction {fraction:g}"
            needs.append(
                Missing("config", run.config, f"{path} not found (python configs/generate.py)")
            )
            return self.add(
                Step(
                    sid,
                    "train",
                    group,
                    [*self.opts.east_cmd(), "train", "--config", str(path)],
                    needs=needs,
                    after=after,
                    run=run,
                )
            )
        name = self.run_name(path, sets)
        run_dir = out / name
        sid = f"train {run_dir}"
        argv = [*self.opts.east_cmd(), "train", "--config", str(path), "--out", str(out), "--quiet"]
        for item in sets:
            argv += ["--set", item]
        resume = [*self.opts.east_cmd(), "train", "--resume", str(run_dir), "--quiet"]
        return self.add(
            Step(
                sid,
                "train",
                group,
                argv,
                needs=needs,
                after=after,
                marker=RunDir(run_dir).test_results,
                run_dir=run_dir,
                resume_argv=resume,
                run=run,
            )
        )

    def run_name(self, path: Path, sets: Sequence[str]) -> str:
        """The run directory name ``east train`` will use (east.config decides it), from the
        config parsed once per file and the overrides that can change the name."""
        import yaml

        from east.config import load_config_dict

        if path not in self._yaml:
            loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
            try:
                self._yaml[path] = yaml.load(path.read_text(), Loader=loader)
            except yaml.YAMLError as exc:
                raise EastError(f"{path}: invalid YAML ({exc})") from None
        naming = [s for s in sets if s.split("=", 1)[0].split(".")[0] in NAME_KEYS]
        return load_config_dict(copy.deepcopy(self._yaml[path]), naming, str(path)).run_name()

    # ---------------------------------------------------------------- the papers

    def experiment(
        self,
        group: str,
        exp: Experiment,
        out: Path,
        seed: int,
        *,
        teachers: Sequence[str] | None = None,
        systems: Sequence[str] | None = None,
        fraction: float = 1.0,
        config_teacher: str | None = None,
        extra: Sequence[str] = (),
        baseline: bool = True,
    ) -> None:
        """The train steps of one experiment and seed: its baseline, then per teacher the
        Teacher_LR probe and the systems (KD and EAsT_KD read the probe)."""
        systems = tuple(systems if systems is not None else exp.systems)

        def cell(system: str, teacher: str | None) -> TrainRun:
            config = config_path(exp, system, config_teacher or teacher)
            return TrainRun(config, system, exp.dataset, exp.student, teacher, seed, fraction)

        if baseline and "baseline" in systems:
            self.train(group, cell("baseline", None), out)
        for teacher in exp.teachers if teachers is None else teachers:
            probe: Step | None = None
            for system in systems:
                info = system_info(system)
                if not info.uses_teachers:
                    continue
                step = self.train(
                    group,
                    cell(system, teacher),
                    out,
                    teacher_lr=probe if info.needs_probe else None,
                    extra=extra,
                )
                probe = step if info.probe else probe

    def paper1(self) -> None:
        for exp in PAPER1:
            for teacher in exp.teachers:
                self.extract(exp.dataset, teacher)
        for fraction in (1.0, *LIMITED.fractions):
            for exp in PAPER1:
                out = self.opts.runs / "paper1" / exp.dataset
                if fraction == 1.0:
                    group, teachers, systems = "paper1", exp.teachers, exp.systems
                else:
                    out = out / f"frac{round(fraction * 100)}"
                    group, teachers, systems = "limited", LIMITED.teachers, LIMITED.systems
                for seed in self.opts.seeds:
                    self.experiment(
                        group, exp, out, seed, teachers=teachers, systems=systems, fraction=fraction
                    )

    def paper2(self) -> None:
        for exp in PAPER2:
            for teacher in exp.teachers:
                self.extract(exp.dataset, teacher)
            out = self.opts.runs / "paper2" / exp.dataset / exp.student
            for seed in self.opts.seeds:
                self.experiment("paper2", exp, out, seed)

    def generalizability(self) -> None:
        gen = GENERALIZABILITY
        label_map = self.opts.configs / gen.label_map
        source = (gen.source.dataset, gen.source.student)
        trained = [
            s
            for s in self.steps.values()
            if s.run is not None
            and s.run_dir is not None
            and s.group == "paper2"
            and (s.run.dataset, s.run.student) == source
            and system_info(s.run.system).trains_student
            and (s.run.teacher is None or s.run.teacher in gen.teachers)
        ]
        for step in trained:
            assert step.run_dir is not None
            out_file = step.run_dir / f"eval_{gen.target}.json"
            argv = [
                *self.opts.east_cmd(),
                "eval",
                str(step.run_dir),
                "--dataset",
                gen.target,
                "--root",
                str(self.root(gen.target)),
                "--label-map",
                str(label_map),
                "--device",
                self.opts.device,
                "--out",
                str(out_file),
            ]
            needs = [m for m in (self.data(gen.target),) if m is not None]
            self.add(
                Step(
                    f"eval {out_file}",
                    "eval",
                    "generalizability",
                    argv,
                    needs=needs,
                    after=[step.id],
                    marker=out_file,
                )
            )

    def extension(self) -> None:
        ext = EXTENSION
        for dataset in ext.datasets:
            # the paper-2 experiment of this dataset and student gives the configs
            exp = next(e for e in PAPER2 if (e.dataset, e.student) == (dataset, ext.student))
            out = self.opts.runs / "extension" / dataset / ext.student
            for teacher in ext.teachers:
                self.extract(dataset, teacher)
            for seed in self.opts.seeds:
                # the baseline of these tables is the paper-2 baseline (same config)
                self.experiment(
                    "extension",
                    exp,
                    out,
                    seed,
                    teachers=ext.teachers,
                    config_teacher=ext.template_teacher,
                    extra=ext.sets,
                    baseline=False,
                )

    def summary(self) -> None:
        out = self.opts.runs / "complexity.json"
        self.add(
            Step(
                "complexity",
                "complexity",
                "summary",
                [
                    *self.opts.python_cmd(),
                    "-m",
                    "east.report.complexity",
                    "--out",
                    str(out),
                    "--device",
                    self.opts.device,
                ],
                marker=out,
            )
        )
        self.add(
            Step(
                "report",
                "report",
                "summary",
                [
                    *self.opts.east_cmd(),
                    "report",
                    str(self.opts.runs),
                    "--out",
                    str(self.opts.report),
                ],
            )
        )

    def build(self) -> list[Step]:
        self.paper1()
        self.paper2()
        self.generalizability()
        self.extension()
        self.summary()
        # extraction first, then the probes (KD and EAsT_KD read them), then the rest in order
        rank = {"extract": 0, "probe": 1}
        steps = sorted(self.steps.values(), key=lambda s: rank.get(_stage(s), 2))  # stable
        if self.opts.only:
            keep = [s for s in steps if self.opts.only in s.id or s.kind == "report"]
            steps = keep
        return steps


def _stage(step: Step) -> str:
    if step.run is not None and system_info(step.run.system).probe:
        return "probe"
    return step.kind


def build_plan(opts: Options) -> tuple[list[Step], list[str]]:
    """The ordered steps and notes (e.g. a fallback split) for ``opts``."""
    planner = Planner(opts)
    return planner.build(), planner.notes


# ------------------------------------------------------------------------------ running

Printer = Callable[[str], None]


def _print(text: str) -> None:
    print(text, flush=True)  # flushed: the steps' own output follows on the same stream


def missing_items(steps: Sequence[Step]) -> list[Missing]:
    return sorted(
        {m for s in steps if not s.finished for m in s.needs}, key=lambda m: (m.kind, m.name)
    )


def show(argv: Sequence[str]) -> str:
    return shlex.join(argv)


def _log(opts: Options, entry: dict[str, object]) -> None:
    opts.runs.mkdir(parents=True, exist_ok=True)
    entry["time"] = _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")
    with open(opts.runs / "reproduce_log.jsonl", "a") as f:
        f.write(json.dumps(entry) + "\n")


def execute(step: Step, opts: Options, env: dict[str, str]) -> int:
    argv = step.command()
    started = time.perf_counter()
    rc = subprocess.run(argv, env=env, check=False).returncode
    seconds = time.perf_counter() - started
    entry: dict[str, object] = {
        "step": step.id,
        "kind": step.kind,
        "command": show(argv),
        "rc": rc,
        "seconds": round(seconds, 3),
    }
    if step.store is not None:
        entry["store"] = str(step.store)
    _log(opts, entry)
    return rc


def run(
    opts: Options, *, dry_run: bool = False, partial: bool = False, out: Printer = _print
) -> int:
    """Print or execute the plan; returns the exit code (0 ok, 1 a step failed, 2 missing)."""
    steps, notes = build_plan(opts)
    missing = missing_items(steps)
    blocked_ids = _blocked(steps)
    for note in notes:
        out(f"note: {note}")

    if dry_run:
        out(
            f"# the plan: {len(steps)} steps (DATA_ROOT={opts.data_root}, CACHE={opts.cache}, "
            f"RUNS={opts.runs})"
        )
        for i, step in enumerate(steps, 1):
            state = "done" if step.finished else ("blocked" if step.id in blocked_ids else "todo")
            tag = " [our extension]" if step.group == "extension" else ""
            out(f"[{i}/{len(steps)}] {step.id} ({step.group}{tag}; {state})")
            out(f"    {show(step.command())}")
        _print_missing(missing, out)
        if partial:
            runnable = sum(1 for s in steps if not s.finished and s.id not in blocked_ids)
            out(f"PARTIAL=1 would run {runnable} steps and skip {len(blocked_ids)}.")
            return 0
        return 2 if missing else 0

    if missing and not partial:
        _print_missing(missing, out)
        out("nothing was run. Add what is missing, or run with PARTIAL=1 to run what can run.")
        return 2

    env = dict(os.environ)
    if opts.weights is not None:
        env["EAST_WEIGHTS_DIR"] = str(opts.weights)
    failed: list[Step] = []
    skipped: list[tuple[Step, str]] = []
    bad: set[str] = set(blocked_ids)
    todo = [s for s in steps if not s.finished or s.kind == "report"]
    done_before = len(steps) - len(todo)
    if done_before:
        out(f"{done_before} steps already finished; skipping them")
    for i, step in enumerate(todo, 1):
        reason = _skip_reason(step, bad, blocked_ids)
        if reason is not None:
            skipped.append((step, reason))
            bad.add(step.id)
            continue
        if step.kind == "report" and not any(s.kind == "train" and s.finished for s in steps):
            skipped.append((step, "no finished runs to report"))
            continue
        out(f"[{i}/{len(todo)}] {step.id}")
        out(f"    {show(step.command())}")
        if execute(step, opts, env) != 0:
            failed.append(step)
            bad.add(step.id)
            out(f"step failed: {step.id}")
            if not partial:
                break
    if skipped:
        out(f"skipped {len(skipped)} steps:")
        for step, reason in skipped:
            out(f"  {step.id}: {reason}")
    if missing:
        _print_missing(missing, out)
    if failed:
        out(f"{len(failed)} step(s) failed: " + ", ".join(s.id for s in failed))
        return 1
    return 0


def _blocked(steps: Sequence[Step]) -> set[str]:
    """Steps that cannot run: missing inputs, or a prerequisite that cannot run."""
    blocked: set[str] = set()
    for step in steps:  # prerequisites come earlier in the order
        if step.finished:
            continue
        if any(True for _ in step.needs) or any(a in blocked for a in step.after):
            blocked.add(step.id)
    return blocked


def _skip_reason(step: Step, bad: set[str], blocked: set[str]) -> str | None:
    if step.id in blocked:
        if step.needs:
            return "missing " + ", ".join(f"{m.kind} {m.name}" for m in step.needs)
        return "needs " + ", ".join(a for a in step.after if a in bad)
    failed_before = [a for a in step.after if a in bad]
    if failed_before:
        return "an earlier step failed: " + ", ".join(failed_before)
    return None


def _print_missing(missing: Sequence[Missing], out: Printer) -> None:
    if not missing:
        return
    out(f"missing ({len(missing)}):")
    for item in missing:
        out(f"  - {item.line()}")


# ------------------------------------------------------------------------------ entry point


def parse_args(argv: Sequence[str] | None) -> tuple[Options, bool, bool]:
    p = argparse.ArgumentParser(
        prog="python -m east.reproduce",
        description="Every experiment of both papers, then the report.",
    )
    p.add_argument(
        "--data-root",
        type=Path,
        default=Path("data"),
        help="folder with openmic/, mtat/, esc50/, fma_small/ (official layouts)",
    )
    p.add_argument("--cache", type=Path, default=Path("cache"), help="embedding caches")
    p.add_argument("--runs", type=Path, default=Path("runs"), help="run directories")
    p.add_argument("--report", type=Path, default=Path("reports"), help="report folder")
    p.add_argument(
        "--configs",
        type=Path,
        default=None,
        help="paper configs folder (default: ./configs in a checkout, else the shipped ones)",
    )
    p.add_argument("--device", default="auto")
    p.add_argument("--seeds", default="1223", help="space- or comma-separated seeds")
    p.add_argument(
        "--weights",
        type=Path,
        default=None,
        help="teacher weights folder (default: $EAST_WEIGHTS_DIR)",
    )
    p.add_argument("--only", default=None, help="only steps whose id contains this text")
    p.add_argument(
        "--set",
        dest="sets",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra override for every training run, e.g. train.max_epochs=5",
    )
    p.add_argument("--dry-run", action="store_true", help="print the plan, run nothing")
    p.add_argument("--partial", action="store_true", help="run what can run, skip the rest")
    a = p.parse_args(argv)
    try:
        seeds = tuple(int(s) for s in a.seeds.replace(",", " ").split())
    except ValueError:
        raise EastError(f"--seeds {a.seeds!r}: expected integers") from None
    if not seeds:
        raise EastError("--seeds: give at least one seed")
    sets = tuple(x for item in a.sets for x in item.split() if x)
    opts = Options(
        a.data_root,
        a.cache,
        a.runs,
        a.report,
        a.configs or default_configs(),
        a.device,
        seeds,
        a.weights,
        a.only or None,
        sets,
    )
    return opts, a.dry_run, a.partial


def main(argv: Sequence[str] | None = None) -> int:
    try:
        opts, dry_run, partial = parse_args(argv)
        return run(opts, dry_run=dry_run, partial=partial)
    except EastError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code


if __name__ == "__main__":
    raise SystemExit(main())
