"""Peak RSS of attributing many queries against the digits training set (D-TRAK, S = 10).

    PYTHONPATH=. python benchmarks/scoring_memory.py --out benchmarks/results/scoring_memory.json
Each query count runs in a fresh process: ``Engine.topk`` computes query features and scores one
block of 256 queries at a time, so peak memory should not grow with the number of queries. For
contrast, the dense (queries × training images) float64 score matrix is what a one-shot scorer holds."""
import argparse
import json
import resource
import subprocess
import sys
import time

from benchmarks.common import report
from explorer.attribution.registry import DEFAULT_METHOD  # noqa: E402


def child(n_queries: int) -> dict:
    from explorer.attribution.timesteps import TimestepStrategy
    from explorer.engine import Engine
    eng = Engine("digits")
    n = len(eng.data.train_idx)
    queries = [eng.task.train_query(i % n) for i in range(n_queries)]
    for j, q in enumerate(queries):
        q.uid = 30_000_000 + j  # distinct noise per query, as distinct images would have
    start_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    t = time.perf_counter()
    top = eng.topk(queries, DEFAULT_METHOD, TimestepStrategy("uniform", 10), k=10)
    seconds = time.perf_counter() - t
    assert top.proponents.shape == (n_queries, 10)
    return {"queries": n_queries, "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "rss_before_scoring_mib": start_rss, "seconds": seconds, "queries_per_s": n_queries / seconds,
            "dense_score_matrix_mib": n_queries * n * 8 / 2 ** 20}


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--queries", type=int, nargs="+", default=[1000, 10000])
    p.add_argument("--child", type=int)
    p.add_argument("--out")
    a = p.parse_args()
    if a.child:
        print(json.dumps(child(a.child)))
        return
    rows = [json.loads(subprocess.run([sys.executable, __file__, "--child", str(q)], check=True, capture_output=True,
                                      text=True).stdout.strip().splitlines()[-1]) for q in a.queries]
    res = {"method": DEFAULT_METHOD, "S": 10, "block": 256, "runs": rows,
           "peak_growth_mib": rows[-1]["peak_rss_mib"] - rows[0]["peak_rss_mib"]}
    report(res, a.out)


if __name__ == "__main__":
    main()
