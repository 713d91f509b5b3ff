"""``shapes``: 16×16 RGB coloured geometric shapes generated from a fixed seed, 4 classes, with planted
near-duplicate pairs (known answers for attribution checks) recorded in ``meta``."""
from __future__ import annotations

import numpy as np
import torch

from .core import Dataset, stratified_split

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
