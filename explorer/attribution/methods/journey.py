"""Journey-TRAK (Georgiev et al., 2023): the query feature follows the query's own DDIM sampling path."""
from __future__ import annotations

from dataclasses import dataclass, replace

from ..method import Method, Needs
from .gradient import K

JOURNEY = "Journey-TRAK"


@dataclass(frozen=True)
class JourneyMethod(Method):
    """Journey-TRAK: the query feature follows the query's own DDIM sampling path."""

    @property
    def needs(self) -> Needs:
        return replace(super().needs, generated_only=True, captions=False)

    def query_features(self, store, queries, strategy, noise_seed=None):
        return [store.journey_gradients(m, self.output_fn, queries) for m in store.model_dirs(self.models)]


METHODS = [
    JourneyMethod("journey-trak", "Journey-TRAK", JOURNEY, "For generated images: the query's L_Simple gradients at "
                  "each of its 50 DDIM steps, x_t re-noised from that step's x̂₀ prediction, averaged; TRAK kernel "
                  "(Georgiev et al., 2023).", rf"\phi(q)=\tfrac1{{50}}\sum_s\nabla_\theta L(\hat x_0^{{(s)}},t_s),\ {K}"),
]
