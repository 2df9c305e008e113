"""Dataset adapters: each reads one dataset's official layout into a :class:`Manifest`.

>>> from east.datasets import load_manifest
>>> m = load_manifest("esc50", "data/ESC-50", test_fold=1)  # doctest: +SKIP

Names: ``openmic``, ``mtat``, ``esc50``, ``fma_small``, ``folder`` (see ``docs/datasets.md``).
"""

from east.datasets.base import SPLITS, Manifest
from east.datasets.registry import (
    dataset_description,
    dataset_info,
    list_datasets,
    load_manifest,
    parse_options,
    register_dataset,
)

__all__ = [
    "SPLITS",
    "Manifest",
    "dataset_description",
    "dataset_info",
    "list_datasets",
    "load_manifest",
    "parse_options",
    "register_dataset",
]
