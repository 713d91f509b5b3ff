"""Stages of the ``emoji`` text-to-image setting (``explorer.datasets.emoji``, ``explorer.text2image``):

- ``data``: the 32×32 arrays from the three npm packages (``npm pack``), into ``assets/emoji/data/``;
- ``base``: the base text-to-image model pretrained on the Noto drawings, into ``assets/emoji/base/``;
- ``lora``: the LoRA fine-tuned on the Twemoji and OpenMoji training drawings (captions carry the style),
  base frozen, into ``assets/emoji/lora/``.

Both are resumable (the state is saved every few epochs under ``$EXPLORER_STATE``, default
``~/.cache/explorer/state``) and a finished, unchanged recipe is not retrained.

    python -m precompute data --dataset emoji
    python -m precompute base --dataset emoji
    python -m precompute lora --dataset emoji
"""
from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import asdict

import numpy as np
import torch

from explorer.files import read_json, write_json
from explorer.datasets import emoji
from explorer.images import grid
from explorer.paths import AssetPaths
from explorer import lora as lora_lib
from explorer import text2image as t2i
from explorer.models import weights_fingerprint

STATE = os.environ.get("EXPLORER_STATE", os.path.expanduser("~/.cache/explorer/state"))
BASE = t2i.TextToImageConfig()
BASE_TRAIN = t2i.T2ITrainConfig()
LORA = lora_lib.LoRAConfig()
LORA_TRAIN = t2i.T2ITrainConfig(epochs=50, batch_size=32, lr=5e-3)
SHOW = ["red apple", "hot dog", "pizza", "banana", "dog face", "cat face", "frog", "octopus",
        "sunflower", "turtle", "birthday cake", "watermelon", "penguin", "lion face", "strawberry", "hamburger"]


def run_data(packages: str | None = None) -> dict:
    """Fetches the packages (kept in ``packages``, default ``~/.cache/explorer-npm``) and writes the arrays."""
    folder = packages or os.environ.get("EXPLORER_NPM_CACHE", os.path.expanduser("~/.cache/explorer-npm"))
    arrays, meta = emoji.build_arrays(emoji.fetch_packages(folder))
    if emoji.missing_arrays() is None:
        old = emoji.read_arrays()
        if old.meta == meta and all(np.array_equal(getattr(old, k), v) for k, v in arrays.items()):
            print(f"emoji: the shipped arrays are these; nothing rewritten ({emoji.DATA_DIR})")
            return meta
    emoji.write_arrays(arrays, meta)
    print(f"emoji: {len(arrays['noto'])} Noto drawings (base), {len(arrays['lora'])} Twemoji + OpenMoji drawings "
          f"(LoRA) in {emoji.DATA_DIR}")
    return meta


def tokenizer_for():
    """One vocabulary for base and LoRA: every word of every caption (names and the style words)."""
    _, base_caps = emoji.base_captions()
    return t2i.build_tokenizer(base_caps + emoji.load_emoji().meta["caption"], BASE.max_length)


def _recipe(x: torch.Tensor, captions: list[str], *cfgs) -> str:
    h = hashlib.sha256(x.numpy().tobytes())
    h.update(json.dumps([captions] + [asdict(c) for c in cfgs], sort_keys=True).encode())
    return h.hexdigest()[:16]


def run_base(threads: int | None = None) -> dict:
    """Pretrains the base model on every Noto drawing; ``train.json``'s ``base`` entry records the recipe,
    the losses and the wall time, and a 16-prompt sample grid is saved beside it."""
    if threads:
        torch.set_num_threads(threads)
    paths = AssetPaths("emoji")
    folder = os.path.join(paths.base, "base")
    x, captions = emoji.base_captions()
    recipe = _recipe(x, captions, BASE, BASE_TRAIN)
    info = read_json(paths.info) if os.path.exists(paths.info) else {}
    if info.get("base", {}).get("recipe_sha") == recipe and os.path.isdir(folder):
        print(f"emoji base: already trained with this recipe ({folder}); nothing rewritten")
        return info["base"]
    tokenizer = tokenizer_for()
    unet, text_encoder = t2i.make_text_to_image(BASE, tokenizer, seed=BASE_TRAIN.seed)
    ids, empty = t2i.tokenize(tokenizer, captions), t2i.tokenize(tokenizer, [""])[0]
    os.makedirs(STATE, exist_ok=True)
    state = os.path.join(STATE, f"emoji_base_{recipe}.pt")
    if os.path.exists(state):
        print(f"emoji base: resuming the interrupted run ({state})")
    params = list(unet.parameters()) + list(text_encoder.parameters())
    log = t2i.train_text_to_image(unet, text_encoder, x, ids, empty, BASE_TRAIN, params, state_file=state,
                                  progress=True)
    losses, seconds = log.losses, log.seconds
    t2i.save_pipeline(unet, text_encoder, tokenizer, folder)
    t1 = time.time()
    samples = t2i.sample(unet, text_encoder, tokenizer, SHOW, list(range(len(SHOW))))
    sample_s = (time.time() - t1) / len(SHOW)
    grid(samples, ncol=8, scale=2).save(os.path.join(paths.base, "base_samples.png"))
    base = {"recipe_sha": recipe, "model": asdict(BASE), "train": asdict(BASE_TRAIN), "n_images": len(x),
            "n_unet_parameters": sum(p.numel() for p in unet.parameters()),
            "n_text_parameters": sum(p.numel() for p in text_encoder.parameters()), "vocabulary": len(tokenizer),
            "losses": losses, "final_loss": losses[-1], "train_seconds": seconds,
            "train_images_per_second": BASE_TRAIN.epochs * len(x) / seconds, "threads": torch.get_num_threads(),
            "ddim50_guided_seconds_per_image": sample_s, "sample_prompts": SHOW}
    write_json(paths.info, {**info, "dataset": "emoji", "base": base})
    if os.path.exists(state):
        os.remove(state)
    print(f"emoji base: loss {losses[-1]:.4f} after {BASE_TRAIN.epochs} epochs, {seconds / 60:.0f} min")
    return base


def _train_lora(train_positions, cfg: t2i.T2ITrainConfig, state_name: str | None, progress: bool = True):
    """A LoRA on the base model, trained on the emoji training images at ``train_positions`` (positions in
    the training split); returns (unet with the adapters, text encoder, tokenizer, training log)."""
    paths = AssetPaths("emoji")
    unet, text_encoder, tokenizer = t2i.load_pipeline(os.path.join(paths.base, "base"))
    text_encoder.requires_grad_(False)
    params = lora_lib.add_lora(unet, LORA, seed=cfg.seed)
    ds = emoji.load_emoji()
    pos = torch.as_tensor(train_positions)
    captions = [ds.meta["caption"][int(ds.train_idx[int(p)])] for p in pos]
    ids, empty = t2i.tokenize(tokenizer, captions), t2i.tokenize(tokenizer, [""])[0]
    state = os.path.join(STATE, state_name) if state_name else None
    if state:
        os.makedirs(STATE, exist_ok=True)
    log = t2i.train_text_to_image(unet, text_encoder, ds.train_x[pos], ids, empty, cfg, params, state_file=state,
                                  progress=progress)
    if state and os.path.exists(state):
        os.remove(state)
    return unet, text_encoder, tokenizer, log


LORA_SHOW = [f"{n}, {s}" for n in ("red apple", "dog face", "pizza", "frog", "octopus", "sunflower", "hamburger",
                                   "penguin") for s in emoji.LORA_STYLES]


def run_lora() -> dict:
    """The LoRA on the whole training split; ``train.json``'s ``lora`` entry and a sample grid beside it."""
    paths = AssetPaths("emoji")
    folder = os.path.join(paths.base, "lora")
    ds = emoji.load_emoji()
    base_unet, _, _ = t2i.load_pipeline(os.path.join(paths.base, "base"))
    recipe = _recipe(ds.train_x, [ds.meta["caption"][int(i)] for i in ds.train_idx], LORA, LORA_TRAIN)
    recipe = hashlib.sha256((recipe + weights_fingerprint(base_unet)).encode()).hexdigest()[:16]
    info = read_json(paths.info)
    if info.get("lora", {}).get("recipe_sha") == recipe and os.path.isdir(folder):
        print(f"emoji LoRA: already trained with this recipe ({folder}); nothing rewritten")
        return info["lora"]
    unet, text_encoder, tokenizer, log = _train_lora(range(len(ds.train_idx)), LORA_TRAIN, f"emoji_lora_{recipe}.pt")
    lora_lib.save_lora(unet, folder)
    samples = t2i.sample(unet, text_encoder, tokenizer, LORA_SHOW, list(range(len(LORA_SHOW))))
    grid(samples, ncol=8, scale=2).save(os.path.join(paths.base, "lora_samples.png"))
    entry = {"recipe_sha": recipe, "lora": asdict(LORA), "train": asdict(LORA_TRAIN), "n_images": len(ds.train_idx),
             "n_lora_parameters": sum(p.numel() for n, p in unet.named_parameters() if "lora_" in n),
             "losses": log.losses, "final_loss": log.losses[-1], "train_seconds": log.seconds,
             "train_images_per_second": LORA_TRAIN.epochs * len(ds.train_idx) / log.seconds,
             "threads": torch.get_num_threads(), "sample_prompts": LORA_SHOW}
    write_json(paths.info, {**read_json(paths.info), "lora": entry})
    print(f"emoji LoRA: loss {log.losses[-1]:.4f} after {LORA_TRAIN.epochs} epochs, {log.seconds / 60:.1f} min")
    return entry
