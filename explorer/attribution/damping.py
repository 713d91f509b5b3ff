"""λ, the damping of the kernel score φ(q)ᵀ (ΦᵀΦ + λI)⁻¹ φ(x_i): the grid the LDS stage tunes it over, and
what stands in before it is tuned.

A fixed λ only means something against the kernel's own scale. The project's models have gradients of order
one, so λ = 1 is a mild damping there; a LoRA's gradients are of order 1e-5 (‖φ‖² ~ 1e-10), where λ = 1
swamps ΦᵀΦ and every kernel score collapses to φ(q)·φ(x_i)/λ. Models whose untuned λ should follow their
features' scale (LoRA tasks) ask for ``scaled``: λ = 0.1 · mean_i ‖φ(x_i)‖² (the mean eigenvalue of ΦᵀΦ
times n/10, whatever the units of the gradients)."""
from __future__ import annotations

import numpy as np

LAMBDA_GRID = (1e-3, 1e-2, 1e-1, 1, 10, 100, 1e3, 1e4)  # tuned on subsets 0–31, reported on 32–63
FALLBACK_LAMBDA = 1.0  # untuned, for gradients of order one
SCALED_LAMBDA = 0.1  # untuned, relative to mean ‖φ_i‖²


def scaled(norms: np.ndarray) -> float:
    """λ = SCALED_LAMBDA · mean ‖φ_i‖² for training feature norms ‖φ_i‖."""
    return float(SCALED_LAMBDA * np.mean(np.asarray(norms, np.float64) ** 2))
