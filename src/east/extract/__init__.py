"""Stage 1: run a frozen teacher over a dataset into an embedding cache.

Never imports :mod:`east.train`; the two stages meet only at :mod:`east.cache_schema`.
"""
