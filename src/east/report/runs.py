"""Finding and reading run directories: the one place that knows their layout.

A finished run directory (written by ``east train``, see :mod:`east.run_dir`) holds::

    config.yaml         the resolved config: system, seed, dataset.{name, train_fraction},
                        student.name, teachers[].cache, ...
    run_info.json       dataset, task, num_classes, train_clips, ... (optional here)
    metrics.jsonl       one line per epoch: step, seconds, val_* (optional here)
    test_results.json   test_mAP / test_roc_auc / test_macro_f1 / test_accuracy / ...
    eval_<tag>.json     extra evaluations (``east eval RUN --out RUN/eval_<tag>.json``), e.g.
                        ``eval_openmic.json`` for paper 2's generalizability test

A directory with ``config.yaml`` but no ``test_results.json`` is an unfinished run: it is
counted and left out of the tables. If the layout changes, change :func:`read_run` only.
"""

from __future__ import annotations

import functools
import json
import math
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from east.errors import EastError
from east.run_dir import CONFIG as CONFIG_FILE
from east.run_dir import METRICS as METRICS_FILE
from east.run_dir import RUN_INFO as INFO_FILE
from east.run_dir import TEST_RESULTS as RESULTS_FILE
from east.run_dir import RunDir

__all__ = [
    "METRIC_KEYS",
    "NO_TEACHER",
    "Group",
    "RunRecord",
    "Scan",
    "Stat",
    "find_runs",
    "group_runs",
    "primary_metrics",
    "pydantic_message",
    "read_run",
    "t_quantile",
    "teacher_name",
]

NO_TEACHER = "none"

# test_results.json key → report metric name (the names of docs/paper_results.csv)
METRIC_KEYS = {
    "test_mAP": "mAP",
    "test_roc_auc": "ROC-AUC",
    "test_macro_f1": "F1",
    "test_accuracy": "accuracy",
}


@dataclass
class RunRecord:
    """What the report needs of one finished run."""

    path: Path
    dataset: str
    student: str
    system: str
    teacher: str  # cache stem(s) joined with "+", "none" without a teacher
    train_fraction: float
    seed: int
    task: str | None  # "multilabel" / "multiclass" / None when unknown
    metrics: dict[str, float]  # report metric name → test value
    evals: dict[str, dict[str, float]] = field(default_factory=dict)  # eval_<tag>.json
    teacher_caches: list[str] = field(default_factory=list)
    train_steps: int | None = None
    train_seconds: float | None = None  # sum of the epochs' training seconds
    clips: int | None = None  # test clips the metrics were computed on
    eval_clips: dict[str, int] = field(default_factory=dict)  # eval_<tag>.json → clips

    @property
    def key(self) -> tuple[str, str, str, str, float]:
        return (self.dataset, self.student, self.system, self.teacher, self.train_fraction)

    @property
    def it_per_s(self) -> float | None:
        """Training iterations (optimiser steps) per second, from metrics.jsonl."""
        if not self.train_steps or not self.train_seconds:
            return None
        return self.train_steps / self.train_seconds


class _Part(BaseModel):
    """The fields of a run file that the report reads; other fields are ignored."""

    model_config = ConfigDict(extra="ignore")


class _DatasetPart(_Part):
    name: str | None = None
    train_fraction: float | None = Field(None, gt=0, le=1)


class _StudentPart(_Part):
    name: str | None = None


class _TeacherPart(_Part):
    cache: str


class _RunConfig(_Part):
    system: str | None = None
    seed: int = 0
    dataset: _DatasetPart | None = None
    student: _StudentPart | None = None
    teachers: list[_TeacherPart] | None = None


class _RunInfo(_Part):
    dataset: str | None = None
    task: str | None = None
    system: str | None = None
    student: str | None = None


def pydantic_message(message: str) -> str:
    """A pydantic error message for users: lower-case start, no internal class names."""
    message = re.sub(r" or instance of \w+", "", message)
    return message[:1].lower() + message[1:]


def _validated(model: type[_Part], data: dict[str, Any], path: Path) -> Any:
    """``data`` as ``model``; a wrong type is one :class:`EastError` naming file and field."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "(top level)"
        raise EastError(
            f"{path}: {where}: {pydantic_message(first['msg'])} (got {first.get('input')!r})"
        ) from None


def _read_yaml(path: Path) -> dict[str, Any]:
    import yaml

    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, ValueError, yaml.YAMLError) as exc:  # ValueError: not UTF-8
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise EastError(f"{path}: unreadable run config ({reason})") from None
    if not isinstance(data, dict):
        raise EastError(f"{path}: a run config must be a mapping")
    return data


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:  # ValueError: bad JSON or not UTF-8
        raise EastError(f"{path}: unreadable JSON ({exc})") from None
    if not isinstance(data, dict):
        raise EastError(f"{path}: expected a JSON object")
    return data


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _metrics_of(results: dict[str, Any], path: Path, prefix: str = "test_") -> dict[str, float]:
    """Report metric name → value; a metric that is there but not a number is an error (a
    missing or non-finite one is simply not reported)."""
    out: dict[str, float] = {}
    for key, name in METRIC_KEYS.items():
        field_name = key if prefix == "test_" else key[len("test_") :]
        value = results.get(field_name)
        if value is None:
            continue
        if not _is_number(value):
            raise EastError(f"{path}: {field_name} is {value!r}, not a number")
        if math.isfinite(value):
            out[name] = float(value)
    return out


def _clips_of(results: dict[str, Any]) -> int | None:
    """The ``clips`` count of a results file; anything but a positive int is "not recorded"."""
    value = results.get("clips")
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    return None


def teacher_name(cache: str | Path) -> str:
    """A teacher cache path → the teacher's name (the store's stem, as run names use it)."""
    name = Path(str(cache).rstrip("/")).name
    return name[: -len(".zarr")] if name.endswith(".zarr") else Path(name).stem


def _training_time(path: Path) -> tuple[int | None, float | None]:
    """Last optimiser step and summed epoch seconds of ``metrics.jsonl``; ``(None, None)``
    (not recorded) when the file is missing or holds anything but such records, so a cost
    figure never shows a speed computed from part of the log. A torn last line (a killed
    run) is skipped."""
    try:
        lines = path.read_text().splitlines()
    except (OSError, ValueError):  # missing, unreadable or not UTF-8
        return None, None
    steps, seconds = None, 0.0
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError:
            if number == len(lines):
                break
            return None, None
        if not isinstance(record, dict):
            return None, None
        step, secs = record.get("step"), record.get("seconds")
        if step is not None:
            if not isinstance(step, int) or isinstance(step, bool):
                return None, None
            steps = step
        if secs is not None:
            if not _is_number(secs) or not math.isfinite(secs) or secs < 0:
                return None, None
            seconds += secs
    return steps, (seconds or None)


def read_run(path: str | Path) -> RunRecord:
    """Read a finished run directory (see the module docstring for the files)."""
    path = Path(path)
    if not (path / CONFIG_FILE).is_file() or not (path / RESULTS_FILE).is_file():
        raise EastError(f"{path}: not a finished run (needs {CONFIG_FILE} and {RESULTS_FILE})")
    cfg = _validated(_RunConfig, _read_yaml(path / CONFIG_FILE), path / CONFIG_FILE)
    info_path = path / INFO_FILE
    info = _validated(_RunInfo, _read_json(info_path), info_path) if info_path.is_file() else None
    info = info or _RunInfo()
    results = _read_json(path / RESULTS_FILE)
    dataset_cfg = cfg.dataset or _DatasetPart()
    caches = [t.cache for t in cfg.teachers or []]
    teacher = "+".join(teacher_name(c) for c in caches) if caches else NO_TEACHER
    system = cfg.system or info.system or "unknown"
    if system == "baseline":
        teacher = NO_TEACHER  # a baseline ignores any caches its config lists
    student = (cfg.student.name if cfg.student else None) or info.student or "unknown"
    evals, eval_clips = {}, {}
    for extra in sorted(path.glob("eval_*.json")):
        tag, data = extra.stem[len("eval_") :], _read_json(extra)
        evals[tag] = _metrics_of(data, extra, prefix="")
        if (count := _clips_of(data)) is not None:
            eval_clips[tag] = count
    steps, seconds = _training_time(path / METRICS_FILE)
    return RunRecord(
        path=path,
        dataset=info.dataset or dataset_cfg.name or "unknown",
        student=student,
        system=system,
        teacher=teacher,
        train_fraction=dataset_cfg.train_fraction or 1.0,
        seed=cfg.seed,
        task=info.task,
        metrics=_metrics_of(results, path / RESULTS_FILE),
        evals=evals,
        teacher_caches=caches,
        train_steps=steps,
        train_seconds=seconds,
        clips=_clips_of(results),
        eval_clips=eval_clips,
    )


@dataclass
class Scan:
    runs: list[RunRecord]
    unfinished: list[Path]
    unreadable: list[tuple[Path, str]]


def find_runs(paths: Iterable[str | Path]) -> Scan:
    """Every run directory under ``paths`` (recursively; a run's own sub-folders are not
    searched). Unfinished and unreadable runs are listed, not fatal."""
    runs: list[RunRecord] = []
    unfinished: list[Path] = []
    unreadable: list[tuple[Path, str]] = []
    seen: set[Path] = set()
    for top in paths:
        top = Path(top)
        if not top.exists():
            raise EastError(f"{top}: no such folder")
        for dirpath, dirnames, filenames in os.walk(top):
            here = Path(dirpath)
            if RunDir.looks_like_run(filenames):
                dirnames[:] = []  # a run directory: do not descend into tb/ etc.
                resolved = here.resolve()
                if resolved in seen:
                    continue
                seen.add(resolved)
                if RESULTS_FILE not in filenames:
                    unfinished.append(here)
                    continue
                try:
                    runs.append(read_run(here))
                except EastError as exc:
                    unreadable.append((here, str(exc)))
            dirnames.sort()
    return Scan(runs, unfinished, unreadable)


# ------------------------------------------------------------------------------ aggregation


@functools.lru_cache(maxsize=256)
def t_quantile(p: float, df: int) -> float:
    """The ``p`` quantile (p > 0.5) of Student's t with ``df`` degrees of freedom.

    Computed here (Simpson integration of the density, then bisection) because scipy is not
    a dependency of east; tests check it against ``scipy.stats.t.ppf``."""
    if not 0.5 < p < 1 or df < 1:
        raise ValueError(f"t_quantile needs 0.5 < p < 1 and df >= 1, got p={p}, df={df}")
    log_c = math.lgamma((df + 1) / 2) - math.lgamma(df / 2) - 0.5 * math.log(df * math.pi)

    def cdf(x: float) -> float:
        grid = np.linspace(0.0, x, 2001)
        pdf = np.exp(log_c - (df + 1) / 2 * np.log1p(grid**2 / df))
        h = x / 2000
        simpson = h / 3 * (pdf[0] + pdf[-1] + 4 * pdf[1:-1:2].sum() + 2 * pdf[2:-1:2].sum())
        return 0.5 + float(simpson)

    lo, hi = 0.0, 1.0
    while cdf(hi) < p:  # bracket the quantile
        lo, hi = hi, 2 * hi
    for _ in range(60):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if cdf(mid) < p else (lo, mid)
    return (lo + hi) / 2


CI_MIN_SEEDS = 3  # fewer seeds give a t interval too wide to be worth printing


@dataclass(frozen=True)
class Stat:
    """Mean and sample standard deviation (ddof=1; ``None`` for a single seed) over seeds,
    with the seeds' values and the distinct test-clip counts behind them (``()``: not
    recorded)."""

    mean: float
    std: float | None
    n: int
    clips: tuple[int, ...] = ()
    values: tuple[float, ...] = ()

    @classmethod
    def of(cls, values: Sequence[float], clips: Iterable[int | None] = ()) -> Stat:
        arr = np.asarray(values, dtype=np.float64)
        std = float(arr.std(ddof=1)) if len(arr) > 1 else None
        counts = tuple(sorted({c for c in clips if c is not None}))
        return cls(float(arr.mean()), std, len(arr), counts, tuple(float(v) for v in arr))

    @property
    def ci95(self) -> tuple[float, float] | None:
        """The 95 % confidence interval of the mean (Student's t, n - 1 degrees of freedom);
        ``None`` below :data:`CI_MIN_SEEDS` seeds."""
        if self.n < CI_MIN_SEEDS or self.std is None:
            return None
        half = t_quantile(0.975, self.n - 1) * self.std / math.sqrt(self.n)
        return (self.mean - half, self.mean + half)

    @property
    def clips_text(self) -> str | None:
        """Test clips per seed: ``"10"``, ``"10–12"`` when seeds differ, ``None`` unknown."""
        if not self.clips:
            return None
        low, high = self.clips[0], self.clips[-1]
        return f"{low}" if low == high else f"{low}–{high}"


@dataclass
class Group:
    """The runs of one (dataset, student, system, teacher, train_fraction), one per seed."""

    dataset: str
    student: str
    system: str
    teacher: str
    train_fraction: float
    runs: list[RunRecord]

    @property
    def seeds(self) -> list[int]:
        return sorted(r.seed for r in self.runs)

    @property
    def task(self) -> str | None:
        return next((r.task for r in self.runs if r.task), None)

    def stat(self, metric: str, eval_tag: str | None = None) -> Stat | None:
        values, clips = [], []
        for run in self.runs:
            source = run.metrics if eval_tag is None else run.evals.get(eval_tag, {})
            if metric in source:
                values.append(source[metric])
                clips.append(run.clips if eval_tag is None else run.eval_clips.get(eval_tag))
        return Stat.of(values, clips) if values else None

    def mean_of(self, attribute: str) -> float | None:
        values = [getattr(r, attribute) for r in self.runs]
        values = [v for v in values if v is not None]
        return float(np.mean(values)) if values else None


def group_runs(runs: Iterable[RunRecord]) -> list[Group]:
    """Runs grouped by (dataset, student, system, teacher, train_fraction); a seed that occurs
    twice in a group (the same run copied) counts once."""
    groups: dict[tuple[str, str, str, str, float], Group] = {}
    for run in runs:
        g = groups.setdefault(run.key, Group(*run.key, runs=[]))
        if run.seed not in {r.seed for r in g.runs}:
            g.runs.append(run)
    return sorted(
        groups.values(), key=lambda g: (g.dataset, g.student, g.train_fraction, g.system, g.teacher)
    )


def primary_metrics(dataset: str, task: str | None) -> list[str]:
    """The metrics a dataset's tables show, as in the papers."""
    if dataset == "openmic":
        return ["mAP", "F1"]
    if dataset == "mtat":
        return ["mAP", "ROC-AUC"]
    if task == "multilabel":
        return ["mAP", "ROC-AUC", "F1"]
    return ["accuracy"]
