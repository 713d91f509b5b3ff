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

import warnings

import numpy as np
import torch

warnings.filterwarnings("ignore", "The given NumPy array is not writable")  # memory-mapped rows are only read

DENSE_LIMIT = 1 << 27  # entries: up to 512 MiB of float32 is converted at once, larger sets block by block


class Features:
    """Training features Φ (n × k) as stored: rows r_i (float16 or float32, possibly memory-mapped)
    with a per-row scale c_i, φ_i = c_i · r_i. Everything the score rules need is computed block by
    block, so exact gradients (k = p, hundreds of MB) never have to sit in memory as float64:

        cross(q) = q Φᵀ      gram() = Φ Φᵀ      outer() = Φᵀ Φ      norms() = ‖φ_i‖
    """

    def __init__(self, rows: np.ndarray, scale: np.ndarray | None = None, block: int = 256, sha: str | None = None):
        self.rows, self.sha = rows, sha  # sha: the stored file's checksum (names derived caches such as the Gram)
        self.n, self.k = rows.shape
        self.scale = np.ones(self.n, np.float32) if scale is None else np.asarray(scale, np.float32)
        self.block = max(1, min(block, (1 << 26) // max(1, self.k)))
        self.dtype = np.float64 if rows.dtype == np.float64 else np.float32  # stored float16/32 → float32 blocks
        self._norms = None

    def blocks(self):
        """(rows slice, float32 block of Φ); the whole matrix at once when it is small enough."""
        step = self.n if self.n * self.k <= DENSE_LIMIT else self.block
        for a in range(0, self.n, step):
            sl = slice(a, min(a + step, self.n))
            rows = np.asarray(self.rows[sl])
            if rows.dtype == np.float16:  # torch's half → float conversion is vectorised, numpy's is not
                rows = torch.from_numpy(rows).float().numpy()
            yield sl, rows.astype(self.dtype, copy=False) * self.scale[sl, None].astype(self.dtype)

    def dense(self) -> np.ndarray:
        return np.concatenate([b for _, b in self.blocks()]).astype(np.float64)

    def cross(self, q: np.ndarray) -> np.ndarray:
        """(m, n) inner products of query features q (m, k) with every training feature."""
        q = np.asarray(q, self.dtype)
        out = np.empty((q.shape[0], self.n))
        for sl, b in self.blocks():
            out[:, sl] = q @ b.T
        return out

    def gram(self) -> np.ndarray:
        """Φ Φᵀ (n × n), float64."""
        blocks = list(self.blocks()) if self.n * self.k <= DENSE_LIMIT else None
        out = np.empty((self.n, self.n))
        for sa, a in (blocks or self.blocks()):
            for sb, b in (blocks or self.blocks()):
                if sb.start >= sa.start:
                    out[sa, sb] = a @ b.T
                    out[sb, sa] = out[sa, sb].T
        return out

    def outer(self) -> np.ndarray:
        """Φᵀ Φ (k × k), float64."""
        out = np.zeros((self.k, self.k))
        for _, b in self.blocks():
            out += (b.T @ b).astype(np.float64)
        return out

    def times(self, v: np.ndarray) -> np.ndarray:
        """Φ v for v (k, r)."""
        return np.concatenate([b.astype(np.float64) @ v for _, b in self.blocks()])

    def norms(self) -> np.ndarray:
        """‖φ_i‖ (n,), computed once (cosine and renormalized scores ask for it on every query)."""
        if self._norms is None:
            self._norms = np.concatenate([np.linalg.norm(b.astype(np.float64), axis=1) for _, b in self.blocks()])
        return self._norms


def as_features(x: np.ndarray | Features) -> Features:
    return x if isinstance(x, Features) else Features(x)


class Kernel:
    def __init__(self, phi: np.ndarray | Features, gram: np.ndarray | None = None,
                 spectrum: tuple[np.ndarray, np.ndarray] | None = None):
        """``gram``: Φ Φᵀ when already known; ``spectrum``: the eigenpairs ``spectrum(Φ)`` when already known
        (the two expensive steps, both cached on disk by the store)."""
        self.features = f = as_features(phi)
        self.n, self.k = f.n, f.k
        self.dual = self.n < self.k
        s, vecs = spectrum if spectrum is not None else eigenpairs(f, gram)
        self.s = np.clip(s, 0, None)
        self._basis = vecs  # U (n×n) in the dual, V (k×k) in the primal
        self.b = vecs if self.dual else f.times(vecs)  # (n, r) train coordinates
        self._w = self.s if self.dual else np.ones_like(self.s)

    def query_coords(self, q: np.ndarray) -> np.ndarray:
        """a_q for query features q (m, k): Uᵀ Φ φ(q) (dual) or Vᵀ φ(q) (primal)."""
        if self.dual:
            return self.features.cross(q) @ self._basis
        return np.asarray(q, np.float64) @ self._basis

    def scores(self, q: np.ndarray, lam: float) -> np.ndarray:
        """(m, n) kernel scores of queries q against every training feature."""
        return (self.query_coords(q) / (self.s + lam)) @ self.b.T

    def inverse_norms(self, lam: float) -> np.ndarray:
        """‖(ΦᵀΦ+λI)⁻¹φ(x_i)‖ for every training point (relative influence)."""
        return np.sqrt((self._w * (self.b / (self.s + lam)) ** 2).sum(1))


def eigenpairs(f: Features, gram: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(s, vectors) of Φ Φᵀ = U S Uᵀ (n < k, the dual form) or of Φᵀ Φ = V S Vᵀ (the primal form)."""
    if f.n < f.k:
        return np.linalg.eigh(f.gram() if gram is None else gram)
    return np.linalg.eigh(f.outer())


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

    def row(self, j: int) -> "TopK":
        """Query j's top-k alone (still (1, k) arrays)."""
        return TopK(*(a[j:j + 1] for a in (self.proponents, self.proponent_scores, self.opponents,
                                            self.opponent_scores)))


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


