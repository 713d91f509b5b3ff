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


def credit(scores: np.ndarray, groups: np.ndarray, n_groups: int, k: int | None = None) -> np.ndarray:
    """Each contributor's share of the credit for one output: of the positive attribution,
    share_g = Σ_{i∈g} max(s_i, 0) / Σ_i max(s_i, 0); with ``k``, the share of the top-k proponents
    instead (|top-k ∩ g| / k). Compare with ``group_shares``: a contributor whose credit exceeds its share
    of the training set is over-represented in what made this output."""
    if k is not None:
        top = np.argsort(-scores, kind="stable")[:k]
        return np.bincount(groups[top], minlength=n_groups) / k
    pos = np.maximum(np.asarray(scores, np.float64), 0)
    total = pos.sum()
    return np.bincount(groups, weights=pos, minlength=n_groups) / total if total > 0 else np.zeros(n_groups)


def target_ranks(scores: np.ndarray, targets) -> np.ndarray:
    """Per query (row), the 0-based rank of its known answer among the training images (ties count
    against it: the number of images scored at least as high, itself excluded)."""
    scores = np.asarray(scores)
    own = scores[np.arange(len(scores)), np.asarray(targets)]
    return (scores >= own[:, None]).sum(1) - 1


def caption_match(prompts: list[str], captions: list[str], words) -> np.ndarray:
    """The text baseline: (m, n) Jaccard overlap of each prompt's words with each training caption's."""
    cw = [set(words(c)) for c in captions]
    out = np.zeros((len(prompts), len(captions)))
    for a, p in enumerate(prompts):
        pw = set(words(p))
        out[a] = [len(pw & c) / max(1, len(pw | c)) for c in cw]
    return out


def nearest(samples: np.ndarray, train: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per sample, the training image nearest in pixels and its distance: argmin_i ‖x − x_i‖₂ / √d."""
    a = np.asarray(samples, np.float64).reshape(len(samples), -1)
    b = np.asarray(train, np.float64).reshape(len(train), -1)
    d2 = (a ** 2).sum(1)[:, None] - 2 * a @ b.T + (b ** 2).sum(1)[None]
    best = d2.argmin(1)
    return best, np.sqrt(np.maximum(d2[np.arange(len(a)), best], 0) / a.shape[1])


def legibility(samples: np.ndarray, train: np.ndarray, targets) -> float:
    """The share of samples prompted with a training image's caption whose nearest training image is that
    image (chance: 1 / len(train)): a model that cannot draw what it was asked scores near zero."""
    return float(np.mean(nearest(samples, train)[0] == np.asarray(targets)))
