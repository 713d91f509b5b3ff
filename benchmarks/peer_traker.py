"""Peer benchmark: our projectors vs the TRAK library's CPU ``BasicProjector`` (PyPI ``traker``).

    pip install -r benchmarks/requirements.txt
    PYTHONPATH=. python benchmarks/peer_traker.py --out benchmarks/results/peer_traker.json
The same per-sample gradients of the shipped digits model (D-TRAK, S = 10, a batch of 256) are
projected to k = 4096 by each projector, side by side in one run. Reported: projections/s of the
projection alone and features/s of the whole pipeline (gradients + projection)."""
import argparse
import time

import torch
from trak.projectors import BasicProjector, ProjectionType

from benchmarks.common import per_second, report
from explorer.attribution.features import FeatureComputer, FeatureSpec
from explorer.attribution.projectors import make_projector
from explorer.attribution.timesteps import TimestepStrategy
from explorer.datasets import load_dataset
from explorer.models import load_model
from explorer.paths import AssetPaths


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--k", type=int, default=4096)
    p.add_argument("--n", type=int, default=256)
    p.add_argument("--out")
    a = p.parse_args()
    ds = load_dataset("digits")
    fc = FeatureComputer(load_model(AssetPaths("digits").model), FeatureSpec("square", TimestepStrategy("uniform", 10)))
    x, uids = ds.train_x[:a.n], ds.train_idx[:a.n].tolist()
    grads = fc.grads(x, fc.noise(uids, tuple(x.shape[1:])), fc.ts)
    t = time.perf_counter()
    fc.grads(x, fc.noise(uids, tuple(x.shape[1:])), fc.ts)
    grad_s = (time.perf_counter() - t) / a.n
    projectors = {
        "ours_countsketch": make_projector("countsketch", grads.shape[1], a.k, 0),
        "ours_gaussian": make_projector("gaussian", grads.shape[1], a.k, 0),
        "traker_basic_rademacher": (lambda P: lambda g: P.project(g, model_id=0))(
            BasicProjector(grads.shape[1], a.k, 0, ProjectionType.rademacher, torch.device("cpu"))),
        "traker_basic_normal": (lambda P: lambda g: P.project(g, model_id=0))(
            BasicProjector(grads.shape[1], a.k, 0, ProjectionType.normal, torch.device("cpu"))),
    }
    res = {"torch_threads": torch.get_num_threads(), "k": a.k, "n": a.n, "grad_dim": grads.shape[1],
           "gradients_per_s": 1 / grad_s, "projections_per_s": {}, "features_per_s": {}}
    for name, proj in projectors.items():
        r = per_second(lambda: proj(grads), a.n, reps=1 if name.startswith("traker") else 3)
        res["projections_per_s"][name] = r
        res["features_per_s"][name] = 1 / (grad_s + 1 / r)
    f = res["features_per_s"]
    res["countsketch_over_traker"] = {"features": f["ours_countsketch"] / f["traker_basic_rademacher"],
                                      "projection": res["projections_per_s"]["ours_countsketch"]
                                      / res["projections_per_s"]["traker_basic_rademacher"]}
    report(res, a.out)


if __name__ == "__main__":
    main()
