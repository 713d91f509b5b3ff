"""The dataset every stage shares: a tensor ``x`` in [-1, 1] of shape (N, C, H, W), integer ``labels`` and
stable indices 0..N-1 into it. Splits are fixed, stratified and saved as index files so every stage
(training, attribution, evaluation, UI) agrees on what "training image 17" means. Also safe image I/O
(uploads and folders: non-images, truncated files and decompression bombs refused)."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")
MAX_PIXELS = 64_000_000  # refuse decompression bombs before decoding


@dataclass
class Dataset:
    """An in-memory image dataset in [-1, 1] with a fixed train/validation split."""

    name: str
    x: torch.Tensor  # (N, C, H, W) float32 in [-1, 1]
    labels: torch.Tensor  # (N,) int64
    classes: list[str]
    train_idx: np.ndarray  # indices into x; "training index i" means x[train_idx[i]]
    val_idx: np.ndarray
    meta: dict = field(default_factory=dict)

    @property
    def channels(self) -> int:
        return self.x.shape[1]

    @property
    def resolution(self) -> int:
        return self.x.shape[-1]

    @cached_property  # indexed once: callers take rows of it many times
    def train_x(self) -> torch.Tensor:
        return self.x[torch.as_tensor(self.train_idx)]

    @cached_property
    def train_labels(self) -> torch.Tensor:
        return self.labels[torch.as_tensor(self.train_idx)]

    @cached_property
    def val_x(self) -> torch.Tensor:
        return self.x[torch.as_tensor(self.val_idx)]

    @cached_property
    def val_labels(self) -> torch.Tensor:
        return self.labels[torch.as_tensor(self.val_idx)]

    @cached_property
    def train_styles(self) -> tuple[np.ndarray, list[str]] | None:
        """(style id per training image, style names) when ``meta["style"]`` names each image's artist."""
        if "style" not in self.meta:
            return None
        names = sorted(set(self.meta["style"]))
        ids = np.array([names.index(s) for s in self.meta["style"]])[self.train_idx]
        return ids, names

    def fingerprint(self) -> str:
        """Hash of the training images and split: caches built on other data are refused."""
        import hashlib

        h = hashlib.sha256()
        h.update(self.train_x.numpy().astype(np.float16).tobytes())
        h.update(np.asarray(self.train_idx, dtype=np.int64).tobytes())
        return h.hexdigest()[:16]


def stratified_split(labels: np.ndarray, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Per class, a seeded permutation; the first round(val_fraction·n_c) go to validation."""
    rng = np.random.default_rng(seed)
    train, val = [], []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        idx = idx[rng.permutation(len(idx))]
        n_val = int(round(val_fraction * len(idx)))
        val.append(idx[:n_val])
        train.append(idx[n_val:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(val))


def with_split(name, x, labels, classes, val_fraction=0.15, seed=0, meta=None) -> Dataset:
    train_idx, val_idx = stratified_split(labels.numpy(), val_fraction, seed)
    return Dataset(name, x, labels, classes, train_idx, val_idx, meta or {})


class ImageError(ValueError):
    """An image a user supplied cannot be used; the message names the fix."""


def open_image(path_or_file, max_pixels: int = MAX_PIXELS) -> Image.Image:
    """Open an image safely: refuse non-images, truncated files and decompression bombs."""
    try:
        img = Image.open(path_or_file)
        if img.width * img.height > max_pixels:
            raise ImageError(f"image is {img.width}×{img.height} pixels; the limit is {max_pixels:,}. Downscale it first.")
        img.load()
    except ImageError:
        raise
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError, SyntaxError) as e:
        raise ImageError(f"not a readable image ({type(e).__name__}: {e}). Upload a PNG or JPEG file.") from e
    return img


def to_model_tensor(img: Image.Image, channels: int, resolution: int) -> torch.Tensor:
    """Any PIL image (L, RGB, RGBA, P, I;16, ...) → (C, R, R) float in [-1, 1].
    Alpha is composited on black; 16-bit images are scaled by 1/257; resize is area-averaging."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(img, dtype=np.float64)
        scale = 65535.0 if arr.max() > 255 else 255.0
        img = Image.fromarray(np.clip(arr / scale * 255, 0, 255).astype(np.uint8), "L")
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        bg = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
        img = Image.alpha_composite(bg, rgba)
    img = img.convert("L" if channels == 1 else "RGB")
    if img.size != (resolution, resolution):
        img = img.resize((resolution, resolution), Image.Resampling.BOX if min(img.size) >= resolution else Image.Resampling.BILINEAR)
    arr = np.asarray(img, dtype=np.float32) / 127.5 - 1.0
    arr = arr[None] if channels == 1 else arr.transpose(2, 0, 1)
    return torch.from_numpy(np.ascontiguousarray(arr))


def save_split(ds: Dataset, folder: str) -> None:
    """Write the split as index files (``train_idx.npy``, ``val_idx.npy``) for later stages."""
    os.makedirs(folder, exist_ok=True)
    np.save(os.path.join(folder, "train_idx.npy"), np.asarray(ds.train_idx, np.int64))
    np.save(os.path.join(folder, "val_idx.npy"), np.asarray(ds.val_idx, np.int64))
