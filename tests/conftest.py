"""Shared fixtures. Tests that need ``../shared`` (real data and weights) find it through
``EAST_SHARED`` and skip with a reason when it is missing."""

from __future__ import annotations

from pathlib import Path

import pytest

from east.settings import shared_dir


@pytest.fixture(scope="session")
def shared() -> Path:
    root = shared_dir()
    if not root.is_dir():
        pytest.skip(f"shared data folder {root} not found (set EAST_SHARED)")
    return root.resolve()


@pytest.fixture(scope="session")
def esc50_root(shared: Path) -> Path:
    root = shared / "data" / "esc50-fold4"
    if not (root / "meta" / "esc50.csv").is_file():
        pytest.skip(f"{root} holds no ESC-50 layout")
    return root


@pytest.fixture(scope="session")
def samples_dir(shared: Path) -> Path:
    return shared / "data" / "samples"


@pytest.fixture(scope="session")
def tagger_weights(shared: Path) -> Path:
    root = shared / "weights" / "sota-music-taggers"
    if not root.is_dir():
        pytest.skip(f"{root} not found")
    return root


@pytest.fixture(scope="module")
def single_thread():
    """One intra-op torch thread for a module of tiny-tensor tests: on a 2-core machine extra
    threads only add contention. Use with ``pytestmark = pytest.mark.usefixtures(...)``."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
