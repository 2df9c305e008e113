"""Evaluation metrics as small accumulate-then-compute objects (torchmetrics-like, no dependency).

Definitions (DESIGN §8), all equal to scikit-learn on the same numbers (``tests/test_metrics.py``):

* **mAP** — macro average precision: ``average_precision_score`` per class on the entries whose
  label is known (``mask``), then the mean over classes;
* **ROC-AUC** — macro ``roc_auc_score`` per class on the known entries;
* **macro-F1 at 0.4** — per class, predictions ``p > 0.4`` against the known labels; the F1 of
  the positive class and the F1 of the negative class are averaged, then the mean over classes
  (paper 1 and the reference code; an undefined F1, no predicted and no true entries of that
  class, counts as 0 as scikit-learn's ``zero_division=0``);
* **accuracy** — single-label: argmax of the scores equals the target.

Classes whose known entries are all of one label have no defined AP/AUC; they are left out of
the macro mean (and counted in ``skipped_classes``), as scikit-learn would raise on them.
Scores may be logits or probabilities for AP/AUC (rank-based); F1 needs probabilities.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

__all__ = [
    "AccuracyMetric",
    "MultiLabelMetrics",
    "average_precision",
    "binary_macro_f1",
    "create_metric",
    "primary_metric_name",
    "roc_auc",
]


def _as_numpy(x: object) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().float().cpu().numpy()  # type: ignore[union-attr]
    return np.asarray(x)


def average_precision(scores: np.ndarray, labels: np.ndarray) -> float:
    """Binary AP as scikit-learn defines it: sum over thresholds of (R_n − R_{n−1})·P_n.

    Ties share one threshold (all tied entries enter together), as in ``precision_recall_curve``.
    """
    order = np.argsort(-scores, kind="mergesort")
    s, y = scores[order], labels[order].astype(np.float64)
    # last index of every run of equal scores = one threshold
    distinct = np.r_[np.flatnonzero(np.diff(s)), len(s) - 1]
    tps = np.cumsum(y)[distinct]
    fps = (distinct + 1) - tps
    precision = tps / (tps + fps)
    recall = tps / tps[-1]
    recall_prev = np.r_[0.0, recall[:-1]]
    return float(np.sum((recall - recall_prev) * precision))


def roc_auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Binary ROC-AUC via the Mann–Whitney U statistic (ties count one half)."""
    labels = labels.astype(bool)
    n_pos, n_neg = int(labels.sum()), int((~labels).sum())
    ranks = _average_ranks(scores)
    u = ranks[labels].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))


def _average_ranks(x: np.ndarray) -> np.ndarray:
    order = np.argsort(x, kind="mergesort")
    xs = x[order]
    ranks_sorted = np.empty(len(x), dtype=np.float64)
    starts = np.r_[0, np.flatnonzero(np.diff(xs)) + 1]
    ends = np.r_[starts[1:], len(x)]
    for a, b in zip(starts, ends, strict=True):
        ranks_sorted[a:b] = (a + b + 1) / 2.0  # mean of the 1-based ranks a+1 .. b
    ranks = np.empty_like(ranks_sorted)
    ranks[order] = ranks_sorted
    return ranks


def _f1(tp: int, fp: int, fn: int) -> float:
    denominator = 2 * tp + fp + fn
    return 0.0 if denominator == 0 else 2.0 * tp / denominator


def binary_macro_f1(probs: np.ndarray, labels: np.ndarray, threshold: float = 0.4) -> float:
    """(F1 of the positive class + F1 of the negative class) / 2 for one class."""
    pred = probs > threshold
    true = labels.astype(bool)
    tp = int((pred & true).sum())
    fp = int((pred & ~true).sum())
    fn = int((~pred & true).sum())
    tn = int((~pred & ~true).sum())
    return (_f1(tp, fp, fn) + _f1(tn, fn, fp)) / 2.0


@dataclass
class MultiLabelMetrics:
    """Accumulates ``(N, C)`` scores, targets and an optional known-label mask; macro metrics.

    ``update(logits, targets, mask)`` takes logits (sigmoid is applied for F1) as numpy arrays
    or torch tensors; ``compute()`` returns ``{"mAP", "roc_auc", "macro_f1", "skipped_classes"}``.
    """

    num_classes: int
    threshold: float = 0.4
    _scores: list[np.ndarray] = field(default_factory=list, repr=False)
    _targets: list[np.ndarray] = field(default_factory=list, repr=False)
    _masks: list[np.ndarray] = field(default_factory=list, repr=False)

    def reset(self) -> None:
        self._scores.clear()
        self._targets.clear()
        self._masks.clear()

    def update(self, logits: object, targets: object, mask: object | None = None) -> None:
        s = _as_numpy(logits).astype(np.float64).reshape(-1, self.num_classes)
        t = _as_numpy(targets).reshape(-1, self.num_classes) > 0.5
        m = np.ones_like(t) if mask is None else _as_numpy(mask).astype(bool).reshape(t.shape)
        self._scores.append(s)
        self._targets.append(t)
        self._masks.append(m)

    def compute(self) -> dict[str, float]:
        if not self._scores:
            raise ValueError("no samples were added to the metric")
        logits = np.concatenate(self._scores)
        targets = np.concatenate(self._targets)
        masks = np.concatenate(self._masks)
        probs = 1.0 / (1.0 + np.exp(-logits))
        aps, aucs, f1s, skipped = [], [], [], 0
        for c in range(self.num_classes):
            known = masks[:, c]
            y, p = targets[known, c], probs[known, c]
            if known.sum() == 0:
                skipped += 1
                continue
            f1s.append(binary_macro_f1(p, y, self.threshold))
            if y.all() or not y.any():
                skipped += 1
                continue
            # rank metrics on logits: sigmoid saturates to equal floats for large |logit|
            aps.append(average_precision(logits[known, c], y))
            aucs.append(roc_auc(logits[known, c], y))
        return {
            "mAP": float(np.mean(aps)) if aps else float("nan"),
            "roc_auc": float(np.mean(aucs)) if aucs else float("nan"),
            "macro_f1": float(np.mean(f1s)) if f1s else float("nan"),
            "skipped_classes": float(skipped),
        }


@dataclass
class AccuracyMetric:
    """Single-label accuracy: ``argmax(logits) == target``; also reports macro mAP over
    one-vs-rest scores so the two tasks share a "higher is better" validation metric."""

    num_classes: int
    _logits: list[np.ndarray] = field(default_factory=list, repr=False)
    _targets: list[np.ndarray] = field(default_factory=list, repr=False)

    def reset(self) -> None:
        self._logits.clear()
        self._targets.clear()

    def update(self, logits: object, targets: object, mask: object | None = None) -> None:
        del mask  # single-label targets are always known
        self._logits.append(_as_numpy(logits).astype(np.float64).reshape(-1, self.num_classes))
        self._targets.append(_as_numpy(targets).astype(np.int64).reshape(-1))

    def compute(self) -> dict[str, float]:
        if not self._logits:
            raise ValueError("no samples were added to the metric")
        logits = np.concatenate(self._logits)
        targets = np.concatenate(self._targets)
        accuracy = float((logits.argmax(axis=1) == targets).mean())
        one_hot = np.zeros_like(logits, dtype=bool)
        one_hot[np.arange(len(targets)), targets] = True
        ranked = MultiLabelMetrics(self.num_classes)
        ranked.update(logits, one_hot)
        out = ranked.compute()
        return {"accuracy": accuracy, "mAP": out["mAP"], "roc_auc": out["roc_auc"]}


def create_metric(multilabel: bool, num_classes: int) -> MultiLabelMetrics | AccuracyMetric:
    """The metric object of a task."""
    return MultiLabelMetrics(num_classes) if multilabel else AccuracyMetric(num_classes)


def primary_metric_name(multilabel: bool) -> str:
    """The validation metric that selects the best checkpoint (higher is better)."""
    return "mAP" if multilabel else "accuracy"
