"""Which task a model folder is: an adopted Stable Diffusion LoRA (``train.json`` records
``stable_diffusion``), a text-to-image LoRA trained here (it records a ``lora``) or an unconditional model."""
from __future__ import annotations

import os

from .paths import AssetPaths
from .sd_task import StableDiffusionTask
from .t2i_task import TextToImageTask
from .task import Task, read_info


def open_task(name: str, root: str | None = None, device: str = "cpu") -> Task:
    paths = AssetPaths(name, **({"root": root} if root else {}))
    info = read_info(paths)
    if "stable_diffusion" in info:
        return StableDiffusionTask(name, root, device)
    if "lora" in info:
        return TextToImageTask(name, root, device)
    return Task(name, root, device)


def is_trained(paths: AssetPaths) -> bool:
    """Whether the folder holds a model to open: an unconditional UNet, a base pipeline with its LoRA, or an
    adopted pipeline whose folder is still there."""
    if os.path.exists(os.path.join(paths.model, "config.json")):
        return True
    adopted = read_info(paths).get("stable_diffusion") if os.path.exists(paths.info) else None
    if adopted:
        return os.path.isfile(os.path.join(adopted["pipeline"], "model_index.json"))
    return (os.path.exists(os.path.join(paths.base, "base", "unet", "config.json"))
            and os.path.isdir(os.path.join(paths.base, "lora")) and "lora" in read_info(paths))
