"""Tensor ↔ image helpers (exact pixels: nearest-neighbour upscaling, PNG)."""
from __future__ import annotations

import hashlib
import io
import os

import numpy as np
import torch
from PIL import Image


def to_uint8(x: torch.Tensor) -> np.ndarray:
    """(C, H, W) in [-1, 1] → (H, W) or (H, W, 3) uint8."""
    arr = ((x.detach().float().clamp(-1, 1) + 1) * 127.5).round().byte().cpu().numpy()
    return arr[0] if arr.shape[0] == 1 else arr.transpose(1, 2, 0)


def to_pil(x: torch.Tensor, scale: int = 1) -> Image.Image:
    img = Image.fromarray(to_uint8(x))
    if scale > 1:
        img = img.resize((img.width * scale, img.height * scale), Image.Resampling.NEAREST)
    return img


def grid(x: torch.Tensor, ncol: int = 8, scale: int = 4, pad: int = 1) -> Image.Image:
    """Tile images (N, C, H, W) into one PIL grid, each upscaled by ``scale`` (nearest)."""
    n, c, h, w = x.shape
    nrow = (n + ncol - 1) // ncol
    H, W = h * scale, w * scale
    canvas = Image.new("RGB", (ncol * (W + pad) + pad, nrow * (H + pad) + pad), (255, 255, 255))
    for i in range(n):
        r, col = divmod(i, ncol)
        canvas.paste(to_pil(x[i], scale).convert("RGB"), (pad + col * (W + pad), pad + r * (H + pad)))
    return canvas


def png_file(x: torch.Tensor | Image.Image, scale: int, folder: str) -> str:
    """``to_pil(x, scale)`` as a PNG under ``folder``, named by its content hash and written once
    (temporary file, then rename): concurrent requests that show the same image never see a file
    being rewritten, and the pixels stay exact (no lossy re-encoding)."""
    buf = io.BytesIO()
    (x if isinstance(x, Image.Image) else to_pil(x, scale)).save(buf, format="PNG")
    data = buf.getvalue()
    path = os.path.join(folder, hashlib.sha1(data).hexdigest()[:20] + ".png")
    if not os.path.exists(path):
        os.makedirs(folder, exist_ok=True)
        tmp = f"{path}.{os.getpid()}.{id(buf)}.tmp"
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    return path
