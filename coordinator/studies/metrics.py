"""The metrics of binary probabilities, one implementation for trials and baselines.

Keys match the columns of `trial_records` (val_auc, ..., val_positive_rate) when prefix="val_".
Thresholded metrics use 0.5. Precision with no positive prediction is 0 (scikit-learn's
zero_division=0), a definition rather than a sentinel: the prediction spread (pred_*) shows why.
"""

from __future__ import annotations

import numpy as np

# scikit-learn is imported where it is used: at module level it cost every `coordinator` command and
# every worker start about a second, since the table modules pull this module in through baselines.

EPS = 1e-7  # probabilities are clipped to [EPS, 1-EPS] for the log-loss


def log_loss(labels: np.ndarray, probs: np.ndarray) -> float:
    p = np.clip(np.asarray(probs, dtype=np.float64), EPS, 1 - EPS)
    y = np.asarray(labels, dtype=np.float64)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))


def roc_auc(labels: np.ndarray, probs: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(labels, probs))


def binary_metrics(
    labels: np.ndarray, probs: np.ndarray, prefix: str = "val_", pred_prefix: str = ""
) -> dict[str, float]:
    """Every metric of probabilities `probs` for 0/1 `labels` (both classes required).

    Keys: {prefix}auc, pr_auc, loss, brier, accuracy, precision, recall, positive_rate and
    {pred_prefix}pred_mean, pred_std, pred_min, pred_max.
    """
    from sklearn.metrics import accuracy_score, average_precision_score, precision_score, recall_score

    y = np.asarray(labels, dtype=np.float64)
    p = np.asarray(probs, dtype=np.float64)
    if y.shape != p.shape or y.ndim != 1:
        raise ValueError(f"labels {y.shape} and probabilities {p.shape} must be 1-D of the same length")
    if not np.all(np.isfinite(p)):
        raise ValueError("probabilities contain NaN or Inf")
    predicted = (p >= 0.5).astype(np.int64)
    truth = y.astype(np.int64)
    return {
        f"{prefix}auc": roc_auc(y, p),
        f"{prefix}pr_auc": float(average_precision_score(truth, p)),
        f"{prefix}loss": log_loss(y, p),
        f"{prefix}brier": float(np.mean((p - y) ** 2)),
        f"{prefix}accuracy": float(accuracy_score(truth, predicted)),
        f"{prefix}precision": float(precision_score(truth, predicted, zero_division=0)),
        f"{prefix}recall": float(recall_score(truth, predicted, zero_division=0)),
        f"{prefix}positive_rate": float(y.mean()),
        # Prediction spread: a model collapsed to the base rate has pred_std ~ 0.
        f"{pred_prefix}pred_mean": float(p.mean()),
        f"{pred_prefix}pred_std": float(p.std()),
        f"{pred_prefix}pred_min": float(p.min()),
        f"{pred_prefix}pred_max": float(p.max()),
    }
