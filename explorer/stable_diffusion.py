"""A Stable Diffusion pipeline saved on this machine (a diffusers folder) with a LoRA, read for attribution in
latent space — the paper's ArtBench setting with the user's own weights.

The folder is what ``StableDiffusionPipeline.save_pretrained`` writes: ``model_index.json`` and ``unet/``
(``UNet2DConditionModel``), ``vae/`` (``AutoencoderKL``), ``text_encoder/`` (``CLIPTextModel``),
``tokenizer/`` and ``scheduler/``. What the math assumes is checked, and the rest refused by name:

- the scheduler is of the DDPM family (its β schedule defines ᾱ_t, T = 1000) and predicts ε, the quantity
  D-TRAK's output functions are written in (a v-prediction model is refused);
- the LoRA (diffusers / peft format, a ``.safetensors`` file or the folder ``save_lora_weights`` writes)
  has UNet adapters whose keys and shapes fit this UNet; its rank is read from the weights.

A training image enters attribution as its latent z = s · mode(q(z | x)) (the VAE's posterior mode, not a
sample, and s its ``scaling_factor``), encoded once. Gradients are taken with respect to the LoRA's
parameters only; the noise schedule is the pipeline's own. Generation is DDIM (η = 0) with the pipeline's
β schedule and classifier-free guidance, decoded by the VAE.
"""
from __future__ import annotations

import json
import os

import torch

from .models import CheckpointError, initial_noise, model_lock, set_vmap_attention
from .schedule import NoiseSchedule, T

PARTS = ("unet", "vae", "text_encoder", "tokenizer", "scheduler")
DDPM_FAMILY = ("DDPMScheduler", "DDIMScheduler", "PNDMScheduler", "EulerDiscreteScheduler",
               "EulerAncestralDiscreteScheduler", "DPMSolverMultistepScheduler", "DPMSolverSinglestepScheduler",
               "LMSDiscreteScheduler", "UniPCMultistepScheduler", "HeunDiscreteScheduler",
               "KDPM2DiscreteScheduler", "DEISMultistepScheduler")


def check_folder(folder: str) -> None:
    """The pipeline folder has every part attribution reads."""
    if not os.path.isfile(os.path.join(folder, "model_index.json")):
        raise CheckpointError(f"{folder!r} is not a diffusers pipeline folder (no model_index.json); save the "
                              f"pipeline with StableDiffusionPipeline.save_pretrained")
    missing = [p for p in PARTS if not os.path.isdir(os.path.join(folder, p))]
    if missing:
        raise CheckpointError(f"the pipeline in {folder!r} lacks {', '.join(missing)}: attribution needs "
                              f"{', '.join(PARTS)}")


def scheduler_config(folder: str) -> dict:
    """The pipeline's scheduler config, refused unless it is a DDPM-family ε-prediction schedule over 1000 steps."""
    path = os.path.join(folder, "scheduler", "scheduler_config.json")
    if not os.path.isfile(path):
        raise CheckpointError(f"no scheduler config at {path}")
    cfg = json.load(open(path))
    name = cfg.get("_class_name", "?")
    if name not in DDPM_FAMILY:
        raise CheckpointError(f"the pipeline's scheduler is {name}, not a DDPM-family scheduler (β schedule, "
                              f"ᾱ_t); attribution's noising x_t = √ᾱ_t x₀ + √(1−ᾱ_t) ε needs one")
    pred = cfg.get("prediction_type", "epsilon")
    if pred != "epsilon":
        raise CheckpointError(f"the scheduler says prediction_type={pred!r}, but D-TRAK's output functions are "
                              f"written for ε-prediction: adopt an ε-prediction model (Stable Diffusion 1.x / "
                              f"2.x-base), or fix the scheduler config if the UNet does predict ε")
    if cfg.get("num_train_timesteps", T) != T:
        raise CheckpointError(f"the scheduler trains over {cfg['num_train_timesteps']} steps; the timestep "
                              f"strategies assume {T}")
    return cfg


def load(folder: str, device: str = "cpu"):
    """(unet, vae, text_encoder, tokenizer, scheduler config) of the pipeline in ``folder``, float32, eval mode,
    the UNet with the plain attention processor ``torch.func.vmap`` needs."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import AutoTokenizer, CLIPTextModel
    check_folder(folder)
    cfg = scheduler_config(folder)
    sub = lambda p: os.path.join(folder, p)
    try:
        unet = UNet2DConditionModel.from_pretrained(sub("unet"), local_files_only=True)
        vae = AutoencoderKL.from_pretrained(sub("vae"), local_files_only=True)
        text_encoder = CLIPTextModel.from_pretrained(sub("text_encoder"), local_files_only=True)
        tokenizer = AutoTokenizer.from_pretrained(sub("tokenizer"), local_files_only=True)
    except (OSError, ValueError, KeyError) as e:
        raise CheckpointError(f"the pipeline in {folder!r} could not be read: {str(e).splitlines()[0]}") from e
    if unet.config.cross_attention_dim != text_encoder.config.hidden_size:
        raise CheckpointError(f"the UNet attends to {unet.config.cross_attention_dim}-wide text states but the text "
                              f"encoder gives {text_encoder.config.hidden_size}: these parts are of different models")
    parts = [set_vmap_attention(unet).to(device).eval(), vae.to(device).eval(), text_encoder.to(device).eval()]
    return (*parts, tokenizer, cfg)


def pixel_resolution(unet, vae) -> int:
    """The image size the pipeline draws: the UNet's latent size × the VAE's downsampling factor."""
    return unet.config.sample_size * 2 ** (len(vae.config.block_out_channels) - 1)


@torch.no_grad()
def encode_images(vae, x: torch.Tensor, batch: int = 16) -> torch.Tensor:
    """Images (N, 3, H, W) in [−1, 1] → latents s · mode(q(z | x)) (N, 4, h, w)."""
    s = vae.config.scaling_factor
    dev = next(vae.parameters()).device
    return torch.cat([vae.encode(x[i:i + batch].to(dev)).latent_dist.mode() * s
                      for i in range(0, len(x), batch)]).cpu()


@torch.no_grad()
def decode_latents(vae, z: torch.Tensor, batch: int = 16) -> torch.Tensor:
    """Latents → images in [−1, 1]."""
    s = vae.config.scaling_factor
    dev = next(vae.parameters()).device
    return torch.cat([vae.decode(z[i:i + batch].to(dev) / s).sample for i in range(0, len(z), batch)]).clamp(-1, 1).cpu()


def tokenize(tokenizer, texts: list[str]) -> torch.Tensor:
    return tokenizer(texts, padding="max_length", truncation=True, max_length=tokenizer.model_max_length,
                     return_tensors="pt").input_ids


@torch.no_grad()
def encode_text(text_encoder, tokenizer, texts: list[str]) -> torch.Tensor:
    """Captions → the cross-attention context (N, L, hidden): the text encoder's last hidden states."""
    dev = next(text_encoder.parameters()).device
    return text_encoder(tokenize(tokenizer, texts).to(dev)).last_hidden_state.cpu()


@torch.no_grad()
def sample_latents(unet, cond: torch.Tensor, empty: torch.Tensor, schedule: NoiseSchedule, seeds: list[int],
                   steps: int = 50, guidance: float = 7.5) -> torch.Tensor:
    """DDIM (η = 0) on the pipeline's β schedule with classifier-free guidance; latent j starts from noise
    seeded with ``seeds[j]``, on the pipeline's ``schedule``. ``cond`` (N, L, hidden), ``empty`` (1, L, hidden) the empty prompt's context."""
    sched = schedule.ddim(steps, clip_sample=False, set_alpha_to_one=False)
    c = unet.config
    dev = next(unet.parameters()).device
    z = initial_noise(seeds, (c.in_channels, c.sample_size, c.sample_size)).to(dev)
    ctx = torch.cat([empty.expand_as(cond), cond]).to(dev)
    for t in sched.timesteps:
        with model_lock(unet):
            e0, e1 = unet(torch.cat([z, z]), t, ctx).sample.chunk(2)
        z = sched.step(e0 + guidance * (e1 - e0), t, z, eta=0.0).prev_sample
    return z.cpu()
