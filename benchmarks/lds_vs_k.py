"""Why k = 1024: LDS of TRAK and D-TRAK (S = 10, validation queries) on the shipped digits
benchmark as the CountSketch dimension k grows, with the seconds each feature set took.

    PYTHONPATH=. python benchmarks/lds_vs_k.py --out benchmarks/results/lds_vs_k.json
Features for each k are built into a temporary cache (the shipped ones stay untouched); λ is tuned
on the first half of the subsets and LDS reported on the second, as in the shipped results."""
import argparse
import os
import tempfile
import time

import numpy as np

from benchmarks.common import report
from explorer.attribution.timesteps import TimestepStrategy
from explorer.cache import load_npy
from explorer.engine import Engine, Query
from explorer.evaluation.lds import evaluate, masks_from_subsets
from explorer.paths import AssetPaths
from precompute.evaluate import EvalConfig


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--k", type=int, nargs="+", default=[128, 256, 512, 1024, 2048, 4096])
    p.add_argument("--out")
    a = p.parse_args()
    import torch
    ev = AssetPaths("digits").eval
    q = np.load(os.path.join(ev, "queries.npz"), allow_pickle=False)
    cols = np.flatnonzero(q["split"] == 0)
    outputs = load_npy(os.path.join(ev, "outputs.npy"), mmap=False).astype(np.float64)[:, cols]
    subsets = load_npy(os.path.join(ev, "subsets.npy"), mmap=False)
    cfg = EvalConfig()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for k in a.k:
            eng = Engine("digits", k=k, cache_dir=tmp)
            masks = masks_from_subsets(subsets, len(eng.data.train_idx))
            half = len(masks) // 2
            queries = [Query("val", torch.from_numpy(q["x"][c]), int(q["uid"][c])) for c in cols]
            for method in ("trak", "dtrak"):
                t = time.perf_counter()
                fn = eng.score_fn(queries, method, TimestepStrategy("uniform", 10))
                seconds = time.perf_counter() - t
                res = evaluate(fn, masks, outputs, list(cfg.lambdas), np.arange(half), np.arange(half, len(masks)),
                               cfg.n_boot)
                rows.append({"k": k, "method": method, "lds": res.mean, "ci": list(res.interval), "lambda": res.lam,
                             "feature_seconds": seconds})
                print(rows[-1])
    report({"S": 10, "split": "validation", "projector": "countsketch", "rows": rows}, a.out)


if __name__ == "__main__":
    main()
