"""Model-output functions f(x, t, ε; θ), the paper's Table 1. Each maps the model's prediction
ε_θ(x_t, t) (shape (S, C, H, W)), the noise ε and the timesteps t (S,) to one value per row (S,).
d = C·H·W is the number of pixels."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

Fn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class OutputFunction:
    name: str
    label: str
    formula: str
    latex: str
    fn: Fn  # (eps_pred, eps, t, elbo_weights) -> (S,)


def _flat(x: torch.Tensor) -> torch.Tensor:
    return x.reshape(x.shape[0], -1)


def l_simple(pred, eps, t, w):
    """L_Simple = (1/d)‖ε − ε_θ(x_t, t)‖² (TRAK; the DDPM training loss)."""
    return _flat(eps - pred).pow(2).mean(-1)


def l_elbo(pred, eps, t, w):
    """L_ELBO = w_t · L_Simple with w_t = β_t / (2 α_t (1 − ᾱ_t))."""
    return w[t] * l_simple(pred, eps, t, w)


def l_square(pred, eps, t, w):
    """L_Square = (1/d)‖ε_θ(x_t, t)‖² (D-TRAK)."""
    return _flat(pred).pow(2).mean(-1)


def l_avg(pred, eps, t, w):
    """L_Avg = (1/d) Σ ε_θ(x_t, t)."""
    return _flat(pred).mean(-1)


def l_1(pred, eps, t, w):
    """L_1 = ‖ε_θ(x_t, t)‖₁."""
    return _flat(pred).abs().sum(-1)


def l_2(pred, eps, t, w):
    """L_2 = ‖ε_θ(x_t, t)‖₂."""
    return _flat(pred).pow(2).sum(-1).sqrt()


def l_inf(pred, eps, t, w):
    """L_∞ = max |ε_θ(x_t, t)|."""
    return _flat(pred).abs().amax(-1)


OUTPUT_FUNCTIONS: dict[str, OutputFunction] = {
    o.name: o for o in [
        OutputFunction("simple", "L_Simple", "(1/d)‖ε − ε_θ(x_t,t)‖²",
                       r"\tfrac1d\lVert\epsilon-\epsilon_\theta(x_t,t)\rVert_2^2", l_simple),
        OutputFunction("elbo", "L_ELBO", "β_t/(2α_t(1−ᾱ_t)) · (1/d)‖ε − ε_θ(x_t,t)‖²",
                       r"\tfrac{\beta_t}{2\alpha_t(1-\bar\alpha_t)}\tfrac1d\lVert\epsilon-\epsilon_\theta(x_t,t)\rVert_2^2",
                       l_elbo),
        OutputFunction("square", "L_Square", "(1/d)‖ε_θ(x_t,t)‖²", r"\tfrac1d\lVert\epsilon_\theta(x_t,t)\rVert_2^2",
                       l_square),
        OutputFunction("avg", "L_Avg", "(1/d) Σ ε_θ(x_t,t)", r"\tfrac1d\textstyle\sum_j\epsilon_\theta(x_t,t)_j", l_avg),
        OutputFunction("l1", "L_1", "‖ε_θ(x_t,t)‖₁", r"\lVert\epsilon_\theta(x_t,t)\rVert_1", l_1),
        OutputFunction("l2", "L_2", "‖ε_θ(x_t,t)‖₂", r"\lVert\epsilon_\theta(x_t,t)\rVert_2", l_2),
        OutputFunction("linf", "L_∞", "max |ε_θ(x_t,t)|", r"\lVert\epsilon_\theta(x_t,t)\rVert_\infty", l_inf),
    ]
}


def elbo_weights(betas: torch.Tensor) -> torch.Tensor:
    """w_t = β_t / (2 α_t (1 − ᾱ_t)) with α_t = 1 − β_t."""
    alphas = 1 - betas
    return betas / (2 * alphas * (1 - torch.cumprod(alphas, 0)))
