"""Attribution features: projected, timestep-averaged per-sample gradients, plus the
gradient-free features (raw pixels, classifier embedding).

    φ(x) = Pᵀ (1/S) Σ_s ∇_θ f(x, t_s, ε_s; θ)
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Callable, Iterator

import numpy as np
import torch

from ..schedule import DDPM, NoiseSchedule
from .gradients import GradientComputer
from .factorized import FactorizedProjector
from .projection import Projection
from .projectors import Projector, make_projector
from .timesteps import TimestepStrategy, seeded_noise


@dataclass(frozen=True)
class FeatureSpec:
    """Everything that determines a gradient feature set (the cache key)."""
    output_fn: str = "square"
    strategy: TimestepStrategy = TimestepStrategy()
    projector: str = "countsketch"  # countsketch | gaussian | factorized | exact (no projection)
    k: int = 1024  # ignored by ``exact``
    seed: int = 0  # noise seed; the sketch's seed is (seed, k) mixed

    @property
    def projection(self) -> str:
        return Projection(self.projector, self.k).name

    @property
    def key(self) -> str:
        return f"{self.output_fn}_{self.strategy.key}_{self.projection}_seed{self.seed}"

    def to_json(self) -> dict:
        d = asdict(self)
        if self.projector == "exact":
            d["k"] = None
        d["strategy"] = asdict(self.strategy)
        d["strategy"]["ts"] = list(self.strategy.ts)
        return d


class FeatureComputer:
    """Projects per-sample gradients of one model for one ``FeatureSpec``."""

    def __init__(self, model: torch.nn.Module, spec: FeatureSpec, device: str = "cpu",
                 param_names: list[str] | None = None, noise_seed: int | None = None,
                 schedule: NoiseSchedule = DDPM):
        self.spec = spec
        self.noise_seed = spec.seed if noise_seed is None else noise_seed  # other seeds: the method's own noise
        self.grads = GradientComputer(model, spec.output_fn, param_names, device, schedule=schedule)
        if spec.projector == FactorizedProjector.name:
            if param_names is not None:
                raise ValueError("the factorized projection covers all of a model's parameters, not a subset")
            self.projector: Projector = FactorizedProjector(self.grads.model, spec.k, spec.seed, device)
        else:
            self.projector = make_projector(spec.projector, self.grads.dim, spec.k, spec.seed, device)
        self.ts = torch.tensor(spec.strategy.timesteps())

    def project(self, x0s: torch.Tensor, eps: torch.Tensor, ts: torch.Tensor,
                context: torch.Tensor | None = None) -> torch.Tensor:
        """φ of one chunk: the factorized route never forms per-sample gradients; the others project them.
        ``context``: the chunk's encoded captions (text-to-image models)."""
        if isinstance(self.projector, FactorizedProjector):
            if context is not None:
                raise ValueError("the factorized projection is for unconditional models; use exact or CountSketch")
            return self.projector.features(self.grads, x0s, eps, ts)
        return self.projector(self.grads.parts(x0s, eps, ts, context))

    def chunk_size(self, sample_shape: tuple) -> int:
        """Samples per call; the factorized route holds activations only (1 GiB of them), no per-sample gradients."""
        if isinstance(self.projector, FactorizedProjector):
            return self.grads.chunk_size(len(self.ts), sample_shape, 1 << 30, per_sample_gradients=False)
        return self.grads.chunk_size(len(self.ts), sample_shape)

    def noise(self, uids: list[int], shape: tuple) -> torch.Tensor:
        return seeded_noise(uids, self.ts.tolist(), shape, self.noise_seed)

    def iter_features(self, x: torch.Tensor, uids: list[int], context: torch.Tensor | None = None
                      ) -> Iterator[tuple[slice, np.ndarray]]:
        """Yields (rows, φ rows as float32) for images x (N, C, H, W) with noise uids (and their encoded
        captions ``context`` (N, L, hidden) for a text-to-image model)."""
        eps = self.noise(uids, tuple(x.shape[1:]))
        if context is not None:
            self.grads.context_shape = tuple(context.shape[1:])
        chunk = self.chunk_size(tuple(x.shape[1:]))
        for i in range(0, x.shape[0], chunk):
            rows = slice(i, min(i + chunk, x.shape[0]))
            yield rows, self.project(x[rows], eps[rows], self.ts, None if context is None else context[rows]).cpu().numpy()

    def __call__(self, x: torch.Tensor, uids: list[int], context: torch.Tensor | None = None) -> np.ndarray:
        out = np.empty((x.shape[0], self.projector.k), np.float32)
        for rows, phi in self.iter_features(x, uids, context):
            out[rows] = phi
        return out

    def trajectory(self, x0_traj: torch.Tensor, timesteps: torch.Tensor, uid: int) -> np.ndarray:
        """Journey-TRAK query feature: x0_traj (steps, C, H, W) are the DDIM x̂₀ predictions at
        ``timesteps``; each is re-noised with fresh seeded noise, gradients averaged, projected."""
        eps = seeded_noise([uid], timesteps.tolist(), tuple(x0_traj.shape[1:]), self.noise_seed + 1)
        return self.project(x0_traj.unsqueeze(0), eps, timesteps.long()).cpu().numpy()


def pixel_features(x: torch.Tensor) -> np.ndarray:
    """Raw-pixel feature: the flattened image in [-1, 1]."""
    return x.reshape(x.shape[0], -1).numpy().astype(np.float32)


def embedding_features(embed: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> np.ndarray:
    """Classifier-embedding feature (offline stand-in for CLIP)."""
    with torch.no_grad():
        return torch.cat([embed(x[i:i + 512]) for i in range(0, len(x), 512)]).numpy().astype(np.float32)


# uid ranges for seeded noise: training/validation images use their dataset index
GENERATED_UID = 10_000_000  # + seed
UPLOAD_UID = 20_000_000
FRESH_UID = 30_000_000  # + dataset index: a training image queried with noise drawn afresh
KNOWN_UID = 40_000_000  # + training position: a known-answer query (icons: the same icon drawn at 48×48)


def generated_uid(seed: int) -> int:
    """The uid of the image generated from ``seed`` (its noise stream)."""
    return GENERATED_UID + int(seed)


def seed_of(uid: int) -> int:
    """The seed a generated image's uid came from (inverse of ``generated_uid``)."""
    return int(uid) - GENERATED_UID
