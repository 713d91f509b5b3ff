"""The methods registry: every attribution method is one object that knows what it needs from the
feature store, how it scores, and how a person should read it (display name, formula, description).

Score rules over training features Φ (rows φ(x_i)) and a query feature φ(q):

    kernel        score(q,i) = φ(q)ᵀ (ΦᵀΦ + λI)⁻¹ φ(x_i)                       TRAK, D-TRAK, Table 1
    relative      kernel / ‖(ΦᵀΦ + λI)⁻¹ φ(x_i)‖                              relative influence
    renormalized  kernel / ‖φ(x_i)‖                                           renormalized influence
    dot           φ(q) · φ(x_i)                                              gradient / pixel / embedding
    cosine        φ(q) · φ(x_i) / (‖φ(q)‖ ‖φ(x_i)‖)
Methods with several models (TracInCP / GAS over checkpoints, ensembles over 50 % subset models)
average the rule's scores over them. Positive score = proponent, negative = opponent.

To add a method: write a ``Method`` (or subclass one), then ``register(...)`` it — nothing else in
the project names methods; the UI, the API, precompute and the evaluation read this registry.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

import numpy as np

from .kernel import Features, Kernel
from .outputs import OUTPUT_FUNCTIONS

if TYPE_CHECKING:  # the store is the engine's; methods only call it
    from ..store import FeatureStore


def _normalize(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.float64)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def _kernel(train: Features, query: np.ndarray, lam: float, kernel: Kernel) -> np.ndarray:
    return kernel.scores(query, lam)


def _relative(train, query, lam, kernel):
    return kernel.scores(query, lam) / np.maximum(kernel.inverse_norms(lam), 1e-30)


def _renormalized(train, query, lam, kernel):
    return kernel.scores(query, lam) / np.maximum(train.norms(), 1e-30)


def _dot(train, query, lam, kernel):
    return train.cross(query)


def _cosine(train, query, lam, kernel):
    return train.cross(_normalize(query)) / np.maximum(train.norms(), 1e-12)


Rule = Callable[[Features, np.ndarray, float, "Kernel | None"], np.ndarray]
RULES: dict[str, tuple[Rule, bool]] = {  # name -> (rule, needs the kernel / λ)
    "kernel": (_kernel, True), "relative": (_relative, True), "renormalized": (_renormalized, True),
    "dot": (_dot, False), "cosine": (_cosine, False),
}


@dataclass(frozen=True)
class Method:
    """A gradient method: features of ``output_fn`` from the models in ``models`` (final | checkpoints
    | ensemble), scored by ``rule`` and averaged over the models."""
    name: str
    label: str
    group: str
    description: str
    formula: str  # LaTeX
    output_fn: str = "simple"
    rule: str = "kernel"
    models: str = "final"
    opponents: str = "Top opponents (negative scores: they made this output less likely)"

    @property
    def uses_lambda(self) -> bool:
        return RULES[self.rule][1]

    @property
    def uses_kernel(self) -> bool:
        """True when ``score`` needs the engine's kernel of the training features (eigendecomposed once)."""
        return self.uses_lambda

    @property
    def uses_timesteps(self) -> bool:
        return True

    @property
    def uses_gradients(self) -> bool:
        """True when the method needs model-gradient training features (built, cached, projected)."""
        return True

    @property
    def generated_only(self) -> bool:
        return False

    @property
    def needs_classifier(self) -> bool:
        """True when the method reads the shipped classifier (models of unlabelled folders have none)."""
        return False

    def feature_key(self) -> tuple:
        """Methods with equal keys share training features and kernels."""
        return ("grad", self.output_fn, self.models)

    def train_features(self, store: "FeatureStore", strategy, progress=None, build: bool = True) -> list[Features]:
        return [store.gradients(m, self.output_fn, strategy, progress, build) for m in store.model_dirs(self.models)]

    def query_features(self, store: "FeatureStore", queries, strategy, noise_seed: int | None = None) -> list:
        """Per model, what ``score`` needs of the queries; ``noise_seed`` redraws their noise (stability)."""
        return [store.query_gradients(m, self.output_fn, strategy, queries, noise_seed)
                for m in store.model_dirs(self.models)]

    def score(self, train: list[Features], query: list[np.ndarray], lam: float | None,
              kernels: list[Kernel] | None) -> np.ndarray:
        """(m, n) scores averaged over the method's models."""
        rule = RULES[self.rule][0]
        kernels = kernels or [None] * len(train)
        return np.mean([rule(t, q, lam, k) for t, q, k in zip(train, query, kernels)], axis=0)


@dataclass(frozen=True)
class JourneyMethod(Method):
    """Journey-TRAK: the query feature follows the query's own DDIM sampling path."""

    @property
    def generated_only(self) -> bool:
        return True

    def query_features(self, store, queries, strategy, noise_seed=None):
        return [store.journey_gradients(m, self.output_fn, queries) for m in store.model_dirs(self.models)]


@dataclass(frozen=True)
class SimilarityMethod(Method):
    """Gradient-free similarity of ``representation`` (pixels | embedding) vectors."""
    representation: str = "pixel"
    opponents: str = "Least similar training images"

    @property
    def uses_timesteps(self) -> bool:
        return False

    @property
    def uses_gradients(self) -> bool:
        return False

    @property
    def needs_classifier(self) -> bool:
        return self.representation == "embedding"

    def feature_key(self) -> tuple:
        return (self.representation,)

    def train_features(self, store, strategy, progress=None, build=True):
        return [store.representation(self.representation, None)]

    def query_features(self, store, queries, strategy, noise_seed=None):
        return [store.representation(self.representation, queries)]


METHODS: dict[str, Method] = {}


def register(method: Method) -> Method:
    """Adds a method to the registry (the UI, the API and the evaluation stage list it)."""
    if method.rule not in RULES:
        raise ValueError(f"unknown score rule {method.rule!r}; use one of {sorted(RULES)}")
    METHODS[method.name] = method
    return method


def get_method(name: str) -> Method:
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; use one of {sorted(METHODS)}")
    return METHODS[name]


KERNEL, GRADSIM, TRACIN, SIMILARITY, JOURNEY, ENSEMBLE = (
    "Kernel (TRAK family)", "Gradient similarity", "TracIn", "Pixel / embedding similarity", "Journey-TRAK", "Ensembles")
_K = r"\phi(q)^\top(\Phi^\top\Phi+\lambda I)^{-1}\phi(x_i)"

for _m in [
    Method("dtrak", "D-TRAK", KERNEL, "The paper's method: the TRAK kernel on gradients of L_Square, the squared "
           "norm of the predicted noise — a function that ignores the noise target, and attributes better.",
           rf"\tau(q,i)={_K},\quad f=\tfrac1d\lVert\epsilon_\theta(x_t,t)\rVert^2", output_fn="square"),
    Method("trak", "TRAK", KERNEL, "The kernel score on gradients of the training loss L_Simple (Park et al., 2023).",
           rf"\tau(q,i)={_K},\quad f=\tfrac1d\lVert\epsilon-\epsilon_\theta(x_t,t)\rVert^2", output_fn="simple"),
    *[Method(f"kernel-{o}", f"Kernel · {OUTPUT_FUNCTIONS[o].label}", KERNEL,
             f"The paper's Table 1 ablation: the kernel score on gradients of {OUTPUT_FUNCTIONS[o].label}.",
             rf"\tau(q,i)={_K},\quad f={OUTPUT_FUNCTIONS[o].latex}", output_fn=o)
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
    SimilarityMethod("pixel-cos", "Raw pixel cosine", SIMILARITY, "Cosine of the raw pixel vectors.",
                     r"\cos(x_q,x_i)", rule="cosine", representation="pixel"),
    SimilarityMethod("pixel-dot", "Raw pixel dot", SIMILARITY, "Dot product of pixel vectors in [-1, 1].",
                     r"x_q^\top x_i", rule="dot", representation="pixel"),
    SimilarityMethod("embedding-cos", "Embedding cosine", SIMILARITY, "Cosine of the shipped classifier's "
                     "penultimate embedding (the offline stand-in for CLIP).", r"\cos(e(x_q),e(x_i))", rule="cosine",
                     representation="embedding"),
    JourneyMethod("journey-trak", "Journey-TRAK", JOURNEY, "For generated images: the query's L_Simple gradients at "
                  "each of its 50 DDIM steps, x_t re-noised from that step's x̂₀ prediction, averaged; TRAK kernel "
                  "(Georgiev et al., 2023).", rf"\phi(q)=\tfrac1{{50}}\sum_s\nabla_\theta L(\hat x_0^{{(s)}},t_s),\ {_K}"),
    Method("ensemble-trak", "Ensemble TRAK", ENSEMBLE, "TRAK scores averaged over models trained on random 50 % subsets.",
           rf"\tfrac1M\sum_m\tau_m(q,i)", models="ensemble"),
    Method("ensemble-dtrak", "Ensemble D-TRAK", ENSEMBLE,
           "D-TRAK scores averaged over models trained on random 50 % subsets.", rf"\tfrac1M\sum_m\tau_m(q,i)",
           output_fn="square", models="ensemble"),
]:
    register(_m)

from .das import DAS  # noqa: E402 - one file per method beyond the paper's; registered here
from .ekfac import EKFAC  # noqa: E402
from .nda import NDA  # noqa: E402

register(DAS)
register(EKFAC)
register(NDA)
