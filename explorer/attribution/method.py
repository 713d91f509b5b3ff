"""The method interface: every attribution method is one object that knows what it needs from the
feature store, how it scores, and how a person should read it (display name, formula, description).

Score rules over training features Φ (rows φ(x_i)) and a query feature φ(q):

    kernel        score(q,i) = φ(q)ᵀ (ΦᵀΦ + λI)⁻¹ φ(x_i)                       TRAK, D-TRAK, Table 1
    relative      kernel / ‖(ΦᵀΦ + λI)⁻¹ φ(x_i)‖                              relative influence
    renormalized  kernel / ‖φ(x_i)‖                                           renormalized influence
    dot           φ(q) · φ(x_i)                                              gradient / pixel / embedding
    cosine        φ(q) · φ(x_i) / (‖φ(q)‖ ‖φ(x_i)‖)
Methods with several models (TracInCP / GAS over checkpoints, ensembles over 50 % subset models)
average the rule's scores over them. Positive score = proponent, negative = opponent.

A method is one object: a ``Method`` (or a subclass) in a family file of ``attribution/methods/``,
listed in ``attribution/registry.py``. This module is the interface only; it never imports a method
or the store (a method sees the store through ``FeatureSource``).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Protocol

import numpy as np

from .kernel import Features, Kernel


class FeatureSource(Protocol):
    """What a method may ask of the feature store (``explorer.store.FeatureStore`` implements it)."""
    seed: int

    def model_dirs(self, which: str) -> list[str]: ...
    def model(self, folder: str): ...
    def gradients(self, model_dir: str, output_fn: str, strategy, progress=None, build: bool = True) -> Features: ...
    def query_gradients(self, model_dir: str, output_fn: str, strategy, queries: list, noise_seed=None) -> np.ndarray: ...
    def raw_query_gradients(self, model_dir: str, output_fn: str, strategy, queries: list, noise_seed=None) -> tuple: ...
    def journey_gradients(self, model_dir: str, output_fn: str, queries: list) -> np.ndarray: ...
    def representation(self, kind: str, queries: list | None) -> Features | np.ndarray: ...
    def fitted(self, fit: Fit, model_dir: str, strategy, progress=None): ...


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
class Needs:
    """What a method needs to answer a query, read by the engine, the page, precompute and the CLI:

    gradients       model-gradient training features (built, cached, projected)
    timesteps       a timestep strategy (S)
    lam             a damping λ (tuned by LDS)
    kernel          the engine's kernel (ΦᵀΦ + λI), eigendecomposed once per feature set
    generated_only  a generated query with its sampling path (not an upload or a real image)
    captions        can attribute a text-to-image model (its fit and query path pass each image's caption)
    classifier      the shipped classifier (models of unlabelled folders have none)
    """
    gradients: bool = True
    timesteps: bool = True
    lam: bool = True
    kernel: bool = True
    generated_only: bool = False
    captions: bool = True
    classifier: bool = False


@dataclass(frozen=True)
class Fit:
    """A method's one pass over the training set before it can score (EK-FAC's curvature, DAS's residual
    sizes): ``fn(model, inputs, uids, strategy, seed, context=, param_names=, schedule=)``. The store keeps
    it per (model, timesteps) and builds it, shared, with the training features; ``label`` names it to a person;
    ``passes`` is its time per training input and timestep in units of one gradient of the method's output
    function (the estimate before this machine has timed a fit of its own)."""
    name: str
    fn: Callable
    label: str
    passes: float


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
    def needs(self) -> Needs:
        """What answering costs and requires; a rule-based method needs λ and the kernel when its rule does."""
        return Needs(lam=RULES[self.rule][1], kernel=RULES[self.rule][1])

    @property
    def fit(self) -> Fit | None:
        """The method's pass over the training set besides its features (None: it needs none)."""
        return None

    def feature_key(self) -> tuple:
        """Methods with equal keys share training features and kernels."""
        return ("grad", self.output_fn, self.models)

    def train_features(self, store: FeatureSource, strategy, progress=None, build: bool = True) -> list[Features]:
        return [store.gradients(m, self.output_fn, strategy, progress, build) for m in store.model_dirs(self.models)]

    def query_features(self, store: FeatureSource, queries, strategy, noise_seed: int | None = None) -> list:
        """Per model, what ``score`` needs of the queries; ``noise_seed`` redraws their noise (stability)."""
        return [store.query_gradients(m, self.output_fn, strategy, queries, noise_seed)
                for m in store.model_dirs(self.models)]

    def score(self, train: list[Features], query: list[np.ndarray], lam: float | None,
              kernels: list[Kernel] | None) -> np.ndarray:
        """(m, n) scores averaged over the method's models."""
        rule = RULES[self.rule][0]
        kernels = kernels or [None] * len(train)
        return np.mean([rule(t, q, lam, k) for t, q, k in zip(train, query, kernels)], axis=0)
