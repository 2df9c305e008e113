"""The training metrics equal scikit-learn on the same numbers, masked entries excluded."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import accuracy_score, average_precision_score, f1_score, roc_auc_score

from east.train.metrics import (
    AccuracyMetric,
    MultiLabelMetrics,
    average_precision,
    binary_macro_f1,
    roc_auc,
)


def _sklearn_multilabel(logits, targets, mask, threshold=0.4):
    probs = 1 / (1 + np.exp(-logits))
    aps, aucs, f1s = [], [], []
    for c in range(logits.shape[1]):
        k = mask[:, c]
        y = targets[k, c].astype(int)
        f1s.append(
            f1_score(
                y,
                (probs[k, c] > threshold).astype(int),
                average=None,
                labels=[0, 1],
                zero_division=0,
            ).mean()
        )
        if 0 < y.sum() < len(y):
            aps.append(average_precision_score(y, logits[k, c]))
            aucs.append(roc_auc_score(y, logits[k, c]))
    return np.mean(aps), np.mean(aucs), np.mean(f1s)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_multilabel_equals_sklearn_with_mask_and_batches(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n, c = 97, 7
    logits = rng.normal(size=(n, c))
    logits[:10] = np.round(logits[:10])  # ties
    targets = (rng.random((n, c)) < 0.3).astype(np.float32)
    mask = rng.random((n, c)) < 0.7
    metric = MultiLabelMetrics(c)
    for a in range(0, n, 16):  # accumulate over batches
        metric.update(logits[a : a + 16], targets[a : a + 16], mask[a : a + 16])
    out = metric.compute()
    ap, auc, f1 = _sklearn_multilabel(logits, targets, mask)
    assert out["mAP"] == pytest.approx(ap, abs=1e-12)
    assert out["roc_auc"] == pytest.approx(auc, abs=1e-12)
    assert out["macro_f1"] == pytest.approx(f1, abs=1e-12)


def test_masked_entries_do_not_count() -> None:
    rng = np.random.default_rng(5)
    logits = rng.normal(size=(50, 3))
    targets = (rng.random((50, 3)) < 0.5).astype(np.float32)
    mask = rng.random((50, 3)) < 0.6
    a = MultiLabelMetrics(3)
    a.update(logits, targets, mask)
    # change every masked-out score and label: nothing may move
    logits2, targets2 = logits.copy(), targets.copy()
    logits2[~mask] = 100.0
    targets2[~mask] = 1 - targets2[~mask]
    b = MultiLabelMetrics(3)
    b.update(logits2, targets2, mask)
    assert a.compute() == b.compute()
    # and without the mask the result differs (the test can fail)
    c = MultiLabelMetrics(3)
    c.update(logits2, targets2)
    assert c.compute()["mAP"] != a.compute()["mAP"]


def test_class_without_positives_is_skipped() -> None:
    logits = np.array([[0.1, 2.0], [0.3, -1.0], [0.2, 0.5]])
    targets = np.array([[0, 1], [0, 0], [0, 1]], dtype=np.float32)
    m = MultiLabelMetrics(2)
    m.update(logits, targets)
    out = m.compute()
    assert out["skipped_classes"] == 1
    assert out["mAP"] == pytest.approx(average_precision_score([1, 0, 1], [2.0, -1.0, 0.5]))


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.tuples(st.integers(-3, 3), st.booleans()), min_size=2, max_size=40).filter(
        lambda xs: 0 < sum(b for _, b in xs) < len(xs)
    )
)
def test_binary_ap_auc_with_heavy_ties_property(pairs: list[tuple[int, bool]]) -> None:
    scores = np.array([float(s) for s, _ in pairs])
    labels = np.array([b for _, b in pairs])
    assert average_precision(scores, labels) == pytest.approx(
        average_precision_score(labels, scores), abs=1e-12
    )
    assert roc_auc(scores, labels) == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.floats(0, 1), st.booleans()), min_size=1, max_size=30))
def test_binary_macro_f1_property(pairs: list[tuple[float, bool]]) -> None:
    probs = np.array([p for p, _ in pairs])
    labels = np.array([b for _, b in pairs]).astype(int)
    expected = f1_score(
        labels, (probs > 0.4).astype(int), average=None, labels=[0, 1], zero_division=0
    ).mean()
    assert binary_macro_f1(probs, labels) == pytest.approx(expected, abs=1e-12)


def test_accuracy_equals_sklearn_and_accepts_tensors() -> None:
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(3)
    logits = rng.normal(size=(41, 5))
    targets = rng.integers(0, 5, size=41)
    m = AccuracyMetric(5)
    m.update(torch.from_numpy(logits[:20]), torch.from_numpy(targets[:20]))
    m.update(logits[20:], targets[20:])
    out = m.compute()
    assert out["accuracy"] == pytest.approx(accuracy_score(targets, logits.argmax(1)))
    m.reset()
    with pytest.raises(ValueError):
        m.compute()
