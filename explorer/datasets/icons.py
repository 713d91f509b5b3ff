"""The ``icons`` dataset: 32×32 desktop icons drawn by two design teams, read from Debian's installed icon
themes (nothing is redistributed here) — our stand-in for the paper's two-style ArtBench-2.

- KDE's Oxygen (``oxygen-icon-theme``, LGPL-3+), ``/usr/share/icons/oxygen/base/32x32/<category>/``
- Tango (``tango-icon-theme``, public domain), ``/usr/share/icons/Tango/32x32/<category>/``

Symlinks and byte-identical files are kept once; only true 32×32 images count (animation strips are
skipped). Each icon is composited over one fixed background (``BACKGROUND``) and becomes RGB in [-1, 1].
The class label is the freedesktop category (actions, apps, …); ``meta["style"]`` holds each image's
theme and ``meta["files"]`` its path. The split is stratified by (category, theme).

Known answers: Oxygen also ships most icons at 48×48 under the same name. Downscaled to 32×32, the
48×48 drawing is a near-duplicate of a training image that nobody planted (``known_answers``).

    sudo apt-get install oxygen-icon-theme tango-icon-theme
"""
from __future__ import annotations

import hashlib
import os

import numpy as np
import torch
from PIL import Image

from .core import Dataset, stratified_split

THEMES = {"oxygen": "oxygen/base/{size}x{size}", "tango": "Tango/{size}x{size}"}
ICON_ROOT = os.environ.get("EXPLORER_ICON_ROOT", "/usr/share/icons")
BACKGROUND = (255, 255, 255)  # every icon over white, the way a file manager shows it
INSTALL = "sudo apt-get install oxygen-icon-theme tango-icon-theme"


def icon_tensor(path: str, size: int = 32) -> torch.Tensor:
    """An icon file → (3, size, size) in [-1, 1]: composited over ``BACKGROUND``, area-downscaled if larger."""
    img = Image.open(path).convert("RGBA")
    bg = Image.new("RGBA", img.size, BACKGROUND + (255,))
    img = Image.alpha_composite(bg, img).convert("RGB")
    if img.size != (size, size):
        img = img.resize((size, size), Image.Resampling.BOX)
    return torch.from_numpy(np.asarray(img, np.float32).transpose(2, 0, 1) / 127.5 - 1.0)


def missing_themes(root: str | None = None) -> str | None:
    """What to install when a theme's 32×32 folder is absent (for the server's log and the CLI), else None."""
    root = root or ICON_ROOT
    absent = [t for t, sub in THEMES.items() if not os.path.isdir(os.path.join(root, sub.format(size=32)))]
    return f"the icons dataset needs the {' and '.join(absent)} icon theme(s): {INSTALL}" if absent else None


def icon_files(root: str = ICON_ROOT) -> list[tuple[str, str, str]]:
    """(theme, category, path) of every unique 32×32 icon, sorted (stable dataset indices)."""
    out, seen = [], set()
    for theme, sub in THEMES.items():
        base = os.path.join(root, sub.format(size=32))
        if not os.path.isdir(base):
            continue
        for category in sorted(set(os.listdir(base)) - {"animations"}):  # spinner strips, not icons
            folder = os.path.join(base, category)
            for name in sorted(os.listdir(folder)) if os.path.isdir(folder) else []:
                path = os.path.join(folder, name)
                if os.path.islink(path) or not name.endswith(".png"):
                    continue
                digest = hashlib.sha1(open(path, "rb").read()).hexdigest()
                if digest in seen:
                    continue
                with Image.open(path) as im:
                    if im.size != (32, 32):
                        continue
                seen.add(digest)
                out.append((theme, category, path))
    return out


def load_icons(root: str | None = None, val_fraction: float = 0.15, seed: int = 0) -> Dataset:
    """The icons ``Dataset``; FileNotFoundError naming the packages to install when they are absent."""
    root = root or ICON_ROOT
    if why := missing_themes(root):
        raise FileNotFoundError(f"{why} (looked under {root})")
    files = icon_files(root)
    themes = sorted({t for t, _, _ in files})
    classes = sorted({c for _, c, _ in files})
    labels = torch.tensor([classes.index(c) for _, c, _ in files])
    strata = np.array([classes.index(c) * len(THEMES) + themes.index(t) for t, c, _ in files])
    train_idx, val_idx = stratified_split(strata, val_fraction, seed)
    x = torch.stack([icon_tensor(p) for _, _, p in files])
    meta = {"style": [t for t, _, _ in files], "files": [os.path.relpath(p, root) for _, _, p in files]}
    return Dataset("icons", x, labels, classes, train_idx, val_idx, meta)


def known_answers(ds, root: str = ICON_ROOT) -> list[tuple[int, str]]:
    """(training position, path of the 48×48 drawing) for every Oxygen training icon that also ships at
    48×48 under the same category and name: the downscaled 48×48 icon should find its 32×32 original."""
    out = []
    for pos, i in enumerate(ds.train_idx):
        rel = ds.meta["files"][int(i)]
        if ds.meta["style"][int(i)] != "oxygen":
            continue
        big = os.path.join(root, rel.replace("32x32", "48x48", 1))
        if os.path.exists(big):
            out.append((pos, big))
    return out
