"""Builds outside the serving process: the worker writes the same bytes as an in-process build, streams its
progress, runs at a lower CPU priority, and a stopped build leaves its shards for the next one to resume."""
import os
import time

import numpy as np
import pytest

from explorer.attribution.timesteps import TimestepStrategy

ST = TimestepStrategy("uniform", 1)


def _engine(tmp_path, name, worker):
    from explorer.engine import Engine
    return Engine("digits", "countsketch", 1024, cache_dir=str(tmp_path / name), build_in_worker=worker)


def test_a_worker_build_equals_the_in_process_build(tmp_path, monkeypatch):
    here, there = _engine(tmp_path, "here", False), _engine(tmp_path, "there", True)
    from explorer.attribution.kernel import Kernel
    from explorer.store import FEATURES, GRAM, SPECTRUM
    seen = []
    t = time.perf_counter()
    there.build("dtrak", ST, lambda done, total, phase: seen.append((done, total, phase)))
    wall = time.perf_counter() - t
    here.build("dtrak", ST)
    a = there.store.gradients(there.task.paths.model, "square", ST, build=False)
    b = here.store.gradients(here.task.paths.model, "square", ST, build=False)
    assert a.sha == b.sha and np.array_equal(np.asarray(a.rows), np.asarray(b.rows))
    # progress streamed while it ran, phase by phase, each with its own fraction; the build ends with the kernel
    phases = [p for _, _, p in seen]
    assert seen[-1] == (1, 1, SPECTRUM) and phases == sorted(phases, key=[FEATURES, GRAM, SPECTRUM].index)
    rows = [d for d, t, p in seen if p == FEATURES]
    assert len(set(rows)) > 2 and rows == sorted(rows) and all(t == 1528 for d, t, p in seen if p == FEATURES and d)
    # the worker stored the eigenpairs: the serving process reads them and scores as a fresh decomposition
    got = there.store.kernel(("test",), a)
    q = np.asarray(a.rows[:3], np.float64)
    np.testing.assert_allclose(got.scores(q, 0.1), Kernel(a).scores(q, 0.1), rtol=1e-6, atol=1e-9)
    assert any(f.endswith(".v.npy") for f in os.listdir(os.path.join(there.store.cache_dir, "spectrum")))
    # the serving process filed the phases it saw (worker start included): they add up to the build's wall time,
    # and the next estimate for this model is made of them (S = 2: twice the gradients), not of a probe
    from explorer import build_rates
    rates = build_rates.Rates(there.store.cache_dir)
    n, k = 1528, 1024
    start, per_input, spectrum = rates.rate("start"), rates.rate("features/digits/square/countsketch1024"), \
        rates.rate("spectrum/primal")
    assert 0.7 * wall < start + per_input * n + spectrum * k ** 3 <= wall
    monkeypatch.setattr(build_rates, "busy_cores", lambda: 0.0)
    monkeypatch.setattr(there.store, "_probe_rate", lambda *a: pytest.fail("the measured rates were not used"))
    assert there.estimate_seconds("dtrak", TimestepStrategy("uniform", 2)) == pytest.approx(
        (start + per_input * n * 2 + spectrum * k ** 3) * build_rates.load_factor(2))


def test_the_worker_runs_at_lower_priority(monkeypatch):
    from explorer import build_worker
    seen = {}
    monkeypatch.setattr(build_worker.os, "nice", lambda inc: seen.setdefault("nice", inc))
    monkeypatch.setattr(build_worker, "FeatureStore", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("stop here")))
    order = '{"dataset": "digits", "root": "x", "projector": "countsketch", "k": 8, "seed": 0, "cache_dir": "c", ' \
            '"device": "cpu", "model_dir": "m", "output_fn": "square", "strategy": {"kind": "uniform", "S": 1, ' \
            '"seed": 0, "ts": []}}'
    monkeypatch.setattr(build_worker, "open_task", lambda *a: None)
    assert build_worker.main(order) == 1 and seen["nice"] == build_worker.NICE > 0


def test_a_stopped_worker_build_resumes_from_its_shards(tmp_path):
    from explorer.store import BuildStopped
    eng = _engine(tmp_path, "stop", True)
    seen = []
    with pytest.raises(BuildStopped):
        eng.build("trak", ST, lambda done, total, phase: seen.append(done),
                  left=lambda: len(seen) > 0 and seen[-1] >= 512)
    time.sleep(1.5)  # the worker is terminated within 0.2 s of the last caller leaving
    folder = eng.store._folders(eng.task.paths.model, eng.store.spec("simple", ST))[1]
    shards = [f for f in os.listdir(folder) if f.startswith("shard_")]
    assert 2 <= len(shards) < 6, shards  # some of the 6 shards of 256 images were written, not all
    resumed = []
    eng.build("trak", ST, lambda done, total, phase: resumed.append(done) if total > 1 else None)
    # the next build starts where the shards on disk end and computes only the shards still missing
    assert resumed[0] == 256 * len(shards) and min(resumed) == resumed[0] and max(resumed) > resumed[0]
    fresh = _engine(tmp_path, "fresh", False)
    fresh.build("trak", ST)
    assert eng.store.gradients(eng.task.paths.model, "simple", ST, build=False).sha == \
        fresh.store.gradients(fresh.task.paths.model, "simple", ST, build=False).sha
