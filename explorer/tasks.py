"""Which task a model folder is: a text-to-image LoRA (``train.json`` records a ``lora``) or an
unconditional diffusion model."""
from __future__ import annotations

from .paths import AssetPaths
from .t2i_task import TextToImageTask
from .task import Task, read_info


def open_task(name: str, root: str | None = None, device: str = "cpu") -> Task:
    paths = AssetPaths(name, **({"root": root} if root else {}))
    if "lora" in read_info(paths):
        return TextToImageTask(name, root, device)
    return Task(name, root, device)
