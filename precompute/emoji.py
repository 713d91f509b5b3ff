"""Stages of the ``emoji`` text-to-image setting (``explorer.datasets.emoji``, ``explorer.text2image``):

- ``data``: the 32×32 arrays from the three npm packages (``npm pack``), into ``assets/emoji/data/``;
- ``base``: the base text-to-image model pretrained on the Noto drawings, into ``assets/emoji/base/``
  (resumable: its state is saved every few epochs under ``$EXPLORER_STATE``, default
  ``~/.cache/explorer/state``; a finished, unchanged recipe is not retrained).

    python -m precompute data --dataset emoji
    python -m precompute base --dataset emoji
"""
from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import asdict

import torch

from explorer.cache import read_json, write_json
from explorer.datasets import emoji
from explorer.images import grid
from explorer.paths import AssetPaths
from explorer import text2image as t2i

STATE = os.environ.get("EXPLORER_STATE", os.path.expanduser("~/.cache/explorer/state"))
BASE = t2i.TextToImageConfig()
BASE_TRAIN = t2i.T2ITrainConfig()
SHOW = ["red apple", "hot dog", "pizza", "banana", "dog face", "cat face", "frog", "octopus",
        "sunflower", "turtle", "birthday cake", "watermelon", "penguin", "lion face", "strawberry", "hamburger"]


def run_data(packages: str | None = None) -> dict:
    """Fetches the packages (kept in ``packages``, default ``~/.cache/explorer-npm``) and writes the arrays."""
    folder = packages or os.environ.get("EXPLORER_NPM_CACHE", os.path.expanduser("~/.cache/explorer-npm"))
    arrays, meta = emoji.build_arrays(emoji.fetch_packages(folder))
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
