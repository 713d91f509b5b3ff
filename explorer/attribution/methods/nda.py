"""NDA — attribution by the optimal (nearest) denoiser (Zhao et al., arXiv 2510.14269; reference code
sail-sg/NDA). Gradient-free: no model, no gradients, only the training images and the noise schedule.

The denoiser that is optimal for a finite training set {y_i} is a posterior-weighted average of the
training images; the weight of y_i given a noised query x_t = √ᾱ_t q + √(1−ᾱ_t) ε is

    w_t(i | x_t) = softmax_i( −‖x_t − √ᾱ_t y_i‖² / (2 (1 − ᾱ_t)) )          (the paper's posterior, Eq. 4)

and the attribution of q to y_i aggregates it over the method's timesteps t_1 … t_S (the same uniform
or random timesteps and the same seeded noise ε(seed, uid, t) as the gradient methods):

    score(q, i) = (1/S) Σ_s w_{t_s}(i | x_{t_s})

Scores are in [0, 1] and sum to 1 over the training set; there are no negative scores, so the
"opponents" are the training images with the least posterior weight. This is the image-wise form; the
paper's patch-wise form (weights per local patch) is not implemented here.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..kernel import Features
from ..method import Method, Needs
from ..timesteps import noised_pairs


def posterior_weights(train: np.ndarray, xt: np.ndarray, abar: float) -> np.ndarray:
    """(m, n) softmax over training images of −‖x_t − √ᾱ y_i‖² / (2(1−ᾱ)); train (n, d), xt (m, d)."""
    sq = (xt ** 2).sum(1)[:, None] - 2 * np.sqrt(abar) * xt @ train.T + abar * (train ** 2).sum(1)[None]
    logits = -sq / (2 * (1 - abar))
    logits -= logits.max(1, keepdims=True)
    w = np.exp(logits)
    return w / w.sum(1, keepdims=True)


@dataclass(frozen=True)
class NoisedQueries:
    """The queries noised at each of the method's timesteps: x_t (m, S, d) and ᾱ_t (S,)."""
    xt: np.ndarray
    abar: np.ndarray


@dataclass(frozen=True)
class DenoiserMethod(Method):
    """Posterior weights of the optimal denoiser, averaged over timesteps (no gradients, no λ)."""
    opponents: str = "Least weight under the optimal denoiser"

    @property
    def needs(self) -> Needs:
        return Needs(gradients=False, lam=False, kernel=False)

    def feature_key(self) -> tuple:
        return ("pixel",)

    def train_features(self, store, strategy, progress=None, build: bool = True) -> list[Features]:
        return [store.representation("pixel", None)]

    def query_features(self, store, queries, strategy, noise_seed=None) -> list[NoisedQueries]:
        """Each query noised at every timestep with the engine's seeded noise (the gradient methods' ε)."""
        from ...schedule import DDPM
        ts = [int(t) for t in strategy.timesteps()]
        xt, _, _ = noised_pairs(torch.stack([q.shown for q in queries]), [q.uid for q in queries], ts, store.seed)
        return [NoisedQueries(xt.reshape(len(queries), len(ts), -1).numpy().astype(np.float64),
                              DDPM.abar[ts].numpy().astype(np.float64))]

    def score(self, train: list[Features], query: list[NoisedQueries], lam, kernels) -> np.ndarray:
        y, q = train[0].dense(), query[0]
        return np.mean([posterior_weights(y, q.xt[:, s], float(a)) for s, a in enumerate(q.abar)], axis=0)


NDA = DenoiserMethod(
    "nda", "NDA (optimal denoiser)", "Gradient-free",
    "The optimal denoiser's posterior weight of each training image given the noised query, averaged over "
    "timesteps: no gradients, no λ (Zhao et al., 2025).",
    r"\tfrac1S\sum_s \mathrm{softmax}_i\!\left(-\frac{\lVert x_{t_s}-\sqrt{\bar\alpha_{t_s}}\,y_i\rVert^2}"
    r"{2(1-\bar\alpha_{t_s})}\right)")
