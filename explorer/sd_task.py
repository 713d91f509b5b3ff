"""An adopted Stable Diffusion LoRA (``python -m precompute adopt``): the user's pipeline folder, LoRA weights
and captioned training images, recorded in ``assets/<name>/train.json`` under ``stable_diffusion`` (paths,
not copies: a real pipeline is gigabytes). Latent space as ``TextToImageTask`` has it (queries carry their
latent and their image); what differs is reading the user's pipeline, its BPE tokenizer and its own schedule;
gradients are taken with respect to the LoRA parameters, on the pipeline's own
noise schedule, each training latent under its own caption."""
from __future__ import annotations

import torch

from . import stable_diffusion as sd
from .datasets.captioned import load_captioned_folder
from .lora import load_lora, lora_names
from .paths import AssetPaths
from .schedule import NoiseSchedule
from .t2i_task import TextToImageTask
from .task import Query, read_info

GUIDANCE = 7.5  # Stable Diffusion's usual classifier-free guidance


class StableDiffusionTask(TextToImageTask):
    """The text-to-image task's queries (captioned; generated from a prompt), in latent space."""
    guidance = GUIDANCE

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

    def encode(self, texts: list[str]) -> torch.Tensor:
        return sd.encode_text(self.text_encoder, self.tokenizer, texts)

    def unknown_words(self, prompt: str) -> list[str]:
        return []  # a BPE tokenizer spells any word

    def val_query(self, j: int) -> Query:
        raise ValueError("an adopted LoRA's training images are all attributed: there is no validation split")

    def sample(self, prompts: list[str], seeds: list[int], steps: int, guidance: float) -> torch.Tensor:
        """Latents for ``prompts``: DDIM on the pipeline's own β schedule."""
        cond, empty = self.encode(prompts), self.encode([""])
        return sd.sample_latents(self.model, cond, empty, self.schedule, seeds, steps, guidance)
