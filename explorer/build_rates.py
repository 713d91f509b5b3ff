"""Measured build rates on this machine: what a feature build's estimate is made of.

A build has four phases, each with its own unit of work:

    start     the worker process starting and loading its task           1 per build
    features  per-sample gradients of the training set                   n·S model inputs (per model)
    gram      Φ Φᵀ of the stored features (n < k)                        n²·k multiply-adds
    spectrum  eigendecomposition of the kernel                           r³, r = min(n, k)

``PhaseClock`` wraps a build's progress reports and, when the build ends, files each phase's seconds per
unit in ``rates.json`` of the feature cache (the last ``KEEP`` builds per key); ``Rates.estimate`` is the
sum over phases of units × the median rate, with fallbacks measured on the spot when nothing was built
here yet, scaled by the machine's current load:

    seconds ≈ (Σ_phase units_phase · rate_phase) · max(1, (busy cores + threads) / cpus)
"""
from __future__ import annotations

import os
import threading
import time
from typing import Callable

import numpy as np

from .files import read_json, write_json

KEEP = 8  # recent builds per key whose median rate is used
START_S = 4.0  # seconds to start a build worker before any was measured (python, torch, the task)
_LOCK = threading.Lock()


def features_key(dataset: str, output_fn: str, projection: str) -> str:
    return f"features/{dataset}/{output_fn}/{projection}"


class Rates:
    def __init__(self, cache_dir: str):
        self.path = os.path.join(cache_dir, "rates.json")

    def _read(self) -> dict:
        try:
            return read_json(self.path) if os.path.exists(self.path) else {}
        except (OSError, ValueError):
            return {}  # a damaged file is rebuilt by the next build

    def rate(self, key: str, data: dict | None = None) -> float | None:
        """Median seconds per unit of the recent builds of ``key`` (from ``data``, the file read once), or None."""
        seen = (self._read() if data is None else data).get(key)
        return float(np.median(seen)) if seen else None

    def record(self, key: str, seconds: float, units: float) -> None:
        if units <= 0 or seconds <= 0:
            return
        with _LOCK:
            data = self._read()
            data[key] = (data.get(key, []) + [seconds / units])[-KEEP:]
            write_json(self.path, data)

    def estimate(self, units: dict[str, float], fallback: dict[str, Callable[[], float]], threads: int = 2) -> float:
        """Σ units[key] · rate(key) (``fallback[key]()`` where nothing was measured), scaled by the load."""
        data = self._read()
        total = sum(u * (self.rate(key, data) or fallback[key]()) for key, u in units.items() if u)
        return total * load_factor(threads)


def busy_cores(interval: float = 0.1) -> float:
    """Cores busy right now (from two reads of /proc/stat ``interval`` s apart; the 1-minute load average
    lags a build that just ended by a minute, which doubled estimates right after one)."""
    def read():
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:]]
        return sum(v), v[3] + v[4]  # total, idle + iowait
    try:
        (t0, i0), _, (t1, i1) = read(), time.sleep(interval), read()
    except (OSError, ValueError, IndexError):
        return 0.0
    return (os.cpu_count() or 1) * (1 - (i1 - i0) / max(t1 - t0, 1))


def load_factor(threads: int) -> float:
    """How much slower a build of ``threads`` threads runs now than on an idle machine."""
    cpus = os.cpu_count() or 1
    return max(1.0, (busy_cores() + min(threads, cpus)) / cpus)


_MEASURED: dict[str, float] = {}


def gram_rate() -> float:
    """Seconds per multiply-add of a float32 Φ Φᵀ on this machine (timed once, 512 × 8192)."""
    if "gram" not in _MEASURED:
        a = np.random.default_rng(0).standard_normal((512, 8192), dtype=np.float32)
        a @ a.T
        t = time.perf_counter()
        a @ a.T
        _MEASURED["gram"] = (time.perf_counter() - t) / (512 * 512 * 8192)
    return _MEASURED["gram"]


def spectrum_rate() -> float:
    """Seconds per r³ of a float64 symmetric eigendecomposition on this machine (timed once, r = 400)."""
    if "spectrum" not in _MEASURED:
        a = np.random.default_rng(0).standard_normal((400, 400))
        a = a @ a.T
        np.linalg.eigh(a)
        t = time.perf_counter()
        np.linalg.eigh(a)
        _MEASURED["spectrum"] = (time.perf_counter() - t) / 400 ** 3
    return _MEASURED["spectrum"]


class PhaseClock:
    """Wraps a build's ``report(done, total, phase)``: notes when each phase starts and how many feature
    rows it computed (a resumed build starts past 0), and on ``finish`` files the measured rates."""

    def __init__(self, report, features_phase: str):
        self.report, self.features_phase = report, features_phase
        self.t0 = time.perf_counter()
        self.starts: dict[str, float] = {}
        self.rows: list[int] = []  # first and last ``done`` of the features phase, and its total

    def __call__(self, done: int, total: int, phase: str) -> None:
        self.starts.setdefault(phase, time.perf_counter())
        if phase == self.features_phase:
            self.rows = [self.rows[0] if self.rows else done, done, total]
        self.report(done, total, phase)

    def finish(self, rates: Rates, work: dict[str, tuple[str, float]]) -> dict[str, float]:
        """Files each phase's seconds per unit; ``work``: phase → (rates key, units of the whole phase), the
        features' scaled by the share of rows this build computed. Returns the seconds per phase."""
        end = time.perf_counter()
        order = sorted(self.starts.items(), key=lambda kv: kv[1])
        seconds = {"start": (order[0][1] if order else end) - self.t0}
        for (phase, t), nxt in zip(order, [t for _, t in order[1:]] + [end]):
            seconds[phase] = nxt - t
        for phase, (key, units) in work.items():
            if phase == self.features_phase:
                units *= (self.rows[1] - self.rows[0]) / self.rows[2] if self.rows else 0
            if phase in seconds:
                rates.record(key, seconds[phase], units)
        return seconds
