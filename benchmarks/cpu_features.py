"""CPU benchmark of the attribution engine on the shipped digits model (side by side, one run).

    PYTHONPATH=. python benchmarks/cpu_features.py --out benchmarks/results/cpu_features.json
- raw per-sample gradients/s (S = 10, L_Square; vmap output as per-parameter blocks, nothing
  concatenated) — the limit;
- projected features/s at k = 4096 with CountSketch and with the block-generated Gaussian;
- the CountSketch projection alone vs its legacy form (concatenate, multiply by signs, scatter);
- query latency of an uploaded image attributed with D-TRAK S = 10 against cached features (p50/p95)."""
import argparse
import time

import numpy as np
import torch
from PIL import Image

from benchmarks.common import legacy_countsketch, per_second, percentiles, report
from explorer.attribution.features import FeatureComputer, FeatureSpec
from explorer.attribution.timesteps import TimestepStrategy
from explorer.engine import Engine


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--out")
    args = p.parse_args()
    eng = Engine("digits")
    x = eng.data.train_x[:256]
    uids = list(range(256))
    res = {"torch_threads": torch.get_num_threads(), "n": 256, "S": 10, "k": 4096}
    fcs = {proj: FeatureComputer(eng.model, FeatureSpec("square", TimestepStrategy("uniform", 10), proj, 4096))
           for proj in ("countsketch", "gaussian")}
    fc = fcs["countsketch"]
    eps = fc.noise(uids, (1, 8, 8))
    runs = {"raw_gradients": lambda: [g for _, g in fc.grads.chunks(x, eps, fc.ts)],
            **{f"{p}_features": (lambda f: lambda: [f.projector(g) for _, g in f.grads.chunks(x, eps, f.ts)])(f)
               for p, f in fcs.items()}}
    blocks = [parts for _, parts in fc.grads.chunks(x, eps, fc.ts)]  # projection alone, on the same gradients
    legacy = legacy_countsketch(fc.projector)
    runs.update(countsketch_projection=lambda: [fc.projector(b) for b in blocks],
                legacy_countsketch_projection=lambda: [legacy(b) for b in blocks])
    rates = {name: [] for name in runs}
    for _ in range(args.rounds):  # interleaved rounds, medians: this machine is noisy
        for name, fn in runs.items():
            rates[name].append(per_second(fn, 256, reps=1))
    res["rounds"] = args.rounds
    res.update({f"{name}_per_s": float(np.median(r)) for name, r in rates.items()})
    res["countsketch_over_raw"] = res["countsketch_features_per_s"] / res["raw_gradients_per_s"]
    res["projection_over_legacy"] = res["countsketch_projection_per_s"] / res["legacy_countsketch_projection_per_s"]
    res["countsketch_over_gaussian"] = res["countsketch_features_per_s"] / res["gaussian_features_per_s"]
    img = Image.fromarray((np.random.default_rng(0).random((32, 32)) * 255).astype(np.uint8))
    eng.attribute(eng.task.upload(img), "dtrak", TimestepStrategy("uniform", 10))  # warm: kernel + mmap
    lat = []
    for _ in range(30):
        t = time.perf_counter()
        eng.attribute(eng.task.upload(img), "dtrak", TimestepStrategy("uniform", 10))
        lat.append(time.perf_counter() - t)
    res["upload_query_latency_s"] = percentiles(lat)
    report(res, args.out)


if __name__ == "__main__":
    main()
