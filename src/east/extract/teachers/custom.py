"""Any user model as a teacher: a TorchScript file, a ``torch.export`` program or a Python factory.

Teacher specs (anywhere a teacher name is accepted, e.g. ``east extract --teacher``):

* ``torchscript:/path/model.pt`` — a ``torch.jit.save``\\ d module;
* ``export:/path/model.pt2`` — a ``torch.export.save``\\ d program (the successor of
  TorchScript; export it with a dynamic batch/length dimension for variable inputs);
* ``py:package.module:factory`` — ``factory()`` (called with ``weights=`` and/or ``device=``
  when its signature has them) returns either a ready :class:`Teacher` (used as is) or an
  ``nn.Module`` / callable that is wrapped like the files above.

A wrapped model is called as ``model(waveforms)`` with ``(B, L)`` float32 mono audio at its
declared ``sample_rate`` — or ``model(waveforms, lengths)`` when its forward takes two
arguments — and returns ``(B, T, D)`` frame embeddings, or ``(B, D)`` for a clip-level model.
Frame ``i`` spans ``[i·hop_s, i·hop_s + window_s]`` seconds.

Declared facts, first found wins: keyword arguments of :func:`create_custom_teacher`; a
sidecar next to the model file with the same stem (``model.yaml``, ``model.yml`` or
``model.json``; for ``py:`` specs, ``declared=PATH`` in the keyword arguments); attributes of
the model itself (``sample_rate``, ``embedding_dim``/``dim``, ``window_s``, ``hop_s``)::

    name: my-teacher      # shown in provenance (default: the file stem / factory name)
    sample_rate: 16000    # Hz, required
    dim: 512              # embedding size D, required
    window_s: 1.0         # frame window; leave out window_s and hop_s for clip-level models
    hop_s: 0.5
    batching: exact       # exact (default): only clips of equal length share a forward,
                          # so an embedding never depends on its batch; padded: zero-pad
                          # the batch to its longest clip (faster, for length-robust models)
    licence: CC-BY-4.0
    description: my fine-tuned model

Valid frames: with ``exact`` batching, the frames the model returns for the clip; with
``padded`` batching, ``max(1, 1 + floor((seconds − window_s) / hop_s))`` capped at what the
model returned (the last partial window is dropped). Provenance: ``weights_sha256`` is the
sha256 of the model file (``py:`` specs: of the ``weights`` file if one was passed, else
``source:`` + the sha256 of the factory's source file).
"""

from __future__ import annotations

import importlib
import inspect
import json
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from torch import Tensor, nn

from east.errors import ConfigError, EastError, WeightsError
from east.extract.teachers.base import Teacher, TeacherInfo, TeacherOutput, frame_times
from east.extract.weights import sha256_file

__all__ = [
    "PREFIXES",
    "CustomTeacher",
    "DeclaredFacts",
    "create_custom_teacher",
    "custom_teacher_info",
    "find_sidecar",
    "is_custom_spec",
]

PREFIXES = ("torchscript:", "export:", "py:", "hear:")  # hear: HEAR modules (hear.py)
_SIDECAR_SUFFIXES = (".yaml", ".yml", ".json")


def is_custom_spec(name: str) -> bool:
    """Whether ``name`` is a custom teacher spec rather than a registered teacher name."""
    return name.startswith(PREFIXES)


class DeclaredFacts(BaseModel):
    """What a custom teacher must declare (sidecar file, keyword arguments or attributes)."""

    model_config = ConfigDict(extra="forbid")

    name: str | None = None
    sample_rate: int = Field(gt=0)
    dim: int = Field(gt=0)
    window_s: float | None = Field(default=None, gt=0)
    hop_s: float | None = Field(default=None, gt=0)
    batching: Literal["exact", "padded"] = "exact"
    licence: str = ""
    description: str = ""


# --------------------------------------------------------------------------- the wrapper


class CustomTeacher(Teacher):
    """Wraps a model returning ``(B, T, D)`` or ``(B, D)`` as a :class:`Teacher`."""

    def __init__(
        self, model: Any, facts: DeclaredFacts, info: TeacherInfo, device: str = "cpu"
    ) -> None:
        super().__init__()
        self.info = info
        self.facts = facts
        # nn.Module / ScriptModule register as submodules (so .to(device) moves them); plain
        # callables and exported programs (whose modules refuse .train()/.eval()) are kept
        # aside, already on ``device``
        if isinstance(model, nn.Module) and _supports_eval(model):
            self.model = model
        else:
            # a tuple, so nn.Module does not register it as a submodule
            self._callable = (model,)
        self._callable_device = torch.device(device)
        self._takes_lengths = _takes_lengths(model)

    def _call(self, waveforms: Tensor, lengths: Tensor) -> Tensor:
        model = self.model if "model" in self._modules else self._callable[0]
        out = model(waveforms, lengths) if self._takes_lengths else model(waveforms)
        if isinstance(out, (tuple, list)):
            out = out[0]
        if not isinstance(out, Tensor) or out.ndim not in (2, 3):
            shape = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
            raise EastError(f"teacher {self.info.name} returned {shape}; expected (B, T, D)")
        if out.ndim == 2:
            out = out.unsqueeze(1)
        if out.shape[-1] != self.info.embedding_dim:
            raise EastError(
                f"teacher {self.info.name} returned dim {out.shape[-1]}, "
                f"declared {self.info.embedding_dim}"
            )
        return out.float()

    def _expected_frames(self, lengths: Tensor) -> Tensor:
        if self.info.clip_level:
            return torch.ones_like(lengths)
        seconds = lengths.double() / self.info.sample_rate
        window, hop = float(self.info.window_s), float(self.info.hop_s)  # type: ignore[arg-type]
        frames = torch.floor((seconds - window) / hop + 1e-9).long() + 1
        return frames.clamp(min=1)

    def embed(self, waveforms: Tensor, lengths: Tensor) -> TeacherOutput:
        lengths = lengths.to("cpu", torch.long)
        device = self.device if "model" in self._modules else self._callable_device
        waveforms = waveforms.to(device)
        if self.facts.batching == "padded":
            longest = int(lengths.max())
            emb = self._call(waveforms[:, :longest], lengths.to(device))
            num_frames = torch.minimum(self._expected_frames(lengths), torch.tensor(emb.shape[1]))
        else:
            groups: dict[int, list[int]] = {}
            for i, n in enumerate(lengths.tolist()):
                groups.setdefault(n, []).append(i)
            parts: dict[int, Tensor] = {}
            for n, rows in groups.items():
                sub = self._call(waveforms[rows, :n], lengths[rows].to(device))
                for j, i in enumerate(rows):
                    parts[i] = sub[j]
            num_frames = torch.tensor([parts[i].shape[0] for i in range(len(lengths))])
            emb = torch.zeros(
                (len(lengths), int(num_frames.max()), self.info.embedding_dim), device=device
            )
            for i, part in parts.items():
                emb[i, : part.shape[0]] = part
        if self.info.clip_level:
            end = float(lengths.max()) / self.info.sample_rate
            times = torch.tensor([[0.0, end]], dtype=torch.float64)
        else:
            times = frame_times(emb.shape[1], self.info.window_s, self.info.hop_s)  # type: ignore[arg-type]
        return TeacherOutput(embeddings=emb, num_frames=num_frames, frame_times=times)


def _supports_eval(model: nn.Module) -> bool:
    try:
        model.eval()
    except NotImplementedError:  # torch.export's unlifted modules
        return False
    return True


def _takes_lengths(model: Any) -> bool:
    schema = getattr(getattr(model, "forward", None), "schema", None)
    if schema is not None:  # TorchScript: the first argument is self
        return len(schema.arguments) - 1 >= 2
    target = model.forward if isinstance(model, nn.Module) else model
    try:
        params = [
            p
            for p in inspect.signature(target).parameters.values()
            if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
        ]
    except (TypeError, ValueError):
        return False
    return len(params) >= 2


# --------------------------------------------------------------------------- declared facts


def _read_sidecar(path: Path) -> dict[str, Any]:
    import yaml

    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read teacher declaration ({exc.strerror})") from None
    try:
        data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(f"{path}: not valid {path.suffix[1:].upper()} ({first})") from None
    if data is None:
        return {}
    if not isinstance(data, Mapping):
        raise ConfigError(f"{path}: expected a mapping of teacher facts")
    return dict(data)


def find_sidecar(model_path: Path) -> Path | None:
    """``model.yaml`` / ``model.yml`` / ``model.json`` next to ``model.pt``, if any."""
    for suffix in _SIDECAR_SUFFIXES:
        candidate = model_path.with_suffix(suffix)
        if candidate.is_file():
            return candidate
    return None


def _attribute_facts(model: Any) -> dict[str, Any]:
    facts: dict[str, Any] = {}
    for key, names in {
        "sample_rate": ("sample_rate",),
        "dim": ("embedding_dim", "dim"),
        "window_s": ("window_s",),
        "hop_s": ("hop_s",),
    }.items():
        for attr in names:
            try:
                value = getattr(model, attr)
            except Exception:  # ScriptModules raise RuntimeError for missing attributes
                continue
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                facts[key] = value
                break
    return facts


def _declare(
    spec: str,
    default_name: str,
    declared: Mapping[str, Any],
    sidecar: Path | None,
    model: Any,
) -> DeclaredFacts:
    merged = _attribute_facts(model)
    source = "model attributes"
    if sidecar is not None:
        merged.update(_read_sidecar(sidecar))
        source = str(sidecar)
    merged.update({k: v for k, v in declared.items() if v is not None})
    merged.setdefault("name", default_name)
    try:
        facts = DeclaredFacts(**merged)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'facts'}: {err['msg']}"
            for err in exc.errors()
        )
        where = sidecar or (
            Path(spec.split(":", 1)[1]).with_suffix(".yaml")
            if not spec.startswith("py:")
            else "declared=PATH"
        )
        raise ConfigError(
            f"teacher {spec}: {problems} (declare sample_rate, dim and window_s/hop_s in "
            f"{where}; read from {source})"
        ) from None
    if (facts.window_s is None) != (facts.hop_s is None):
        raise ConfigError(
            f"teacher {spec}: declare both window_s and hop_s, or neither for a clip-level model"
        )
    return facts


def _info(spec: str, facts: DeclaredFacts) -> TeacherInfo:
    return TeacherInfo(
        name=facts.name or spec,
        family="custom",
        sample_rate=facts.sample_rate,
        embedding_dim=facts.dim,
        window_s=facts.window_s,
        hop_s=facts.hop_s,
        description=facts.description or f"user model {spec}",
        licence=facts.licence,
    )


# --------------------------------------------------------------------------- loading


def _load_file_model(kind: str, path: Path) -> Any:
    if not path.is_file():
        raise WeightsError(f"{kind} model file {path} does not exist")
    try:
        with warnings.catch_warnings():
            # TorchScript is deprecated in recent torch but still the common exchange format
            warnings.simplefilter("ignore", DeprecationWarning)
            warnings.simplefilter("ignore", FutureWarning)
            if kind == "torchscript":
                return torch.jit.load(str(path), map_location="cpu")
            return torch.export.load(str(path)).module()
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise WeightsError(f"{path} is not a loadable {kind} model ({first[:200]})") from None


def _import_factory(target: str) -> Callable[..., Any]:
    module_name, _, attr = target.partition(":")
    if not module_name or not attr:
        raise ConfigError(f"py teacher spec must be py:package.module:factory, got py:{target}")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(f"cannot import {module_name} for teacher py:{target} ({exc})") from None
    factory = module
    for part in attr.split("."):
        factory = getattr(factory, part, None)
        if factory is None:
            raise ConfigError(f"{module_name} has no attribute {attr} (teacher py:{target})")
    if not callable(factory):
        raise ConfigError(f"{module_name}:{attr} is not callable (teacher py:{target})")
    return factory  # type: ignore[return-value]


def _call_factory(
    factory: Callable[..., Any], weights: str | Path | None, device: str
) -> tuple[Any, bool]:
    """Call ``factory`` with the keywords it accepts; also say whether it took ``weights``."""
    try:
        params = inspect.signature(factory).parameters
    except (TypeError, ValueError):
        params = {}
    has_var_kw = any(p.kind is p.VAR_KEYWORD for p in params.values())
    kwargs: dict[str, Any] = {}
    took_weights = False
    if weights is not None and ("weights" in params or has_var_kw):
        kwargs["weights"] = weights
        took_weights = True
    if "device" in params or has_var_kw:
        kwargs["device"] = device
    return factory(**kwargs), took_weights


def create_custom_teacher(
    spec: str,
    weights: str | Path | None = None,
    device: str = "cpu",
    **declared: Any,
) -> Teacher:
    """Build the teacher of a ``torchscript:``/``export:``/``py:`` spec, in eval mode, frozen.

    ``declared`` holds facts (``sample_rate``, ``dim``, ``window_s``, ``hop_s``, ``name``,
    ``batching``, ``licence``, ``description``) and, for ``py:`` specs, ``declared=PATH`` to a
    sidecar file. ``weights`` is passed to ``py:`` factories that take it; for model files it
    must be ``None`` (the file is the weights) or ``"random"``, which is refused.
    """
    if not is_custom_spec(spec):
        raise ConfigError(f"not a custom teacher spec: {spec!r} (use one of {', '.join(PREFIXES)})")
    if spec.startswith("hear:"):  # a HEAR 2021 module declares its own facts
        from east.extract.teachers.hear import create_hear_teacher

        if declared:
            raise ConfigError(f"teacher {spec}: a HEAR module declares its own facts")
        return create_hear_teacher(spec, weights=weights, device=device)
    kind, _, target = spec.partition(":")
    sidecar_arg = declared.pop("declared", None)
    if kind in ("torchscript", "export"):
        if weights is not None:
            raise ConfigError(
                f"teacher {spec}: the model file holds its weights; drop --weights {weights}"
            )
        path = Path(target).expanduser()
        model = _load_file_model(kind, path)
        if kind == "export":
            model = model.to(device)
        sidecar = Path(sidecar_arg) if sidecar_arg else find_sidecar(path)
        facts = _declare(spec, path.stem, declared, sidecar, model)
        sha = sha256_file(path)
    else:
        factory = _import_factory(target)
        model, took_weights = _call_factory(factory, weights, device)
        if isinstance(model, Teacher):
            return model.to(device).eval().requires_grad_(False)
        sidecar = Path(sidecar_arg) if sidecar_arg else None
        facts = _declare(spec, target.rpartition(":")[2], declared, sidecar, model)
        if took_weights and weights not in (None, "random") and Path(weights).is_file():
            sha = sha256_file(weights)
        elif took_weights and weights == "random":
            sha = "random"
        else:
            source = inspect.getsourcefile(factory)
            sha = "source:" + (sha256_file(source) if source else "unknown")
    teacher = CustomTeacher(model, facts, _info(spec, facts), device)
    teacher.weights_sha256 = sha
    return teacher.to(device).eval().requires_grad_(False)


def custom_teacher_info(spec: str, **declared: Any) -> TeacherInfo:
    """The :class:`TeacherInfo` of a custom spec (loads the model to read its attributes)."""
    return create_custom_teacher(spec, **declared).info
