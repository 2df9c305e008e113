"""Helpers of the hostile tests (``tests/test_hostile_*.py``): run ``east`` as a user would and
check the promises of the command line — one line on stderr, exit code 2, no traceback, and no
user file changed or lost.

``east(...)`` runs the real console entry point in a fresh interpreter (so a C library writing
to file descriptor 2, a leaked worker process or a hang is seen exactly as a user sees it).
``snapshot(folder)`` records every file's bytes, so a test can show that nothing it gave east
was changed, deleted or added to.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

TESTS = Path(__file__).resolve().parent


@dataclass
class Result:
    args: tuple[str, ...]
    code: int
    stdout: str
    stderr: str

    @property
    def err_lines(self) -> list[str]:
        return [line for line in self.stderr.splitlines() if line.strip()]

    def __str__(self) -> str:
        return (
            f"east {' '.join(self.args)} -> exit {self.code}\n"
            f"--- stdout\n{self.stdout}\n--- stderr\n{self.stderr}"
        )


def east_env(**extra: str) -> dict[str, str]:
    """The environment of a test command: tests/ on the path (the tiny teacher plugin), wide
    terminal-less output, and ``extra`` on top."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(TESTS), env.get("PYTHONPATH")]))
    env.setdefault("COLUMNS", "200")
    env.update(extra)
    return env


def east(
    *args: str | os.PathLike[str],
    env: dict[str, str] | None = None,
    cwd: str | os.PathLike[str] | None = None,
    timeout: float = 180,
    stdin: str | None = None,
) -> Result:
    """Run ``east ARGS...`` in a fresh interpreter and return what it did."""
    argv = tuple(str(a) for a in args)
    proc = subprocess.run(
        [sys.executable, "-m", "east", *argv],
        capture_output=True,
        text=True,
        env=env or east_env(),
        cwd=cwd,
        timeout=timeout,
        input=stdin,
    )
    return Result(argv, proc.returncode, proc.stdout, proc.stderr)


def assert_one_line_error(result: Result, *fragments: str, code: int = 2) -> str:
    """``result`` is a refusal: exit ``code``, exactly one non-empty stderr line, no traceback,
    and that line holds every fragment (case-insensitive). Returns the line."""
    assert "Traceback" not in result.stderr, str(result)
    assert result.code == code, str(result)
    lines = result.err_lines
    assert len(lines) == 1, f"expected one stderr line, got {len(lines)}\n{result}"
    line = lines[0]
    for fragment in fragments:
        assert fragment.lower() in line.lower(), f"{fragment!r} not in {line!r}\n{result}"
    return line


def snapshot(folder: str | os.PathLike[str]) -> dict[str, str]:
    """``relative path -> sha256`` of every file under ``folder`` (folders as ``<dir>``)."""
    root = Path(folder)
    out: dict[str, str] = {}
    if root.is_file():
        return {".": hashlib.sha256(root.read_bytes()).hexdigest()}
    for path in sorted(root.rglob("*")):
        rel = str(path.relative_to(root))
        if path.is_dir():
            out[rel] = "<dir>"
        else:
            out[rel] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def assert_unchanged(folder: str | os.PathLike[str], before: dict[str, str]) -> None:
    """No file under ``folder`` was changed, deleted or added since ``before``."""
    after = snapshot(folder)
    lost = sorted(set(before) - set(after))
    added = sorted(set(after) - set(before))
    changed = sorted(k for k in set(before) & set(after) if before[k] != after[k])
    assert not (lost or added or changed), (
        f"lost {lost[:5]}, added {added[:5]}, changed {changed[:5]}"
    )


def small_disk(path: Path, size: str = "4m") -> Path:
    """Mount a tmpfs of ``size`` at ``path`` (a full disk on demand); skips the test when this
    machine does not allow mounting (not root, no CAP_SYS_ADMIN). Unmount with
    :func:`unmount`."""
    import pytest

    path.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here ({proc.stderr.strip() or proc.returncode})")
    return path


def unmount(path: Path) -> None:
    subprocess.run(["umount", "-l", str(path)], capture_output=True)
