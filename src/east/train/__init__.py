"""Stage 2: train a student from audio plus cached teacher embeddings.

Never imports :mod:`east.extract`; the two stages meet only at :mod:`east.cache_schema`.
"""
