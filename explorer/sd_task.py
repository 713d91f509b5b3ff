"""An adopted Stable Diffusion LoRA (``python -m precompute adopt``): the user's pipeline folder, LoRA weights
and captioned training images, recorded in ``assets/<name>/train.json`` under ``stable_diffusion`` (paths,
not copies: a real pipeline is gigabytes). Queries carry their latent (the model's input) and their image
(what the page shows); gradients are taken with respect to the LoRA parameters, on the pipeline's own
noise schedule, each training latent under its own caption."""
from __future__ import annotations

import os
from functools import cached_property

import numpy as np
import torch

from . import CACHE
from . import stable_diffusion as sd
from .attribution.features import UPLOAD_UID, generated_uid
from .attribution.timesteps import seeded_noise
from .datasets import to_model_tensor
from .datasets.captioned import load_captioned_folder
from .files import save_npy
from .lora import load_lora, lora_names
from .models import model_lock, weights_fingerprint
from .paths import AssetPaths
from .schedule import NoiseSchedule
from .t2i_task import TextToImageTask
from .task import Query, read_info

GUIDANCE = 7.5  # Stable Diffusion's usual classifier-free guidance


class StableDiffusionTask(TextToImageTask):
    """The text-to-image task's queries (captioned; generated from a prompt), in latent space."""

    def __init__(self, name: str, root: str | None = None, device: str = "cpu"):
        self.paths = AssetPaths(name, **({"root": root} if root else {}))
        self.device = device
        self.info = read_info(self.paths)
        rec = self.info["stable_diffusion"]
        unet, self.vae, self.text_encoder, self.tokenizer, self.scheduler_config = sd.load(rec["pipeline"], device)
        load_lora(unet, rec["lora"], alpha=rec.get("lora_alpha"))
        self.model, self.param_names = unet, lora_names(unet)
        self.schedule = NoiseSchedule(self.scheduler_config)
        self.data = load_captioned_folder(rec["data"], sd.pixel_resolution(unet, self.vae))
        self.classifier = None
        self.data_hash = self.data.fingerprint()
        self.captions = self.data.meta["caption"]
        self.train_context = self.encode([self.captions[int(i)] for i in self.data.train_idx])

    @cached_property
    def train_inputs(self) -> torch.Tensor:
        """The training images' latents, encoded once and cached (keyed by the images and the VAE's weights)."""
        path = os.path.join(CACHE, os.path.basename(self.paths.base), "latents",
                            f"{self.data_hash}_{weights_fingerprint(self.vae)}.npy")
        if os.path.exists(path):
            z = np.load(path)
            if len(z) == len(self.data.train_idx):
                return torch.from_numpy(z)
        z = sd.encode_images(self.vae, self.data.train_x)
        save_npy(path, z.numpy())
        return z

    def encode(self, texts: list[str]) -> torch.Tensor:
        return sd.encode_text(self.text_encoder, self.tokenizer, texts)

    def unknown_words(self, prompt: str) -> list[str]:
        return []  # a BPE tokenizer spells any word

    def train_query(self, i: int, fresh: bool = False) -> Query:
        q = super().train_query(i, fresh)
        q.x, q.image = self.train_inputs[i], self.data.train_x[i]
        return q

    def val_query(self, j: int) -> Query:
        raise ValueError("an adopted LoRA's training images are all attributed: there is no validation split")

    def prompt(self, text: str, seed: int, steps: int = 50, guidance: float = GUIDANCE) -> Query:
        """The pipeline's (with LoRA) latent for ``text`` from noise seeded with ``seed``, and its decoded image."""
        cond, empty = self.encode([text]), self.encode([""])
        z = sd.sample_latents(self.model, cond, empty, self.schedule, [seed], steps, guidance)
        q = Query("generated", z[0], generated_uid(seed), image=sd.decode_latents(self.vae, z)[0])
        return self.captioned(q, text)

    def upload(self, img, caption: str = "") -> Query:
        x = to_model_tensor(img, 3, self.data.resolution)
        return self.from_image(Query("upload", x, UPLOAD_UID), x, caption)

    def inverted(self, q: Query) -> Query:
        return self.from_image(q, -q.shown, q.caption)

    def from_image(self, q: Query, x: torch.Tensor, caption: str) -> Query:
        q.x, q.image = sd.encode_images(self.vae, x[None])[0], x
        return self.captioned(q, caption)

    def noised_view(self, query: Query, t: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        """(x_t, x̂₀) decoded: the query's latent noised at t with its own seeded noise, and the LoRA model's
        estimate ẑ₀ = (z_t − √(1−ᾱ_t) ε_θ(z_t, t, c)) / √ᾱ_t under the query's caption."""
        z0 = query.x[None]
        eps = seeded_noise([query.uid], [t], tuple(z0.shape[1:]), seed)[:, 0]
        tt = torch.full((1,), int(t))
        zt = self.schedule.add_noise(z0, eps, tt)
        with torch.no_grad(), model_lock(self.model):
            pred = self.model(zt, tt, query.context[None]).sample
        est = self.schedule.x0_estimate(zt, pred, t)
        both = sd.decode_latents(self.vae, torch.cat([zt, est]))
        return both[0], both[1]
