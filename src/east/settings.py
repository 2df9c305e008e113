"""Paths that users configure through environment variables.

| variable           | default                      | what                                   |
|--------------------|------------------------------|----------------------------------------|
| ``EAST_SHARED``    | ``../shared``                | shared real data + weights (tests)     |
| ``EAST_WEIGHTS_DIR`` | ``~/.cache/east/weights``  | downloaded / converted teacher weights |
| ``EAST_CACHE_DIR`` | ``./cache``                  | embedding stores written by extract    |
"""

from __future__ import annotations

import os
import re
from pathlib import Path


def shared_dir() -> Path:
    """Folder with the shared real data and weights (may not exist on a user's machine)."""
    return Path(os.environ.get("EAST_SHARED", "../shared")).expanduser()


def weights_dir() -> Path:
    """Where teacher weights are looked up and downloaded to."""
    default = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "east" / "weights"
    return Path(os.environ.get("EAST_WEIGHTS_DIR", default)).expanduser()


def cache_dir() -> Path:
    """Default folder for embedding stores."""
    return Path(os.environ.get("EAST_CACHE_DIR", "cache")).expanduser()


#: the device strings east accepts: ``cpu``, ``cuda``, ``cuda:N``, ``mps`` (and ``auto``)
_DEVICE = re.compile(r"(cpu|cuda|mps)(?::(\d+))?")


def _available_devices() -> list[str]:
    """What ``--device`` may name on this machine, ``auto`` first."""
    import torch

    names = ["auto", "cpu"]
    if torch.cuda.is_available():
        names += ["cuda", *(f"cuda:{i}" for i in range(torch.cuda.device_count()))]
    if _mps_available():
        names.append("mps")
    return names


def _mps_available() -> bool:
    import torch

    mps = getattr(torch.backends, "mps", None)
    return bool(mps and mps.is_available())


def best_device(requested: str | None = None) -> str:
    """``cuda`` when available (or ``mps``), else ``cpu``; an explicit request wins.

    A request for a device this machine does not have (``cuda`` without a GPU, ``cuda:7``
    with two, ``mps`` off a Mac, ``tpu``, ``""``) raises :class:`~east.errors.ConfigError`
    naming what is available, rather than failing later inside torch.
    """
    import torch

    if requested is None or requested.strip().lower() == "auto":
        if torch.cuda.is_available():
            return "cuda"
        return "mps" if _mps_available() else "cpu"
    device = requested.strip().lower()
    available = _available_devices()
    if device in available or device == "cpu:0" or (device == "mps:0" and "mps" in available):
        return device
    from east.errors import ConfigError

    match = _DEVICE.fullmatch(device)
    if match is None:
        why = "is not a device east can use"
    elif match.group(1) == "cpu":
        why = "does not exist (the CPU is cpu)"
    else:
        why = "is not available on this machine"
    raise ConfigError(f"device {requested!r} {why}; available here: {', '.join(available)}")
