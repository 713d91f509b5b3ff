"""Counterfactual evaluation: remove the top-k proponents of a generated image, retrain with the
full model's own seed (so only the removed data differs), regenerate from the same initial noise
(DDIM, η = 0) and measure how far the image moved: pixel L2 on [-1, 1] (larger = the removed
images mattered more) and embedding cosine (smaller = moved more)."""
from __future__ import annotations

import numpy as np
import torch


def top_proponents(scores: np.ndarray, k: int) -> np.ndarray:
    """(Q, k) indices of the highest scores per row, best first."""
    idx = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    return np.take_along_axis(idx, np.argsort(-np.take_along_axis(scores, idx, 1), 1, kind="stable"), 1)


def random_removal(n: int, k: int, q: int, seed: int = 42) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.stack([np.sort(rng.choice(n, k, replace=False)) for _ in range(q)])


def keep_indices(n: int, removed: np.ndarray) -> np.ndarray:
    """Training indices left after removing ``removed``."""
    mask = np.ones(n, dtype=bool)
    mask[removed] = False
    return np.flatnonzero(mask)


def pixel_l2(a: torch.Tensor, b: torch.Tensor) -> np.ndarray:
    return (a - b).flatten(1).norm(dim=1).numpy()


def change_summary(l2: np.ndarray, cosine: np.ndarray) -> dict:
    """One removal's row of counterfactual.json: per-image pixel L2 and cosine, with their medians and means."""
    return {"l2": l2.tolist(), "cosine": cosine.tolist(), "l2_median": float(np.median(l2)),
            "cosine_median": float(np.median(cosine)), "l2_mean": float(l2.mean()), "cosine_mean": float(cosine.mean())}


def embedding_cosine(embed, a: torch.Tensor, b: torch.Tensor) -> np.ndarray:
    with torch.no_grad():
        return torch.nn.functional.cosine_similarity(embed(a), embed(b), dim=1).numpy()
