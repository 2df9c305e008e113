"""Extraction through a running ``east serve``: ``east extract --server URL``.

The :class:`Remote` executor sends every planned clip's file bytes to the service (several at
once, so the service batches them with whatever else it serves) and assembles and writes the
answers exactly as a local run does: same plan, same store, same resume. The service decodes
with the same decoder and runs the same teacher build, so the store equals a local one within
float16 rounding; a clip the service refuses (400) is a failed clip with its reason. The
teacher's facts (provenance, frame count of the longest clip) come from the service too:
:class:`RemoteTeacher` stands in for the local teacher object.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from east.cache_schema import _ClipStore
from east.extract.executors import assemble_and_write
from east.extract.job import ChunkWork, ClipResult, JobSpec, TeacherSpec

__all__ = ["Remote", "RemoteTeacher"]


class RemoteTeacher:
    """The facts of a teacher a service has loaded, and an ``embed`` that asks it (used to
    probe the frame count when a store is created)."""

    def __init__(self, client: Any, name: str) -> None:
        import torch

        from east.errors import EastError
        from east.extract.teachers.base import TeacherInfo

        facts = {t["name"]: t for t in client.teachers()}
        if name not in facts:
            known = ", ".join(sorted(facts)) or "none"
            raise EastError(f"the service at {client.url} has no teacher {name!r} (it has {known})")
        f = facts[name]
        self.client, self.name = client, name
        self.info = TeacherInfo(name, f.get("family", "remote"), int(f["sample_rate"]),
                                int(f["dim"]), f["window_s"], f["hop_s"])  # fmt: skip
        self.weights_sha256 = str(f["weights_sha256"])
        self.device = torch.device("cpu")

    @property
    def sample_rate(self) -> int:
        return self.info.sample_rate

    def optimize_for_cpu(self) -> None:  # (the service runs its own graph)
        return None

    def embed(self, waveforms: Any, lengths: Any) -> Any:
        import soundfile as sf
        import torch

        from east.extract.teachers.base import TeacherOutput

        outs = []
        for wave, n in zip(waveforms.numpy(), lengths.tolist(), strict=True):
            buf = io.BytesIO()
            sf.write(buf, wave[:n], self.sample_rate, format="WAV", subtype="FLOAT")
            outs.append(self.client.embed(buf.getvalue(), self.name))
        frames = max(len(o.embeddings) for o in outs)
        emb = np.zeros((len(outs), frames, self.info.embedding_dim), np.float32)
        for i, o in enumerate(outs):
            emb[i, : len(o.embeddings)] = o.embeddings
        longest = max(outs, key=lambda o: len(o.frame_times)).frame_times
        return TeacherOutput(
            torch.from_numpy(emb),
            torch.tensor([len(o.embeddings) for o in outs]),
            torch.from_numpy(np.asarray(longest, np.float64)),
        )


@dataclass
class Remote:
    """Run the plan through the service at ``url`` (``concurrency`` clips in flight)."""

    url: str
    token: str | None = None
    concurrency: int = 8
    _client: Any = field(default=None, repr=False)

    @property
    def client(self) -> Any:
        if self._client is None:
            from east.client import EastClient

            self._client = EastClient(self.url, self.token)
        return self._client

    def teacher(self, spec: TeacherSpec) -> RemoteTeacher:
        return RemoteTeacher(self.client, spec.name)

    def run(
        self,
        store: _ClipStore,
        spec: JobSpec,
        works: list[ChunkWork],
        paths: list[str],
        tick: Callable[[int], None],
    ) -> list[tuple[int, str]]:
        assert spec.teacher is not None, "a service embeds; audio stores are made locally"
        name = spec.teacher.name
        with ThreadPoolExecutor(self.concurrency, thread_name_prefix="east-remote") as pool:

            def results() -> Iterator[dict[int, Any]]:
                for work in works:  # a whole chunk in flight at once, answered batch by batch
                    futures = {
                        r: pool.submit(self._one, spec, name, paths[r])
                        for rows in work.batches
                        for r in rows
                    }
                    for rows in work.batches:
                        yield {r: futures[r].result() for r in rows}

            return assemble_and_write(store, spec, works, results(), tick)

    def _one(self, spec: JobSpec, name: str, path: str) -> ClipResult | str:
        from east.client import ServiceError

        try:
            out = self.client.embed(path, name)
        except ServiceError as exc:
            if exc.status == 400:  # the clip's own problem; anything else stops the run
                return str(exc).split(": ", 1)[-1]
            raise
        except OSError as exc:
            return f"cannot read ({exc.strerror or exc})"
        nf = min(len(out.embeddings), spec.max_frames)
        values = out.embeddings[:nf].astype(spec.dtype)
        return ClipResult(values, np.asarray(out.frame_times[:nf], np.float64), out.num_samples)
