"""Random projections φ = Pᵀ g ∈ R^k of p-dimensional gradients; same seed → same projection.

- ``GaussianProjector``: P_ij ~ N(0, 1/k) (the paper's JL projection). P is generated block by
  block of ``block`` rows from per-block seeds, so the full p×k matrix never exists in memory;
  its cost is generating p·k normals per call, amortised over the rows of the call.
- ``CountSketchProjector``: each coordinate j goes to one bucket h(j) ∈ [0, k) with sign
  s(j) = ±1: φ_b = Σ_{j: h(j)=b} s(j) g_j. One pass over g (O(p) per gradient); E[⟨φ(a),φ(b)⟩]
  = ⟨a,b⟩ with variance ≤ 2‖a‖²‖b‖²/k, like Gaussian JL, at a fraction of the cost.
"""
from __future__ import annotations

import torch


class Projector:
    name = "base"

    def __init__(self, dim: int, k: int, seed: int = 0, device: str = "cpu"):
        if k < 1:
            raise ValueError(f"k must be ≥ 1, got {k}")
        self.dim, self.k, self.seed, self.device = dim, k, seed, device

    def project(self, g: torch.Tensor) -> torch.Tensor:  # (N, dim) -> (N, k)
        raise NotImplementedError

    def __call__(self, g: torch.Tensor) -> torch.Tensor:
        if g.shape[-1] != self.dim:
            raise ValueError(f"gradient has {g.shape[-1]} entries, projector expects {self.dim}")
        return self.project(g.to(self.device, torch.float32))


class GaussianProjector(Projector):
    name = "gaussian"

    def __init__(self, dim, k, seed=0, device="cpu", block: int = 4096):
        super().__init__(dim, k, seed, device)
        self.block = block

    def block_matrix(self, b: int) -> torch.Tensor:
        """Rows [b·block, (b+1)·block) of P, from a generator seeded with (seed, b)."""
        rows = min(self.block, self.dim - b * self.block)
        g = torch.Generator(device=self.device).manual_seed(self.seed * 1_000_003 + b)
        return torch.randn(rows, self.k, generator=g, device=self.device) / self.k ** 0.5

    def project(self, g):
        out = torch.zeros(g.shape[0], self.k, device=self.device)
        for b in range(0, (self.dim + self.block - 1) // self.block):
            out.addmm_(g[:, b * self.block:(b + 1) * self.block], self.block_matrix(b))
        return out


class CountSketchProjector(Projector):
    name = "countsketch"

    def __init__(self, dim, k, seed=0, device="cpu"):
        super().__init__(dim, k, seed, device)
        gen = torch.Generator().manual_seed(seed)
        self.bucket = torch.randint(0, k, (dim,), generator=gen).to(device)
        self.sign = (torch.randint(0, 2, (dim,), generator=gen) * 2 - 1).float().to(device)

    def project(self, g):
        out = torch.zeros(g.shape[0], self.k, device=self.device)
        return out.index_add_(1, self.bucket, g * self.sign)


class IdentityProjector(Projector):
    """No projection (k = p): for exact checks on tiny models."""
    name = "identity"

    def __init__(self, dim, k=None, seed=0, device="cpu"):
        super().__init__(dim, dim, seed, device)

    def project(self, g):
        return g


PROJECTORS = {c.name: c for c in (GaussianProjector, CountSketchProjector, IdentityProjector)}


def make_projector(name: str, dim: int, k: int, seed: int = 0, device: str = "cpu") -> Projector:
    if name not in PROJECTORS:
        raise ValueError(f"unknown projector {name!r}; use one of {sorted(PROJECTORS)}")
    return PROJECTORS[name](dim, k, seed=seed, device=device)
