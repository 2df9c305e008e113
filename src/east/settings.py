"""Paths that users configure through environment variables.

| variable           | default                      | what                                   |
|--------------------|------------------------------|----------------------------------------|
| ``EAST_SHARED``    | ``../shared``                | shared real data + weights (tests)     |
| ``EAST_WEIGHTS_DIR`` | ``~/.cache/east/weights``  | downloaded / converted teacher weights |
| ``EAST_CACHE_DIR`` | ``./cache``                  | embedding stores written by extract    |
"""

from __future__ import annotations

import os
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


def best_device(requested: str | None = None) -> str:
    """``cuda`` when available (or ``mps``), else ``cpu``; an explicit request wins."""
    if requested and requested != "auto":
        return requested
    import torch

    if torch.cuda.is_available():
        return "cuda"
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return "mps"
    return "cpu"
