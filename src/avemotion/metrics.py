"""The tables' metrics from a confusion matrix: accuracy (Table 2) and macro-F1 (Table 1).

NumPy only, so that the aggregation (``avemotion.tables``, ``avemotion.figures``) computes its pooled values
with the very functions the training jobs use, without importing torch.
"""

from __future__ import annotations

import numpy as np


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> np.ndarray:
    """Counts, rows = true class, columns = predicted class."""
    cm = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(cm, (y_true, y_pred), 1)
    return cm


def macro_f1(cm: np.ndarray) -> float:
    """Unweighted mean of per-class F1 from a confusion matrix (a class never true nor predicted scores 0)."""
    tp = np.diag(cm).astype(np.float64)
    denom = cm.sum(axis=0) + cm.sum(axis=1)  # predicted + true = 2tp + fp + fn
    f1 = np.divide(2 * tp, denom, out=np.zeros_like(tp), where=denom > 0)
    return float(f1.mean())


def accuracy(cm: np.ndarray) -> float:
    return float(np.trace(cm) / cm.sum())
