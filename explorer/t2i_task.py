"""The text-to-image LoRA task (the ``emoji`` setting): the base pipeline (``assets/<name>/base``) with its
LoRA (``assets/<name>/lora``) loaded, the LoRA's training drawings, and queries that carry their caption.
Attribution's gradients are taken with respect to the LoRA parameters only, each training image under
its own caption; a prompt's generated image is attributed under the prompt.

A pipeline with a VAE (``base/vae/``, as Stable Diffusion) works in latent space: every query carries its
latent z = s · mode(q(z | x)) as the model's input ``x`` and its image as ``image`` (what the page and the
pixel-space methods — raw pixels, NDA — read); the training drawings' latents are encoded once and cached."""
from __future__ import annotations

import os
from functools import cached_property

import numpy as np
import torch

from . import CACHE
from . import text2image as t2i
from .attribution.features import UPLOAD_UID, generated_uid
from .attribution.timesteps import seeded_noise
from .datasets import load_dataset, to_model_tensor
from .files import save_npy
from .lora import LoRAConfig, load_lora, lora_names
from .models import model_lock, weights_fingerprint
from .paths import AssetPaths
from .task import Query, Task, read_info

GUIDANCE = 3.0  # classifier-free guidance of prompt images


class TextToImageTask(Task):
    conditional = True
    scaled_lambda = True
    guidance = GUIDANCE
    vae = None  # a latent-space pipeline's AutoencoderKL

    def __init__(self, name: str, root: str | None = None, device: str = "cpu"):
        self.paths = AssetPaths(name, **({"root": root} if root else {}))
        self.device = device
        self.info = read_info(self.paths)
        self.data = load_dataset(self.info.get("dataset", name))
        folder = os.path.join(self.paths.base, "base")
        unet, self.text_encoder, self.tokenizer = t2i.load_pipeline(folder)
        self.vae = t2i.load_vae(folder)
        self.lora_config = LoRAConfig(**{k: tuple(v) if k == "targets" else v
                                         for k, v in self.info["lora"]["lora"].items()})
        load_lora(unet, os.path.join(self.paths.base, "lora"), self.lora_config)
        self.model = unet.to(device).eval()
        self.param_names = lora_names(unet)
        self.classifier = None
        self.data_hash = self.data.fingerprint()
        self.captions = self.data.meta["caption"]
        self.train_context = self.encode([self.captions[int(i)] for i in self.data.train_idx])

    @property
    def styles(self) -> list[str]:
        """The style words a prompt may end with: the dataset's styles that its training captions end with."""
        named = self.data.train_styles[1] if self.data.train_styles else []
        ends = {self.captions[int(i)].rsplit(",", 1)[-1].strip() for i in self.data.train_idx}
        return [s for s in named if s in ends]

    @cached_property
    def train_inputs(self) -> torch.Tensor:
        """The training drawings as the model sees them: the images, or (latent space) their latents, encoded
        once and cached (keyed by the images and the VAE's weights)."""
        if self.vae is None:
            return self.data.train_x
        path = os.path.join(CACHE, os.path.basename(self.paths.base), "latents",
                            f"{self.data_hash}_{weights_fingerprint(self.vae)}.npy")
        if os.path.exists(path):
            z = np.load(path)
            if len(z) == len(self.data.train_idx):
                return torch.from_numpy(z)
        z = t2i.to_model_space(self.vae, self.data.train_x)
        save_npy(path, z.numpy())
        return z

    def encode(self, texts: list[str]) -> torch.Tensor:
        with torch.no_grad():
            return t2i.encode(self.text_encoder, t2i.tokenize(self.tokenizer, texts))

    def unknown_words(self, prompt: str) -> list[str]:
        return t2i.unknown_words(self.tokenizer, prompt)

    def train_query(self, i: int, fresh: bool = False) -> Query:
        q = super().train_query(i, fresh)
        if self.vae is not None:
            q.x, q.image = self.train_inputs[i], self.data.train_x[i]
        return self.captioned(q, self.captions[int(self.data.train_idx[i])])

    def val_query(self, j: int) -> Query:
        q = super().val_query(j)
        return self.from_image(q, q.x, self.captions[int(self.data.val_idx[j])])

    def prompt(self, text: str, seed: int, steps: int = 50, guidance: float | None = None) -> Query:
        """The LoRA model's image for ``text`` from noise seeded with ``seed`` (guided DDIM), as a query."""
        x = self.sample([text], [seed], steps, self.guidance if guidance is None else guidance)
        q = Query("generated", x[0], generated_uid(seed))
        if self.vae is not None:
            q.image = t2i.to_images(self.vae, x)[0]
        return self.captioned(q, text)

    def sample(self, prompts: list[str], seeds: list[int], steps: int, guidance: float) -> torch.Tensor:
        """The model's output (images, or latents) for ``prompts``."""
        return t2i.sample(self.model, self.text_encoder, self.tokenizer, prompts, seeds, steps, guidance,
                          latent=self.vae is not None)

    def generated(self, seed: int, steps: int = 50) -> Query:
        raise ValueError("a text-to-image model generates from a prompt: use its task's prompt(text, seed)")

    def upload(self, img, caption: str = "") -> Query:
        """An uploaded image read under ``caption`` (the empty caption: the unconditional model)."""
        x = to_model_tensor(img, 3, self.data.resolution)
        return self.from_image(Query("upload", x, UPLOAD_UID), x, caption)

    def inverted(self, q: Query) -> Query:
        return self.from_image(q, -q.shown, q.caption)

    def from_image(self, q: Query, x: torch.Tensor, caption: str) -> Query:
        """The query for image ``x`` (3, H, W) under ``caption``: its latent as the model's input where there is
        a VAE."""
        if self.vae is None:
            q.x = x
        else:
            q.x, q.image = t2i.to_model_space(self.vae, x[None])[0], x
        return self.captioned(q, caption)

    def captioned(self, q: Query, caption: str) -> Query:
        """The query read under ``caption`` (its encoded context attached)."""
        q.caption, q.context = caption, self.encode([caption])[0]
        return q

    def noised_view(self, query: Query, t: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        """(x_t, x̂₀) as images: the query's input noised at t with its own seeded noise, and the LoRA model's
        estimate x̂₀ = (x_t − √(1−ᾱ_t) ε_θ(x_t, t, c)) / √ᾱ_t under the query's caption (decoded for a latent)."""
        x0 = query.x[None]
        eps = seeded_noise([query.uid], [t], tuple(x0.shape[1:]), seed)[:, 0]
        tt = torch.full((1,), int(t))
        xt = self.schedule.add_noise(x0, eps, tt)
        with torch.no_grad(), model_lock(self.model):
            pred = self.model(xt, tt, query.context[None]).sample
        est = self.schedule.x0_estimate(xt, pred, t)
        if self.vae is None:
            return xt[0], est[0].clamp(-1, 1)
        both = t2i.to_images(self.vae, torch.cat([xt, est]))
        return both[0], both[1]
