"""Timestep strategies and seeded noise.

- ``uniform`` (the paper's): t_s = ⌊s·T/S⌋ for s = 0..S−1, i.e. {0, T/S, 2T/S, …}; for every S
  the S timesteps are distinct and spread over [0, T).
- ``random``: S distinct timesteps drawn with a seed (the same for every sample).
- ``cumulative``: t = 0..S−1.
- ``list``: an explicit list (a single t is the per-step view).
Noise ε for (sample uid, t) comes from its own generator, so features never depend on batch size,
batch order or which other timesteps are used."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from ..schedule import T

STRATEGIES = ("uniform", "random", "cumulative", "list")
ALLOWED_S = (1, 10, 100, 1000)  # the S a visitor may pick (the paper's grid)
DEFAULT_S = 10  # the paper's default, and the S whose tuned λ stands in for an S not evaluated


@dataclass(frozen=True)
class TimestepStrategy:
    kind: str = "uniform"
    S: int = 10
    seed: int = 0
    ts: tuple[int, ...] = field(default=())

    def __post_init__(self):
        if self.kind not in STRATEGIES:
            raise ValueError(f"unknown timestep strategy {self.kind!r}; use one of {STRATEGIES}")
        if self.kind == "list":
            if not self.ts or any(not 0 <= t < T for t in self.ts):
                raise ValueError(f"timestep list must be non-empty with 0 ≤ t < {T}, got {self.ts}")
        elif not 1 <= self.S <= T:
            raise ValueError(f"S must be in 1..{T}, got {self.S}")

    @classmethod
    def offered(cls, kind: str, S) -> "TimestepStrategy":
        """A strategy a visitor picked; ValueError naming the choices when S is not one of ``ALLOWED_S``."""
        if S is None or S == "" or float(S) not in ALLOWED_S:
            raise ValueError(f"S must be {', '.join(map(str, ALLOWED_S[:-1]))} or {ALLOWED_S[-1]}.")
        return cls(kind, int(float(S)))

    @classmethod
    def default(cls) -> "TimestepStrategy":
        return cls("uniform", DEFAULT_S)

    @classmethod
    def single(cls, t: int) -> "TimestepStrategy":
        return cls("list", 1, 0, (int(t),))

    def timesteps(self) -> list[int]:
        if self.kind == "uniform":
            return [s * T // self.S for s in range(self.S)]
        if self.kind == "cumulative":
            return list(range(self.S))
        if self.kind == "random":
            return sorted(np.random.default_rng(self.seed).choice(T, self.S, replace=False).tolist())
        return list(self.ts)

    @property
    def label(self) -> str:
        """What a person reads: "10 uniform timesteps", "t = 500", ..."""
        if self.kind == "list":
            return "t = " + ", ".join(map(str, self.ts)) if len(self.ts) <= 4 else f"{len(self.ts)} listed timesteps"
        return {"uniform": f"{self.S} uniform timesteps", "cumulative": f"the first {self.S} timesteps (t = 0..{self.S - 1})",
                "random": f"{self.S} random timesteps (seed {self.seed})"}[self.kind]

    @property
    def key(self) -> str:
        if self.kind == "list":
            return "t" + "-".join(map(str, self.ts)) if len(self.ts) <= 4 else f"list{len(self.ts)}_{hash(self.ts) & 0xffff:x}"
        return f"{self.kind}{self.S}" + (f"_s{self.seed}" if self.kind == "random" else "")


def noise_seed(seed: int, uid: int, t: int) -> int:
    """A 63-bit seed mixing (noise seed, sample uid, timestep) — SplitMix64 style."""
    z = (seed * 0x9E3779B97F4A7C15 + uid * 0xBF58476D1CE4E5B9 + t * 0x94D049BB133111EB + 0x1234567) & (2**64 - 1)
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & (2**64 - 1)
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & (2**64 - 1)
    return (z ^ (z >> 31)) >> 1


def seeded_noise(uids: list[int], timesteps: list[int], shape: tuple, seed: int = 0) -> torch.Tensor:
    """ε of shape (len(uids), len(timesteps), *shape); entry (i, s) depends only on (seed, uid_i, t_s)."""
    out = torch.empty(len(uids), len(timesteps), *shape)
    g = torch.Generator()
    for i, u in enumerate(uids):
        for s, t in enumerate(timesteps):
            g.manual_seed(noise_seed(seed, int(u), int(t)))
            out[i, s] = torch.randn(shape, generator=g)
    return out


def noised_pairs(x: torch.Tensor, uids: list[int], timesteps: list[int], seed: int = 0, schedule=None
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Every (image, timestep) pair of images x (N, C, H, W) noised with its seeded ε under ``schedule``
    (default the project's DDPM): (x_t, ε, t), each N·S rows, image-major (row i·S + s is image i at t_s)."""
    from ..schedule import DDPM
    eps = seeded_noise(uids, timesteps, tuple(x.shape[1:]), seed).reshape(-1, *x.shape[1:])
    t = torch.tensor([int(v) for v in timesteps]).repeat(len(x))
    return (schedule or DDPM).add_noise(x.repeat_interleave(len(timesteps), 0), eps, t), eps, t


def caption_kwargs(context: torch.Tensor | None, a: int, per: int, S: int) -> dict:
    """The UNet's caption argument for the ``noised_pairs`` rows of images a … a + per: each image's encoded
    caption repeated for its S timesteps; nothing for an unconditional model (``context`` None)."""
    return {} if context is None else {"encoder_hidden_states": context[a:a + per].repeat_interleave(S, 0)}
