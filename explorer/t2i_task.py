"""The text-to-image LoRA task (the ``emoji`` setting): the base pipeline (``assets/<name>/base``) with its
LoRA (``assets/<name>/lora``) loaded, the LoRA's training drawings, and queries that carry their caption.
Attribution's gradients are taken with respect to the LoRA parameters only, each training image under
its own caption; a prompt's generated image is attributed under the prompt."""
from __future__ import annotations

import os

import torch

from . import text2image as t2i
from .attribution.features import UPLOAD_UID, generated_uid
from .datasets import load_dataset, to_model_tensor
from .lora import LoRAConfig, load_lora, lora_names
from .paths import AssetPaths
from .task import Query, Task, read_info

GUIDANCE = 3.0  # classifier-free guidance of prompt images


class TextToImageTask(Task):
    conditional = True
    scaled_lambda = True

    def __init__(self, name: str, root: str | None = None, device: str = "cpu"):
        self.paths = AssetPaths(name, **({"root": root} if root else {}))
        self.device = device
        self.info = read_info(self.paths)
        self.data = load_dataset(self.info.get("dataset", name))
        unet, self.text_encoder, self.tokenizer = t2i.load_pipeline(os.path.join(self.paths.base, "base"))
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

    def encode(self, texts: list[str]) -> torch.Tensor:
        with torch.no_grad():
            return t2i.encode(self.text_encoder, t2i.tokenize(self.tokenizer, texts))

    def unknown_words(self, prompt: str) -> list[str]:
        return t2i.unknown_words(self.tokenizer, prompt)

    def train_query(self, i: int, fresh: bool = False) -> Query:
        q = super().train_query(i, fresh)
        return self.captioned(q, self.captions[int(self.data.train_idx[i])])

    def val_query(self, j: int) -> Query:
        return self.captioned(super().val_query(j), self.captions[int(self.data.val_idx[j])])

    def prompt(self, text: str, seed: int, steps: int = 50, guidance: float = GUIDANCE) -> Query:
        """The LoRA model's image for ``text`` from noise seeded with ``seed`` (guided DDIM), as a query."""
        x = t2i.sample(self.model, self.text_encoder, self.tokenizer, [text], [seed], steps, guidance)[0]
        return self.captioned(Query("generated", x, generated_uid(seed)), text)

    def generated(self, seed: int, steps: int = 50) -> Query:
        raise ValueError("a text-to-image model generates from a prompt: use its task's prompt(text, seed)")

    def upload(self, img, caption: str = "") -> Query:
        """An uploaded image read under ``caption`` (the empty caption: the unconditional model)."""
        return self.captioned(Query("upload", to_model_tensor(img, 3, self.data.resolution), UPLOAD_UID), caption)

    def captioned(self, q: Query, caption: str) -> Query:
        """The query read under ``caption`` (its encoded context attached)."""
        q.caption, q.context = caption, self.encode([caption])[0]
        return q
