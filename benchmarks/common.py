"""Helpers shared by the benchmark scripts (run them from the repo root with ``PYTHONPATH=.``)."""
import json
import time

import numpy as np
import torch


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


def legacy_countsketch(proj):
    """The projector before per-parameter blocks: cat, multiply by signs, scatter into k slots."""
    slot = proj.slot.long()
    bucket, sign = slot % proj.k, torch.where(slot < proj.k, 1.0, -1.0)
    return lambda parts: torch.zeros(parts[0].shape[0], proj.k, device=bucket.device).index_add_(
        1, bucket, torch.cat(parts, dim=1) * sign)
