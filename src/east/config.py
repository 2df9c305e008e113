"""Training configuration: YAML files validated with pydantic v2, ``--set a.b=c`` overrides and
one-line errors.

A config says everything a run needs (see ``configs/`` and ``docs/training.md``)::

    system: east_final            # one of east.systems.SYSTEMS
    seed: 1223
    dataset: {name: esc50, root: ../shared/data/esc50-fold4, options: {}, train_fraction: 1.0}
    student: {name: mobile_fcn, kwargs: {}}
    teachers: [{cache: cache/esc50/fcn-msd.zarr, weight: 1.0}]
    loss: {lambda: 0.6, tau: 2.0, kd_weight: 0.3, stages: final}
    optimizer: {name: adam, lr: 1.0e-4, weight_decay: 1.0e-4}
    scheduler: {factor: 0.2, patience: 5}
    early_stopping: {patience: 12}
    train: {max_steps: 100000, batch_size: 16, grad_clip: 1.0}
    augment: {mixup_alpha: 0.0, freq_mask: 0, time_mask: 0}
    crop: {mode: full}

Two levels of checking, both raising :class:`east.errors.ConfigError` with one line that names
the key or the file:

* :func:`load_config` — YAML syntax, unknown keys (``extra="forbid"`` everywhere), wrong types,
  values out of range, system/teacher combinations (a ``kd`` run without ``teacher_lr_run``...);
* :func:`check_resources` — things outside the file: every teacher cache (and the audio cache)
  exists, was made for this dataset manifest (``manifest.hash`` against the cache attrs), is
  complete and sound (:func:`east.cache_schema.validate`), and its embedding dim fits (the
  declared ``dim`` and the ``teacher_lr`` run's probe). ``east.train.plan.check_run`` adds the
  device, the student and the splits: what ``east train --check`` runs.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from east.errors import ConfigError
from east.systems import SystemInfo, list_systems, system_info

__all__ = [
    "EMBEDDING_SYSTEMS",
    "SOFT_TARGET_SYSTEMS",
    "SYSTEM_NAMES",
    "AugmentConfig",
    "CropConfig",
    "DatasetConfig",
    "EarlyStoppingConfig",
    "LossConfig",
    "OptimizerConfig",
    "RunConfig",
    "SchedulerConfig",
    "StudentConfig",
    "TeacherConfig",
    "TeacherLRConfig",
    "TrainConfig",
    "check_audio_cache",
    "check_resources",
    "load_config",
    "load_config_dict",
    "parse_override",
]

SYSTEM_NAMES = list_systems()  # the papers' order (east.systems registers them)
# Systems that read teacher embeddings while training the student.
# (kd too: the teacher_lr probe turns them into soft targets on the fly, mixup included).
EMBEDDING_SYSTEMS = frozenset(list_systems(lambda s: s.uses_teachers))
# Systems that take soft targets from a finished teacher_lr run.
SOFT_TARGET_SYSTEMS = frozenset(list_systems(lambda s: s.needs_probe))


class _Strict(BaseModel):
    # no inf/nan anywhere: `lr: .inf` would pass `gt=0` and wreck a run
    model_config = ConfigDict(
        extra="forbid", validate_assignment=True, populate_by_name=True, allow_inf_nan=False
    )


class DatasetConfig(_Strict):
    name: str
    root: Path
    # passed to east.datasets.load_manifest (e.g. test_fold, valid_fraction, seed)
    options: dict[str, Any] = Field(default_factory=dict)
    # limited-data study (paper 1 §5.3): keep this fraction of the training clips
    train_fraction: float = Field(1.0, gt=0.0, le=1.0)
    fraction_seed: int = 0
    # optional audio store (`east cache audio`): decoded, resampled audio at the student's rate
    audio_cache: Path | None = None


class StudentConfig(_Strict):
    name: str
    kwargs: dict[str, Any] = Field(default_factory=dict)


class TeacherConfig(_Strict):
    cache: Path  # an embedding store written by `east extract`
    weight: float = Field(1.0, ge=0.0)  # ensemble weight of this teacher's L_reg
    dim: int | None = Field(None, gt=0)  # expected embedding dim; checked against the cache
    # "auto": the reference's fixed rescaling by teacher name (VGGish (x-128)/256, OpenL3 x-2.24);
    # "standardize": per-dimension mean/std of the training clips; "none": as stored
    rescale: Literal["auto", "standardize", "none"] = "auto"
    # a clip-level teacher (one frame) is repeated this many frames and the student's maps are
    # cut to the shorter, as the reference's teacher_expand (60 for PANNs on OpenMIC: 60 of
    # CP-ResNet's 62 frames); None: it covers all the student's frames
    clip_frames: int | None = Field(None, gt=0)


class LossConfig(_Strict):
    lam: float = Field(0.0, ge=0.0, le=1.0, alias="lambda")  # L = (1-λ) L_pred + λ L_reg
    tau: float = Field(2.0, gt=0.0)  # KD temperature
    kd_weight: float = Field(0.3, ge=0.0, le=1.0)  # EAsT_KD: L_reg = kd_w·KD + (1-kd_w)·dCor
    # student taps regularised: None = the system's own (all for east_all, else final)
    stages: Literal["final", "all"] | None = None
    stage_weights: list[float] | None = None  # overrides `stages`; normalised to sum 1
    align: Literal["repeat", "linear"] = "repeat"

    @field_validator("stage_weights")
    @classmethod
    def _weights_usable(cls, value: list[float] | None) -> list[float] | None:
        if value is not None and (not value or min(value) < 0 or sum(value) <= 0):
            raise ValueError(f"need non-negative weights with a positive sum, got {value}")
        return value


class OptimizerConfig(_Strict):
    name: Literal["adam", "sgd"] = "adam"
    lr: float = Field(1e-4, gt=0.0)
    weight_decay: float = Field(1e-4, ge=0.0)
    momentum: float = Field(0.0, ge=0.0)


class SchedulerConfig(_Strict):
    # ReduceLROnPlateau on the validation loss, as the reference
    factor: float = Field(0.2, gt=0.0, lt=1.0)
    patience: int = Field(5, ge=0)
    monitor: Literal["val_loss", "val_metric"] = "val_loss"


class EarlyStoppingConfig(_Strict):
    patience: int = Field(12, ge=1)
    monitor: Literal["val_loss", "val_metric"] = "val_loss"


class TrainConfig(_Strict):
    max_steps: int = Field(100_000, gt=0)
    max_epochs: int | None = Field(None, gt=0)
    batch_size: int = Field(16, gt=1)  # >1: distance correlation is over the batch
    eval_batch_size: int | None = Field(None, gt=0)
    grad_clip: float | None = Field(1.0, gt=0.0)
    num_workers: int = Field(2, ge=0)
    shuffle_buffer: int = Field(256, gt=0)  # clips held for chunk-aware shuffling
    amp: bool = True  # only used on CUDA
    log_every: int = Field(50, gt=0)


class AugmentConfig(_Strict):
    mixup_alpha: float = Field(0.0, ge=0.0)
    # waveform: mix waveforms within the batch before the front-end (masks and mel jitter drawn
    # on the mixture); logmel: the reference's way — mix the normalised log-mels of two clips,
    # each masked and mel-range-jittered on its own, partner drawn from the whole training set
    mixup_domain: Literal["waveform", "logmel"] = "waveform"
    freq_mask: int = Field(0, ge=0)  # SpecAugment max mask widths (bins / frames)
    time_mask: int = Field(0, ge=0)


class CropConfig(_Strict):
    """Variable-length clips (see east.train.data):

    * ``full`` — whole clips, zero-padded to the longest in the batch (the papers);
    * ``fixed`` — crop or pad every clip to ``seconds`` (training; eval keeps full clips unless
      ``eval_fixed`` is true).

    Either way no clip longer than ``max_seconds`` reaches the student whole.
    """

    mode: Literal["full", "fixed"] = "full"
    seconds: float | None = Field(None, gt=0.0)
    position: Literal["start", "center", "random"] = "random"
    eval_fixed: bool = False
    # the longest clip handled whole (memory): longer training clips are cut to a window of
    # this length, longer evaluation clips are evaluated in windows and their logits averaged
    max_seconds: float = Field(60.0, gt=0.0)

    @model_validator(mode="after")
    def _seconds_for_fixed(self) -> CropConfig:
        if self.mode == "fixed" and self.seconds is None:
            raise ValueError("mode 'fixed' needs seconds")
        return self


class TeacherLRConfig(_Strict):
    # the reference's linear probe on time-averaged embeddings
    lr: float = Field(0.1, gt=0.0)
    factor: float = Field(0.1, gt=0.0, lt=1.0)
    patience: int = Field(1, ge=0)
    early_stopping: int = Field(3, ge=1)
    max_epochs: int = Field(200, gt=0)
    batch_size: int = Field(16, gt=0)


class RunConfig(_Strict):
    name: str | None = None  # run directory name; default <system>_<student>_<teacher>_s<seed>
    system: Literal[SYSTEM_NAMES]  # type: ignore[valid-type]
    seed: int = Field(1223, ge=0)  # numpy's seeded generators take no negative seeds
    device: str = "auto"
    output_dir: Path = Path("runs")
    dataset: DatasetConfig
    student: StudentConfig = StudentConfig(name="mobile_fcn")
    teachers: list[TeacherConfig] = Field(default_factory=list)
    teacher_lr_run: Path | None = None  # run directory of a finished teacher_lr run (kd, east_kd)
    loss: LossConfig = LossConfig()
    optimizer: OptimizerConfig = OptimizerConfig()
    scheduler: SchedulerConfig = SchedulerConfig()
    early_stopping: EarlyStoppingConfig = EarlyStoppingConfig()
    train: TrainConfig = TrainConfig()
    augment: AugmentConfig = AugmentConfig()
    crop: CropConfig = CropConfig()
    teacher_lr: TeacherLRConfig = TeacherLRConfig()

    @field_validator("name")
    @classmethod
    def _plain_name(cls, value: str | None) -> str | None:
        # the run directory is <output_dir>/<name>: a path would put it anywhere
        if value is not None and (
            not value.strip() or value in (".", "..") or any(c in value for c in "/\\\0")
        ):
            raise ValueError(f"{value!r} is not a folder name (no '/', not '..')")
        return value

    @property
    def system_info(self) -> SystemInfo:
        """The registry record of ``system`` (east.systems)."""
        return system_info(self.system)

    @model_validator(mode="after")
    def _system_needs(self) -> RunConfig:
        info = self.system_info
        if self.teachers and sum(t.weight for t in self.teachers) <= 0:
            raise ValueError("teachers: every teacher weight is 0; give one a positive weight")
        if info.uses_teachers and not self.teachers:
            raise ValueError(f"teachers: system '{self.system}' needs at least one teacher cache")
        if info.probe and len(self.teachers) != 1:
            raise ValueError(
                f"teachers: system '{self.system}' trains on exactly one teacher cache"
            )
        if info.needs_probe and self.teacher_lr_run is None:
            raise ValueError(
                f"teacher_lr_run: system '{self.system}' takes soft targets from a teacher_lr run"
            )
        if not info.uses_teachers and self.loss.lam != 0.0:
            raise ValueError("loss.lambda: the baseline has no L_reg; set lambda to 0")
        if info.regularized and self.loss.lam == 0.0:
            raise ValueError(f"loss.lambda: system '{self.system}' needs lambda > 0")
        return self

    def run_name(self) -> str:
        if self.name:
            return self.name
        teacher = "-".join(t.cache.stem for t in self.teachers) if self.teachers else "none"
        if self.system_info.probe:  # no student: the probe depends on the teacher only
            return f"{self.system}_{teacher}_s{self.seed}"
        return f"{self.system}_{self.student.name}_{teacher}_s{self.seed}"

    def to_yaml_dict(self) -> dict[str, Any]:
        """A plain dict (paths as strings, ``lambda`` spelled as in the files)."""
        return self.model_dump(mode="json", by_alias=True)


# ------------------------------------------------------------------------------------ loading


def _format_loc(loc: tuple[Any, ...]) -> str:
    return ".".join(str(p) for p in loc if not str(p).startswith("function-"))


def _one_line(exc: ValidationError, source: str) -> ConfigError:
    err = exc.errors()[0]
    loc = _format_loc(tuple(err.get("loc", ())))
    msg = str(err.get("msg", "invalid value"))
    msg = msg.removeprefix("Value error, ")
    if err.get("type") == "extra_forbidden":
        msg = "unknown key"
    if err.get("type") == "missing":
        msg = "required key is missing"
    more = f" (and {len(exc.errors()) - 1} more)" if len(exc.errors()) > 1 else ""
    if not loc:  # a cross-field check: its message starts with the key it is about
        return ConfigError(f"{source}: {msg}{more}")
    return ConfigError(f"{source}: {loc}: {msg}{more}")


def parse_override(text: str) -> tuple[list[str], Any]:
    """``a.b=c`` → (["a", "b"], value typed by YAML: ``1e-3`` float, ``true`` bool, ``[1,2]``)."""
    if "=" not in text:
        raise ConfigError(f"--set {text}: expected KEY=VALUE, e.g. loss.lambda=0.8")
    key, raw = text.split("=", 1)
    parts = [p for p in key.strip().split(".") if p]
    if not parts:
        raise ConfigError(f"--set {text}: empty key")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        value = raw
    if isinstance(value, str):
        value = _yaml_number(value)
    return parts, value


def _yaml_number(value: str) -> Any:
    # YAML 1.1 reads "1e-4" as a string; users mean a number
    try:
        return float(value) if any(c in value for c in ".eE") else int(value)
    except ValueError:
        return value


def _apply_override(data: dict[str, Any], parts: list[str], value: Any, text: str) -> None:
    node: Any = data
    for i, part in enumerate(parts[:-1]):
        key: Any = int(part) if isinstance(node, list) and part.isdigit() else part
        if isinstance(node, list):
            if not isinstance(key, int) or key >= len(node):
                raise ConfigError(f"--set {text}: {'.'.join(parts[: i + 1])}: no such list item")
            node = node[key]
        elif isinstance(node, dict):
            node = node.setdefault(key, {})
        else:
            raise ConfigError(f"--set {text}: {'.'.join(parts[:i])} is not a section")
    last = parts[-1]
    if isinstance(node, list):
        if not last.isdigit() or int(last) >= len(node):
            raise ConfigError(f"--set {text}: {'.'.join(parts)}: no such list item")
        node[int(last)] = value
    elif isinstance(node, dict):
        node[last] = value
    else:
        raise ConfigError(f"--set {text}: {'.'.join(parts[:-1])} is not a section")


def _fix_yaml_numbers(node: Any) -> Any:
    if isinstance(node, dict):
        return {k: _fix_yaml_numbers(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_fix_yaml_numbers(v) for v in node]
    if isinstance(node, str):
        return _yaml_number(node) if node[:1].isdigit() or node[:1] in "-." else node
    return node


def load_config_dict(
    data: dict[str, Any], overrides: list[str] | tuple[str, ...] = (), source: str = "config"
) -> RunConfig:
    """Validate a config mapping (after ``--set`` overrides)."""
    data = _fix_yaml_numbers(data)
    for text in overrides:
        parts, value = parse_override(text)
        _apply_override(data, parts, value, text)
    try:
        return RunConfig.model_validate(data)
    except ValidationError as exc:
        raise _one_line(exc, source) from None


def load_config(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> RunConfig:
    """Read and validate a YAML config; relative paths in it stay relative to the CWD."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    try:
        text = path.read_bytes().decode("utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the config ({exc.strerror or exc})") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"{path}: not a UTF-8 text file (byte {exc.start}); a config is YAML text"
        ) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{path}:{where} invalid YAML ({getattr(exc, 'problem', exc)})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of keys at the top level")
    return load_config_dict(data, overrides, source=str(path))


# -------------------------------------------------------------------- checks outside the file


def check_resources(cfg: RunConfig, manifest: Any, sample_rate: int | None = None) -> list[Any]:
    """Open every teacher cache (and the audio cache) and check it against the manifest and the
    config: made for this clip list, complete, and every done chunk sound
    (:func:`east.cache_schema.validate`: missing, corrupt or changed chunks, NaN/Inf).
    ``sample_rate``: the student's, which an audio cache must hold.

    Returns the opened teacher stores (same order as ``cfg.teachers``). Raises one-line
    ConfigErrors.
    """
    stores = []
    for i, teacher in enumerate(cfg.teachers):
        key = f"teachers.{i}.cache"
        store = _open_checked(key, teacher.cache, "embeddings", manifest)
        if teacher.dim is not None and teacher.dim != store.dim:
            raise ConfigError(
                f"teachers.{i}.dim: {teacher.dim} does not fit {teacher.cache} (dim {store.dim})"
            )
        stores.append(store)
    if cfg.dataset.audio_cache is not None:
        check_audio_cache(cfg, manifest, sample_rate)
    if cfg.system_info.needs_probe and cfg.teacher_lr_run is not None:
        _check_teacher_lr_run(cfg, manifest, stores)
    return stores


def check_audio_cache(cfg: RunConfig, manifest: Any, sample_rate: int | None = None) -> Any:
    """The ``dataset.audio_cache`` store, checked like a teacher cache (and for the rate)."""
    path = cfg.dataset.audio_cache
    assert path is not None
    store = _open_checked("dataset.audio_cache", path, "audio", manifest)
    if sample_rate is not None and store.sample_rate != sample_rate:
        raise ConfigError(
            f"dataset.audio_cache: {path}: audio stored at {store.sample_rate} Hz, the student "
            f"needs {sample_rate} Hz (run `east cache audio --sr {sample_rate}`)"
        )
    return store


def _open_checked(key: str, path: Path, kind: str, manifest: Any) -> Any:
    """Open an east store of ``kind`` for training; one-line ConfigErrors naming ``key``."""
    from east import cache_schema
    from east.errors import CacheError

    tool = "east extract" if kind == "embeddings" else "east cache audio"
    if not Path(path).exists():
        raise ConfigError(f"{key}: {path}: cache not found (run `{tool}`)")
    opener = cache_schema.open_store if kind == "embeddings" else cache_schema.open_audio_store
    try:
        store = opener(path, mode="r")
    except CacheError as exc:
        raise ConfigError(f"{key}: {exc}") from None
    except Exception as exc:  # not a store at all (zarr raises various errors)
        raise ConfigError(f"{key}: {path}: not an east {kind} store ({_first_line(exc)})") from None
    made_for = str(store.attrs.get("manifest_hash", ""))
    if made_for != manifest.hash or store.num_clips != len(manifest):
        raise ConfigError(
            f"{key}: {path} was made for another clip list "
            f"(dataset {store.attrs.get('dataset')!r}, manifest {made_for}, {store.num_clips} "
            f"clips) than {manifest.name} at {manifest.root} (manifest {manifest.hash}, "
            f"{len(manifest)} clips)"
        )
    pending = int((store.status == 0).sum())
    if pending:
        verb = "extracted" if kind == "embeddings" else "decoded"
        raise ConfigError(
            f"{key}: {path}: {pending} of {store.num_clips} clips are not {verb} yet "
            f"(re-run `{tool}` to finish it)"
        )
    report = cache_schema.validate(store, manifest, allow_failed=True)
    if not report.ok:
        more = (
            f" (and {len(report.problems) - 1} more problems)" if len(report.problems) > 1 else ""
        )
        raise ConfigError(
            f"{key}: {path}: {_first_line(report.problems[0])}{more}; east does not train on it "
            f"(`east cache verify {path}` lists the problems, re-running `{tool}` repairs them)"
        )
    return store


def _first_line(exc: object) -> str:
    lines = str(exc).strip().splitlines()
    return (lines[0] if lines else type(exc).__name__)[:300]


def _check_teacher_lr_run(cfg: RunConfig, manifest: Any, stores: list[Any]) -> None:
    from east.run_dir import RunDir

    run_dir = RunDir(cfg.teacher_lr_run)  # type: ignore[arg-type]
    run = run_dir.path
    if not run_dir.config.is_file() or not run_dir.best.is_file():
        raise ConfigError(f"teacher_lr_run: {run}: not a finished run (no config.yaml/best.pt)")
    other = run_dir.read_config()
    if not other.system_info.probe:
        raise ConfigError(f"teacher_lr_run: {run} is a '{other.system}' run, not teacher_lr")

    info_path = run_dir.run_info
    try:
        info = json.loads(info_path.read_text()) if info_path.is_file() else {}
    except (OSError, ValueError) as exc:
        raise ConfigError(f"teacher_lr_run: {info_path}: unreadable ({_first_line(exc)})") from None
    if not isinstance(info, dict):
        raise ConfigError(f"teacher_lr_run: {info_path}: not a run_info mapping")
    if info.get("manifest_hash") not in (None, manifest.hash):
        raise ConfigError(f"teacher_lr_run: {run} was trained on another clip list")
    if info.get("num_classes") not in (None, manifest.num_classes):
        raise ConfigError(
            f"teacher_lr_run: {run} predicts {info.get('num_classes')} classes, "
            f"the dataset has {manifest.num_classes}"
        )
    dim = info.get("teacher_dim")
    if dim is not None and stores and dim != stores[0].dim:
        raise ConfigError(
            f"teacher_lr_run: {run} probes {dim}-dim embeddings; "
            f"{cfg.teachers[0].cache} holds {stores[0].dim}"
        )
