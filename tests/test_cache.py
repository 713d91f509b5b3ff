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
    data[5] *= 1e-6  # tiny gradients keep float16's relative precision (per-row scale)
    feats = cache.build(folder, exp, 600, _rows(data))
    assert np.allclose(feats.dense(), data, rtol=2e-3, atol=0) and feats.rows.dtype == np.float16
    assert isinstance(cache.load(folder, exp).rows, np.memmap)
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
        if len(calls) == 3:  # where the build starts (0), then two shards
            raise KeyboardInterrupt

    folder = str(tmp_path / "r")
    with pytest.raises(KeyboardInterrupt):
        cache.build(folder, exp, 700, _rows(data), progress)
    with pytest.raises(cache.CacheError, match="incomplete"):
        cache.load(folder, exp)
    assert sorted(f for f in os.listdir(folder) if f.startswith("shard")) == ["shard_00000.npy", "shard_00001.npy"]
    resumed = []
    arr = cache.build(folder, exp, 700, _rows(data), lambda d, t: resumed.append(d))
    assert resumed == [512, 700]  # it starts where the shards on disk end; only the missing one was computed
    fresh = cache.build(str(tmp_path / "f"), exp, 700, _rows(data))
    assert np.array_equal(arr.rows, fresh.rows) and np.array_equal(arr.scale, fresh.scale)
    for name in ("features.npy", "scale.npy"):  # deterministic: a rebuild writes the same bytes
        assert open(os.path.join(folder, name), "rb").read() == open(tmp_path / "f" / name, "rb").read()
    assert json.load(open(os.path.join(folder, "manifest.json")))["complete"] is True


def test_block_wise_features_equal_dense_math(monkeypatch):
    """Catches a wrong block in the streamed Gram / cross products used by the exact kernel."""
    from explorer.attribution import kernel
    rng = np.random.default_rng(2)
    rows, scale, q = rng.normal(size=(50, 30)).astype(np.float16), rng.random(50) + 0.5, rng.normal(size=(3, 30))
    dense = rows.astype(np.float64) * scale[:, None].astype(np.float32)
    monkeypatch.setattr(kernel, "DENSE_LIMIT", 10)  # force the block-by-block path
    f = kernel.Features(rows, scale, block=7)
    assert f.block == 7 and np.abs(f.gram() - dense @ dense.T).max() < 1e-4
    assert np.allclose(f.cross(q), q @ dense.T, rtol=1e-4, atol=1e-4)
    assert np.abs(f.outer() - dense.T @ dense).max() < 1e-4 and np.allclose(f.norms(), np.linalg.norm(dense, axis=1))


def test_two_builders_of_one_cache_both_finish_with_the_same_features(tmp_path):
    """The app's warm-up and a ``precompute features`` run (or a second server) may build the same set at
    once: neither may fail when the other merges and removes the shards first."""
    import threading
    import time

    data = np.random.default_rng(2).normal(size=(1300, 8)).astype(np.float32)
    exp = {"weights_sha": "ccc", "spec": {"k": 8}}
    folder, results, errors = str(tmp_path / "shared"), [], []

    def slow_rows(delay):
        def rows(a, b):
            time.sleep(delay)
            yield slice(a, b), data[a:b]
        return rows

    def builder(delay):
        try:
            results.append(cache.build(folder, exp, 1300, slow_rows(delay)).dense())
        except Exception as e:  # noqa: BLE001 - the test reports it
            errors.append(e)
    threads = [threading.Thread(target=builder, args=(d,)) for d in (0.01, 0.05)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert not errors, errors
    assert len(results) == 2 and np.array_equal(results[0], results[1])
    assert np.allclose(results[0], data, rtol=2e-3)
