import json
import os

import numpy as np
import pytest

from explorer import cache


def _rows(data):
    def rows(a, b):
        for s in range(a, b, 100):
            yield slice(s, min(s + 100, b)), data[s:min(s + 100, b)]
    return rows


def test_build_load_stale_and_corrupt(tmp_path):
    data = np.random.default_rng(0).normal(size=(600, 16)).astype(np.float32)
    folder = str(tmp_path / "c")
    exp = {"weights_sha": "aaa", "spec": {"k": 16}}
    arr = cache.build(folder, exp, 600, _rows(data))
    assert np.allclose(arr, data, atol=1e-2) and arr.dtype == np.float16
    assert isinstance(cache.load(folder, exp), np.memmap)
    with pytest.raises(cache.CacheError, match="weights_sha"):
        cache.load(folder, {**exp, "weights_sha": "bbb"})
    path = os.path.join(folder, "features.npy")
    raw = open(path, "rb").read()
    open(path, "wb").write(raw[: len(raw) // 2])  # truncated
    with pytest.raises(cache.CacheError, match="corrupt or truncated"):
        cache.load(folder, exp)
    open(os.path.join(folder, "manifest.json"), "w").write("{oops")
    with pytest.raises(cache.CacheError, match="corrupt"):
        cache.load(folder, exp)


def test_interrupted_build_resumes_to_identical_result(tmp_path):
    data = np.random.default_rng(1).normal(size=(700, 8)).astype(np.float32)
    exp = {"weights_sha": "x"}
    calls = []

    def progress(done, total):
        calls.append(done)
        if len(calls) == 2:
            raise KeyboardInterrupt

    folder = str(tmp_path / "r")
    with pytest.raises(KeyboardInterrupt):
        cache.build(folder, exp, 700, _rows(data), progress)
    with pytest.raises(cache.CacheError, match="incomplete"):
        cache.load(folder, exp)
    assert sorted(f for f in os.listdir(folder) if f.startswith("shard")) == ["shard_00000.npy", "shard_00001.npy"]
    resumed = []
    arr = cache.build(folder, exp, 700, _rows(data), lambda d, t: resumed.append(d))
    assert resumed == [700]  # only the missing shard was computed
    fresh = cache.build(str(tmp_path / "f"), exp, 700, _rows(data))
    assert np.array_equal(arr, fresh)
    assert json.load(open(os.path.join(folder, "manifest.json")))["complete"] is True
