"""A miniature of Stable Diffusion's text-to-image setting, trained here:

- optionally a latent space: a small ``AutoencoderKL`` (``explorer.autoencoder``); the UNet then draws
  latents z = s · mode(q(z | x)) and the VAE decodes them (SD's design: 4×8×8 latents are 12× fewer numbers
  than 32×32 RGB pixels);
- a word-level tokenizer built from the captions' own vocabulary (``tokenizers`` WordLevel, wrapped as a
  ``transformers`` fast tokenizer, saved with ``save_pretrained``), ``[BOS] words [EOS] [PAD]…``;
- ``transformers.CLIPTextModel`` from a small config (nothing downloaded), whose last hidden states
  condition the UNet through cross-attention;
- ``diffusers.UNet2DConditionModel`` on 32×32 RGB or on the 4×8×8 latents, ε-prediction, the one DDPM
  schedule of ``explorer.schedule``.

Training minimises L_Simple = (1/d)‖ε − ε_θ(x_t, t, c)‖² (optionally weighted by min(SNR_t, γ)/SNR_t, the
Min-SNR recipe, for the base only: the LoRA, which is attributed, trains on L_Simple itself) with c the
encoded caption, dropped to the empty
caption with probability ``cond_drop`` so that sampling can use classifier-free guidance:
ε̂ = ε_θ(x_t, t, ∅) + w (ε_θ(x_t, t, c) − ε_θ(x_t, t, ∅)), DDIM with η = 0.
The base model trains the UNet and the text encoder; a LoRA (``explorer.lora``) trains adapters only.
Saved as a diffusers-style pipeline folder: ``unet/``, ``text_encoder/``, ``tokenizer/``, ``scheduler/`` and,
for a latent model, ``vae/``.
"""
from __future__ import annotations

import math
import os
import re
import shutil
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable

import torch
from diffusers import UNet2DConditionModel
from diffusers.models.attention_processor import Attention

from .models import CheckpointError, initial_noise, model_lock, set_vmap_attention
from .schedule import DDPM, NoiseSchedule, T
from .training import lr_lambda

SPECIAL = ("[PAD]", "[UNK]", "[BOS]", "[EOS]")
WORD = re.compile(r"[a-z0-9]+(?:['’-][a-z0-9]+)*")


def words(text: str) -> list[str]:
    """Lower-cased words of a caption or prompt (punctuation dropped, "t-rex" and "o’clock" kept whole)."""
    return WORD.findall(text.lower())


@dataclass
class TextToImageConfig:
    sample_size: int = 32
    channels: int = 3
    block_out_channels: tuple = (32, 64, 64)
    # cross-attention at 8×8 and in the middle block: 64 img/s on 2 cores (at 16×16 too: 33 img/s)
    down_block_types: tuple = ("DownBlock2D", "DownBlock2D", "CrossAttnDownBlock2D")
    up_block_types: tuple = ("CrossAttnUpBlock2D", "UpBlock2D", "UpBlock2D")
    layers_per_block: int = 1
    attention_head_dim: int = 4  # diffusers' name for the number of heads in this UNet
    norm_num_groups: int = 8
    text_hidden: int = 64
    text_layers: int = 2
    text_heads: int = 2
    max_length: int = 16
    # "text": the caption's attention-pooled context is added to the timestep embedding, so every ResNet block
    # (not only the cross-attention at 8×8) knows what it is drawing; None: cross-attention alone
    addition_embed_type: str | None = None


@dataclass
class T2ITrainConfig:
    epochs: int = 150
    batch_size: int = 64
    lr: float = 1e-3
    warmup_fraction: float = 0.05
    grad_clip: float = 1.0
    cond_drop: float = 0.1  # the share of captions replaced by the empty caption (guidance)
    ema_decay: float = 0.0  # > 0: the returned weights are the exponential moving average θ̄ ← d θ̄ + (1 − d) θ
    min_snr_gamma: float = 0.0  # > 0: each sample's loss weighted min(SNR_t, γ) / SNR_t (Hang et al. 2023)
    seed: int = 0


def build_tokenizer(captions: list[str], max_length: int):
    """A word-level fast tokenizer whose vocabulary is the captions' words, sorted (stable ids)."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast
    vocab = {t: i for i, t in enumerate(SPECIAL + tuple(sorted({w for c in captions for w in words(c)})))}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()  # ``tokenize`` passes the prompt's ``words`` alone
    tok.post_processor = processors.TemplateProcessing(single="[BOS] $A [EOS]", special_tokens=[
        ("[BOS]", vocab["[BOS]"]), ("[EOS]", vocab["[EOS]"])])
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="[BOS]", eos_token="[EOS]", pad_token="[PAD]",
                                   unk_token="[UNK]", model_max_length=max_length)


def with_style(prompt: str, style: str, styles: list[str]) -> str:
    """The prompt in the captions' form "red apple, twemoji": its subject with ``style`` as the last
    comma-separated part ("" for none), any other of ``styles`` dropped."""
    parts = [p.strip() for p in prompt.split(",") if p.strip() and p.strip().lower() not in styles]
    return ", ".join(parts + ([style] if style else []))


def unknown_words(tokenizer, prompt: str) -> list[str]:
    """The prompt's words that the model never saw in a caption (they reach it as [UNK])."""
    vocab = tokenizer.get_vocab()
    return [w for w in words(prompt) if w not in vocab]


def tokenize(tokenizer, prompts: list[str]) -> torch.Tensor:
    return tokenizer([" ".join(words(p)) for p in prompts], padding="max_length", truncation=True,
                     max_length=tokenizer.model_max_length, return_tensors="pt").input_ids


def make_text_to_image(cfg: TextToImageConfig, tokenizer, seed: int = 0):
    """(UNet2DConditionModel, CLIPTextModel), seeded, plain attention (vmap on CPU)."""
    from transformers import CLIPTextConfig, CLIPTextModel
    torch.manual_seed(seed)
    text_cfg = CLIPTextConfig(vocab_size=len(tokenizer), hidden_size=cfg.text_hidden,
                              intermediate_size=4 * cfg.text_hidden, num_hidden_layers=cfg.text_layers,
                              num_attention_heads=cfg.text_heads, max_position_embeddings=cfg.max_length,
                              pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
                              eos_token_id=tokenizer.eos_token_id)
    text_encoder = CLIPTextModel(text_cfg)
    unet = UNet2DConditionModel(sample_size=cfg.sample_size, in_channels=cfg.channels, out_channels=cfg.channels,
                                block_out_channels=cfg.block_out_channels, down_block_types=cfg.down_block_types,
                                up_block_types=cfg.up_block_types, layers_per_block=cfg.layers_per_block,
                                attention_head_dim=cfg.attention_head_dim, norm_num_groups=cfg.norm_num_groups,
                                cross_attention_dim=cfg.text_hidden, addition_embed_type=cfg.addition_embed_type,
                                addition_embed_type_num_heads=cfg.text_heads)
    return set_vmap_attention(unet), text_encoder


def encode(text_encoder, ids: torch.Tensor) -> torch.Tensor:
    """Caption ids (N, L) → the cross-attention context (N, L, hidden)."""
    return text_encoder(ids).last_hidden_state


def train_text_to_image(unet, text_encoder, x: torch.Tensor, ids: torch.Tensor, empty_ids: torch.Tensor,
                        cfg: T2ITrainConfig, params: list[torch.nn.Parameter], state_file: str | None = None,
                        state_every: int = 5, progress: bool = False,
                        check: Callable[[int], dict] | None = None, check_every: int = 0,
                        schedule: NoiseSchedule = DDPM) -> TrainLog:
    """Minimise L_Simple over ``params`` only (the base: every UNet and text-encoder weight; a LoRA: its
    adapters), captions ``ids`` (N, L) of images ``x`` (N, C, H, W), each replaced by ``empty_ids`` with
    probability ``cfg.cond_drop``. Shuffling, drops, timesteps and noise come from one generator seeded
    with ``cfg.seed``. With ``state_file`` the state (trainable weights, optimiser, schedule, generator,
    losses) is written every ``state_every`` epochs (atomically) and a run resumes from it with the same
    result as an uninterrupted one. With ``cfg.ema_decay`` the moving average of ``params`` is kept (and saved)
    and is what the models hold on return. Every ``check_every`` epochs ``check(epoch)`` runs on the models in
    eval mode holding the averaged weights (a legibility probe, say) and its dict is logged with the epoch.
    ``schedule``: the noise schedule (default the project's; an adopted pipeline's own).
    Returns the per-epoch mean losses, the checks and the training wall time (interrupted runs' included)."""
    from tqdm.auto import tqdm
    gen = torch.Generator().manual_seed(cfg.seed)
    n = x.shape[0]
    steps_per_epoch = math.ceil(n / cfg.batch_size)
    opt = torch.optim.AdamW(params, lr=cfg.lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(cfg.epochs * steps_per_epoch, cfg.warmup_fraction))
    names = {id(p): k for m, prefix in ((unet, "unet."), (text_encoder, "text.")) for k, p in
             ((prefix + k, p) for k, p in m.named_parameters())}
    trainable = lambda: {names[id(p)]: p.detach().clone() for p in params}
    ema = [p.detach().clone() for p in params] if cfg.ema_decay else None
    losses, checks, start, before, t0 = [], [], 1, 0.0, time.time()
    if state_file and os.path.exists(state_file):
        state = torch.load(state_file, weights_only=False)
        with torch.no_grad():
            for p in params:
                p.copy_(state["params"][names[id(p)]])
            for e, p in zip(ema or [], params):
                e.copy_(state["ema"][names[id(p)]])
        opt.load_state_dict(state["opt"])
        sched.load_state_dict(state["sched"])
        gen.set_state(state["gen"])
        losses, checks, start, before = state["losses"], state["checks"], len(state["losses"]) + 1, state["seconds"]
    fused_attention(unet, True)  # training needs no vmap: fused attention is 1.4× faster on CPU
    unet.train(), text_encoder.train()
    for epoch in tqdm(range(start, cfg.epochs + 1), initial=start - 1, total=cfg.epochs, disable=not progress,
                      desc="train"):
        perm = torch.randperm(n, generator=gen)
        total = 0.0
        for s in range(steps_per_epoch):
            idx = perm[s * cfg.batch_size:(s + 1) * cfg.batch_size]
            drop = torch.rand(len(idx), generator=gen) < cfg.cond_drop
            cond = torch.where(drop[:, None], empty_ids.view(1, -1), ids[idx])
            t = torch.randint(0, T, (len(idx),), generator=gen)
            eps = torch.randn(x[idx].shape, generator=gen)
            pred = unet(schedule.add_noise(x[idx], eps, t), t, encode(text_encoder, cond)).sample
            per = ((pred - eps) ** 2).flatten(1).mean(1)
            if cfg.min_snr_gamma:
                snr = schedule.abar[t] / (1 - schedule.abar[t])
                per = per * snr.clamp(max=cfg.min_snr_gamma) / snr
            loss = per.mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
            opt.step()
            sched.step()
            if ema:
                with torch.no_grad():
                    torch._foreach_lerp_(ema, [p.detach() for p in params], 1 - cfg.ema_decay)
            total += loss.item() * len(idx)
        losses.append(total / n)
        if check and check_every and (epoch % check_every == 0 or epoch == cfg.epochs):
            with averaged(params, ema):
                unet.eval(), text_encoder.eval()
                checks.append({"epoch": epoch, **check(epoch)})
                unet.train(), text_encoder.train()
        if state_file and epoch % state_every == 0 and epoch < cfg.epochs:
            torch.save({"params": trainable(), "opt": opt.state_dict(), "sched": sched.state_dict(),
                        "gen": gen.get_state(), "losses": losses, "checks": checks,
                        "ema": {names[id(p)]: e for p, e in zip(params, ema or [])},
                        "seconds": before + time.time() - t0}, state_file + ".tmp")
            os.replace(state_file + ".tmp", state_file)
    unet.eval(), text_encoder.eval()
    fused_attention(unet, False)
    if ema:
        with torch.no_grad():
            torch._foreach_copy_(params, ema)
    return TrainLog(losses, checks, before + time.time() - t0)


@dataclass
class TrainLog:
    losses: list[float]
    checks: list[dict]
    seconds: float


@contextmanager
def averaged(params: list[torch.nn.Parameter], ema: list[torch.Tensor] | None):
    """The moving-average weights in ``params`` for the duration (the training weights restored after)."""
    if not ema:
        yield
        return
    with torch.no_grad():
        kept = [p.detach().clone() for p in params]
        torch._foreach_copy_(params, ema)
    try:
        yield
    finally:
        with torch.no_grad():
            torch._foreach_copy_(params, kept)


def fused_attention(unet, on: bool):
    """Fused scaled-dot-product attention (training) or the plain processor ``torch.func.vmap`` needs."""
    from diffusers.models.attention_processor import AttnProcessor2_0
    if not on:
        return set_vmap_attention(unet)
    for module in unet.modules():
        if isinstance(module, Attention):
            module.set_processor(AttnProcessor2_0())
    return unet


@torch.no_grad()
def sample(unet, text_encoder, tokenizer, prompts: list[str], seeds: list[int], steps: int = 50,
           guidance: float = 3.0, batch_size: int = 64, latent: bool = False) -> torch.Tensor:
    """DDIM (η = 0) with classifier-free guidance ``guidance`` (1 = none); sample j starts from noise
    seeded with ``seeds[j]``. Returns (N, C, H, W): images in [−1, 1], or with ``latent`` latents (x̂₀ is
    then not clipped to [−1, 1]; ``to_images`` decodes them)."""
    cfg = unet.config
    x = initial_noise(seeds, (cfg.in_channels, cfg.sample_size, cfg.sample_size))
    cond = encode(text_encoder, tokenize(tokenizer, prompts))
    empty = encode(text_encoder, tokenize(tokenizer, [""])).expand_as(cond)
    sched = DDPM.ddim(steps, clip_sample=not latent)
    for t in sched.timesteps:
        eps = []
        for i in range(0, len(x), batch_size):
            sl = slice(i, i + batch_size)
            with model_lock(unet):
                both = unet(torch.cat([x[sl], x[sl]]), t, torch.cat([empty[sl], cond[sl]])).sample
            e0, e1 = both.chunk(2)
            eps.append(e0 + guidance * (e1 - e0))
        x = sched.step(torch.cat(eps), t, x, eta=0.0).prev_sample
    return x if latent else x.clamp(-1, 1)


def to_images(vae, x: torch.Tensor) -> torch.Tensor:
    """The model's samples as images: decoded by ``vae`` (a latent model), or as they are (pixels)."""
    from .stable_diffusion import decode_latents
    return x if vae is None else decode_latents(vae, x)


def to_model_space(vae, images: torch.Tensor) -> torch.Tensor:
    """Images (N, 3, H, W) in [−1, 1] as the model's input: latents s · mode(q(z | x)), or the pixels."""
    from .stable_diffusion import encode_images
    return images if vae is None else encode_images(vae, images)


def save_pipeline(unet, text_encoder, tokenizer, folder: str, unet_dtype: torch.dtype = torch.float32,
                  vae=None) -> None:
    """``unet/``, ``text_encoder/``, ``tokenizer/``, ``scheduler/`` (and ``vae/`` for a latent model) written to a
    temporary folder, then renamed. ``unet_dtype=torch.float16`` stores the UNet at half size; the model in
    memory is rounded the same way, so it equals what ``load_pipeline`` reads back (in float32). Weight files
    are sharded at 8 MB, so every shipped file stays under 10 MiB."""
    tmp = folder.rstrip("/") + ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    unet.to(unet_dtype).save_pretrained(os.path.join(tmp, "unet"), safe_serialization=True, max_shard_size="8MB")
    unet.to(torch.float32)
    if vae is not None:
        vae.save_pretrained(os.path.join(tmp, "vae"), safe_serialization=True, max_shard_size="8MB")
    text_encoder.save_pretrained(os.path.join(tmp, "text_encoder"), safe_serialization=True)
    tokenizer.save_pretrained(os.path.join(tmp, "tokenizer"))
    DDPM.scheduler().save_pretrained(os.path.join(tmp, "scheduler"))
    shutil.rmtree(folder, ignore_errors=True)
    os.replace(tmp, folder)


def load_pipeline(folder: str):
    """(unet, text_encoder, tokenizer) from a folder written by ``save_pipeline``; CheckpointError if absent."""
    from transformers import CLIPTextModel, PreTrainedTokenizerFast
    if not os.path.isfile(os.path.join(folder, "unet", "config.json")):
        raise CheckpointError(f"no text-to-image model at {folder!r}. Train it with "
                              f"`python -m precompute base --dataset emoji`.")
    unet = UNet2DConditionModel.from_pretrained(os.path.join(folder, "unet"), local_files_only=True,
                                                torch_dtype=torch.float32)
    text_encoder = CLIPTextModel.from_pretrained(os.path.join(folder, "text_encoder"), local_files_only=True)
    tokenizer = PreTrainedTokenizerFast.from_pretrained(os.path.join(folder, "tokenizer"), local_files_only=True)
    return set_vmap_attention(unet).eval(), text_encoder.eval(), tokenizer


def load_vae(folder: str):
    """The pipeline's ``AutoencoderKL`` (eval mode), or None for a pixel-space model (no ``vae/``)."""
    from diffusers import AutoencoderKL
    if not os.path.isfile(os.path.join(folder, "vae", "config.json")):
        return None
    return AutoencoderKL.from_pretrained(os.path.join(folder, "vae"), local_files_only=True).eval()

