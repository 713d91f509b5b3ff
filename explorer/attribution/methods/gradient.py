"""The kernel family and its relatives on model-gradient features: TRAK, D-TRAK, the paper's Table 1
output-function ablation, relative / renormalized influence, gradient dot / cosine, TracInCP and GAS
over checkpoints, and the 50 %-subset ensembles."""
from __future__ import annotations

from ..method import Method
from ..outputs import OUTPUT_FUNCTIONS

KERNEL, GRADSIM, TRACIN, ENSEMBLE = "Kernel (TRAK family)", "Gradient similarity", "TracIn", "Ensembles"
K = r"\phi(q)^\top(\Phi^\top\Phi+\lambda I)^{-1}\phi(x_i)"  # the kernel score τ(q, i), in LaTeX

METHODS = [
    Method("dtrak", "D-TRAK", KERNEL, "The paper's method: the TRAK kernel on gradients of L_Square, the squared "
           "norm of the predicted noise — a function that ignores the noise target, and attributes better.",
           rf"\tau(q,i)={K},\quad f=\tfrac1d\lVert\epsilon_\theta(x_t,t)\rVert^2", output_fn="square"),
    Method("trak", "TRAK", KERNEL, "The kernel score on gradients of the training loss L_Simple (Park et al., 2023).",
           rf"\tau(q,i)={K},\quad f=\tfrac1d\lVert\epsilon-\epsilon_\theta(x_t,t)\rVert^2", output_fn="simple"),
    *[Method(f"kernel-{o}", f"Kernel · {OUTPUT_FUNCTIONS[o].label}", KERNEL,
             f"The paper's Table 1 ablation: the kernel score on gradients of {OUTPUT_FUNCTIONS[o].label}.",
             rf"\tau(q,i)={K},\quad f={OUTPUT_FUNCTIONS[o].latex}", output_fn=o)
      for o in ("elbo", "avg", "l1", "l2", "linf")],
    Method("relative-if", "Relative influence", KERNEL, "TRAK divided by the norm of the training image's own "
           "influence vector, so images that influence everything do not dominate (Barshan et al., 2020).",
           rf"\tau(q,i)/\lVert(\Phi^\top\Phi+\lambda I)^{{-1}}\phi(x_i)\rVert", rule="relative"),
    Method("renormalized-if", "Renormalized influence", KERNEL, "TRAK divided by the training feature's norm "
           "(Hammoudeh & Lowd, 2022).", r"\tau(q,i)/\lVert\phi(x_i)\rVert", rule="renormalized"),
    Method("grad-dot", "Gradient dot", GRADSIM, "Dot product of L_Simple gradient features, no kernel.",
           r"\phi(q)^\top\phi(x_i)", rule="dot"),
    Method("grad-cos", "Gradient cosine", GRADSIM, "Cosine of L_Simple gradient features, no kernel.",
           r"\cos(\phi(q),\phi(x_i))", rule="cosine", opponents="Least similar gradients"),
    Method("tracin", "TracInCP", TRACIN, "Gradient dot products averaged over training checkpoints (Pruthi et al., 2020).",
           r"\tfrac1C\sum_c\phi_c(q)^\top\phi_c(x_i)", rule="dot", models="checkpoints"),
    Method("gas", "GAS", TRACIN, "Gradient cosines averaged over training checkpoints.",
           r"\tfrac1C\sum_c\cos(\phi_c(q),\phi_c(x_i))", rule="cosine", models="checkpoints",
           opponents="Least similar gradients"),
]
ENSEMBLES = [
    Method("ensemble-trak", "Ensemble TRAK", ENSEMBLE, "TRAK scores averaged over models trained on random 50 % subsets.",
           rf"\tfrac1M\sum_m\tau_m(q,i)", models="ensemble"),
    Method("ensemble-dtrak", "Ensemble D-TRAK", ENSEMBLE,
           "D-TRAK scores averaged over models trained on random 50 % subsets.", rf"\tfrac1M\sum_m\tau_m(q,i)",
           output_fn="square", models="ensemble"),
]
