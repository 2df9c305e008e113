"""``east serve``: the embedding extraction service.

* :mod:`east.serve.app` — the FastAPI routes and the :class:`~east.serve.app.Service` (loaded
  teachers, queues, decode pool, clip cache, jobs);
* :mod:`east.serve.batcher` — dynamic batching per teacher and the decode process pool;
* :mod:`east.serve.jobs` — dataset extraction jobs;
* :mod:`east.serve.metrics` — Prometheus metrics.

Clients: :mod:`east.client`, ``east extract --server URL``. Documentation: ``docs/serve.md``.
"""
