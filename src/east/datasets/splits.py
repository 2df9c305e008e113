"""Seeded train/valid/test splitting helpers shared by the adapters.

All helpers are deterministic functions of their inputs and ``seed`` (no global RNG state), so
a manifest's splits are reproducible across runs and machines.
"""

from __future__ import annotations

import random

import numpy as np


def bernoulli_split(n: int, fraction: float, seed: int) -> np.ndarray:
    """``(n,)`` bool: each item independently ``True`` with probability ``fraction``.

    Uses Python's ``random.Random(seed).uniform(0, 1) < fraction`` per item in order — the
    rule the EAsT reference code uses for its OpenMIC validation split (seed 2022 on the
    14,915 split01 training clips gives 2,223 validation clips).
    """
    _check_fraction(fraction)
    draw = random.Random(seed)
    return np.array([draw.uniform(0.0, 1.0) < fraction for _ in range(n)], dtype=bool)


def _check_fraction(*fractions: float) -> None:
    if any(not 0.0 <= f < 1.0 for f in fractions) or sum(fractions) >= 1.0:
        raise ValueError(f"split fractions must be in [0, 1) and sum below 1, got {fractions}")


def _counts(n: int, valid: float, test: float) -> tuple[int, int]:
    """Items of a group of ``n`` that go to valid and test (rounded; train keeps ≥ 1)."""
    return _fit(n, int(np.floor(valid * n + 0.5)), int(np.floor(test * n + 0.5)))


def _fit(n: int, n_valid: int, n_test: int) -> tuple[int, int]:
    """Shrink ``n_valid``/``n_test`` so that a group of ``n`` keeps at least one in train."""
    n_valid, n_test = max(n_valid, 0), max(n_test, 0)
    while n_test + n_valid >= n and n_test + n_valid > 0:
        # too small a group: give back to train, valid first (test is the honest estimate)
        if n_valid > 0:
            n_valid -= 1
        else:
            n_test -= 1
    return n_valid, n_test


def random_split(n: int, valid: float, test: float, seed: int) -> np.ndarray:
    """``(n,)`` str splits: a seeded permutation, rounded ``valid``/``test`` shares."""
    _check_fraction(valid, test)
    order = np.random.default_rng(seed).permutation(n)
    n_valid, n_test = _counts(n, valid, test)
    out = np.full(n, "train", dtype="<U5")
    out[order[:n_test]] = "test"
    out[order[n_test : n_test + n_valid]] = "valid"
    return out


def stratified_split(labels: np.ndarray, valid: float, test: float, seed: int) -> np.ndarray:
    """``(N,)`` str splits, stratified by the integer class ``labels``.

    Classes are visited in order of first appearance; within each, a seeded permutation sends
    its share to test, then valid, the rest to train (always at least one item). Shares are
    rounded cumulatively over the classes, so the totals are ``round(test * N)`` and
    ``round(valid * N)`` (e.g. 83 / 83 of 414) while every class gets ``floor`` or ``ceil``
    of its own share.
    """
    _check_fraction(valid, test)
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    out = np.full(len(labels), "train", dtype="<U5")
    _, first = np.unique(labels, return_index=True)
    seen = given_test = given_valid = 0
    for cls in labels[np.sort(first)]:
        members = np.flatnonzero(labels == cls)
        members = members[rng.permutation(len(members))]
        seen += len(members)
        n_test = int(np.floor(test * seen + 0.5)) - given_test
        n_valid = int(np.floor(valid * seen + 0.5)) - given_valid
        n_valid, n_test = _fit(len(members), n_valid, n_test)
        given_test += n_test
        given_valid += n_valid
        out[members[:n_test]] = "test"
        out[members[n_test : n_test + n_valid]] = "valid"
    return out
