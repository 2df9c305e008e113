"""Pinned pre-trained weight files: find, verify, download and load them.

Every teacher names its official files as :class:`~east.extract.teachers.base.WeightFile`
(``filename`` relative to the weights directory, upstream ``url``, pinned ``sha256``). Lookup
order in :func:`resolve_weights`:

1. an explicit local path (``--weights PATH``) wins and is *not* checked against the pin — it
   may be a fine-tuned or converted file; the teacher stamps that file's own sha256 into the
   cache provenance, so the store still says exactly which weights made it;
2. otherwise ``east.settings.weights_dir() / filename`` (``EAST_WEIGHTS_DIR``, default
   ``~/.cache/east/weights``), whose checksum must match the pin.

A missing or corrupt file raises :class:`~east.errors.WeightsError` with one line naming the
file, its URL and the folder to put it in (or the ``east teachers download`` command).

Checksums: ``sha256`` is either a full hex digest or a published prefix of at least 8 hex
characters (torch-hub file names such as ``vggish-10086976.pth`` carry only a prefix);
``md5`` is checked too where a source publishes one (Zenodo), and ``git_blob_sha1`` (git's
object id of the content) where a file comes from a git repository that publishes no sha256 —
then ``sha256`` may be empty and the teacher records the file's sha256 when it loads it.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import re
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from east.errors import WeightsError
from east.settings import weights_dir

if TYPE_CHECKING:
    import torch
    from torch import nn

    from east.extract.teachers.base import TeacherInfo, WeightFile

_HEX = re.compile(r"^[0-9a-f]+$")
_CHUNK = 1 << 20
# Hashing a multi-GB checkpoint twice (resolve, then provenance) is wasteful: remember digests
# by (path, size, mtime) for the life of the process.
_DIGEST_MEMO: dict[tuple[str, str, int, int], str] = {}


# --------------------------------------------------------------------------- checksums


def _file_digest(path: str | Path, algorithm: str) -> str:
    path = Path(path)
    stat = path.stat()
    key = (str(path.resolve()), algorithm, stat.st_size, stat.st_mtime_ns)
    if key not in _DIGEST_MEMO:
        digest = hashlib.new(algorithm)
        with path.open("rb") as f:
            while block := f.read(_CHUNK):
                digest.update(block)
        _DIGEST_MEMO[key] = digest.hexdigest()
    return _DIGEST_MEMO[key]


def sha256_file(path: str | Path) -> str:
    """Full lowercase sha256 hex digest of a file (read in 1 MiB blocks)."""
    return _file_digest(path, "sha256")


def md5_file(path: str | Path) -> str:
    """Full lowercase md5 hex digest of a file."""
    return _file_digest(path, "md5")


def git_blob_sha1_file(path: str | Path) -> str:
    """Git's object id of the file's content, ``sha1(b"blob <size>\\0" + content)``."""
    path = Path(path)
    stat = path.stat()
    key = (str(path.resolve()), "git-blob", stat.st_size, stat.st_mtime_ns)
    if key not in _DIGEST_MEMO:
        digest = hashlib.sha1(f"blob {stat.st_size}\0".encode())
        with path.open("rb") as f:
            while block := f.read(_CHUNK):
                digest.update(block)
        _DIGEST_MEMO[key] = digest.hexdigest()
    return _DIGEST_MEMO[key]


def _check_pin(pin: str, what: str, minimum: int, full: int) -> str:
    pin = pin.strip().lower()
    if not _HEX.match(pin) or not minimum <= len(pin) <= full:
        raise ValueError(f"{what} pin {pin!r} must be {minimum}-{full} hex characters")
    return pin


def checksum_problem(path: str | Path, weightfile: WeightFile) -> str | None:
    """``None`` when ``path`` matches the pins of ``weightfile``, else a short reason."""
    path = Path(path)
    size = path.stat().st_size
    if weightfile.size is not None and size != weightfile.size:
        return f"size {size} bytes, expected {weightfile.size}"
    blob_pin = getattr(weightfile, "git_blob_sha1", None)
    if not weightfile.sha256 and weightfile.md5 is None and blob_pin is None:
        raise ValueError(f"{weightfile.filename}: no sha256, md5 or git blob id pinned")
    if weightfile.sha256:  # empty only where upstream publishes another content pin
        pin = _check_pin(weightfile.sha256, "sha256", 8, 64)
        actual = sha256_file(path)
        if not actual.startswith(pin):
            return f"sha256 {actual[: max(len(pin), 16)]}…, expected {pin}"
    if weightfile.md5 is not None:
        md5_pin = _check_pin(weightfile.md5, "md5", 32, 32)
        actual_md5 = md5_file(path)
        if actual_md5 != md5_pin:
            return f"md5 {actual_md5}, expected {md5_pin}"
    if blob_pin is not None:
        blob_pin = _check_pin(blob_pin, "git blob sha1", 40, 40)
        actual_blob = git_blob_sha1_file(path)
        if actual_blob != blob_pin:
            return f"git blob {actual_blob}, expected {blob_pin}"
    return None


def verify_weights(path: str | Path, weightfile: WeightFile) -> str:
    """Check ``path`` against the pins; return its full sha256 or raise :class:`WeightsError`."""
    problem = checksum_problem(path, weightfile)
    if problem is not None:
        raise WeightsError(
            f"{path} is not the pinned {Path(weightfile.filename).name} ({problem}); "
            f"delete it and download it again from {weightfile.url}"
        )
    return sha256_file(path)


# --------------------------------------------------------------------------- lookup


def weights_path(weightfile: WeightFile, dest_dir: str | Path | None = None) -> Path:
    """Where ``weightfile`` lives (or will be downloaded to) in the weights directory."""
    return Path(dest_dir if dest_dir is not None else weights_dir()).expanduser() / (
        weightfile.filename
    )


def weights_present(weightfile: WeightFile) -> bool:
    """Whether the file exists in the weights dir (existence and size only: no hashing)."""
    path = weights_path(weightfile)
    if not path.is_file():
        return False
    return weightfile.size is None or path.stat().st_size == weightfile.size


def _as_weightfile(item: WeightFile | TeacherInfo) -> tuple[WeightFile, str | None]:
    from east.extract.teachers.base import TeacherInfo

    if isinstance(item, TeacherInfo):
        if len(item.weights) != 1:
            raise ValueError(
                f"teacher {item.name!r} has {len(item.weights)} weight files; pass one WeightFile"
            )
        return item.weights[0], item.name
    return item, None


def _teacher_for(weightfile: WeightFile) -> str | None:
    # Only for error messages: the command to suggest names a teacher.
    try:
        from east.extract.teachers.registry import list_teachers

        for info in list_teachers():
            if weightfile in info.weights:
                return info.name
    except Exception:  # a broken family module must not hide the real error
        return None
    return None


def missing_message(weightfile: WeightFile, teacher: str | None = None) -> str:
    """The one line shown when ``weightfile`` is not in the weights dir."""
    teacher = teacher or _teacher_for(weightfile)
    folder = weights_path(weightfile).parent
    how = f"run `east teachers download {teacher}` or " if teacher else ""
    note = f" ({weightfile.note})" if weightfile.note else ""
    return (
        f"weights file {weightfile.filename} not found in {weights_dir()}: {how}download "
        f"{weightfile.url} into {folder}{note}, set EAST_WEIGHTS_DIR, or pass --weights PATH"
    )


def resolve_weights(
    weightfile: WeightFile | TeacherInfo,
    override: str | Path | None = None,
    *,
    teacher: str | None = None,
) -> Path:
    """Path of the weights to load: ``override`` if given, else the verified pinned file.

    ``weightfile`` may be a :class:`TeacherInfo` with exactly one weight file.
    """
    weightfile, info_name = _as_weightfile(weightfile)
    teacher = teacher or info_name
    if override is not None:
        path = Path(override).expanduser()
        if not path.is_file():
            raise WeightsError(f"weights file {path} does not exist (given as --weights)")
        return path
    path = weights_path(weightfile)
    if not path.is_file():
        raise WeightsError(missing_message(weightfile, teacher))
    verify_weights(path, weightfile)
    return path


# --------------------------------------------------------------------------- download


def _open(url: str, start: int, timeout: float) -> Any:
    request = urllib.request.Request(url, headers={"User-Agent": "east-weights/1"})
    if start > 0:
        request.add_header("Range", f"bytes={start}-")
    return urllib.request.urlopen(request, timeout=timeout)


def download(
    weightfile: WeightFile | TeacherInfo,
    dest_dir: str | Path | None = None,
    progress: bool = True,
    *,
    timeout: float = 30.0,
) -> Path:
    """Download ``weightfile`` into ``dest_dir`` (default: the weights dir) and verify it.

    Bytes go to ``<file>.part`` first; an interrupted download resumes from there with an
    HTTP ``Range`` request (restarting if the server ignores it). The checksum is verified
    before the atomic rename, so the final name only ever holds a verified file. A file that
    is already there and verified is not downloaded again.
    """
    weightfile, _ = _as_weightfile(weightfile)
    dest = weights_path(weightfile, dest_dir)
    if dest.is_file() and checksum_problem(dest, weightfile) is None:
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    start = part.stat().st_size if part.is_file() else 0
    try:
        _fetch(weightfile, part, start, progress, timeout)
    except (OSError, http.client.HTTPException) as exc:  # URLError, timeouts, cut transfers
        reason = getattr(exc, "reason", None) or exc
        kept = part.is_file() and part.stat().st_size > 0
        resume = f"partial data kept in {part}: re-run to resume or " if kept else ""
        raise WeightsError(
            f"cannot download {weightfile.url} ({reason}); {resume}put the file at {dest} by hand"
        ) from None
    problem = checksum_problem(part, weightfile)
    if problem is not None:
        part.unlink()  # a complete but wrong file cannot be resumed into a right one
        raise WeightsError(f"downloaded {weightfile.url} does not match its pin ({problem})")
    os.replace(part, dest)
    return dest


def _fetch(weightfile: WeightFile, part: Path, start: int, progress: bool, timeout: float) -> None:
    try:
        response = _open(weightfile.url, start, timeout)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and start > 0:
            return  # nothing left to fetch: the .part is complete, the checksum decides
        raise
    with response:
        if start > 0 and response.status != 206:
            start = 0  # server ignored the Range header: start over
        length = response.headers.get("Content-Length")
        total = start + int(length) if length is not None else weightfile.size
        received = 0
        with part.open("ab" if start else "wb") as out, _progress(progress) as bar:
            task = bar.add_task(Path(weightfile.filename).name, total=total, completed=start)
            while block := response.read(_CHUNK):
                out.write(block)
                received += len(block)
                bar.update(task, advance=len(block))
        # urllib returns b"" when the server closes early: a short body is a cut transfer
        if length is not None and received < int(length):
            raise ConnectionError(f"connection closed after {start + received} of {total} bytes")


class _NoProgress:
    def __enter__(self) -> _NoProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def add_task(self, *args: object, **kwargs: object) -> int:
        return 0

    def update(self, *args: object, **kwargs: object) -> None:
        return None


def _progress(enabled: bool) -> Any:
    if not enabled:
        return _NoProgress()
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    from east.cli.common import err_console

    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=err_console,
        transient=False,
    )


# --------------------------------------------------------------------------- loading


_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def load_error_reason(exc: BaseException) -> str:
    """The line of a ``torch.load`` error that says what failed, without ANSI codes.

    torch's ``weights_only`` errors open with paragraphs of advice and put the reason on a
    line of its own (``WeightsUnpickler error: Unsupported global: ...``); other errors (zip,
    EOF) are one line.
    """
    text = _ANSI.sub("", str(exc)).strip()
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not lines:
        return type(exc).__name__
    for i, line in enumerate(lines):
        if "WeightsUnpickler error" in line:
            reason = line.split("WeightsUnpickler error:", 1)[1].strip()
            if not reason and i + 1 < len(lines):  # (the reason can stand on the next line)
                reason = lines[i + 1]
            reason = reason.split(". Please use", 1)[0]  # (then advice to allow-list it)
            return f"WeightsUnpickler error: {reason}"[:300]
    return lines[0][:300]


def load_state_dict(
    path: str | Path,
    unwrap: tuple[str, ...] = ("state_dict", "model"),
    map_location: str = "cpu",
) -> dict[str, torch.Tensor]:
    """Load a checkpoint's tensors safely (``weights_only=True``: no arbitrary pickles).

    Checkpoints that wrap the state dict (``{"state_dict": {...}, "epoch": ...}``) are
    unwrapped through the first key of ``unwrap`` present. A file that is not a PyTorch
    checkpoint of tensors raises :class:`WeightsError`.
    """
    import torch

    path = Path(path)
    try:
        obj = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # pickle, zip and EOF errors all mean the same to the user
        raise WeightsError(
            f"{path} is not a loadable PyTorch checkpoint ({load_error_reason(exc)})"
        ) from None
    if isinstance(obj, Mapping):
        for key in unwrap:
            if isinstance(obj.get(key), Mapping):
                obj = obj[key]
                break
    if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise WeightsError(f"{path} does not hold a state dict of tensors")
    return dict(obj)


def load_strict(
    module: nn.Module,
    state_dict: Mapping[str, torch.Tensor],
    source: str | Path,
    rename: Callable[[str], str] | None = None,
) -> None:
    """``module.load_state_dict(state_dict, strict=True)`` with a one-line :class:`WeightsError`.

    The message counts missing and unexpected keys and shape mismatches (first few named), so
    a wrong file for an architecture is obvious without a traceback.
    """
    if rename is not None:
        state_dict = {rename(k): v for k, v in state_dict.items()}
    expected = module.state_dict()
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    shapes = [
        f"{k} {tuple(state_dict[k].shape)}≠{tuple(v.shape)}"
        for k, v in expected.items()
        if k in state_dict and tuple(state_dict[k].shape) != tuple(v.shape)
    ]
    problems = [
        f"{len(items)} {label} ({', '.join(items[:3])}{', …' if len(items) > 3 else ''})"
        for label, items in (
            ("missing keys", missing),
            ("unexpected keys", unexpected),
            ("shape mismatches", shapes),
        )
        if items
    ]
    if problems:
        raise WeightsError(f"{source} does not fit {type(module).__name__}: " + "; ".join(problems))
    module.load_state_dict(state_dict, strict=True)
