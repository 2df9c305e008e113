"""``east export RUN --format hear --out DIR``: a run's student as an installable HEAR 2021 module.

``DIR`` gets a ``pyproject.toml`` and a package ``NAME/`` holding ``__init__.py`` (the HEAR API:
``load_model``, ``get_timestamp_embeddings``, ``get_scene_embeddings``), ``model.ts`` (the
TorchScript network: waveform → the student's final-stage feature map) and
``east_student.json`` (the facts the module needs and the run's provenance). The module imports
only ``torch`` (never east), so ``pip install DIR`` works anywhere torch does.

What the module returns:

* ``get_timestamp_embeddings(audio (n, L), model)``: the student's final tap ``(n, T, C)`` (as
  in :class:`east.train.students.base.StudentOutput`: averaged over frequency) and the frame
  *centres* in milliseconds, ``(j + ½)·S·hop·1000`` for a final-stage time stride of ``S``
  spectrogram frames: the centres of east's own frame times ``[jS·hop, (j+1)S·hop)``. The
  timestamps are float64 so that the spacing stays exact on long audio;
* ``get_scene_embeddings``: the time-mean of those frames, ``(n, C)``;
* clips shorter than one final-stage frame are padded with silence, as the student does.

The model carries the HEAR attributes and east's ``hop_s`` / ``window_s`` (both ``S·hop``), so
``--teacher hear:NAME`` gives back exactly the student's frames and frame times.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import re
import sys
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from east import __version__ as east_version
from east.errors import ConfigError
from east.run_dir import WriteError, atomic_write_text

__all__ = ["FinalMapWrapper", "default_name", "export_hear", "write_hear_package"]

MODEL_FILE = "model.ts"
META_FILE = "east_student.json"


class FinalMapWrapper(nn.Module):
    """waveforms (N, L) → the student's final-stage feature map (N, T, C).

    The student's own short-input padding is a Python branch a trace would freeze, so the
    HEAR module pads in Python and this wrapper calls the front-end and backbone directly.
    """

    def __init__(self, student: nn.Module) -> None:
        super().__init__()
        self.student = student

    def forward(self, wave: Tensor) -> Tensor:
        spec = self.student.frontend(wave)
        _, maps = self.student.forward_maps(spec)
        return maps[-1].mean(dim=2).transpose(1, 2)


def default_name(out: Path) -> str:
    """The module name from the folder name: lower case, ``[a-z0-9_]``, starting with a letter."""
    name = re.sub(r"[^a-z0-9_]", "_", Path(out).name.lower()).strip("_")
    if not name or not name[0].isalpha():
        name = "east_" + name if name else "east_student"
    return name


def _check_name(name: str) -> None:
    if not name.isidentifier() or not re.fullmatch(r"[A-Za-z][A-Za-z0-9_]*", name):
        raise ConfigError(f"--name {name!r}: a HEAR module name must be a Python identifier")
    if name.lower() == "east" or name in sys.builtin_module_names:
        raise ConfigError(f"--name {name!r}: would shadow an existing module; choose another")


def _check_out_dir(out: Path) -> None:
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ConfigError(f"--out {out}: exists and is not an empty folder (give a new folder)")
    if not out.parent.is_dir():
        raise ConfigError(f"--out {out}: folder {out.parent} does not exist (create it first)")


def export_hear(
    student: nn.Module,
    info: dict[str, Any],
    out: Path,
    name: str | None = None,
    seconds: float = 5.0,
    run_dir: Path | None = None,
) -> tuple[Path, float]:
    """Write the HEAR package of ``student`` to ``out`` and check the written module against
    the student on a test input; returns (out, max |difference| of the final-stage frames)."""
    out = Path(out)
    name = name or default_name(out)
    _check_name(name)
    _check_out_dir(out)
    student = student.eval()
    sr = int(student.sample_rate)
    example = torch.randn(2, max(round(seconds * sr), student.min_samples), generator=_gen()) * 0.1
    wrapper = FinalMapWrapper(student).eval()
    with torch.no_grad():
        traced = torch.jit.trace(wrapper, example, check_trace=False)
        dim = int(wrapper(example).shape[-1])
    meta = _meta(student, info, name, dim, run_dir)
    write_hear_package(out, name, traced, meta)
    return out, _difference(out / name, student, example)


def _gen() -> torch.Generator:
    return torch.Generator().manual_seed(0)


def _meta(
    student: nn.Module, info: dict[str, Any], name: str, dim: int, run_dir: Path | None
) -> dict[str, Any]:
    stride = int(student.tap_strides[-1])
    return {
        "name": name,
        "sample_rate": int(student.sample_rate),
        "embedding_size": dim,
        "frame_stride": stride,
        "spectrogram_hop_s": float(student.hop_seconds),
        "frame_hop_s": stride * float(student.hop_seconds),
        "min_samples": int(student.min_samples),
        "student": str(getattr(student, "name", "student")),
        "class_names": list(info.get("class_names", [])),
        "task": info.get("task"),
        "run": str(run_dir) if run_dir is not None else None,
        "east_version": east_version,
        "torch_version": torch.__version__.split("+")[0],
    }


def write_hear_package(out: Path, name: str, network: torch.jit.ScriptModule, meta: dict) -> None:
    """``out/pyproject.toml`` + ``out/name/{__init__.py, model.ts, east_student.json}``."""
    package = out / name
    try:
        package.mkdir(parents=True, exist_ok=True)
        network.save(str(package / MODEL_FILE))
    except OSError as exc:
        raise WriteError(package / MODEL_FILE, exc) from None
    digest = hashlib.sha256((package / MODEL_FILE).read_bytes()).hexdigest()
    meta = {**meta, "model_sha256": digest}
    atomic_write_text(package / META_FILE, json.dumps(meta, indent=2) + "\n")
    atomic_write_text(package / "__init__.py", MODULE_TEMPLATE.format(**_template_values(meta)))
    atomic_write_text(out / "pyproject.toml", PYPROJECT_TEMPLATE.format(**_template_values(meta)))


def _template_values(meta: dict) -> dict[str, str]:
    major_minor = ".".join(meta["torch_version"].split(".")[:2])
    return {
        "name": meta["name"],
        "student": meta["student"],
        "run": json.dumps(meta["run"] or "unknown"),
        "version": meta["east_version"],
        "sha": meta["model_sha256"],
        "torch": major_minor,
        "model_file": MODEL_FILE,
        "meta_file": META_FILE,
    }


def _import_from(package: Path) -> Any:
    """Import the written package under a private name (not via ``sys.path``)."""
    spec = importlib.util.spec_from_file_location(
        f"_east_hear_check_{package.name}", package / "__init__.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _difference(package: Path, student: nn.Module, example: Tensor) -> float:
    """max |written module − student| over the final-stage frames of another-length input."""
    module = _import_from(package)
    model = module.load_model()
    wave = torch.randn(3, example.shape[1] + student.min_samples + 17, generator=_gen()) * 0.1
    emb, ts = module.get_timestamp_embeddings(wave, model)
    with torch.no_grad():
        ref = student(wave)
    expected, times = ref.features[-1], ref.frame_times[-1]
    if emb.shape != expected.shape:
        raise ConfigError(
            f"hear export: the module gives {tuple(emb.shape)} frames, the student "
            f"{tuple(expected.shape)}"
        )
    centres = times.mean(dim=1) * 1000.0
    if not torch.allclose(ts[0].double(), centres, atol=1e-6):
        raise ConfigError("hear export: the module's timestamps differ from the student's")
    return float((emb - expected).abs().max())


PYPROJECT_TEMPLATE = """\
# Written by east {version} (east export --format hear): a HEAR 2021 API module.
[build-system]
requires = ["setuptools>=61"]
build-backend = "setuptools.build_meta"

[project]
name = "{name}"
version = "{version}"
description = "HEAR 2021 API module of an east {student} student"
requires-python = ">=3.9"
dependencies = ["torch>={torch}"]

[tool.setuptools]
packages = ["{name}"]

[tool.setuptools.package-data]
{name} = ["{model_file}", "{meta_file}"]
"""

MODULE_TEMPLATE = '''\
"""HEAR 2021 API module of an east {student} student (run {run}).

Written by east {version} (``east export --format hear``); needs only torch.
``get_timestamp_embeddings``: the student's final-stage feature map (n, T, C) and its frame
centres in milliseconds (float64); ``get_scene_embeddings``: the time-mean (n, C).
"""

import json
from pathlib import Path

import torch
from torch import nn

__all__ = ["load_model", "get_timestamp_embeddings", "get_scene_embeddings"]
__version__ = "{version}"
MODEL_SHA256 = "{sha}"  # of the bundled {model_file}

_HERE = Path(__file__).resolve().parent


class EastStudentModel(nn.Module):
    """The TorchScript network (waveform -> final-stage frames) with the HEAR attributes."""

    def __init__(self, network, meta):
        super().__init__()
        self.network = network
        self.sample_rate = int(meta["sample_rate"])
        self.timestamp_embedding_size = int(meta["embedding_size"])
        self.scene_embedding_size = int(meta["embedding_size"])
        # east's HEAR teacher reads these: each frame covers one final-stage stride
        self.hop_s = float(meta["frame_hop_s"])
        self.window_s = float(meta["frame_hop_s"])
        self.min_samples = int(meta["min_samples"])
        self.class_names = list(meta.get("class_names") or [])

    def forward(self, audio):
        return self.network(audio)

    def __repr__(self):  # short: hear-validator prints the model
        return "EastStudentModel(sample_rate=%d, embedding_size=%d, hop_s=%g)" % (
            self.sample_rate,
            self.timestamp_embedding_size,
            self.hop_s,
        )


def load_model(model_file=""):
    """The student; ``model_file``: another TorchScript file of the same network."""
    meta = json.loads((_HERE / "{meta_file}").read_text())
    path = Path(model_file) if model_file else _HERE / "{model_file}"
    try:
        network = torch.jit.load(str(path), map_location="cpu")
    except Exception as exc:  # one line: the HEAR caller names the module
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ValueError("%s: not a TorchScript model file (%s)" % (path, first)) from None
    return EastStudentModel(network.eval(), meta).eval()


def _device(model):
    for tensor in model.network.parameters():
        return tensor.device
    return torch.device("cpu")


def get_timestamp_embeddings(audio, model):
    """audio (n, samples) at model.sample_rate -> (embeddings (n, T, C), timestamps (n, T) ms)."""
    if not isinstance(audio, torch.Tensor) or audio.ndim != 2:
        raise ValueError("audio must be a 2-D tensor (n_sounds, n_samples)")
    audio = audio.to(_device(model), torch.float32)
    if audio.shape[1] < model.min_samples:  # shorter than one frame: add silence
        audio = torch.nn.functional.pad(audio, (0, model.min_samples - audio.shape[1]))
    model.eval()
    with torch.no_grad():
        emb = model(audio).float()
    frames = torch.arange(emb.shape[1], dtype=torch.float64, device=emb.device)
    stamps = (frames + 0.5) * (model.hop_s * 1000.0)
    return emb, stamps.unsqueeze(0).expand(emb.shape[0], -1).contiguous()


def get_scene_embeddings(audio, model):
    """audio (n, samples) -> (n, C): the time-mean of the timestamp embeddings."""
    emb, _ = get_timestamp_embeddings(audio, model)
    return emb.mean(dim=1)
'''
