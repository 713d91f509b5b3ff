"""How good are the page's build estimates? Real, uncached builds (in the worker, as the page runs them),
each preceded by the estimate the page would show, from a fresh cache: the first build of each kind is
estimated from a timed probe (nothing measured yet), later ones from the rates earlier builds recorded.

    PYTHONPATH=. python benchmarks/build_estimates.py --out benchmarks/results/build_estimates.json

Goal (issue 23): every estimate within ±50 % of the measured build time. Run it alone (no training)."""
import argparse
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import report  # noqa: E402
from explorer.attribution.registry import BASELINE_METHOD, DEFAULT_METHOD  # noqa: E402
from explorer.attribution.timesteps import TimestepStrategy  # noqa: E402

# (dataset, method, timesteps, S) with the dataset's default projection, in this order: later builds reuse the
# rates of earlier ones (the same model and output function, or only the start / Gram / eigendecomposition)
BUILDS = [("digits", DEFAULT_METHOD, "uniform", 10), ("digits", DEFAULT_METHOD, "random", 10),
          ("digits", BASELINE_METHOD, "random", 10), ("digits", BASELINE_METHOD, "uniform", 1),
          ("shapes", DEFAULT_METHOD, "random", 10), ("shapes", DEFAULT_METHOD, "uniform", 1)]


def main():
    p = argparse.ArgumentParser(allow_abbrev=False)
    p.add_argument("--out")
    a = p.parse_args()
    from explorer.build_rates import load_factor
    from explorer.engine import Engine
    cache = tempfile.mkdtemp(prefix="estimates-")
    rows = []
    for dataset, method, kind, S in BUILDS:
        eng = Engine(dataset, cache_dir=os.path.join(cache, dataset), build_in_worker=True)
        st = TimestepStrategy(kind, S)
        t = time.perf_counter()
        est = eng.estimate_seconds(method, st)
        estimate_s = time.perf_counter() - t
        t = time.perf_counter()
        eng.build(method, st)
        took = time.perf_counter() - t
        rows.append({"dataset": dataset, "projection": eng.store.projection, "method": method, "timesteps": st.label,
                     "estimate_s": round(est, 1), "measured_s": round(took, 1), "error": round(est / took - 1, 3),
                     "load_factor": round(load_factor(2), 2), "seconds_to_estimate": round(estimate_s, 2)})
        print(rows[-1], flush=True)
    errors = [abs(r["error"]) for r in rows]
    report({"cpu_count": os.cpu_count(), "builds": rows, "max_abs_error": max(errors),
            "within_50_percent": sum(e <= 0.5 for e in errors), "of": len(rows)}, a.out)


if __name__ == "__main__":
    main()
