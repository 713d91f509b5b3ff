"""Which task a model folder is: a text-to-image LoRA (``train.json`` records a ``lora``) or an
unconditional diffusion model."""
from __future__ import annotations

import os

from .paths import AssetPaths
from .t2i_task import TextToImageTask
from .task import Task, read_info


def open_task(name: str, root: str | None = None, device: str = "cpu") -> Task:
    paths = AssetPaths(name, **({"root": root} if root else {}))
    if "lora" in read_info(paths):
        return TextToImageTask(name, root, device)
    return Task(name, root, device)


def is_trained(paths: AssetPaths) -> bool:
    """Whether the folder holds a model to open: an unconditional UNet, or a base pipeline with its LoRA."""
    if os.path.exists(os.path.join(paths.model, "config.json")):
        return True
    return (os.path.exists(os.path.join(paths.base, "base", "unet", "config.json"))
            and os.path.isdir(os.path.join(paths.base, "lora")) and "lora" in read_info(paths))
