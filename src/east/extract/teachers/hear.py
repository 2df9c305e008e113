"""Any HEAR 2021 module as a teacher: ``hear:MODULE[?model_file=PATH&scene=1&max_seconds=S]``.

The HEAR API (hear-eval-kit, hearbaseline, hear21passt, ...) is three functions of an importable
module: ``load_model(model_file="")`` returns a ``torch.nn.Module`` carrying ``sample_rate``,
``timestamp_embedding_size`` and ``scene_embedding_size``;
``get_timestamp_embeddings(audio (n, samples), model) -> (emb (n, T, D), timestamps (n, T) ms)``
and ``get_scene_embeddings(audio, model) -> (n, D)``.

How east uses one:

* the module is imported and ``load_model`` called (with ``model_file`` when the spec or
  ``--weights`` names one); the model's ``sample_rate`` and ``timestamp_embedding_size``
  (``scene_embedding_size`` with ``scene=1``) are the store facts;
* frames: the module's timestamps are frame *centres* in milliseconds; east stores frame ``i``
  as ``[c_i − w/2, c_i + w/2]`` seconds, where the window ``w`` is the model's declared
  ``window_s`` attribute if it has one, else the timestamp spacing. The hop (``hop_s``) is the
  model's declared ``hop_s``, else the median spacing measured on a 2 s probe at load time;
* ``scene=1``: ``get_scene_embeddings``, one clip-level frame (T = 1);
* batching: only clips of equal length share a call (a HEAR module embeds the padded batch
  as given, so padding would change the numbers); a model attribute ``max_batch_size`` caps
  the clips per call, and ``max_samples`` / ``max_seconds`` (attribute, or ``max_seconds=`` in
  the spec) the samples per clip: a longer clip is embedded in consecutive segments of at most
  that many samples (a whole number of hops), their timestamps shifted by the segment start
  and frames repeated at a cut dropped. Segments do not see each other's audio. In scene mode
  a clip longer than the limit fails (a scene embedding cannot be stitched);
* provenance: the teacher name is the spec, ``teacher_family`` is ``hear:MODULE==VERSION``
  (the installed distribution's version, else ``MODULE.__version__``, else ``unknown``), and
  ``weights_sha256`` the sha256 of the model file (without one: ``source:`` + the sha256 of
  the module's source file);
* every failure of the module (import, ``load_model``, an embedding call, a wrong shape) is a
  one-line error naming the module.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import inspect
import math
from dataclasses import dataclass, replace
from pathlib import Path
from types import ModuleType
from typing import Any
from urllib.parse import parse_qsl

import torch
from torch import Tensor, nn

from east.errors import ConfigError, EastError, WeightsError
from east.extract.teachers.base import Teacher, TeacherInfo, TeacherOutput
from east.extract.weights import sha256_file

__all__ = [
    "PREFIX",
    "HearSpec",
    "HearTeacher",
    "create_hear_teacher",
    "hear_teacher_info",
    "parse_hear_spec",
]

PREFIX = "hear:"
_OPTIONS = ("model_file", "scene", "max_seconds")
_PROBE_SECONDS = 2.0


@dataclass(frozen=True)
class HearSpec:
    """A parsed ``hear:MODULE?...`` spec."""

    module: str
    model_file: str | None = None
    scene: bool = False
    max_seconds: float | None = None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0][:200]}" if text else type(exc).__name__


def parse_hear_spec(spec: str) -> HearSpec:
    """``hear:MODULE[?model_file=PATH&scene=1&max_seconds=S]`` → :class:`HearSpec`."""
    if not spec.startswith(PREFIX):
        raise ConfigError(f"not a HEAR teacher spec: {spec!r} (use hear:MODULE)")
    module, _, query = spec[len(PREFIX) :].partition("?")
    if not module or not all(part.isidentifier() for part in module.split(".")):
        raise ConfigError(f"teacher {spec}: {module!r} is not a Python module name")
    options = dict(parse_qsl(query, keep_blank_values=True, strict_parsing=False))
    unknown = sorted(set(options) - set(_OPTIONS))
    if unknown:
        raise ConfigError(
            f"teacher {spec}: unknown option {', '.join(unknown)} (known: {', '.join(_OPTIONS)})"
        )
    scene = options.get("scene", "0").lower()
    if scene not in ("0", "1", "true", "false", "yes", "no", ""):
        raise ConfigError(f"teacher {spec}: scene must be 0 or 1 (got {scene!r})")
    max_seconds = None
    if "max_seconds" in options:
        try:
            max_seconds = float(options["max_seconds"])
        except ValueError:
            max_seconds = -1.0
        if not (math.isfinite(max_seconds) and max_seconds > 0):
            raise ConfigError(f"teacher {spec}: max_seconds must be a positive number of seconds")
    return HearSpec(
        module=module,
        model_file=options.get("model_file") or None,
        scene=scene in ("1", "true", "yes"),
        max_seconds=max_seconds,
    )


# --------------------------------------------------------------------------- loading


def _import_module(parsed: HearSpec, spec: str) -> ModuleType:
    try:
        module = importlib.import_module(parsed.module)
    except ImportError as exc:
        raise ConfigError(
            f"cannot import HEAR module {parsed.module} for teacher {spec} ({_first_line(exc)}; "
            "is it installed in this environment?)"
        ) from None
    except Exception as exc:  # the module's own import-time bugs
        raise ConfigError(
            f"HEAR module {parsed.module} failed to import ({_first_line(exc)})"
        ) from None
    needed = ("load_model", "get_scene_embeddings" if parsed.scene else "get_timestamp_embeddings")
    for name in needed:
        if not callable(getattr(module, name, None)):
            raise ConfigError(
                f"HEAR module {parsed.module} has no {name}(): not a HEAR 2021 API module "
                f"(teacher {spec})"
            )
    return module


def _load_model(module: ModuleType, parsed: HearSpec) -> nn.Module:
    name = parsed.module
    if parsed.model_file is not None and not Path(parsed.model_file).expanduser().is_file():
        raise WeightsError(f"HEAR module {name}: model file {parsed.model_file} does not exist")
    try:
        if parsed.model_file is not None:
            model = module.load_model(str(Path(parsed.model_file).expanduser()))
        else:
            model = module.load_model()
    except Exception as exc:
        raise WeightsError(f"HEAR module {name}: load_model failed ({_first_line(exc)})") from None
    if not isinstance(model, nn.Module):
        raise ConfigError(
            f"HEAR module {name}: load_model returned {type(model).__name__}, not a "
            "torch.nn.Module (east runs PyTorch HEAR modules only)"
        )
    return model


def _model_int(model: nn.Module, attr: str, module: str) -> int:
    value = getattr(model, attr, None)
    if isinstance(value, Tensor) and value.numel() == 1:
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, (int, float)) or int(value) != value:
        raise ConfigError(f"HEAR module {module}: the model has no integer {attr} attribute")
    if value <= 0:
        raise ConfigError(f"HEAR module {module}: model.{attr} must be positive (got {value})")
    return int(value)


def _model_float(model: nn.Module, attr: str) -> float | None:
    value = getattr(model, attr, None)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
        return None
    return float(value)


def _module_version(module: ModuleType) -> str:
    top = module.__name__.split(".")[0]
    for dist in importlib.metadata.packages_distributions().get(top, []):
        try:
            return importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:  # pragma: no cover - broken install
            continue
    version = getattr(module, "__version__", None)
    return str(version) if version else "unknown"


def _weights_digest(module: ModuleType, parsed: HearSpec) -> str:
    if parsed.model_file is not None:
        return sha256_file(Path(parsed.model_file).expanduser())
    try:
        source = inspect.getsourcefile(module)
    except TypeError:
        source = None
    return "source:" + (sha256_file(source) if source else "unknown")


# --------------------------------------------------------------------------- the teacher


class HearTeacher(Teacher):
    """A HEAR 2021 module wrapped as a :class:`Teacher` (see the module docstring)."""

    def __init__(
        self,
        module: ModuleType,
        model: nn.Module,
        parsed: HearSpec,
        weights_sha256: str,
    ) -> None:
        super().__init__()
        self.module_name = parsed.module
        self.scene = parsed.scene
        self._module = (module,)  # a tuple: not a submodule, not pickled as one
        self.model = model
        self.module_version = _module_version(module)
        self.weights_sha256 = weights_sha256
        sr = _model_int(model, "sample_rate", parsed.module)
        size_attr = "scene_embedding_size" if parsed.scene else "timestamp_embedding_size"
        dim = _model_int(model, size_attr, parsed.module)
        self.max_batch = _max_batch(model)
        self.max_samples = _max_samples(model, parsed, sr)
        self.info = TeacherInfo(  # provisional (the probe below needs sample_rate and dim)
            name=_teacher_name(parsed),
            family=f"hear:{parsed.module}=={self.module_version}",
            sample_rate=sr,
            embedding_dim=dim,
            window_s=None,
            hop_s=None,
            description=f"HEAR module {parsed.module} {self.module_version}",
        )
        if not parsed.scene:
            window_s, hop_s = self._measure_frames(model)
            self.info = replace(self.info, window_s=window_s, hop_s=hop_s)

    # -- calling the module ------------------------------------------------------------

    def _call_module(self, audio: Tensor) -> tuple[Tensor, Tensor | None]:
        """One call of the module on ``(n, samples)`` audio; its output, checked."""
        module = self._module[0]
        fn = "get_scene_embeddings" if self.scene else "get_timestamp_embeddings"
        try:
            out = getattr(module, fn)(audio.float().contiguous(), self.model)
        except Exception as exc:
            raise EastError(
                f"HEAR module {self.module_name}: {fn} failed ({_first_line(exc)})"
            ) from None
        n, dim = audio.shape[0], self.info.embedding_dim
        if self.scene:
            emb = _as_tensor(out, self.module_name, fn)
            if emb.shape != (n, dim):
                raise EastError(
                    f"HEAR module {self.module_name}: {fn} returned {tuple(emb.shape)}, "
                    f"expected ({n}, {dim})"
                )
            return emb.float().unsqueeze(1), None
        if not isinstance(out, (tuple, list)) or len(out) != 2:
            raise EastError(
                f"HEAR module {self.module_name}: {fn} must return (embeddings, timestamps)"
            )
        emb = _as_tensor(out[0], self.module_name, fn)
        ts = _as_tensor(out[1], self.module_name, fn)
        if emb.ndim != 3 or emb.shape[0] != n or emb.shape[2] != dim or ts.shape != emb.shape[:2]:
            raise EastError(
                f"HEAR module {self.module_name}: {fn} returned embeddings {tuple(emb.shape)} and "
                f"timestamps {tuple(ts.shape)}, expected ({n}, T, {dim}) and ({n}, T)"
            )
        ts = ts.double().cpu()
        if emb.shape[1] < 1 or not torch.isfinite(ts).all() or (ts.diff(dim=1) <= 0).any():
            raise EastError(
                f"HEAR module {self.module_name}: {fn} returned no frames or timestamps that "
                "are not increasing"
            )
        return emb.float(), ts

    def _measure_frames(self, model: nn.Module) -> tuple[float, float]:
        """``(window_s, hop_s)``: the model's declared ones, else the measured spacing."""
        hop = _model_float(model, "hop_s")
        window = _model_float(model, "window_s")
        if hop is None:
            sr = self.info.sample_rate
            n = int(_PROBE_SECONDS * sr)
            if self.max_samples is not None:
                n = min(n, self.max_samples)
            with torch.inference_mode():
                _, ts = self._call_module(torch.zeros(1, n, device=self.device))
            assert ts is not None
            if ts.shape[1] < 2:
                raise ConfigError(
                    f"HEAR module {self.module_name}: one timestamp for {n / sr:g} s of audio, "
                    "so its frame hop cannot be measured; declare model.hop_s (seconds), or use "
                    "scene=1"
                )
            hop = float(ts[0].diff().median()) / 1000.0
        return (window if window is not None else hop), hop

    def _embed_clips(self, audio: Tensor) -> tuple[Tensor, Tensor | None]:
        """Embed ``(n, L)`` clips of one length, cut to the module's limits."""
        limit = self.max_samples
        length = audio.shape[1]
        if limit is None or length <= limit:
            return self._call_batched(audio)
        if self.scene:
            raise EastError(
                f"HEAR module {self.module_name} accepts at most {limit} samples; this clip has "
                f"{length} (crop with --max-seconds)"
            )
        hop = max(1, round(float(self.info.hop_s) * self.info.sample_rate))  # type: ignore[arg-type]
        segment = max(hop, (limit // hop) * hop)
        embs: list[Tensor] = []
        stamps: list[Tensor] = []
        last = -math.inf
        for start in range(0, length, segment):
            emb, ts = self._call_batched(audio[:, start : start + segment])
            assert ts is not None
            ts = ts + 1000.0 * start / self.info.sample_rate
            keep = ts[0] > last + 1e-6  # a frame at the cut is given by both segments
            embs.append(emb[:, keep])
            stamps.append(ts[:, keep])
            last = float(stamps[-1][0, -1]) if stamps[-1].shape[1] else last
        return torch.cat(embs, dim=1), torch.cat(stamps, dim=1)

    def _call_batched(self, audio: Tensor) -> tuple[Tensor, Tensor | None]:
        """``_call_module`` over sub-batches of at most ``max_batch`` clips."""
        step = self.max_batch or audio.shape[0]
        outs = [self._call_module(audio[i : i + step]) for i in range(0, audio.shape[0], step)]
        emb = torch.cat([o[0] for o in outs])
        ts = None if self.scene else torch.cat([o[1] for o in outs])  # type: ignore[misc]
        return emb, ts

    def embed(self, waveforms: Tensor, lengths: Tensor) -> TeacherOutput:
        lengths = lengths.to("cpu", torch.long)
        waveforms = waveforms.to(self.device)
        groups: dict[int, list[int]] = {}
        for i, n in enumerate(lengths.tolist()):
            groups.setdefault(max(int(n), 1), []).append(i)
        embs: dict[int, Tensor] = {}
        stamps: dict[int, Tensor] = {}
        for n, rows in sorted(groups.items()):
            emb, ts = self._embed_clips(waveforms[rows, :n])
            for j, i in enumerate(rows):
                embs[i] = emb[j]
                if ts is not None:
                    stamps[i] = ts[j]
        num_frames = torch.tensor([embs[i].shape[0] for i in range(len(lengths))])
        out = torch.zeros(
            (len(lengths), int(num_frames.max()), self.info.embedding_dim), device=self.device
        )
        for i, e in embs.items():
            out[i, : e.shape[0]] = e
        if self.scene:
            times = torch.tensor([[0.0, float(lengths.max()) / self.info.sample_rate]])
        else:
            times = self._frame_times(stamps, int(num_frames.argmax()))
        return TeacherOutput(embeddings=out, num_frames=num_frames, frame_times=times.double())

    def _frame_times(self, stamps: dict[int, Tensor], longest: int) -> Tensor:
        """The batch's ``(T, 2)`` frame times from the longest clip's timestamps (every
        clip's timestamps must be a prefix of them: frames on one grid)."""
        grid = stamps[longest]
        for ts in stamps.values():
            if not torch.allclose(ts, grid[: ts.shape[0]], atol=1e-3, rtol=0):
                raise EastError(
                    f"HEAR module {self.module_name}: timestamps depend on the clip length "
                    "(clips of a batch are not on one frame grid)"
                )
        centres = grid / 1000.0
        half = float(self.info.window_s) / 2  # type: ignore[arg-type]
        return torch.stack([centres - half, centres + half], dim=1)


def _as_tensor(value: Any, module: str, fn: str) -> Tensor:
    if isinstance(value, Tensor):
        return value.detach()
    try:
        return torch.as_tensor(value)
    except Exception:
        raise EastError(
            f"HEAR module {module}: {fn} returned {type(value).__name__}, not a tensor"
        ) from None


def _max_batch(model: nn.Module) -> int | None:
    value = getattr(model, "max_batch_size", None)
    return (
        int(value) if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None
    )


def _max_samples(model: nn.Module, parsed: HearSpec, sr: int) -> int | None:
    """The most samples per clip the module accepts: the spec's ``max_seconds``, else the
    model's ``max_samples`` / ``max_seconds`` attributes; ``None``: no limit."""
    seconds = parsed.max_seconds or _model_float(model, "max_seconds")
    if seconds is not None:
        return max(1, int(seconds * sr))
    samples = getattr(model, "max_samples", None)
    if isinstance(samples, int) and not isinstance(samples, bool) and samples > 0:
        return samples
    return None


def _teacher_name(parsed: HearSpec) -> str:
    return parsed.module + ("-scene" if parsed.scene else "")


def create_hear_teacher(
    spec: str, weights: str | Path | None = None, device: str = "cpu"
) -> Teacher:
    """Build the teacher of a ``hear:MODULE[?...]`` spec, in eval mode, frozen, on ``device``.

    ``weights`` (``--weights``) is the model file when the spec names none.
    """
    parsed = parse_hear_spec(spec)
    if weights is not None:
        if str(weights) == "random":
            raise ConfigError(
                f"teacher {spec}: a HEAR module loads its own weights; drop --weights random"
            )
        if parsed.model_file is not None:
            raise ConfigError(
                f"teacher {spec}: give the model file once (model_file= or --weights), not both"
            )
        parsed = HearSpec(parsed.module, str(weights), parsed.scene, parsed.max_seconds)
    module = _import_module(parsed, spec)
    model = _load_model(module, parsed).to(device).eval().requires_grad_(False)
    teacher = HearTeacher(module, model, parsed, _weights_digest(module, parsed))
    return teacher.to(device).eval().requires_grad_(False)


def hear_teacher_info(spec: str) -> TeacherInfo:
    """The :class:`TeacherInfo` of a HEAR spec (loads the module's model to read it)."""
    return create_hear_teacher(spec).info
