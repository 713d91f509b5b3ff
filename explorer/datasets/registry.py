"""The dataset registry: every embedded dataset by name, with what it needs on a machine where it cannot
be opened. The registry imports the loaders; no loader imports the registry."""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Callable

from . import digits, emoji, icons, shapes
from .core import Dataset
from .folder import load_image_folder


@dataclass(frozen=True)
class Source:
    """An embedded dataset: its loader, and ``missing()`` → why it cannot be opened here (None if it can)."""
    load: Callable[[], Dataset]
    missing: Callable[[], str | None] = lambda: None


EMBEDDED: dict[str, Source] = {
    "digits": Source(digits.load_digits),
    "shapes": Source(shapes.load_shapes),
    "icons": Source(icons.load_icons, icons.missing_themes),
    "emoji": Source(emoji.load_emoji, emoji.missing_arrays),
}


def data_missing(name: str) -> str | None:
    """Why the embedded dataset ``name`` cannot be opened on this machine, or None (also for folders)."""
    return EMBEDDED[name].missing() if name in EMBEDDED else None


def load_dataset(name_or_path: str, resolution: int | None = None, channels: int | None = None) -> Dataset:
    """An embedded dataset by name, or an image folder by path: its resolution and channels are the
    arguments, else ``dataset.json`` in the folder, else 32×32 RGB."""
    if name_or_path in EMBEDDED:
        return EMBEDDED[name_or_path].load()
    if os.path.isdir(name_or_path):
        cfg_path = os.path.join(name_or_path, "dataset.json")
        cfg = json.load(open(cfg_path)) if os.path.exists(cfg_path) else {}
        return load_image_folder(name_or_path, resolution or cfg.get("resolution", 32),
                                 channels or cfg.get("channels", 3))
    raise FileNotFoundError(f"no dataset or image folder {name_or_path!r}: use one of {sorted(EMBEDDED)} or the path "
                            f"of a folder of images")
