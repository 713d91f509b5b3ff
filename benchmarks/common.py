"""Helpers shared by the benchmark scripts (run them from the repo root with ``PYTHONPATH=.``)."""
import json
import time

import numpy as np


def per_second(fn, n: int, reps: int = 2) -> float:
    """Items per second of ``fn`` (which handles n items), after one warm-up call."""
    fn()
    t = time.perf_counter()
    for _ in range(reps):
        fn()
    return n * reps / (time.perf_counter() - t)


def percentiles(xs) -> dict:
    xs = np.asarray(xs)
    return {"n": len(xs), "p50": float(np.percentile(xs, 50)), "p95": float(np.percentile(xs, 95)),
            "p99": float(np.percentile(xs, 99)), "max": float(xs.max())}


def report(result: dict, out: str | None) -> None:
    """Prints the result and records it as JSON when ``out`` is given."""
    print(json.dumps(result, indent=1))
    if out:
        with open(out, "w") as f:
            json.dump(result, f, indent=1)
