"""DAS — Diffusion Attribution Score (Lin, Tao, Dong & Xu, ICLR 2025, arXiv 2410.18639; reference code
Jinxu-Lin/DAS). Where TRAK and D-TRAK ask how removing a training image changes the *loss* on the query,
DAS asks how it changes the model's *output* — the predicted noise, whose change is the KL divergence
between the two models' Gaussian predictive distributions up to a constant.

For the model linearised around θ* and trained with squared error on ε, one Newton step of leaving
x_i out moves the weights by Δθ_i ≈ (G + λI)⁻¹ J_iᵀ r_i (G = Σ_j J_jᵀ J_j the Gauss-Newton matrix,
J_i the output Jacobian, r_i = ε − ε_θ(x_{i,t}, t) the residual), and the query's output by
J_q Δθ_i. Compressing the d outputs to their mean (J ↦ ∇_θ L_Avg, the reference code's default
``mean`` output) and the residual vector to its size gives the score computed here:

    τ_DAS(q, i) = φ(q)ᵀ (ΦᵀΦ + λI)⁻¹ φ(x_i) · r_i,     φ = timestep-averaged ∇_θ (1/d) Σ_j ε_θ(x_t, t)_j
    r_i = (1/S) Σ_s ‖ε_s − ε_θ(x_{i,t_s}, t_s)‖₂ / √d      (RMS residual, the features' own ε_s and t_s)

— the reference code's ``DAS1`` score (its ``DAS0`` adds the leverage factor 1/(1 − h_i)², dropped
there and here). Two choices are ours: the sign is kept (the KL form squares the output change,
which would leave no opponents), and r_i is the residual's RMS size (the reference code divides each
image's residuals by their norm over timesteps before averaging, which measures how evenly the
error spreads over t rather than its size).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..method import Fit, Method
from ..timesteps import TimestepStrategy, caption_kwargs, noised_pairs


def residual_sizes(model: torch.nn.Module, x: torch.Tensor, uids: list[int], strategy: TimestepStrategy,
                   seed: int = 0, batch: int = 1024, context: torch.Tensor | None = None, schedule=None,
                   param_names: list[str] | None = None) -> np.ndarray:
    """r_i = (1/S) Σ_s ‖ε_s − ε_θ(x_{i,t_s}, t_s)‖ / √d for inputs x (n, C, H, W), with the seeded
    noise ε(seed, uid_i, t_s) the gradient features use (no gradients); a text-to-image model reads each
    image under its own encoded caption ``context`` (n, L, hidden). ``param_names`` is unused (r_i reads
    outputs only); ``schedule``: the model's noise schedule (default the project's)."""
    from ...models import model_lock
    ts, d = [int(t) for t in strategy.timesteps()], x[0].numel()
    out = np.zeros(len(x))
    per = max(1, batch // len(ts))
    for a in range(0, len(x), per):
        xt, eps, t = noised_pairs(x[a:a + per], uids[a:a + per], ts, seed, schedule)
        with torch.no_grad(), model_lock(model):
            pred = model(xt, t, **caption_kwargs(context, a, per, len(ts))).sample
        err = (eps - pred).reshape(len(x[a:a + per]), len(ts), -1).norm(dim=-1) / d ** 0.5
        out[a:a + per] = err.mean(1).double().numpy()
    return out


@dataclass(frozen=True)
class ResidualWeightedMethod(Method):
    """The kernel score of ``output_fn`` features times each training image's residual size r_i."""

    def query_features(self, store, queries, strategy, noise_seed=None) -> list:
        """The query features, and with them the training images' r_i, per model (the score needs both)."""
        feats = super().query_features(store, queries, strategy, noise_seed)
        return [(q, store.fitted(self.fit, m, strategy)) for q, m in zip(feats, store.model_dirs(self.models))]

    @property
    def fit(self) -> Fit:
        # one forward per input: 0.09 (digits) to 0.32 (emoji) of a gradient, timed at S = 4 on 2 cores
        return Fit("das", residual_sizes, "DAS's pass over how well the model fits each training image", 0.2)

    def score(self, train, query, lam, kernels) -> np.ndarray:
        return np.mean([k.scores(q, lam) * r[None] for (q, r), k in zip(query, kernels)], axis=0)


DAS = ResidualWeightedMethod(
    "das", "DAS", "Output change (DAS)",
    "How much removing the training image would move the model's predicted noise for this query (one "
    "Newton step of leaving it out, outputs compressed to their mean), weighted by how badly the model fits "
    "that image (Lin et al., ICLR 2025).",
    r"\tau(q,i)=\phi(q)^\top(\Phi^\top\Phi+\lambda I)^{-1}\phi(x_i)\,r_i,\quad "
    r"f=\tfrac1d\textstyle\sum_j\epsilon_\theta(x_t,t)_j,\quad "
    r"r_i=\tfrac1S\sum_s\tfrac{\lVert\epsilon_s-\epsilon_\theta(x_{i,t_s},t_s)\rVert}{\sqrt d}",
    output_fn="avg")
