"""Batched-ensemble vs one-at-a-time subset training on the digits recipe (side by side, one run).

    PYTHONPATH=. python benchmarks/batched_training.py --out benchmarks/results/batched_training.json
M models on M different 50 % subsets, a few epochs each; reports training images/s of both and
the largest weight difference between the two (they follow the same recipe and seeds)."""
import argparse
import time

import torch

from benchmarks.common import report
from explorer.batched_train import train_batched
from explorer.datasets import load_dataset
from explorer.evaluation.lds import make_subsets
from explorer.models import UNET_CONFIGS, make_unet
from explorer.training import TRAIN_CONFIGS, TrainConfig, train


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--models", type=int, default=4)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--out")
    a = p.parse_args()
    ds = load_dataset("digits")
    subsets = make_subsets(len(ds.train_idx), a.models)
    xs = [ds.train_x[torch.as_tensor(s)] for s in subsets]
    cfg = TrainConfig(**{**TRAIN_CONFIGS["digits"].__dict__, "epochs": a.epochs, "n_checkpoints": 0})
    images = a.models * xs[0].shape[0] * a.epochs

    one = [make_unet(UNET_CONFIGS["digits"], seed=0) for _ in range(a.models)]
    t = time.perf_counter()
    for j, m in enumerate(one):
        train(m, xs[j], TrainConfig(**{**cfg.__dict__, "seed": j}))
    sequential = images / (time.perf_counter() - t)

    many = [make_unet(UNET_CONFIGS["digits"], seed=0) for _ in range(a.models)]
    t = time.perf_counter()
    train_batched(many, xs, cfg, list(range(a.models)))
    batched = images / (time.perf_counter() - t)

    diff = max((p - q).abs().max().item() for x, y in zip(one, many) for p, q in zip(x.parameters(), y.parameters()))
    res = {"torch_threads": torch.get_num_threads(), "models": a.models, "epochs": a.epochs,
           "sequential_images_per_s": sequential, "batched_images_per_s": batched,
           "batched_over_sequential": batched / sequential, "max_weight_difference": diff}
    report(res, a.out)


if __name__ == "__main__":
    main()
