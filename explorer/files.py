"""Files on disk, written safely: every write goes to a temporary name beside the target and is renamed
onto it (readers see the old file or the new one, never half); JSON rewrites nothing when the content is
unchanged; arrays are ``.npy`` / ``.npz`` without pickle. ``CacheError`` names the fix for a bad file."""
from __future__ import annotations

import hashlib
import json
import os
import uuid
from typing import Callable

import numpy as np


class CacheError(RuntimeError):
    """A cache is missing, stale or corrupt; the message names the fix."""


def file_sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _tmp(path: str) -> str:
    """A temporary name next to ``path`` that no other process or thread uses."""
    return f"{path}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp"


def atomic_write(path: str, write: Callable[[str], None]) -> None:
    """``write(tmp)`` then rename onto ``path``: readers see the old file or the new one, never half."""
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    tmp = _tmp(path)
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def save_npy(path: str, arr: np.ndarray) -> None:
    def write(tmp):
        with open(tmp, "wb") as f:
            np.save(f, arr, allow_pickle=False)
    atomic_write(path, write)


def save_npz(path: str, **arrays) -> None:
    def write(tmp):
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)
    atomic_write(path, write)


def write_json(path: str, obj) -> None:
    """Writes ``obj`` atomically — or nothing when the file already holds exactly this content, so a
    re-run with unchanged inputs leaves files (and their history) untouched."""
    text = json.dumps(obj, indent=1, sort_keys=True)
    if os.path.exists(path):
        with open(path) as f:
            if f.read() == text:
                return

    def write(tmp):
        with open(tmp, "w") as f:
            f.write(text)
    atomic_write(path, write)


def read_json(path: str) -> dict:
    with open(path) as f:
        return json.load(f)


def load_npy(path: str, mmap: bool = True) -> np.ndarray:
    try:
        return np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    except (ValueError, OSError, EOFError) as e:
        raise CacheError(f"{path} is corrupt or truncated ({e}); delete it and rebuild") from e
