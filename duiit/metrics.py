"""Metrics: predictor quality (accuracy, AUC, MAE, R^2) and translation fidelity (MAE, PSNR, SSIM)."""

import numpy as np


def auc_binary(scores: np.ndarray, positive: np.ndarray) -> float:
    """Area under the ROC curve via the Mann-Whitney U statistic (ties count one half)."""
    positive = positive.astype(bool)
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(scores, kind="mergesort")
    ranks = np.empty(len(scores), dtype=np.float64)
    sorted_scores = scores[order]
    # average ranks over ties
    start = 0
    for end in range(1, len(scores) + 1):
        if end == len(scores) or sorted_scores[end] != sorted_scores[start]:
            ranks[order[start:end]] = (start + end + 1) / 2.0
            start = end
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def classification_metrics(probabilities: np.ndarray, labels: np.ndarray, scores=None) -> dict:
    """Accuracy, balanced accuracy, and AUC: binary for two classes, macro one-vs-rest for more.

    `scores` (N, K) rank the cases for the AUC; pass logit margins (see `logit_margins`) so that
    saturated probabilities (float32 softmax rounding to 0 or 1) do not turn into ties.
    """
    if len(labels) == 0:
        return {}
    scores = probabilities if scores is None else scores
    predicted = probabilities.argmax(axis=1)
    accuracy = float((predicted == labels).mean())
    present = [k for k in range(probabilities.shape[1]) if (labels == k).any()]
    balanced = float(np.mean([(predicted[labels == k] == k).mean() for k in present]))
    n_classes = probabilities.shape[1]
    if n_classes == 2:
        auc = auc_binary(scores[:, 1], labels == 1)
    else:
        aucs = [auc_binary(scores[:, k], labels == k) for k in range(n_classes)]
        aucs = [a for a in aucs if not np.isnan(a)]
        auc = float(np.mean(aucs)) if aucs else float("nan")
    return {"accuracy": accuracy, "balanced_accuracy": balanced, "auc": auc, "n": int(len(labels))}


def logit_margins(logits: np.ndarray) -> np.ndarray:
    """Per class k: logit_k - logsumexp(other logits), the log-odds of k; monotonic in p_k, never saturating."""
    logits = logits.astype(np.float64)
    margins = np.empty_like(logits)
    for k in range(logits.shape[1]):
        others = np.delete(logits, k, axis=1)
        top = others.max(axis=1, keepdims=True)
        margins[:, k] = logits[:, k] - (top[:, 0] + np.log(np.exp(others - top).sum(axis=1)))
    return margins


def regression_metrics(values: np.ndarray, labels: np.ndarray) -> dict:
    if len(labels) == 0:
        return {}
    error = values - labels
    variance = float(((labels - labels.mean()) ** 2).sum())
    r2 = 1.0 - float((error ** 2).sum()) / variance if variance > 0 else float("nan")
    return {"mae": float(np.abs(error).mean()), "rmse": float(np.sqrt((error ** 2).mean())), "r2": r2,
            "n": int(len(labels))}


def mae(a: np.ndarray, b: np.ndarray, mask=None) -> float:
    diff = np.abs(a.astype(np.float64) - b)
    return float(diff[mask].mean() if mask is not None else diff.mean())


def psnr(a: np.ndarray, b: np.ndarray, data_range: float, mask=None) -> float:
    diff = (a.astype(np.float64) - b) ** 2
    mse = diff[mask].mean() if mask is not None else diff.mean()
    return float("inf") if mse == 0 else float(10 * np.log10(data_range ** 2 / mse))


def ssim(a: np.ndarray, b: np.ndarray, data_range: float) -> float:
    """Mean SSIM of 2D slices (Wang et al. 2004) with a 7x7 uniform window, averaged over axial slices."""
    from numpy.lib.stride_tricks import sliding_window_view
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    a = np.atleast_3d(a.astype(np.float64)) if a.ndim == 3 else a[None].astype(np.float64)
    b = np.atleast_3d(b.astype(np.float64)) if b.ndim == 3 else b[None].astype(np.float64)
    values = []
    for x, y in zip(a, b):
        wx, wy = sliding_window_view(x, (7, 7)), sliding_window_view(y, (7, 7))
        mx, my = wx.mean(axis=(-1, -2)), wy.mean(axis=(-1, -2))
        vx, vy = wx.var(axis=(-1, -2), ddof=1), wy.var(axis=(-1, -2), ddof=1)
        cov = ((wx - mx[..., None, None]) * (wy - my[..., None, None])).sum(axis=(-1, -2)) / 48.0
        s = ((2 * mx * my + c1) * (2 * cov + c2)) / ((mx ** 2 + my ** 2 + c1) * (vx + vy + c2))
        values.append(s.mean())
    return float(np.mean(values))
