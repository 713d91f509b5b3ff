"""On-disk feature caches: one folder per feature set with ``manifest.json``, ``features.npy``
(float16 rows scaled to max |entry| = 1, loaded memory-mapped with ``allow_pickle=False``) and
``scale.npy`` (each row's float32 scale), so φ_i = scale_i · row_i keeps float16's relative
precision whatever the gradients' magnitude. ``load`` returns an ``attribution.kernel.Features``.

Writes are atomic (temp file, then ``os.replace``) and resumable: rows are written in shards
``shard_XXXXX.npy`` that survive an interruption, then joined into ``features.npy``. A cache
whose manifest does not match the model/data/spec it is asked for is refused with a message
naming the mismatch and the fix."""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import time
from typing import Callable, Iterator

import numpy as np

from .attribution.kernel import Features
from .files import CacheError, atomic_write, file_sha256, load_npy, read_json, save_npy, write_json

FORMAT_VERSION = 2  # 2: per-row scale; sketches of different k independent
SHARD_ROWS = 256


def begin(folder: str, expected: dict, n: int) -> None:
    """Opens (or resumes) a build in ``folder``: a cache of another build is cleared, and the manifest
    says incomplete until ``build`` merges the shards. Shards may then be written by other processes."""
    os.makedirs(folder, exist_ok=True)
    manifest_path = os.path.join(folder, "manifest.json")
    if os.path.exists(manifest_path):
        try:
            old = read_json(manifest_path)
        except json.JSONDecodeError:
            old = {}
        if {k: old.get(k) for k in expected} != expected or old.get("format_version") != FORMAT_VERSION:
            shutil.rmtree(folder)  # a different build: start over
            os.makedirs(folder)
        elif old.get("complete"):
            return
    write_json(manifest_path, {**expected, "format_version": FORMAT_VERSION, "n": n, "complete": False})


def shard_path(folder: str, i: int) -> str:
    """Shard i holds rows i·SHARD_ROWS … (i+1)·SHARD_ROWS − 1."""
    return os.path.join(folder, f"shard_{i:05d}.npy")


def write_shard(folder: str, i: int, n: int, rows: Callable[[int, int], Iterator[tuple[slice, np.ndarray]]]) -> bool:
    """Computes shard i (``rows(start, stop)`` yields (slice, features)) and saves it atomically as scaled
    float16 rows and their float32 scales; an existing shard is kept (resume, or another worker's).
    Returns whether it computed the shard."""
    start, stop = i * SHARD_ROWS, min((i + 1) * SHARD_ROWS, n)
    if os.path.exists(shard_path(folder, i)):
        return False
    block = None
    for sl, phi in rows(start, stop):
        if block is None:
            block = np.empty((stop - start, phi.shape[1]), np.float32)
        block[sl.start - start:sl.stop - start] = phi
    scale = np.abs(block).max(1)
    scale[scale == 0] = 1
    save_npy(shard_path(folder, i), np.concatenate([(block / scale[:, None]).astype(np.float16),
                                                    scale.astype(np.float32).view(np.float16).reshape(-1, 2)], 1))
    return True


def n_shards(n: int) -> int:
    return (n + SHARD_ROWS - 1) // SHARD_ROWS


def build(folder: str, expected: dict, n: int, rows: Callable[[int, int], Iterator[tuple[slice, np.ndarray]]],
          progress: Callable[[int, int], None] | None = None) -> Features:
    """Build (or resume) the cache in ``folder``: every missing shard is computed here (shards written
    by other workers are kept), then the shards are copied into one memory-mapped file, never all in
    memory, and the manifest records the checksums."""
    begin(folder, expected, n)
    shards = [shard_path(folder, i) for i in range(n_shards(n))]
    if progress:  # where the build starts: a resumed one past the rows already on disk
        progress(sum(min(SHARD_ROWS, n - i * SHARD_ROWS) for i, s in enumerate(shards) if os.path.exists(s)), n)
    for i in range(len(shards)):
        if write_shard(folder, i, n, rows) and progress:  # progress reports the rows computed here
            progress(min((i + 1) * SHARD_ROWS, n), n)
    try:
        return _merge(folder, expected, n, shards)
    except FileNotFoundError:  # another process (the app, a precompute run) merged these shards first
        return load(folder, expected)


def _merge(folder: str, expected: dict, n: int, shards: list[str]) -> Features:
    """The shards copied into one memory-mapped ``features.npy`` (+ ``scale.npy``), the manifest completed
    with their checksums, the shards removed."""
    manifest_path = os.path.join(folder, "manifest.json")
    k = np.load(shards[0], mmap_mode="r").shape[1] - 2
    out_path, scale = os.path.join(folder, "features.npy"), np.empty(n, np.float32)

    def write(tmp):
        out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float16, shape=(n, k))
        for i, p in enumerate(shards):
            shard = np.load(p, allow_pickle=False)
            out[i * SHARD_ROWS:i * SHARD_ROWS + len(shard)] = shard[:, :k]
            scale[i * SHARD_ROWS:i * SHARD_ROWS + len(shard)] = np.ascontiguousarray(shard[:, k:]).view(np.float32)[:, 0]
        out.flush()
        del out
    atomic_write(out_path, write)
    save_npy(os.path.join(folder, "scale.npy"), scale)
    write_json(manifest_path, {**expected, "format_version": FORMAT_VERSION, "n": n, "complete": True, "k": int(k),
                               "sha256": file_sha256(out_path), "scale_sha256": file_sha256(os.path.join(folder, "scale.npy")),
                               "created": time.strftime("%Y-%m-%dT%H:%M:%S")})
    for p in shards:
        with contextlib.suppress(FileNotFoundError):
            os.remove(p)
    return load(folder, expected)


def load(folder: str, expected: dict, verify: bool = True) -> Features:
    """The cached features, memory-mapped, after checking the manifest against ``expected``."""
    manifest_path = os.path.join(folder, "manifest.json")
    if not os.path.exists(manifest_path):
        raise CacheError(f"no feature cache at {folder}; build it with `python -m precompute features`")
    try:
        m = read_json(manifest_path)
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
    path, scale_path = os.path.join(folder, "features.npy"), os.path.join(folder, "scale.npy")
    for p, key in ((path, "sha256"), (scale_path, "scale_sha256")):
        if verify and (not os.path.exists(p) or file_sha256(p) != m.get(key)):
            raise CacheError(f"{p} does not match its manifest checksum (corrupt or truncated); delete {folder} and rebuild")
    arr, scale = load_npy(path), load_npy(scale_path, mmap=False)
    if arr.shape[0] != m["n"] or scale.shape != (m["n"],):
        raise CacheError(f"{path} has {arr.shape[0]} rows, manifest says {m['n']}; rebuild")
    return Features(arr, scale, sha=m["sha256"])
