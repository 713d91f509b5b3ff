"""Build estimates from measured rates: each phase timed from the build's own progress reports, only the
rows a (resumed) build computed counted, and the estimate the recorded rates times the work, scaled by load."""
import time

import pytest

from explorer import build_rates
from explorer.build_rates import PhaseClock, Rates
from explorer.store import FEATURES, GRAM, SPECTRUM


def test_the_clock_times_each_phase_and_counts_only_the_rows_this_build_computed(tmp_path):
    seen = []
    clock = PhaseClock(lambda *a: seen.append(a), FEATURES)
    time.sleep(0.1)  # the worker starting
    for done in (768, 1024, 1528):  # resumed: 768 of 1528 rows were on disk
        clock(done, 1528, FEATURES)
        time.sleep(0.1)
    clock(0, 1, GRAM)
    clock(1, 1, GRAM)
    clock(0, 1, SPECTRUM)
    time.sleep(0.05)
    rates = Rates(str(tmp_path))
    seconds = clock.finish(rates, {"start": ("start", 1), FEATURES: ("f", 1528 * 10), GRAM: ("gram", 0),
                                   SPECTRUM: ("s", 1000)})
    assert seen[0] == (768, 1528, FEATURES) and seen[-1] == (0, 1, SPECTRUM)  # every report passed on
    assert seconds["start"] == pytest.approx(0.1, abs=0.04) and seconds[FEATURES] == pytest.approx(0.3, abs=0.06)
    assert seconds[SPECTRUM] == pytest.approx(0.05, abs=0.03)
    # the features' rate is per model input this build computed: (1528 − 768) rows × 10 timesteps
    assert rates.rate("f") == pytest.approx(seconds[FEATURES] / (760 * 10), rel=1e-9)
    assert rates.rate("gram") is None  # no work, nothing filed
    assert rates.rate("s") == pytest.approx(seconds[SPECTRUM] / 1000, rel=1e-9)


def test_the_estimate_is_the_median_rates_times_the_work_scaled_by_the_load(tmp_path, monkeypatch):
    rates = Rates(str(tmp_path))
    for seconds in (1.0, 3.0, 2.0):
        rates.record("f", seconds, 1000)  # median 2 ms per input
    rates.record("start", 4.0, 1)
    fallback = {"start": lambda: 99.0, "f": lambda: 99.0, "gram": lambda: 1e-9}
    monkeypatch.setattr(build_rates.os, "cpu_count", lambda: 2)
    monkeypatch.setattr(build_rates, "busy_cores", lambda: 0.0)
    idle = rates.estimate({"start": 1, "f": 5000, "gram": 1e9}, fallback)
    assert idle == pytest.approx(4.0 + 5000 * 0.002 + 1.0)  # the unmeasured gram from its fallback
    monkeypatch.setattr(build_rates, "busy_cores", lambda: 2.0)  # another build holds both cores
    assert rates.estimate({"start": 1, "f": 5000, "gram": 1e9}, fallback) == pytest.approx(2 * idle)
    (tmp_path / "rates.json").write_text("{not json")  # damaged: the fallbacks, never an error
    assert Rates(str(tmp_path)).estimate({"f": 10}, fallback) == pytest.approx(2 * 990.0)
