"""The run directory: the one contract between ``east train`` and everything that reads a run
(``east eval``/``predict``/``export``, ``east report``, ``reproduce``, the demo, a
``kd``/``east_kd`` run reading its Teacher_LR run). See ``docs/run_dir.md``; in short::

    <output_dir>/<run name>/
      config.yaml        the resolved config (what --resume and east eval read back)
      run_info.json      dataset, manifest/labels hash, classes, teacher dims, student rate, ...
      last.pt            every epoch, atomically: model, optimiser, scheduler, scaler, RNG
                         states and the loop state (a Teacher_LR run: its final probe, once)
      best.pt            the model with the best validation metric (weights_only loads)
      metrics.jsonl      one JSON line per epoch
      tb/                TensorBoard events
      test_results.json  the best model on the test split: written last, so it marks a
                         finished run
      run.lock           the writer's lock (east.locking), run.lock.owner.json who holds it

Every reader and writer goes through :class:`RunDir`; nothing else spells these names.
Writes are atomic (temporary file, fsync, rename) and a failed write is one
:class:`WriteError` naming the path, with the previous file intact.
"""

from __future__ import annotations

import errno
import json
import os
import pickle
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from east.errors import ConfigError, EastError

if TYPE_CHECKING:
    from east.config import RunConfig

__all__ = [
    "BEST",
    "CONFIG",
    "LAST",
    "LOCK",
    "METRICS",
    "RUN_INFO",
    "TEST_RESULTS",
    "BestCheckpoint",
    "RunDir",
    "RunInfo",
    "WriteError",
    "append_line",
    "atomic_save",
    "atomic_write_text",
    "load_checkpoint",
    "read_run_info",
]

CONFIG = "config.yaml"
RUN_INFO = "run_info.json"
METRICS = "metrics.jsonl"
TEST_RESULTS = "test_results.json"
LAST = "last.pt"
BEST = "best.pt"
LOCK = "run.lock"
TENSORBOARD = "tb"


class WriteError(EastError):
    """A run file could not be written (disk full, read-only folder); earlier files are intact."""

    def __init__(self, path: Path, exc: BaseException) -> None:
        self.path = path
        cause = _os_error(exc)
        reason = (cause.strerror if cause is not None else None) or first_line(exc)
        self.no_space = cause is not None and cause.errno == errno.ENOSPC
        super().__init__(f"cannot write {path} ({reason})")


def _os_error(exc: BaseException | None) -> OSError | None:
    """The OSError behind ``exc`` (torch.save raises a RuntimeError while cleaning up one)."""
    while exc is not None:
        if isinstance(exc, OSError):
            return exc
        exc = exc.__cause__ or exc.__context__
    return None


def first_line(exc: object) -> str:
    """The first line of an exception's message (at most 300 characters), for one-line errors."""
    lines = str(exc).strip().splitlines()
    return (lines[0] if lines else type(exc).__name__)[:300]


# ------------------------------------------------------------------------------ atomic writes


def atomic_save(obj: Any, path: Path) -> None:
    """torch.save to a temporary file, fsync, then rename: a kill never leaves half a file,
    and a failed write (disk full) leaves the previous file as it was (:class:`WriteError`)."""
    import torch  # torch only for checkpoints: config/report readers stay light

    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except (OSError, RuntimeError) as exc:
        tmp.unlink(missing_ok=True)
        raise WriteError(path, exc) from None


def atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    try:
        tmp.write_text(text)
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise WriteError(path, exc) from None


def append_line(path: Path, line: str) -> None:
    """One line appended in one write (a failed write is trimmed on resume)."""
    try:
        with open(path, "a") as f:
            f.write(line + "\n")
    except OSError as exc:
        raise WriteError(path, exc) from None


# ------------------------------------------------------------------------------ records


def load_checkpoint(path: Path, weights_only: bool = True) -> dict[str, Any]:
    """A checkpoint east wrote, or one ConfigError saying why it cannot be used."""
    import torch

    try:
        with warnings.catch_warnings():  # torch warns about odd pickles before failing on them
            warnings.simplefilter("ignore")
            state = torch.load(path, map_location="cpu", weights_only=weights_only)
    except FileNotFoundError:
        raise ConfigError(f"{path}: checkpoint not found") from None
    except Exception as exc:  # truncated zip, garbage, foreign pickle
        reason = "unpickling failed" if isinstance(exc, pickle.UnpicklingError) else exc
        raise ConfigError(
            f"{path}: unreadable checkpoint ({first_line(reason)[:120]}); it is truncated or "
            "not a checkpoint written by east"
        ) from None
    if not isinstance(state, dict) or not isinstance(state.get("model"), dict):
        raise ConfigError(f"{path}: not a checkpoint written by east (no model weights in it)")
    return state


@dataclass(frozen=True)
class BestCheckpoint:
    """``best.pt``: the weights of the best validation epoch. A student run's ``model`` is the
    whole trainable module (``student.*``, ``system.*``); a Teacher_LR run's is the probe
    (``proj.weight``, ``proj.bias``). ``metric`` is ``val_<primary metric>``."""

    model: dict[str, Any]
    epoch: int
    step: int | None
    metric: str
    value: float

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"model": self.model, "epoch": self.epoch}
        if self.step is not None:
            out["step"] = self.step
        out[self.metric] = self.value
        return out


class RunInfo(BaseModel):
    """What east reads back from ``run_info.json`` (more keys are kept, not checked)."""

    model_config = ConfigDict(extra="allow")
    task: Literal["multiclass", "multilabel"]
    num_classes: int = Field(gt=0)
    class_names: list[str]

    @model_validator(mode="after")
    def _names_fit(self) -> RunInfo:
        if len(self.class_names) != self.num_classes:
            raise ValueError(f"{len(self.class_names)} class names for {self.num_classes}")
        return self


def read_run_info(path: Path) -> dict[str, Any]:
    """``run_info.json`` as a dict, validated; one ConfigError naming the file otherwise."""
    try:
        data = json.loads(path.read_bytes().decode("utf-8"))
        RunInfo.model_validate(data)
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        if isinstance(exc, ValidationError):
            err = exc.errors()[0]
            where = ".".join(str(x) for x in err.get("loc", ()))
            reason = f"{where + ': ' if where else ''}{err.get('msg', 'invalid')}"
        else:
            reason = first_line(exc)[:160]
        raise ConfigError(f"{path}: not a valid run_info.json ({reason})") from None
    return data


# ------------------------------------------------------------------------------ the directory


class RunDir:
    """One run directory: its paths, its records and its state (used, finished)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    def __fspath__(self) -> str:
        return str(self.path)

    # paths ------------------------------------------------------------------
    @property
    def config(self) -> Path:
        return self.path / CONFIG

    @property
    def run_info(self) -> Path:
        return self.path / RUN_INFO

    @property
    def metrics(self) -> Path:
        return self.path / METRICS

    @property
    def test_results(self) -> Path:
        return self.path / TEST_RESULTS

    @property
    def last(self) -> Path:
        return self.path / LAST

    @property
    def best(self) -> Path:
        return self.path / BEST

    @property
    def lock(self) -> Path:
        return self.path / LOCK

    @property
    def tensorboard(self) -> Path:
        return self.path / TENSORBOARD

    # state ------------------------------------------------------------------
    @property
    def used(self) -> bool:
        """A checkpoint exists: a new run must not start here (``--resume`` it instead)."""
        return self.last.exists()

    @property
    def resumable(self) -> bool:
        return self.last.is_file()

    @property
    def finished(self) -> bool:
        """``test_results.json`` is written last, so it marks a finished run."""
        return self.test_results.is_file()

    @staticmethod
    def looks_like_run(filenames: set[str] | list[str]) -> bool:
        """Whether a folder's file names are a run directory's (for scanning folders)."""
        names = set(filenames)
        return CONFIG in names and bool(names & {TEST_RESULTS, LAST, BEST})

    def require(self, *names: str) -> None:
        """One ConfigError when a file a reader needs is missing."""
        for name in names:
            if not (self.path / name).is_file():
                raise ConfigError(f"{self.path}: not a run directory (no {name})")

    # records ----------------------------------------------------------------
    def read_config(self) -> RunConfig:
        from east.config import load_config

        return load_config(self.config)

    def write_config(self, cfg: RunConfig) -> None:
        import yaml

        atomic_write_text(self.config, yaml.safe_dump(cfg.to_yaml_dict(), sort_keys=False))

    def read_info(self) -> dict[str, Any]:
        return read_run_info(self.run_info)

    def write_info(self, info: dict[str, Any]) -> None:
        atomic_write_text(self.run_info, json.dumps(info, indent=2))

    def append_metrics(self, record: dict[str, Any]) -> None:
        append_line(self.metrics, json.dumps(record))

    def write_metrics(self, records: list[dict[str, Any]]) -> None:
        atomic_write_text(self.metrics, "".join(json.dumps(r) + "\n" for r in records))

    def trim_metrics(self, epochs: int) -> None:
        """Keep the metrics lines of the checkpoint's ``epochs`` (a line written before a crash
        or a failed checkpoint would otherwise appear twice after ``--resume``)."""
        trim_metrics(self.metrics, epochs)

    def write_test_results(self, results: dict[str, Any]) -> None:
        atomic_write_text(self.test_results, json.dumps(results, indent=2))

    def save_best(self, record: BestCheckpoint) -> None:
        atomic_save(record.to_dict(), self.best)

    def load_best(self) -> dict[str, Any]:
        return load_checkpoint(self.best)

    def save_last(self, state: dict[str, Any]) -> None:
        atomic_save(state, self.last)

    def load_last(self) -> dict[str, Any]:
        return load_checkpoint(self.last, weights_only=False)


def trim_metrics(path: Path, epochs: int) -> None:
    """Keep the lines of ``path`` whose ``epoch`` is below ``epochs`` (torn lines dropped)."""
    if not path.is_file():
        return
    kept = []
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except ValueError:  # a torn last line
            continue
        epoch = record.get("epoch") if isinstance(record, dict) else None
        if isinstance(epoch, int) and epoch < epochs:
            kept.append(line)
    text = "".join(x + "\n" for x in kept)
    if text != path.read_text():
        atomic_write_text(path, text)
