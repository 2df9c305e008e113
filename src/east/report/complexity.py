"""Model complexity for paper 1 Table 2 / paper 2 Table 2: parameters and inference speed.

    python -m east.report.complexity --out runs/complexity.json [--device cuda] [--teachers ...]

* students: backbone parameters (the classification head left out, as the papers count) and
  forward passes per second of one 128 × 1000 spectrogram (the papers' protocol; the student's
  own spectrogram shape is used where it is not 128 bins);
* teachers: all parameters of the exact architecture (built with random weights, so no weight
  file is needed) and ``embed`` calls per second on one 10 s clip at the teacher's rate.

Speeds depend on the machine: the JSON records the device. The papers measured on an RTX 2070
Super; compare ratios, not absolute numbers. ``east report`` reads the JSON when it lies in one
of the folders it is given.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

__all__ = [
    "COMPLEXITY_FILE",
    "PAPER_TEACHERS",
    "load_complexity",
    "main",
    "measure",
]

COMPLEXITY_FILE = "complexity.json"
PAPER_TEACHERS = ("vggish", "openl3", "passt", "panns", "mule")
PAPER_STUDENTS = ("mobile_fcn", "cp_resnet", "harmonic_cnn", "short_chunk_cnn")


def _rate(call: Callable[[], Any], budget_s: float, sync: Callable[[], None]) -> float:
    """Calls per second: one warm-up call, then as many as fit in ``budget_s`` (at least 3)."""
    call()
    sync()
    count, start = 0, time.perf_counter()
    while count < 3 or time.perf_counter() - start < budget_s:
        call()
        count += 1
    sync()
    return count / (time.perf_counter() - start)


def measure(
    students: Sequence[str] = PAPER_STUDENTS,
    teachers: Sequence[str] = PAPER_TEACHERS,
    device: str = "cpu",
    budget_s: float = 2.0,
    speed: bool = True,
) -> dict[str, Any]:
    """Parameters and iterations/s of ``students`` and ``teachers`` (errors are recorded)."""
    import torch

    from east.settings import best_device

    dev = torch.device(best_device(device))

    def sync() -> None:
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)

    models: list[dict[str, Any]] = []
    for name in students:
        from east.train.students import create_student

        entry: dict[str, Any] = {"name": name, "kind": "student"}
        try:
            student = create_student(name, 10).to(dev).eval()
            entry["params"] = int(student.num_parameters(backbone_only=True))
            if speed:
                spec = student.example_spectrogram(1, 1000).to(dev)
                entry["input"] = f"spectrogram {tuple(spec.shape)}"
                with torch.no_grad():
                    entry["iter_per_s"] = _rate(
                        lambda s=student, x=spec: s(x, is_spectrogram=True), budget_s, sync
                    )
        except Exception as exc:  # one broken model must not hide the others
            entry["error"] = f"{type(exc).__name__}: {exc}"
        models.append(entry)
    for name in teachers:
        from east.extract.teachers.registry import create_teacher

        entry = {"name": name, "kind": "teacher"}
        try:
            teacher = create_teacher(name, weights="random", device=str(dev))
            entry["params"] = int(sum(p.numel() for p in teacher.parameters()))
            if speed:
                sr = int(teacher.sample_rate)
                wave = torch.randn(1, 10 * sr, device=dev) * 0.1
                lengths = torch.tensor([10 * sr], device=dev)
                entry["input"] = f"10 s waveform at {sr} Hz"
                with torch.no_grad():
                    entry["iter_per_s"] = _rate(
                        lambda t=teacher, w=wave, n=lengths: t.embed(w, n), budget_s, sync
                    )
        except Exception as exc:
            entry["error"] = f"{type(exc).__name__}: {exc}"
        models.append(entry)

    return {
        "device": str(dev),
        "device_name": torch.cuda.get_device_name(dev)
        if dev.type == "cuda"
        else platform.processor() or platform.machine(),
        "torch": torch.__version__,
        "models": models,
    }


class _Model(BaseModel):
    model_config = ConfigDict(extra="allow")

    name: str
    kind: str | None = None
    params: int | None = Field(None, ge=0)
    iter_per_s: float | None = Field(None, ge=0)


class _Complexity(BaseModel):
    model_config = ConfigDict(extra="allow")

    device: str | None = None
    device_name: str | None = None
    models: list[_Model]


def load_complexity(folders: Sequence[str | Path]) -> dict[str, Any] | None:
    """The first ``complexity.json`` directly inside one of ``folders`` (or given as a file);
    ``None`` when there is none. One that is there but unreadable or of the wrong shape is an
    :class:`~east.errors.EastError` naming the file and the field (the report notes it and
    goes on without it)."""
    from east.errors import EastError
    from east.report.runs import pydantic_message

    for folder in folders:
        path = Path(folder)
        candidate = path if path.is_file() else path / COMPLEXITY_FILE
        if not candidate.is_file():
            continue
        try:
            data = _Complexity.model_validate_json(candidate.read_bytes())
        except OSError as exc:
            raise EastError(f"{candidate}: unreadable ({exc.strerror})") from None
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(part) for part in first["loc"]) or "(top level)"
            raise EastError(
                f"{candidate}: {where}: {pydantic_message(first['msg'])} (rewrite it with "
                "python -m east.report.complexity)"
            ) from None
        out = data.model_dump()
        out["source"] = str(candidate)
        return out
    return None


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="JSON file to write")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--students", nargs="*", default=list(PAPER_STUDENTS))
    parser.add_argument("--teachers", nargs="*", default=list(PAPER_TEACHERS))
    parser.add_argument("--budget", type=float, default=2.0, help="seconds of timing per model")
    parser.add_argument("--no-speed", action="store_true", help="count parameters only")
    args = parser.parse_args(argv)
    result = measure(args.students, args.teachers, args.device, args.budget, not args.no_speed)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    for m in result["models"]:
        speed = f"{m['iter_per_s']:.1f} it/s" if "iter_per_s" in m else m.get("error", "")
        params = f"{m['params'] / 1e6:.2f} M" if "params" in m else "?"
        print(f"{m['kind']:8s} {m['name']:16s} {params:>10s}  {speed}")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
