"""A small Python client of ``east serve`` (``docs/serve.md``).

>>> from east.client import EastClient
>>> client = EastClient("http://127.0.0.1:8750")          # token=... off loopback
>>> client.teachers()[0]["name"]
'fcn-msd'
>>> out = client.embed("clip.wav", teacher="fcn-msd")      # a path or the file's bytes
>>> out.embeddings.shape, out.frame_times.shape, out.cached
((4, 128), (4, 2), False)

Requests that meet a full queue (429) or a service that is starting or stopping (503) are
retried after the ``Retry-After`` the service sends (at most ``retries`` times, with a
growing pause), as are dropped connections; every other error raises :class:`ServiceError`
with the service's one-line reason and status.
"""

from __future__ import annotations

import io
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from east.errors import EastError

__all__ = ["EastClient", "Embedding", "ServiceError"]

_RETRY_STATUS = (429, 502, 503, 504)


class ServiceError(EastError):
    """The service refused a request (``status``) or could not be reached (``status`` 0)."""

    def __init__(self, message: str, status: int = 0) -> None:
        super().__init__(message)
        self.status = status


@dataclass
class Embedding:
    """One clip's embeddings as the service answered them."""

    embeddings: np.ndarray  # (T, D) float16, the row `east extract` writes
    frame_times: np.ndarray  # (T, 2) float64 seconds
    num_samples: int
    cached: bool
    clip_sha256: str
    weights_sha256: str
    teacher: str


class EastClient:
    """Synchronous client; thread-safe (one connection pool, many threads)."""

    def __init__(
        self,
        url: str,
        token: str | None = None,
        *,
        timeout: float = 120.0,
        retries: int = 8,
    ) -> None:
        import httpx

        self.url = url.rstrip("/")
        token = token or os.environ.get("EAST_SERVE_TOKEN")
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.retries = retries
        self._http = httpx.Client(base_url=self.url, headers=headers, timeout=timeout)

    # --- plumbing
    def _request(self, method: str, path: str, **kwargs: Any) -> Any:
        import httpx

        pause = 0.05
        for attempt in range(self.retries + 1):
            try:
                response = self._http.request(method, path, **kwargs)
            except httpx.TransportError as exc:
                if attempt == self.retries:
                    raise ServiceError(f"cannot reach {self.url} ({exc})") from None
            else:
                if response.status_code not in _RETRY_STATUS or attempt == self.retries:
                    return self._checked(response)
                pause = max(pause, _retry_after(response))
            time.sleep(pause)
            pause = min(pause * 2, 5.0)
        raise AssertionError("unreachable")

    @staticmethod
    def _checked(response: Any) -> Any:
        if response.is_success:
            return response
        try:
            reason = response.json()["error"]
        except (ValueError, KeyError, TypeError):
            reason = response.text[:200] or response.reason_phrase
        raise ServiceError(f"{response.status_code}: {reason}", response.status_code)

    # --- API
    def health(self) -> dict[str, Any]:
        return self._request("GET", "/health").json()

    def teachers(self) -> list[dict[str, Any]]:
        return self._request("GET", "/v1/teachers").json()

    def embed(self, audio: str | os.PathLike[str] | bytes, teacher: str) -> Embedding:
        """Embeddings of one audio file (a path or its bytes), as ``.npy`` over the wire."""
        body = audio if isinstance(audio, bytes) else Path(audio).read_bytes()
        response = self._request(
            "POST", "/v1/embed", params={"teacher": teacher, "format": "npy"}, content=body
        )
        h = response.headers
        return Embedding(
            embeddings=np.load(io.BytesIO(response.content), allow_pickle=False),
            frame_times=np.asarray(json.loads(h["x-east-frame-times"]), np.float64).reshape(-1, 2),
            num_samples=int(h.get("x-east-num-samples", 0)),
            cached=h.get("x-east-cached") == "true",
            clip_sha256=h["x-east-clip-sha256"],
            weights_sha256=h["x-east-weights-sha256"],
            teacher=h["x-east-teacher"],
        )

    def submit_job(
        self, teacher: str, dataset: str, root: str, options: dict[str, Any] | None = None
    ) -> str:
        payload = {"teacher": teacher, "dataset": dataset, "root": root, "options": options or {}}
        return self._request("POST", "/v1/jobs", json=payload).json()["id"]

    def job(self, job_id: str) -> dict[str, Any]:
        return self._request("GET", f"/v1/jobs/{job_id}").json()

    def cancel_job(self, job_id: str) -> dict[str, Any]:
        return self._request("DELETE", f"/v1/jobs/{job_id}").json()

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> EastClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _retry_after(response: Any) -> float:
    try:
        return min(float(response.headers.get("retry-after", 0)), 30.0)
    except ValueError:
        return 0.0
