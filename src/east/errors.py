"""Errors that the command line reports as one line (exit code 2), never as a traceback."""

from __future__ import annotations


class EastError(Exception):
    """Base class for user-facing errors: bad input, missing files, mismatched caches.

    The CLI prints ``error: <message>`` and exits with :attr:`exit_code`.
    """

    exit_code: int = 2


class ConfigError(EastError):
    """A configuration value is wrong (unknown key, wrong type, missing file)."""


class DatasetError(EastError):
    """A dataset root does not hold the expected official layout."""


class AudioError(EastError):
    """An audio file cannot be used; the message names the file and the reason."""

    def __init__(self, path: object, reason: str) -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


class WeightsError(EastError):
    """Pre-trained weights are missing, corrupt or do not fit the architecture."""


class CacheError(EastError):
    """An embedding cache is missing, invalid or made for another teacher/dataset."""
