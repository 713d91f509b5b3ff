"""The TRAK kernel and block-wise scoring.

score(q, i) = φ(q)ᵀ (ΦᵀΦ + λI)⁻¹ φ(x_i), Φ ∈ R^{n×k} the training features.

One eigendecomposition serves every λ:
- primal (n ≥ k): ΦᵀΦ = V diag(s) Vᵀ; with a_q = Vᵀφ(q), b_i = Vᵀφ(x_i):
      score(q, i) = Σ_j a_qj b_ij / (s_j + λ)
- dual (n < k): ΦΦᵀ = U diag(s) Uᵀ and (ΦᵀΦ+λI)⁻¹Φᵀ = Φᵀ(ΦΦᵀ+λI)⁻¹; with a_q = UᵀΦφ(q), b_i = U_i:
      score(q, i) = Σ_j a_qj b_ij / (s_j + λ)
Both are exact (φ(x_i) lies in Φ's row space). The norms needed by relative influence,
‖(ΦᵀΦ+λI)⁻¹φ(x_i)‖² = Σ_j w_j b_ij² / (s_j+λ)², use w_j = 1 (primal) or w_j = s_j (dual).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np


class Kernel:
    def __init__(self, phi: np.ndarray):
        phi = np.asarray(phi, dtype=np.float64)
        self.n, self.k = phi.shape
        self.dual = self.n < self.k
        gram = phi @ phi.T if self.dual else phi.T @ phi
        s, vecs = np.linalg.eigh(gram)
        self.s = np.clip(s, 0, None)
        self._phi = phi
        self._basis = vecs  # U (n×n) in the dual, V (k×k) in the primal
        self.b = vecs if self.dual else phi @ vecs  # (n, r) train coordinates
        self._w = self.s if self.dual else np.ones_like(self.s)

    def query_coords(self, q: np.ndarray) -> np.ndarray:
        """a_q for query features q (m, k)."""
        q = np.asarray(q, dtype=np.float64)
        return (q @ self._phi.T) @ self._basis if self.dual else q @ self._basis

    def scores(self, q: np.ndarray, lam: float, rows: slice | None = None) -> np.ndarray:
        """(m, n) kernel scores of queries q against all (or ``rows`` of the) training features."""
        b = self.b if rows is None else self.b[rows]
        return (self.query_coords(q) / (self.s + lam)) @ b.T

    def inverse_norms(self, lam: float) -> np.ndarray:
        """‖(ΦᵀΦ+λI)⁻¹φ(x_i)‖ for every training point (relative influence)."""
        return np.sqrt((self._w * (self.b / (self.s + lam)) ** 2).sum(1))


def direct_scores(phi: np.ndarray, q: np.ndarray, lam: float) -> np.ndarray:
    """Reference: solve (ΦᵀΦ + λI) X = Φᵀ densely, then q X (tests compare against this)."""
    phi = np.asarray(phi, np.float64)
    x = np.linalg.solve(phi.T @ phi + lam * np.eye(phi.shape[1]), phi.T)
    return np.asarray(q, np.float64) @ x


@dataclass
class TopK:
    """Per query: the k highest (proponents) and k lowest (opponents) scores with training indices."""
    proponents: np.ndarray  # (m, k) int
    proponent_scores: np.ndarray
    opponents: np.ndarray
    opponent_scores: np.ndarray


def blockwise_topk(score_block: Callable[[slice], np.ndarray], m: int, k: int, block: int = 256) -> TopK:
    """Top-k proponents/opponents for m queries, computing scores one block of queries at a time:
    ``score_block(rows)`` returns the (len(rows), n) scores; only one block is held at a time."""
    out = {key: [] for key in ("p", "ps", "o", "os")}
    for start in range(0, m, block):
        s = score_block(slice(start, min(start + block, m)))
        kk = min(k, s.shape[1])
        top = np.argpartition(-s, kk - 1, axis=1)[:, :kk]
        top = np.take_along_axis(top, np.argsort(-np.take_along_axis(s, top, 1), 1, kind="stable"), 1)
        bot = np.argpartition(s, kk - 1, axis=1)[:, :kk]
        bot = np.take_along_axis(bot, np.argsort(np.take_along_axis(s, bot, 1), 1, kind="stable"), 1)
        out["p"].append(top)
        out["ps"].append(np.take_along_axis(s, top, 1))
        out["o"].append(bot)
        out["os"].append(np.take_along_axis(s, bot, 1))
    return TopK(*(np.concatenate(out[key]) for key in ("p", "ps", "o", "os")))


