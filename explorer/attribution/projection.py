"""A projection, one value: its kind and size, its name (in cache keys, result files and API calls:
``exact``, ``countsketch4096``, ``gaussian1024``, ``factorized4096``), its label for people, and the default a
model gets. The projectors themselves are ``projectors.py`` and ``factorized.py``."""
from __future__ import annotations

from dataclasses import dataclass

KINDS = ("exact", "countsketch", "gaussian", "factorized")
LABELS = {"countsketch": "CountSketch", "gaussian": "Gaussian", "factorized": "factorized (LoGra-style)"}
EXACT_MAX_BYTES = 600_000_000  # exact (unprojected) features are the default while n·p float16 fit in 600 MB


@dataclass(frozen=True)
class Projection:
    kind: str = "exact"
    k: int = 0  # the sketch's size; 0 for exact

    @classmethod
    def parse(cls, name: str) -> "Projection":
        """The inverse of ``name``; a name that is none of them is refused with the forms that exist."""
        if name == "exact":
            return cls()
        for kind in KINDS[1:]:
            size = name.removeprefix(kind)
            if name.startswith(kind) and size.isdigit() and int(size) > 0:
                return cls(kind, int(size))
        raise ValueError(f"unknown projection {name!r}: use 'exact' or one of "
                         f"{', '.join(repr(k + '<k>') for k in KINDS[1:])}")

    @classmethod
    def default(cls, n: int, dim: int) -> "Projection":
        """Exact features when the n × p float16 matrix fits ``EXACT_MAX_BYTES`` (digits: 540 MB), else
        CountSketch k = 4096 (shapes: 14 MB instead of 960 MB; see benchmarks/results/fidelity.json)."""
        return cls() if 2 * n * dim <= EXACT_MAX_BYTES else cls("countsketch", 4096)

    @property
    def name(self) -> str:
        return "exact" if self.kind == "exact" else f"{self.kind}{self.k}"

    @property
    def label(self) -> str:
        """How the page names it: "exact gradients (no projection)", "CountSketch k = 4096", …"""
        return "exact gradients (no projection)" if self.kind == "exact" else f"{LABELS[self.kind]} k = {self.k}"
