"""Tiny DDPMs with diffusers: configs, training, DDIM sampling, checkpoint I/O.

Forward process: x_t = √ᾱ_t x_0 + √(1−ᾱ_t) ε with T = 1000 and a linear β schedule (1e-4 → 0.02).
Training minimises L_Simple = (1/d)‖ε − ε_θ(x_t, t)‖² with AdamW, cosine schedule with warm-up and
gradient clipping at 1.0. Sampling is DDIM with η = 0; sample j starts from noise seeded with j, so
the same seed always gives the same image from the same weights.
"""
from __future__ import annotations

import json
import math
import os
import threading
from dataclasses import asdict, dataclass

import torch
from diffusers import UNet2DModel
from diffusers.models.attention_processor import Attention, AttnProcessor

from .schedule import DDPM, SCHEDULE


@dataclass
class UNetConfig:
    """Keyword arguments of ``diffusers.UNet2DModel``, sized per dataset."""

    sample_size: int = 8
    in_channels: int = 1
    out_channels: int = 1
    block_out_channels: tuple = (16, 32)
    down_block_types: tuple = ("DownBlock2D", "AttnDownBlock2D")
    up_block_types: tuple = ("AttnUpBlock2D", "UpBlock2D")
    layers_per_block: int = 1
    norm_num_groups: int = 8
    attention_head_dim: int = 16
    dropout: float = 0.0


UNET_CONFIGS = {
    "digits": UNetConfig(),
    "shapes": UNetConfig(sample_size=16, in_channels=3, out_channels=3, block_out_channels=(16, 32, 32),
                         down_block_types=("DownBlock2D", "DownBlock2D", "AttnDownBlock2D"),
                         up_block_types=("AttnUpBlock2D", "UpBlock2D", "UpBlock2D")),
    # 32×32 RGB icons (explorer/datasets/icons.py): one level more than shapes, attention at 8×8
    "icons": UNetConfig(sample_size=32, in_channels=3, out_channels=3, block_out_channels=(32, 64, 64),
                        down_block_types=("DownBlock2D", "DownBlock2D", "AttnDownBlock2D"),
                        up_block_types=("AttnUpBlock2D", "UpBlock2D", "UpBlock2D"), attention_head_dim=32),
}
def unet_config_for(channels: int, resolution: int) -> UNetConfig:
    """A config for a user's image folder: two levels per factor of 8 in resolution."""
    levels = max(2, min(4, int(math.log2(resolution)) - 2))
    chans = tuple([32, 64, 64, 128][:levels])
    return UNetConfig(sample_size=resolution, in_channels=channels, out_channels=channels, block_out_channels=chans,
                      down_block_types=("DownBlock2D",) * (levels - 1) + ("AttnDownBlock2D",),
                      up_block_types=("AttnUpBlock2D",) + ("UpBlock2D",) * (levels - 1))


def make_unet(cfg: UNetConfig, seed: int = 0) -> UNet2DModel:
    torch.manual_seed(seed)
    kwargs = asdict(cfg)
    model = UNet2DModel(**kwargs)
    set_vmap_attention(model)
    return model


def set_vmap_attention(model: UNet2DModel) -> UNet2DModel:
    """Plain (non-fused) attention on every module: ``torch.func.vmap`` has no CPU batching rule
    for fused scaled-dot-product attention."""
    for module in model.modules():
        if isinstance(module, Attention):
            module.set_processor(AttnProcessor())
    return model


def check_scheduler(model_dir: str) -> None:
    """A scheduler saved with the weights (``scheduler_config.json``, or ``scheduler/`` beside a ``unet/``
    pipeline folder) must be the schedule the math assumes; a model without one was trained here."""
    for path in (os.path.join(model_dir, "scheduler_config.json"),
                 os.path.join(model_dir, "scheduler", "scheduler_config.json")):
        if os.path.isfile(path):
            cfg = json.load(open(path))
            diff = {k: cfg[k] for k, v in SCHEDULE.items() if k in cfg and cfg[k] != v}
            if diff:
                raise CheckpointError(f"the noise scheduler saved in {path} differs from the one this tool's math "
                                      f"assumes ({SCHEDULE}): {diff}")


def predict_x0(model: UNet2DModel, x0: torch.Tensor, eps: torch.Tensor, t: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(x_t, x̂₀) for images x0 (N, C, H, W) noised with ε at timestep t, where
    x̂₀ = (x_t − √(1−ᾱ_t) ε_θ(x_t, t)) / √ᾱ_t, clamped to [−1, 1] (the project's schedule)."""
    tt = torch.full((x0.shape[0],), int(t))
    xt = DDPM.add_noise(x0, eps, tt)
    with torch.no_grad(), model_lock(model):
        pred = model(xt, tt).sample
    return xt, DDPM.x0_estimate(xt, pred, t).clamp(-1, 1)


def initial_noise(seeds: list[int], shape: tuple) -> torch.Tensor:
    """Sample j's initial noise x_T comes from a generator seeded with ``seeds[j]``."""
    return torch.stack([torch.randn(shape, generator=torch.Generator().manual_seed(int(s))) for s in seeds])


_LOCKS: dict[int, threading.RLock] = {}
_LOCKS_GUARD = threading.Lock()


def model_lock(model: torch.nn.Module) -> threading.RLock:
    """One lock per model object. ``torch.func.functional_call`` swaps a module's parameters in place
    for the duration of a call, so two threads using one model at once (a build and a query, say)
    would see each other's functorch tensors; every forward of a shared model holds this lock."""
    with _LOCKS_GUARD:
        return _LOCKS.setdefault(id(model), threading.RLock())


def on_device(model: torch.nn.Module, device: str) -> torch.nn.Module:
    """The model in eval mode on ``device``, moved only when it is elsewhere: a model shared between
    threads may be inside another thread's vmap, where assigning ``param.data`` is an error."""
    if next(model.parameters()).device != torch.device(device):
        model.to(device)
    return model.eval()


@torch.no_grad()
def ddim_sample(model: UNet2DModel, seeds: list[int], steps: int = 50, device: str = "cpu",
                return_trajectory: bool = False, batch_size: int = 256):
    """Deterministic DDIM (η = 0). Returns images (N, C, H, W) clamped to [-1, 1]; with
    ``return_trajectory`` also the timesteps and the x̂₀ predictions at every step (steps, N, C, H, W)."""
    on_device(model, device)
    cfg = model.config
    x = initial_noise(seeds, (cfg.in_channels, cfg.sample_size, cfg.sample_size)).to(device)
    sched = DDPM.ddim(steps)
    x0_traj = []
    for t in sched.timesteps:
        with model_lock(model):
            eps = torch.cat([model(x[i:i + batch_size], t).sample for i in range(0, len(x), batch_size)])
        out = sched.step(eps, t, x, eta=0.0)
        x = out.prev_sample
        if return_trajectory:
            x0_traj.append(out.pred_original_sample.clamp(-1, 1).cpu())
    x = x.clamp(-1, 1).cpu()
    if return_trajectory:
        return x, sched.timesteps.clone(), torch.stack(x0_traj)
    return x


class CheckpointError(FileNotFoundError):
    """A model checkpoint is missing or unreadable; the message names the fix."""


def save_model(model: UNet2DModel, folder: str) -> None:
    """``save_pretrained`` (safetensors + config.json) into a temp folder, then an atomic rename."""
    tmp = folder.rstrip("/") + ".tmp"
    if os.path.exists(tmp):
        import shutil
        shutil.rmtree(tmp)
    model.save_pretrained(tmp, safe_serialization=True)
    DDPM.scheduler().save_config(tmp)  # the schedule travels with the weights (scheduler_config.json)
    if os.path.exists(folder):
        import shutil
        shutil.rmtree(folder)
    os.replace(tmp, folder)


def load_model(folder: str, device: str = "cpu") -> UNet2DModel:
    """``from_pretrained(local_files_only=True)`` with attention set for vmap."""
    if not os.path.isfile(os.path.join(folder, "config.json")):
        raise CheckpointError(f"no model checkpoint at {folder!r} (config.json missing). "
                              f"Train one with `python -m precompute train --dataset <name>`.")
    check_scheduler(folder)
    try:
        model = UNet2DModel.from_pretrained(folder, local_files_only=True, low_cpu_mem_usage=False)
    except Exception as e:  # diffusers raises several types for corrupt files
        raise CheckpointError(f"checkpoint at {folder!r} could not be loaded ({type(e).__name__}: {e}). "
                              f"Retrain it with `python -m precompute train`.") from e
    return set_vmap_attention(model).to(device).eval()


def weights_fingerprint(model: torch.nn.Module) -> str:
    import hashlib

    h = hashlib.sha256()
    for name, p in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(p.detach().cpu().numpy().tobytes())
    return h.hexdigest()[:16]
