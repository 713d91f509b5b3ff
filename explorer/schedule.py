"""The noise schedule, one owner: T, β_t, ᾱ_t = Π_{s ≤ t} (1 − β_s), the forward noising, the x̂₀ estimate and
the DDIM sampler. ``DDPM`` is the project's (linear β from 1e-4 to 0.02, T = 1000, ε-prediction), which every
model trained here uses and saves beside its weights; an adopted pipeline brings its own
(``NoiseSchedule`` of its ``scheduler_config.json``).

    x_t = √ᾱ_t x₀ + √(1 − ᾱ_t) ε                 (``add_noise``)
    x̂₀ = (x_t − √(1 − ᾱ_t) ε_θ(x_t, t)) / √ᾱ_t    (``x0_estimate``)
"""
from __future__ import annotations

import torch
from diffusers import DDIMScheduler, DDPMScheduler

T = 1000  # diffusion steps
KEYS = ("num_train_timesteps", "beta_start", "beta_end", "beta_schedule", "trained_betas", "steps_offset")


class NoiseSchedule:
    def __init__(self, config: dict):
        """``config``: the diffusers scheduler keys that define β and the timestep grid (others are ignored)."""
        self.config = {k: config[k] for k in KEYS if config.get(k) is not None}
        self.betas = DDPMScheduler(**self.config).betas.clone()
        self.abar = torch.cumprod(1 - self.betas, 0)

    def scheduler(self) -> DDPMScheduler:
        """The diffusers scheduler of this schedule (what ``save_config`` writes beside a model's weights)."""
        return DDPMScheduler(**self.config)

    def add_noise(self, x0: torch.Tensor, eps: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """x_t for x0, ε of shape (N, …) and timesteps t (N,)."""
        a = self.abar.to(x0.device)[t].view(-1, *([1] * (x0.dim() - 1)))
        return a.sqrt() * x0 + (1 - a).sqrt() * eps

    def x0_estimate(self, xt: torch.Tensor, eps_pred: torch.Tensor, t: int) -> torch.Tensor:
        a = self.abar[int(t)]
        return (xt - (1 - a).sqrt() * eps_pred) / a.sqrt()

    def ddim(self, steps: int, clip_sample: bool = True, set_alpha_to_one: bool = True, **kw) -> DDIMScheduler:
        """A deterministic DDIM sampler on this schedule, its ``steps`` timesteps set."""
        sched = DDIMScheduler(**self.config, clip_sample=clip_sample, set_alpha_to_one=set_alpha_to_one, **kw)
        sched.set_timesteps(steps)
        return sched


SCHEDULE = {"num_train_timesteps": T, "beta_schedule": "linear", "beta_start": 1e-4, "beta_end": 0.02,
            "prediction_type": "epsilon"}  # the project's schedule, as saved beside every model trained here
DDPM = NoiseSchedule(SCHEDULE)
