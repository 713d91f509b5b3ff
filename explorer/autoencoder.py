"""The latent space of the text-to-image setting, as Stable Diffusion has one: a small diffusers
``AutoencoderKL`` trained here, so the diffusion model (and its LoRA) works on 4 × (H/4) × (W/4) latents
instead of pixels — 12× fewer numbers per image and a UNet that runs at 8×8 for 32×32 drawings.

Training minimises the reconstruction error of a posterior sample z ~ q(z | x) plus a tiny KL term,

    L = ‖D(z) − x‖₁ + ‖D(z) − x‖² + β · KL(q(z | x) ‖ N(0, I)),  β = 1e-6 (Stable Diffusion's weight),

AdamW, batch 32, random horizontal flips, one seeded generator. A drawing then enters the diffusion model as
z = s · mode(q(z | x)) with s = 1 / std(latents of the training drawings) (SD's ``scaling_factor``, stored in
the VAE's config) so that the latents have unit variance like the noise.
"""
from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass

import torch
from diffusers import AutoencoderKL


@dataclass
class VAEConfig:
    block_out_channels: tuple = (32, 64, 64)  # two downsamplings: 32×32 → 8×8
    latent_channels: int = 4
    layers_per_block: int = 1
    norm_num_groups: int = 16


@dataclass
class VAETrainConfig:
    epochs: int = 60
    batch_size: int = 32
    lr: float = 2e-3
    kl_weight: float = 1e-6
    seed: int = 0


def make_vae(cfg: VAEConfig, resolution: int, seed: int = 0) -> AutoencoderKL:
    torch.manual_seed(seed)
    n = len(cfg.block_out_channels)
    return AutoencoderKL(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * n,
                         up_block_types=("UpDecoderBlock2D",) * n, block_out_channels=tuple(cfg.block_out_channels),
                         layers_per_block=cfg.layers_per_block, latent_channels=cfg.latent_channels,
                         norm_num_groups=cfg.norm_num_groups, sample_size=resolution)


def train_vae(vae: AutoencoderKL, x: torch.Tensor, cfg: VAETrainConfig, state_file: str | None = None,
              progress: bool = False) -> tuple[list[float], float]:
    """Minimise the loss above over images ``x`` (N, 3, H, W) in [−1, 1]; resumable from ``state_file``
    (written atomically every epoch). Sets ``scaling_factor`` = 1 / std of the training latents. Returns
    (per-epoch mean losses, training seconds including an interrupted run's)."""
    from tqdm.auto import tqdm
    gen = torch.Generator().manual_seed(cfg.seed)
    opt = torch.optim.AdamW(vae.parameters(), lr=cfg.lr)
    steps = cfg.epochs * math.ceil(len(x) / cfg.batch_size)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * min(1.0, s / steps))))
    losses, before, t0 = [], 0.0, time.time()
    if state_file and os.path.exists(state_file):
        state = torch.load(state_file, weights_only=False)
        vae.load_state_dict(state["vae"])
        opt.load_state_dict(state["opt"])
        sched.load_state_dict(state["sched"])
        gen.set_state(state["gen"])
        losses, before = state["losses"], state["seconds"]
    vae.train()
    for _ in tqdm(range(len(losses), cfg.epochs), initial=len(losses), total=cfg.epochs, disable=not progress,
                  desc="vae"):
        perm, total = torch.randperm(len(x), generator=gen), 0.0
        for s in range(0, len(x), cfg.batch_size):
            xb = x[perm[s:s + cfg.batch_size]]
            flip = torch.rand(len(xb), generator=gen) < 0.5
            xb = torch.where(flip[:, None, None, None], xb.flip(3), xb)
            post = vae.encode(xb).latent_dist
            z = post.mean + post.std * torch.randn(post.mean.shape, generator=gen)
            r = vae.decode(z).sample
            loss = (r - xb).abs().mean() + ((r - xb) ** 2).mean() + cfg.kl_weight * post.kl().mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += loss.item() * len(xb)
        losses.append(total / len(x))
        if state_file:
            torch.save({"vae": vae.state_dict(), "opt": opt.state_dict(), "sched": sched.state_dict(),
                        "gen": gen.get_state(), "losses": losses, "seconds": before + time.time() - t0},
                       state_file + ".tmp")
            os.replace(state_file + ".tmp", state_file)
    vae.eval()
    with torch.no_grad():
        z = torch.cat([vae.encode(x[i:i + 256]).latent_dist.mode() for i in range(0, len(x), 256)])
    vae.register_to_config(scaling_factor=float(1.0 / z.std()))
    return losses, before + time.time() - t0


@torch.no_grad()
def reconstruction_error(vae: AutoencoderKL, x: torch.Tensor) -> float:
    """Mean squared error of D(mode(q(z | x))) against x, in [−1, 1] pixel units."""
    from .stable_diffusion import decode_latents, encode_images
    return float(((decode_latents(vae, encode_images(vae, x)) - x) ** 2).mean())
