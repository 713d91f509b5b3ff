"""The server's resident memory after one visitor has used every model and the main methods, under the
default memory budget and under a tight one (what ``EXPLORER_MEMORY_GB`` bounds: the feature sets and
kernels kept loaded; past it the least recently used are dropped and reloaded from disk when needed).

    PYTHONPATH=. python benchmarks/memory.py --out benchmarks/results/memory.json

Goal (issue 23): peak RSS fits a free 16 GB CPU Space with room for the OS. Uses the repo's feature
cache (``.cache``; a missing set is built first, which takes minutes). Run it alone."""
import argparse
import os
import sys
import tempfile
import threading
import time

import psutil

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import report  # noqa: E402
from screenshots import served  # noqa: E402
from explorer.attribution.registry import BASELINE_METHOD, DEFAULT_METHOD, EMBEDDING_METHOD, PIXEL_METHOD  # noqa: E402

MODELS = {"digits": "exact", "shapes": "countsketch4096", "icons": "countsketch4096"}
METHODS = (DEFAULT_METHOD, BASELINE_METHOD, PIXEL_METHOD, EMBEDDING_METHOD)


def peak_mb(pid: int) -> float:
    """VmHWM: the process's peak resident set so far (MB)."""
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) / 1024 for line in f if line.startswith("VmHWM"))


def visit(url: str, proc) -> list[dict]:
    """Per model: every main method on a stored benchmark image and on generated seeds, a comparison and the
    evaluation tab; RSS and peak after each model."""
    from gradio_client import Client
    c = Client(url, verbose=False, download_files=tempfile.mkdtemp(prefix="memory-"))
    rows = []
    for dataset, projection in MODELS.items():
        t = time.perf_counter()
        for method in METHODS:
            for source, seed in (("benchmark", 0), ("generate", 1), ("generate", 2)):
                out = c.predict(dataset, source, seed, 50, 5, None, False, method, "uniform", 10, projection, None, 8,
                                api_name="/attribute")
                if isinstance(out[0], dict) and out[0].get("visible"):
                    raise RuntimeError(f"{dataset} {method} {source}: {out[0].get('value')}")
        c.predict(dataset, "benchmark", 0, 50, 5, None, False, DEFAULT_METHOD, BASELINE_METHOD, "uniform", 10,
                  projection, None, 8, api_name="/compare")
        c.predict(dataset, DEFAULT_METHOD, 10, 5, api_name="/evaluation")
        rows.append({"after": dataset, "rss_mb": round(psutil.Process(proc.pid).memory_info().rss / 2 ** 20),
                     "peak_mb": round(peak_mb(proc.pid)), "seconds": round(time.perf_counter() - t, 1)})
        print(rows[-1], flush=True)
    return rows


def main():
    p = argparse.ArgumentParser(allow_abbrev=False)
    p.add_argument("--out")
    p.add_argument("--budgets", default="8,1", help="EXPLORER_MEMORY_GB values to run, comma-separated")
    a = p.parse_args()
    res = {"cpu_count": os.cpu_count(), "ram_gb": round(psutil.virtual_memory().total / 2 ** 30, 1), "runs": []}
    for budget in a.budgets.split(","):
        log = os.path.join(tempfile.mkdtemp(prefix="memory-"), "server.log")
        with served(log, env={"EXPLORER_MEMORY_GB": budget}) as (url, proc):
            stop, sampled = threading.Event(), []
            threading.Thread(target=lambda: [sampled.append(psutil.Process(proc.pid).memory_info().rss)
                                             for _ in iter(lambda: stop.wait(0.5), True)], daemon=True).start()
            rows = visit(url, proc)
            stop.set()
            res["runs"].append({"EXPLORER_MEMORY_GB": float(budget), "per_model": rows,
                                "peak_rss_mb": round(peak_mb(proc.pid)),
                                "max_sampled_rss_mb": round(max(sampled) / 2 ** 20) if sampled else None})
    report(res, a.out)


if __name__ == "__main__":
    main()
