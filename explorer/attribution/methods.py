"""The methods registry. Every method is a feature type plus a score rule:

    kernel        score(q,i) = φ(q)ᵀ (ΦᵀΦ + λI)⁻¹ φ(x_i)                       TRAK, D-TRAK, Table 1
    relative      kernel / ‖(ΦᵀΦ + λI)⁻¹ φ(x_i)‖                              relative influence
    renormalized  kernel / ‖φ(x_i)‖                                           renormalized influence
    dot           φ(q) · φ(x_i)                                              gradient / pixel / embedding
    cosine        φ(q) · φ(x_i) / (‖φ(q)‖ ‖φ(x_i)‖)
TracInCP / GAS average dot / cosine over the intermediate checkpoints; ensembles average kernel
scores over models trained on 50 % subsets; Journey-TRAK replaces the query feature by gradients
along the DDIM trajectory. Positive score = proponent, negative = opponent.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .kernel import Kernel
from .outputs import OUTPUT_FUNCTIONS


@dataclass(frozen=True)
class Method:
    name: str
    label: str
    group: str
    doc: str
    features: str = "grad"  # grad | pixel | embedding
    output_fn: str = "simple"
    score: str = "kernel"  # kernel | relative | renormalized | dot | cosine
    checkpoints: str = "final"  # final | all (TracIn) | ensemble
    query: str = "grad"  # grad | journey (generated queries only)

    @property
    def uses_lambda(self) -> bool:
        return self.score in ("kernel", "relative", "renormalized")

    @property
    def uses_timesteps(self) -> bool:
        return self.features == "grad"


KERNEL, GRADSIM, TRACIN, SIMILARITY, JOURNEY, ENSEMBLE = (
    "Kernel (TRAK family)", "Gradient similarity", "TracIn", "Pixel / embedding similarity", "Journey-TRAK", "Ensembles")

_methods = [
    Method("trak", "TRAK", KERNEL, "Kernel score on gradients of the training loss L_Simple.", output_fn="simple"),
    Method("dtrak", "D-TRAK", KERNEL, "Kernel score on gradients of L_Square = (1/d)‖ε_θ‖² (the paper's method).",
           output_fn="square"),
    *[Method(f"kernel-{o}", f"Kernel · {OUTPUT_FUNCTIONS[o].label}", KERNEL,
             f"Table 1 ablation: kernel score on gradients of {OUTPUT_FUNCTIONS[o].label} = {OUTPUT_FUNCTIONS[o].formula}.",
             output_fn=o) for o in ("elbo", "avg", "l1", "l2", "linf")],
    Method("relative-if", "Relative influence", KERNEL, "TRAK score divided by ‖(ΦᵀΦ+λI)⁻¹φ(x_i)‖ (Barshan et al.).",
           score="relative"),
    Method("renormalized-if", "Renormalized influence", KERNEL, "TRAK score divided by ‖φ(x_i)‖ (Hammoudeh & Lowd).",
           score="renormalized"),
    Method("grad-dot", "Gradient dot", GRADSIM, "φ(q)·φ(x_i) on L_Simple features, no kernel.", score="dot"),
    Method("grad-cos", "Gradient cosine", GRADSIM, "Cosine of L_Simple features, no kernel.", score="cosine"),
    Method("tracin", "TracInCP", TRACIN, "Mean over checkpoints of φ(q)·φ(x_i) (unweighted).", score="dot",
           checkpoints="all"),
    Method("gas", "GAS", TRACIN, "Mean over checkpoints of the cosine of φ(q) and φ(x_i).", score="cosine",
           checkpoints="all"),
    Method("pixel-dot", "Raw pixel dot", SIMILARITY, "x_q · x_i on pixels in [-1, 1].", features="pixel", score="dot"),
    Method("pixel-cos", "Raw pixel cosine", SIMILARITY, "Cosine of pixel vectors.", features="pixel", score="cosine"),
    Method("embedding-cos", "Embedding cosine", SIMILARITY,
           "Cosine of the shipped classifier's penultimate embedding (offline stand-in for CLIP).",
           features="embedding", score="cosine"),
    Method("journey-trak", "Journey-TRAK", JOURNEY,
           "Generated queries: L_Simple gradients at the 50 DDIM steps, x_t re-noised from x̂₀, averaged; kernel score.",
           query="journey"),
    Method("ensemble-trak", "Ensemble TRAK", ENSEMBLE, "Mean of TRAK kernel scores over models trained on 50 % subsets.",
           checkpoints="ensemble"),
    Method("ensemble-dtrak", "Ensemble D-TRAK", ENSEMBLE,
           "Mean of D-TRAK kernel scores over models trained on 50 % subsets.", output_fn="square", checkpoints="ensemble"),
]
METHODS: dict[str, Method] = {m.name: m for m in _methods}


def get_method(name: str) -> Method:
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; use one of {sorted(METHODS)}")
    return METHODS[name]


def _normalize(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.float64)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def score_one(rule: str, train: np.ndarray, query: np.ndarray, lam: float = 1.0, kernel: Kernel | None = None,
              rows: slice | None = None) -> np.ndarray:
    """(m, n) scores of query features against training features (or ``rows`` of them) for one model."""
    train_rows = train if rows is None else train[rows]
    if rule == "dot":
        return np.asarray(query, np.float64) @ np.asarray(train_rows, np.float64).T
    if rule == "cosine":
        return _normalize(query) @ _normalize(train_rows).T
    kernel = kernel or Kernel(train)
    s = kernel.scores(query, lam, rows)
    if rule == "relative":
        return s / np.maximum(kernel.inverse_norms(lam)[rows or slice(None)], 1e-30)
    if rule == "renormalized":
        return s / np.maximum(np.linalg.norm(np.asarray(train_rows, np.float64), axis=1), 1e-30)
    if rule != "kernel":
        raise ValueError(f"unknown score rule {rule!r}")
    return s


def score(method: Method, train: list[np.ndarray], query: list[np.ndarray], lam: float = 1.0,
          kernels: list[Kernel] | None = None, rows: slice | None = None) -> np.ndarray:
    """Scores averaged over the models/checkpoints of ``method`` (one entry per model in the lists)."""
    kernels = kernels or [None] * len(train)
    return np.mean([score_one(method.score, t, q, lam, k, rows) for t, q, k in zip(train, query, kernels)], axis=0)
