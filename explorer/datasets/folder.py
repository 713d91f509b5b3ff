"""Any folder of images, optionally in class sub-folders (``root/<class>/*.png``)."""
from __future__ import annotations

import os

import torch

from .core import IMAGE_EXTENSIONS, Dataset, ImageError, open_image, to_model_tensor, with_split

MIN_IMAGES = 10


def load_image_folder(root: str, resolution: int = 32, channels: int = 3, val_fraction: float = 0.15, seed: int = 0,
                      min_images: int = MIN_IMAGES) -> Dataset:
    """A folder of images, optionally in class sub-folders (``root/<class>/*.png``; without
    sub-folders the images are unlabelled, one class "all"). Files that are not images by extension
    are skipped and counted (``meta["skipped"]``); an unreadable image raises ``ImageError`` naming it."""
    if not os.path.isdir(root):
        raise FileNotFoundError(f"image folder {root!r} does not exist")
    subdirs = sorted(d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d)) and not d.startswith("."))
    groups = [(c, os.path.join(root, c)) for c in subdirs] if subdirs else [("all", root)]
    xs, ys, files, skipped = [], [], [], 0
    for label, (cls, folder) in enumerate(groups):
        for fname in sorted(os.listdir(folder)):
            path = os.path.join(folder, fname)
            if os.path.isdir(path) or fname == "dataset.json":
                continue
            if not fname.lower().endswith(IMAGE_EXTENSIONS):
                skipped += 1
                continue
            try:
                xs.append(to_model_tensor(open_image(path), channels, resolution))
            except ImageError as e:
                raise ImageError(f"{path}: {e}") from e
            ys.append(label)
            files.append(os.path.relpath(path, root))
    if len(xs) < min_images:
        raise ImageError(f"found {len(xs)} images under {root!r} ({skipped} other files skipped); a model needs at "
                         f"least {min_images} ({', '.join(IMAGE_EXTENSIONS)})")
    name = os.path.basename(os.path.normpath(root))
    return with_split(name, torch.stack(xs), torch.tensor(ys), [c for c, _ in groups], val_fraction, seed,
                       {"skipped": skipped, "labelled": len(groups) > 1, "files": files})
