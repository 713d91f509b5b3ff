"""Linear datamodeling score.

Subsets S_1..S_M of half the training set; a model θ_m trained on each; for query q the measured
output y_m(q) = L_Simple of θ_m averaged over timesteps and noise draws. The attribution predicts
    ŷ_m(q) = Σ_{i ∈ S_m} −score(q, i)
and LDS = mean over queries of Spearman(ŷ_·(q), y_·(q)) across the M subsets.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
from scipy.stats import rankdata


def make_subsets(n: int, m: int, alpha: float = 0.5, seed: int = 42) -> np.ndarray:
    """(m, round(alpha·n)) sorted training indices; subset j from a generator seeded seed + j."""
    size = int(round(alpha * n))
    return np.stack([np.sort(np.random.default_rng(seed + j).permutation(n)[:size]) for j in range(m)])


def masks_from_subsets(subsets: np.ndarray, n: int) -> np.ndarray:
    masks = np.zeros((len(subsets), n), dtype=bool)
    for j, s in enumerate(subsets):
        masks[j, s] = True
    return masks


def predictions(scores: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """ŷ (M, Q) = masks (M, n) @ (−scores)ᵀ (n, Q)."""
    return masks.astype(np.float64) @ (-np.asarray(scores, np.float64)).T


def spearman_columns(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Spearman ρ between a[:, j] and b[:, j] for every column j (average ranks for ties)."""
    ra, rb = rankdata(a, axis=0), rankdata(b, axis=0)
    ra -= ra.mean(0)
    rb -= rb.mean(0)
    denom = np.sqrt((ra ** 2).sum(0) * (rb ** 2).sum(0))
    return np.where(denom > 0, (ra * rb).sum(0) / np.where(denom > 0, denom, 1), 0.0)


def lds(scores: np.ndarray, masks: np.ndarray, outputs: np.ndarray) -> np.ndarray:
    """Per-query Spearman between predicted and measured outputs; outputs (M, Q)."""
    return spearman_columns(predictions(scores, masks), outputs)


def bootstrap_interval(scores: np.ndarray, masks: np.ndarray, outputs: np.ndarray, n_boot: int = 200,
                       seed: int = 0, level: float = 0.95) -> tuple[float, float]:
    """Percentile interval of mean LDS when the M subsets are resampled with replacement."""
    rng = np.random.default_rng(seed)
    pred = predictions(scores, masks)
    stats = []
    for _ in range(n_boot):
        idx = rng.integers(0, len(masks), len(masks))
        stats.append(spearman_columns(pred[idx], outputs[idx]).mean())
    lo, hi = np.quantile(stats, [(1 - level) / 2, 1 - (1 - level) / 2])
    return float(lo), float(hi)


@dataclass
class LDSResult:
    mean: float
    interval: tuple[float, float]
    per_query: np.ndarray
    lam: float | None
    paper_style: float | None  # λ tuned on all subsets (what the paper reports)


def evaluate(score_fn: Callable[[float | None], np.ndarray], masks: np.ndarray, outputs: np.ndarray,
             lambdas: list[float] | None, tune: np.ndarray, report: np.ndarray, n_boot: int = 200) -> LDSResult:
    """λ is chosen on subsets ``tune`` and LDS is reported on subsets ``report`` (disjoint); with
    ``lambdas=None`` the method has no λ. ``score_fn(λ)`` returns (Q, n) scores."""
    if set(tune.tolist()) & set(report.tolist()):
        raise ValueError("tuning and reporting subsets overlap")
    lam, paper = None, None
    if lambdas:
        cache = {l: score_fn(l) for l in lambdas}
        lam = max(lambdas, key=lambda l: lds(cache[l], masks[tune], outputs[tune]).mean())
        paper = max(lds(cache[l], masks, outputs).mean() for l in lambdas)
        scores = cache[lam]
    else:
        scores = score_fn(None)
    per_query = lds(scores, masks[report], outputs[report])
    return LDSResult(float(per_query.mean()), bootstrap_interval(scores, masks[report], outputs[report], n_boot),
                     per_query, lam, paper)


def measured_outputs(model: torch.nn.Module, x: torch.Tensor, eps: torch.Tensor, ts: torch.Tensor,
                     device: str = "cpu", batch: int = 4096, context: torch.Tensor | None = None) -> np.ndarray:
    """y(q) = mean over (t, noise) of (1/d)‖ε − ε_θ(x_t, t[, c_q])‖²; x (Q, C, H, W), eps (Q, R, C, H, W)
    with R = len(ts) × draws noise rows, ts (R,) the timestep of each row; ``context`` (Q, L, h): each
    query's encoded caption (text-to-image models)."""
    from ..schedule import DDPM

    model = model.to(device).eval()
    q, r = eps.shape[:2]
    flat_x = x.unsqueeze(1).expand_as(eps).reshape(q * r, *x.shape[1:])
    flat_e = eps.reshape(q * r, *x.shape[1:])
    flat_t = ts.repeat(q)
    out = torch.empty(q * r)
    with torch.no_grad():
        for i in range(0, q * r, batch):
            xe, e, t = flat_x[i:i + batch].to(device), flat_e[i:i + batch].to(device), flat_t[i:i + batch].to(device)
            if context is None:
                pred = model(DDPM.add_noise(xe, e, t), t).sample
            else:
                rows = torch.arange(i, min(i + batch, q * r)) // r
                pred = model(DDPM.add_noise(xe, e, t), t, context[rows].to(device)).sample
            out[i:i + batch] = (pred - e).pow(2).flatten(1).mean(1).cpu()
    return out.view(q, r).mean(1).numpy()
