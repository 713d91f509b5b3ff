"""Random projections φ = Pᵀ g ∈ R^k of p-dimensional gradients; same seed → same projection.

- ``GaussianProjector``: P_ij ~ N(0, 1/k) (the paper's JL projection). P is generated block by
  block of ``block`` rows from per-block seeds, so the full p×k matrix never exists in memory;
  its cost is generating p·k normals per call, amortised over the rows of the call.
- ``CountSketchProjector``: each coordinate j goes to one bucket h(j) ∈ [0, k) with sign
  s(j) = ±1: φ_b = Σ_{j: h(j)=b} s(j) g_j. One pass over g (O(p) per gradient); E[⟨φ(a),φ(b)⟩]
  = ⟨a,b⟩ with variance ≤ 2‖a‖²‖b‖²/k, like Gaussian JL, at a fraction of the cost.

Every projector draws its randomness from ``sketch_seed(seed, k)``: sketches of different k are
independent (a k = 1024 sketch is not the k = 2048 one folded), so comparing k's compares
projections, not one projection at two resolutions.

Projectors take the gradient as one (N, p) tensor or as a list of (N, p_i) blocks whose widths
sum to p (one per parameter tensor, in order), so per-sample gradients never need to be
concatenated into one N×p copy.
"""
from __future__ import annotations

import torch


def flat(parts: list[torch.Tensor]) -> torch.Tensor:
    """The (N, p) gradient from its blocks (no copy when there is one block)."""
    return parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)


def sketch_seed(seed: int, k: int) -> int:
    """The generator seed of a k-dimensional sketch: (seed, k) mixed, so every k is independent."""
    return (seed * 1_000_003 + k * 7_919 + 12_345) % (2**63 - 1)


class Projector:
    name = "base"

    def __init__(self, dim: int, k: int, seed: int = 0, device: str = "cpu"):
        if k < 1:
            raise ValueError(f"k must be ≥ 1, got {k}")
        self.dim, self.k, self.seed, self.device = dim, k, seed, device
        self.rng_seed = sketch_seed(seed, k)

    def project(self, parts: list[torch.Tensor]) -> torch.Tensor:  # [(N, p_i)] with Σ p_i = dim -> (N, k)
        raise NotImplementedError

    def __call__(self, g: torch.Tensor | list[torch.Tensor]) -> torch.Tensor:
        parts = [g] if isinstance(g, torch.Tensor) else list(g)
        width = sum(q.shape[-1] for q in parts)
        if width != self.dim:
            raise ValueError(f"gradient has {width} entries, projector expects {self.dim}")
        return self.project([q.to(self.device, torch.float32) for q in parts])


class GaussianProjector(Projector):
    name = "gaussian"

    def __init__(self, dim, k, seed=0, device="cpu", block: int = 4096):
        super().__init__(dim, k, seed, device)
        self.block = block

    def block_matrix(self, b: int) -> torch.Tensor:
        """Rows [b·block, (b+1)·block) of P, from a generator seeded with (seed, b)."""
        rows = min(self.block, self.dim - b * self.block)
        g = torch.Generator(device=self.device).manual_seed(self.rng_seed * 1_000_003 + b)
        return torch.randn(rows, self.k, generator=g, device=self.device) / self.k ** 0.5

    def project(self, parts):
        g = flat(parts)
        out = torch.zeros(g.shape[0], self.k, device=self.device)
        for b in range(0, (self.dim + self.block - 1) // self.block):
            out.addmm_(g[:, b * self.block:(b + 1) * self.block], self.block_matrix(b))
        return out


class CountSketchProjector(Projector):
    """The sign is folded into the index: coordinate j is added to slot h(j) + k·[s(j) < 0] of a
    (N, 2k) accumulator and φ = acc[:, :k] − acc[:, k:]. So the projection is one scatter-add
    per parameter block straight from the gradient, with no N×p signed copy (on CUDA the 2k
    slots also halve atomic contention)."""
    name = "countsketch"

    def __init__(self, dim, k, seed=0, device="cpu"):
        super().__init__(dim, k, seed, device)
        gen = torch.Generator().manual_seed(self.rng_seed)
        bucket = torch.randint(0, k, (dim,), generator=gen)
        negative = torch.randint(0, 2, (dim,), generator=gen) == 0
        # int32 halves the index traffic on CUDA; CPU index_add_ is ~9× slower with int32 indices
        index_dtype = torch.int64 if torch.device(device).type == "cpu" else torch.int32
        self.slot = (bucket + k * negative).to(device, index_dtype)

    def project(self, parts):
        acc = torch.zeros(parts[0].shape[0], 2 * self.k, device=self.device)
        start = 0
        for q in parts:
            acc.index_add_(1, self.slot[start:start + q.shape[1]], q)
            start += q.shape[1]
        return acc[:, :self.k] - acc[:, self.k:]


class ExactProjector(Projector):
    """No projection (k = p): the method's exact answer, the yardstick for every sketch."""
    name = "exact"

    def __init__(self, dim, k=None, seed=0, device="cpu"):
        super().__init__(dim, dim, seed, device)

    def project(self, parts):
        return flat(parts)


PROJECTORS = {c.name: c for c in (GaussianProjector, CountSketchProjector, ExactProjector)}


def make_projector(name: str, dim: int, k: int, seed: int = 0, device: str = "cpu") -> Projector:
    if name not in PROJECTORS:
        raise ValueError(f"unknown projector {name!r}; use one of {sorted(PROJECTORS)}")
    return PROJECTORS[name](dim, k, seed=seed, device=device)
