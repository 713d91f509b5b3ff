"""Datasets: every dataset is a tensor ``x`` in [-1, 1] of shape (N, C, H, W), integer ``labels``
and stable indices 0..N-1 into it. Splits are fixed, stratified and saved as index files so every
stage (training, attribution, evaluation, UI) agrees on what "training image 17" means.

Embedded datasets (no downloads):
- ``digits``: scikit-learn's 1797 real 8×8 handwritten digits, 10 classes, grayscale.
- ``shapes``: 16×16 RGB coloured geometric shapes generated from a fixed seed, 4 classes, with
  planted near-duplicate pairs (known answers for attribution checks) recorded in ``meta``.
- ``icons``: 32×32 desktop icons of two design teams (Oxygen, Tango) read from Debian's icon themes
  (``explorer/icons.py``), 9 categories, with natural near-duplicates (the same icon drawn at 48×48).
Plus ``load_image_folder`` for any folder of images (optionally class sub-folders).
"""
from __future__ import annotations

import json
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


def _with_split(name, x, labels, classes, val_fraction=0.15, seed=0, meta=None) -> Dataset:
    train_idx, val_idx = stratified_split(labels.numpy(), val_fraction, seed)
    return Dataset(name, x, labels, classes, train_idx, val_idx, meta or {})


def load_digits() -> Dataset:
    """scikit-learn digits: 8×8 values 0..16 mapped to [-1, 1]."""
    from sklearn.datasets import load_digits as sk_digits

    d = sk_digits()
    x = torch.tensor(d.images, dtype=torch.float32).unsqueeze(1) / 8.0 - 1.0
    return _with_split("digits", x, torch.tensor(d.target, dtype=torch.int64), [str(i) for i in range(10)])


SHAPE_CLASSES = ["square", "circle", "triangle", "cross"]


def _draw_shape(kind: int, size: int, cx: float, cy: float, r: float, color, bg, rng) -> np.ndarray:
    yy, xx = np.mgrid[0:size, 0:size] + 0.5
    dx, dy = xx - cx, yy - cy
    if kind == 0:
        mask = (np.abs(dx) <= r) & (np.abs(dy) <= r)
    elif kind == 1:
        mask = dx**2 + dy**2 <= r**2
    elif kind == 2:
        mask = (dy <= r) & (dy >= -r) & (np.abs(dx) <= (dy + r) / 2)
    else:
        w = max(r / 3, 1.0)
        mask = ((np.abs(dx) <= w) & (np.abs(dy) <= r)) | ((np.abs(dy) <= w) & (np.abs(dx) <= r))
    img = np.empty((size, size, 3), np.float32)
    img[:] = bg
    img[mask] = color
    img += rng.normal(0, 0.03, img.shape).astype(np.float32)
    return np.clip(img, 0, 1)


def load_shapes(n: int = 2000, size: int = 16, seed: int = 0, n_duplicates: int = 8) -> Dataset:
    """Procedural RGB shapes. The last ``n_duplicates`` images are near-copies (a little pixel
    noise) of earlier training images; ``meta['duplicates']`` lists (original, copy) as dataset
    indices. Copies are forced into the training split so both halves of each pair are training
    images, and a query built from one should retrieve the other."""
    rng = np.random.default_rng(seed)
    imgs, labels = [], []
    n_base = n - n_duplicates
    for _ in range(n_base):
        kind = int(rng.integers(4))
        color = rng.uniform(0.3, 1.0, 3)
        bg = rng.uniform(0.0, 0.25, 3)
        r = rng.uniform(size * 0.18, size * 0.35)
        cx, cy = rng.uniform(r, size - r, 2)
        imgs.append(_draw_shape(kind, size, cx, cy, r, color, bg, rng))
        labels.append(kind)
    x = torch.tensor(np.stack(imgs)).permute(0, 3, 1, 2) * 2 - 1
    y = torch.tensor(labels, dtype=torch.int64)
    train_idx, val_idx = stratified_split(y.numpy(), 0.15, seed)
    originals = rng.choice(train_idx, n_duplicates, replace=False)
    copies = x[torch.as_tensor(originals)] + 0.02 * torch.tensor(rng.normal(size=(n_duplicates, 3, size, size)), dtype=torch.float32)
    x = torch.cat([x, copies.clamp(-1, 1)])
    y = torch.cat([y, y[torch.as_tensor(originals)]])
    dup_idx = np.arange(n_base, n)
    train_idx = np.sort(np.concatenate([train_idx, dup_idx]))
    meta = {"duplicates": [[int(a), int(b)] for a, b in zip(originals, dup_idx)]}
    return Dataset("shapes", x, y, SHAPE_CLASSES, train_idx, val_idx, meta)


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
    return _with_split(name, torch.stack(xs), torch.tensor(ys), [c for c, _ in groups], val_fraction, seed,
                       {"skipped": skipped, "labelled": len(groups) > 1, "files": files})


def load_icons() -> Dataset:
    from .icons import load_icons as icons  # Debian's icon themes; see explorer/icons.py
    return icons()


EMBEDDED = {"digits": load_digits, "shapes": load_shapes, "icons": load_icons}


def data_missing(name: str) -> str | None:
    """Why the embedded dataset ``name`` cannot be opened on this machine (icons: themes not installed), or None."""
    if name != "icons":
        return None
    from .icons import missing_themes
    return missing_themes()


def load_dataset(name_or_path: str, resolution: int | None = None, channels: int | None = None) -> Dataset:
    """An embedded dataset by name, or an image folder by path: its resolution and channels are the
    arguments, else ``dataset.json`` in the folder, else 32×32 RGB."""
    if name_or_path in EMBEDDED:
        return EMBEDDED[name_or_path]()
    if os.path.isdir(name_or_path):
        cfg_path = os.path.join(name_or_path, "dataset.json")
        cfg = json.load(open(cfg_path)) if os.path.exists(cfg_path) else {}
        return load_image_folder(name_or_path, resolution or cfg.get("resolution", 32),
                                 channels or cfg.get("channels", 3))
    raise FileNotFoundError(f"no dataset or image folder {name_or_path!r}: use one of {sorted(EMBEDDED)} or the path "
                            f"of a folder of images")


def save_split(ds: Dataset, folder: str) -> None:
    """Write the split as index files (``train_idx.npy``, ``val_idx.npy``) for later stages."""
    os.makedirs(folder, exist_ok=True)
    np.save(os.path.join(folder, "train_idx.npy"), np.asarray(ds.train_idx, np.int64))
    np.save(os.path.join(folder, "val_idx.npy"), np.asarray(ds.val_idx, np.int64))
