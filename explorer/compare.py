"""Comparing two attributions of the same query (pure math)."""
from __future__ import annotations

import numpy as np
from scipy.stats import spearmanr


def overlap_at_k(a: np.ndarray, b: np.ndarray, k: int) -> float:
    """|top-k(a) ∩ top-k(b)| / k for two score vectors over the training set."""
    ta, tb = np.argsort(-a, kind="stable")[:k], np.argsort(-b, kind="stable")[:k]
    return len(set(ta.tolist()) & set(tb.tolist())) / k


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    return float(spearmanr(a, b).statistic)


def class_mix(labels: np.ndarray, indices: np.ndarray, n_classes: int, groups: np.ndarray | None = None,
              n_groups: int = 1) -> np.ndarray:
    """Counts of each class among the given training indices; with ``groups`` (a group id per training
    image, e.g. the artist's style) a (n_groups, n_classes) table."""
    if groups is None:
        return np.bincount(labels[indices], minlength=n_classes)
    return np.bincount(groups[indices] * n_classes + labels[indices], minlength=n_groups * n_classes
                       ).reshape(n_groups, n_classes)


def group_shares(groups: np.ndarray, n_groups: int) -> np.ndarray:
    """Fraction of the training set in each group (e.g. each artist's share of the icons)."""
    return np.bincount(groups, minlength=n_groups) / len(groups)
