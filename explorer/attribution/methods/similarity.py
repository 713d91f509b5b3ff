"""Gradient-free similarity baselines: raw pixels and the classifier's embedding, dot and cosine."""
from __future__ import annotations

from dataclasses import dataclass, replace

from ..method import Method, Needs

SIMILARITY = "Pixel / embedding similarity"


@dataclass(frozen=True)
class SimilarityMethod(Method):
    """Gradient-free similarity of ``representation`` (pixels | embedding) vectors."""
    representation: str = "pixel"
    opponents: str = "Least similar training images"

    @property
    def needs(self) -> Needs:
        return replace(super().needs, gradients=False, timesteps=False, classifier=self.representation == "embedding")

    def feature_key(self) -> tuple:
        return (self.representation,)

    def train_features(self, store, strategy, progress=None, build=True):
        return [store.representation(self.representation, None)]

    def query_features(self, store, queries, strategy, noise_seed=None):
        return [store.representation(self.representation, queries)]


METHODS = [
    SimilarityMethod("pixel-cos", "Raw pixel cosine", SIMILARITY, "Cosine of the raw pixel vectors.",
                     r"\cos(x_q,x_i)", rule="cosine", representation="pixel"),
    SimilarityMethod("pixel-dot", "Raw pixel dot", SIMILARITY, "Dot product of pixel vectors in [-1, 1].",
                     r"x_q^\top x_i", rule="dot", representation="pixel"),
    SimilarityMethod("embedding-cos", "Embedding cosine", SIMILARITY, "Cosine of the shipped classifier's "
                     "penultimate embedding (the offline stand-in for CLIP).", r"\cos(e(x_q),e(x_i))", rule="cosine",
                     representation="embedding"),
]
