"""``east export``: a finished run's student as a standalone TorchScript or ONNX model
(waveform → logits), or as an installable HEAR 2021 module (``--format hear``, see
:mod:`east.train.hear_export`), checked against the run's student on a test input."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from east.errors import ConfigError
from east.run_dir import WriteError, atomic_write_text
from east.train.evaluation import load_run

__all__ = ["ExportWrapper", "export_run"]


class ExportWrapper(nn.Module):
    """waveforms (N, L) → logits (N, K): the student without its feature taps."""

    def __init__(self, student: nn.Module) -> None:
        super().__init__()
        self.student = student

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        return self.student(wave).logits


def export_run(
    run_dir: Path,
    fmt: str,
    out: Path | None = None,
    seconds: float | None = None,
    name: str | None = None,
) -> tuple[Path, float]:
    """Write a standalone model (TorchScript or ONNX) or a HEAR package folder and check that
    its outputs equal the run's student on a test input; returns (path, max |difference|)."""
    if fmt not in ("torchscript", "onnx", "hear"):
        raise ConfigError(f"--format {fmt}: use torchscript, onnx or hear")
    if seconds is not None and not 0 < seconds <= 600:
        raise ConfigError(f"--seconds {seconds:g}: give a test input length in (0, 600] seconds")
    if name is not None and fmt != "hear":
        raise ConfigError("--name names a HEAR module: use it with --format hear")
    if fmt == "hear":
        return _export_hear(Path(run_dir), out, seconds, name)
    if out is not None:
        _check_out(Path(out))
    cfg, info, student = load_run(run_dir, "cpu")
    model = ExportWrapper(student).eval()
    sr = int(student.sample_rate)
    length = round((seconds or cfg.crop.seconds or 5.0) * sr)
    example = torch.randn(2, length, generator=torch.Generator().manual_seed(0)) * 0.1
    with torch.no_grad():
        expected = model(example)
    run_dir = Path(run_dir)
    if fmt == "torchscript":
        path = out or run_dir / "model.ts"
        with torch.no_grad():
            traced = torch.jit.trace(model, example, check_trace=False)
        _write_model(path, lambda p: traced.save(str(p)))
        loaded = torch.jit.load(str(path))
        with torch.no_grad():
            got = loaded(example)
        diff = float((got - expected).abs().max())
    elif fmt == "onnx":
        path = out or run_dir / "model.onnx"
        _use_conv_stft(student)
        try:
            _write_model(
                path,
                lambda p: torch.onnx.export(
                    model,
                    (example,),
                    str(p),
                    input_names=["waveform"],
                    output_names=["logits"],
                    dynamic_axes={"waveform": {0: "batch", 1: "samples"}, "logits": {0: "batch"}},
                    dynamo=False,
                    opset_version=17,
                ),
            )
        except WriteError:
            raise
        except Exception as exc:  # an op without an ONNX form
            raise ConfigError(f"onnx export of {cfg.student.name} failed: {exc}") from None
        diff = _onnx_difference(path, example, expected)
    else:
        raise ConfigError(f"--format {fmt}: use torchscript or onnx")
    meta = {
        "format": fmt,
        "sample_rate": sr,
        "class_names": info["class_names"],
        "task": info["task"],
        "input": "waveform (N, L) float32 mono at sample_rate",
        "max_abs_difference": diff,
    }
    atomic_write_text(Path(str(path) + ".json"), json.dumps(meta, indent=2))
    return Path(path), diff


def _export_hear(
    run_dir: Path, out: Path | None, seconds: float | None, name: str | None
) -> tuple[Path, float]:
    from east.train.hear_export import export_hear

    if out is not None and Path(out).is_dir() and any(Path(out).iterdir()):  # before loading
        raise ConfigError(f"--out {out}: exists and is not an empty folder (give a new folder)")
    cfg, info, student = load_run(run_dir, "cpu")
    out = Path(out) if out is not None else run_dir / f"east_{cfg.student.name}_hear"
    return export_hear(
        student, info, out, name, seconds or cfg.crop.seconds or 5.0, run_dir=run_dir
    )


def _check_out(out: Path) -> None:
    if out.is_dir():
        raise ConfigError(f"--out {out}: is a folder; give the model's file name")
    if not out.parent.is_dir():
        raise ConfigError(f"--out {out}: folder {out.parent} does not exist (create it first)")


def _write_model(path: Path, write: Any) -> None:
    """``write(tmp)`` then rename: a failed export leaves no half file at ``path``."""
    tmp = Path(path).with_name(Path(path).name + ".tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise WriteError(path, exc) from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _use_conv_stft(student: nn.Module) -> None:
    """ONNX has no complex tensors: switch the front-end to its conv-STFT export mode."""
    frontend = getattr(student, "frontend", None)
    if not hasattr(frontend, "use_conv_stft"):
        raise ConfigError(
            f"onnx export: the {student.name} front-end has no ONNX form; use --format torchscript"
        )
    frontend.use_conv_stft()  # type: ignore[union-attr]


def _onnx_difference(path: Path, example: torch.Tensor, expected: torch.Tensor) -> float:
    try:
        import onnxruntime as ort

        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        got = session.run(None, {"waveform": example.numpy()})[0]
    except ImportError:
        from onnx.reference import ReferenceEvaluator

        got = ReferenceEvaluator(str(path)).run(None, {"waveform": example.numpy()})[0]
    return float(np.abs(np.asarray(got) - expected.numpy()).max())
