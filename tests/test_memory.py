"""The memory budget: least recently used entries go first, the newest never, and an evicted feature set
comes back from disk with the same answers."""
import numpy as np

from explorer.memory import BUDGET, Budget, Held


def test_least_recently_used_entries_are_evicted_across_caches():
    budget = Budget(limit_bytes=3000)
    a, b = Held(budget), Held(budget)
    a["x"] = np.zeros(100)  # 800 bytes each
    b["y"] = np.zeros(100)
    a["z"] = np.zeros(100)
    assert budget.used == 2400
    a["x"]  # used again: now y is the oldest
    b["w"] = np.zeros(100)
    assert set(a) == {"x", "z"} and set(b) == {"w"} and budget.used == 2400
    big = np.zeros(1000)  # over the whole budget alone: everything else goes, it stays
    a["big"] = big
    assert set(a) == {"big"} and not b and budget.used == 8000
    del a["big"]
    assert budget.used == 0


def test_an_evicted_feature_set_is_reloaded_with_the_same_scores():
    from explorer.attribution.timesteps import TimestepStrategy
    from explorer.engine import Engine
    eng = Engine("digits")
    st = TimestepStrategy("uniform", 10)
    q = [eng.task.train_query(5)]
    before = eng.scores(q, "dtrak", st, 0.1)
    limit, BUDGET.limit = BUDGET.limit, 1  # every new entry pushes out all the others
    try:
        eng.scores(q, "trak", st, 0.1)
        assert len(eng.store._features) + len(eng.store._kernels) <= 2
        again = eng.scores(q, "dtrak", st, 0.1)
    finally:
        BUDGET.limit = limit
    np.testing.assert_allclose(again, before)
    assert np.argmax(before) == 5  # a training image finds itself
