"""A LoRA's training images with their captions, in the conventions diffusers' training scripts read:

- ``metadata.jsonl`` (the ImageFolder convention): one JSON object per line with ``file_name`` (relative to
  the folder) and ``text``; an optional ``contributor`` (or ``artist`` / ``author``) names who made it;
- or a ``.txt`` sidecar beside each image (``cat.png`` + ``cat.txt``) holding its caption.

Contributors, when no column names them, are the images' sub-folders (``root/<contributor>/cat.png``);
without either everyone is "unknown". Every image is a training image (the LoRA saw them all: no
validation split). ``meta``: ``caption``, ``author`` and ``style`` (both the contributor, so the credit
panel groups by it), ``files``.
"""
from __future__ import annotations

import json
import os

import numpy as np
import torch

from .core import IMAGE_EXTENSIONS, Dataset, ImageError, open_image, to_model_tensor

CONTRIBUTOR_COLUMNS = ("contributor", "artist", "author")
UNKNOWN = "unknown"


def _from_metadata(root: str) -> list[tuple[str, str, str | None]]:
    rows = []
    with open(os.path.join(root, "metadata.jsonl")) as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except ValueError as e:
                raise ImageError(f"metadata.jsonl line {n} is not JSON ({e})") from e
            if "file_name" not in row:
                raise ImageError(f"metadata.jsonl line {n} has no file_name")
            text = row.get("text")
            if not isinstance(text, str) or not text.strip():
                raise ImageError(f"{row['file_name']} has no caption: give it a \"text\" in metadata.jsonl")
            who = next((row[c] for c in CONTRIBUTOR_COLUMNS if row.get(c)), None)
            rows.append((row["file_name"], text.strip(), who))
    return rows


def _from_sidecars(root: str) -> list[tuple[str, str, str | None]]:
    rows = []
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for fname in sorted(files):
            if not fname.lower().endswith(IMAGE_EXTENSIONS):
                continue
            rel = os.path.relpath(os.path.join(folder, fname), root)
            txt = os.path.splitext(os.path.join(folder, fname))[0] + ".txt"
            text = open(txt).read().strip() if os.path.isfile(txt) else ""
            if not text:
                raise ImageError(f"{rel} has no caption: write it in {os.path.splitext(rel)[0]}.txt or in "
                                 f"metadata.jsonl")
            rows.append((rel, text, None))
    return rows


def load_captioned_folder(root: str, resolution: int, min_images: int = 2) -> Dataset:
    """The captioned images under ``root`` as RGB at ``resolution`` (area-averaged, alpha on black)."""
    if not os.path.isdir(root):
        raise FileNotFoundError(f"training-image folder {root!r} does not exist")
    has_metadata = os.path.isfile(os.path.join(root, "metadata.jsonl"))
    rows = _from_metadata(root) if has_metadata else _from_sidecars(root)
    if len(rows) < min_images:
        raise ImageError(f"found {len(rows)} captioned images under {root!r}; attribution needs at least {min_images}")
    xs, captions, people = [], [], []
    for rel, text, who in rows:
        path = os.path.join(root, rel)
        if not os.path.isfile(path):
            raise ImageError(f"metadata.jsonl names {rel}, which is not in {root!r}")
        try:
            xs.append(to_model_tensor(open_image(path), 3, resolution))
        except ImageError as e:
            raise ImageError(f"{rel}: {e}") from e
        sub = os.path.dirname(rel).split(os.sep)[0]
        people.append(str(who) if who else sub or UNKNOWN)
        captions.append(text)
    names = sorted(set(people))
    labels = torch.tensor([names.index(p) for p in people])
    n = len(xs)
    return Dataset(os.path.basename(os.path.normpath(root)), torch.stack(xs), labels, names, np.arange(n),
                   np.arange(0), {"caption": captions, "author": people, "style": people,
                                  "files": [r for r, _, _ in rows]})
