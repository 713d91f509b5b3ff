"""Training a diffusion model here (the query path never imports this): L_Simple,
    L = E_{x₀, t, ε} ‖ε − ε_θ(√ᾱ_t x₀ + √(1 − ᾱ_t) ε, t)‖² / d,
AdamW with a linear warm-up and a cosine decay, gradient clipping, one seeded generator for shuffling,
timesteps and noise (the same seed gives the same weights on CPU), evenly spaced checkpoints (TracIn) and an
atomic, resumable training state."""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Callable

import torch
from diffusers import UNet2DModel

from .schedule import DDPM, T


@dataclass
class TrainConfig:
    epochs: int = 100
    batch_size: int = 128
    lr: float = 2e-3
    weight_decay: float = 0.0
    warmup_fraction: float = 0.1
    grad_clip: float = 1.0
    seed: int = 0
    n_checkpoints: int = 4  # intermediate checkpoints, evenly spaced (TracIn needs them)


TRAIN_CONFIGS = {
    "digits": TrainConfig(epochs=200),
    "shapes": TrainConfig(epochs=80),
    "icons": TrainConfig(epochs=300),
}


def lr_lambda(total_steps: int, warmup_fraction: float) -> Callable[[int], float]:
    warm = max(1, int(total_steps * warmup_fraction))

    def f(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warm) / max(1, total_steps - warm))))

    return f


def train(model: UNet2DModel, x: torch.Tensor, cfg: TrainConfig, device: str = "cpu",
          on_checkpoint: Callable[[int, UNet2DModel], None] | None = None, progress: bool = False,
          state_file: str | None = None, state_every: int = 10) -> list[float]:
    """Train ``model`` on images ``x`` (N, C, H, W) in [-1, 1] with L_Simple; returns per-epoch mean
    losses. Shuffling, timesteps and noise come from one generator seeded with ``cfg.seed``, so the
    same seed gives identical weights on CPU. ``on_checkpoint(epoch, model)`` is called at
    ``cfg.n_checkpoints`` evenly spaced epochs (the last one is the final model).

    With ``state_file`` the whole training state (weights, optimiser, schedule, generators, losses) is
    written there every ``state_every`` epochs (atomically) and a run resumes from it: a resumed run
    ends with the same weights as an uninterrupted one. The caller removes the file when done."""
    from tqdm.auto import tqdm

    model.to(device).train()
    gen = torch.Generator().manual_seed(cfg.seed)
    torch.manual_seed(cfg.seed)  # dropout
    n = x.shape[0]
    steps_per_epoch = math.ceil(n / cfg.batch_size)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(cfg.epochs * steps_per_epoch, cfg.warmup_fraction))
    ckpt_epochs = {round(cfg.epochs * (i + 1) / cfg.n_checkpoints) for i in range(cfg.n_checkpoints)} if cfg.n_checkpoints else set()
    losses, start = [], 1
    if state_file and os.path.exists(state_file):
        state = torch.load(state_file, map_location=device, weights_only=False)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        sched.load_state_dict(state["sched"])
        gen.set_state(state["gen"])
        torch.set_rng_state(state["torch"])
        losses, start = state["losses"], len(state["losses"]) + 1
    for epoch in tqdm(range(start, cfg.epochs + 1), initial=start - 1, total=cfg.epochs,
                      disable=not progress, desc="train"):
        perm = torch.randperm(n, generator=gen)
        total = 0.0
        for s in range(steps_per_epoch):
            idx = perm[s * cfg.batch_size:(s + 1) * cfg.batch_size]
            x0 = x[idx].to(device)
            t = torch.randint(0, T, (len(idx),), generator=gen).to(device)
            eps = torch.randn(x0.shape, generator=gen).to(device)
            pred = model(DDPM.add_noise(x0, eps, t), t).sample
            loss = torch.nn.functional.mse_loss(pred, eps)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            opt.step()
            sched.step()
            total += loss.item() * len(idx)
        losses.append(total / n)
        if epoch in ckpt_epochs and on_checkpoint is not None:
            on_checkpoint(epoch, model)
        if state_file and epoch % state_every == 0 and epoch < cfg.epochs:
            torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "sched": sched.state_dict(),
                        "gen": gen.get_state(), "torch": torch.get_rng_state(), "losses": losses}, state_file + ".tmp")
            os.replace(state_file + ".tmp", state_file)
    model.eval()
    return losses
