"""On-disk feature caches: one folder per feature set with ``manifest.json`` and
``features.npy`` (float16, loaded memory-mapped with ``allow_pickle=False``).

Writes are atomic (temp file, then ``os.replace``) and resumable: rows are written in shards
``shard_XXXXX.npy`` that survive an interruption, then joined into ``features.npy``. A cache
whose manifest does not match the model/data/spec it is asked for is refused with a message
naming the mismatch and the fix."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from typing import Callable, Iterator

import numpy as np

FORMAT_VERSION = 1
SHARD_ROWS = 256


class CacheError(RuntimeError):
    """A cache is missing, stale or corrupt; the message names the fix."""


def file_sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def save_npy(path: str, arr: np.ndarray) -> None:
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        np.save(f, arr, allow_pickle=False)
    os.replace(tmp, path)


def write_json(path: str, obj) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=1, sort_keys=True)
    os.replace(tmp, path)


def load_npy(path: str, mmap: bool = True) -> np.ndarray:
    try:
        return np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    except (ValueError, OSError, EOFError) as e:
        raise CacheError(f"{path} is corrupt or truncated ({e}); delete it and rebuild") from e


def build(folder: str, expected: dict, n: int, rows: Callable[[int, int], Iterator[tuple[slice, np.ndarray]]],
          progress: Callable[[int, int], None] | None = None) -> np.ndarray:
    """Build (or resume) the cache in ``folder``. ``rows(start, stop)`` yields (slice, features)
    for rows start..stop-1; every SHARD_ROWS rows are saved as one shard. Returns the array."""
    os.makedirs(folder, exist_ok=True)
    manifest_path = os.path.join(folder, "manifest.json")
    if os.path.exists(manifest_path):
        old = json.load(open(manifest_path))
        if {k: old.get(k) for k in expected} != expected:  # a different build: start over
            shutil.rmtree(folder)
            os.makedirs(folder)
    write_json(manifest_path, {**expected, "format_version": FORMAT_VERSION, "n": n, "complete": False})
    shards = []
    for i, start in enumerate(range(0, n, SHARD_ROWS)):
        stop = min(start + SHARD_ROWS, n)
        path = os.path.join(folder, f"shard_{i:05d}.npy")
        shards.append(path)
        if os.path.exists(path):
            continue
        block = None
        for sl, phi in rows(start, stop):
            if block is None:
                block = np.empty((stop - start, phi.shape[1]), np.float16)
            block[sl.start - start:sl.stop - start] = phi
        save_npy(path, block)
        if progress:
            progress(stop, n)
    arr = np.concatenate([np.load(p, allow_pickle=False) for p in shards])
    save_npy(os.path.join(folder, "features.npy"), arr)
    write_json(manifest_path, {**expected, "format_version": FORMAT_VERSION, "n": n, "complete": True,
                               "k": int(arr.shape[1]), "sha256": file_sha256(os.path.join(folder, "features.npy")),
                               "created": time.strftime("%Y-%m-%dT%H:%M:%S")})
    for p in shards:
        os.remove(p)
    return load(folder, expected)


def load(folder: str, expected: dict, verify: bool = True) -> np.ndarray:
    """The cached features, memory-mapped, after checking the manifest against ``expected``."""
    manifest_path = os.path.join(folder, "manifest.json")
    if not os.path.exists(manifest_path):
        raise CacheError(f"no feature cache at {folder}; build it with `python -m precompute features`")
    try:
        m = json.load(open(manifest_path))
    except json.JSONDecodeError as e:
        raise CacheError(f"{manifest_path} is corrupt; delete {folder} and rebuild") from e
    if m.get("format_version") != FORMAT_VERSION:
        raise CacheError(f"{folder} has format {m.get('format_version')}, expected {FORMAT_VERSION}; rebuild it")
    if not m.get("complete"):
        raise CacheError(f"{folder} is incomplete (interrupted build); run `python -m precompute features` to resume")
    for k, v in expected.items():
        if m.get(k) != v:
            raise CacheError(f"stale cache {folder}: {k} is {m.get(k)!r} but the current one is {v!r}; "
                             f"rebuild with `python -m precompute features`")
    path = os.path.join(folder, "features.npy")
    if verify and (not os.path.exists(path) or file_sha256(path) != m.get("sha256")):
        raise CacheError(f"{path} does not match its manifest checksum (corrupt or truncated); delete {folder} and rebuild")
    arr = load_npy(path)
    if arr.shape[0] != m["n"]:
        raise CacheError(f"{path} has {arr.shape[0]} rows, manifest says {m['n']}; rebuild")
    return arr
