"""``/metrics``: Prometheus counters and histograms of one service (its own registry)."""

from __future__ import annotations

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

from east.serve.batcher import BatchStats

__all__ = ["Metrics"]

_SECONDS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "east_requests", "HTTP requests by route and status", ["route", "status"], registry=r
        )
        self.batch_size = Histogram(
            "east_batch_size", "clips per teacher batch", buckets=(1, 2, 4, 8, 16, 32, 64, 128),
            registry=r,
        )  # fmt: skip
        self.queue_wait = Histogram(
            "east_queue_wait_seconds", "time a clip waited for its batch", buckets=_SECONDS,
            registry=r,
        )  # fmt: skip
        self.compute = Histogram(
            "east_compute_seconds", "teacher time per batch", buckets=_SECONDS, registry=r
        )
        self.embed_latency = Histogram(
            "east_embed_seconds", "embed request latency", ["cached"], buckets=_SECONDS, registry=r
        )
        self.cache_hits = Counter("east_cache_hits", "clip cache hits", registry=r)
        self.cache_misses = Counter("east_cache_misses", "clip cache misses", registry=r)
        self.cache_write_errors = Counter(
            "east_cache_write_errors", "clip cache entries that could not be written", registry=r
        )
        self.rejections = Counter("east_queue_full", "requests refused: queue full", registry=r)
        self.queue_depth = Gauge(
            "east_queue_depth", "clips waiting per teacher", ["teacher"], registry=r
        )

    def batch(self, stats: BatchStats) -> None:
        self.batch_size.observe(stats.size)
        self.compute.observe(stats.compute_s)
        for wait in stats.queue_wait_s:
            self.queue_wait.observe(wait)

    def cache(self, hit: bool) -> None:
        (self.cache_hits if hit else self.cache_misses).inc()

    def cache_write_failed(self) -> None:
        self.cache_write_errors.inc()

    def rejected(self) -> None:
        self.rejections.inc()

    def latency(self, seconds: float, cached: bool) -> None:
        self.embed_latency.labels(cached=str(cached).lower()).observe(seconds)

    def request(self, route: str, status: int) -> None:
        self.requests.labels(route=route, status=str(status)).inc()

    def render(self, depths: dict[str, int]) -> tuple[bytes, str]:
        for teacher, depth in depths.items():
            self.queue_depth.labels(teacher=teacher).set(depth)
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
