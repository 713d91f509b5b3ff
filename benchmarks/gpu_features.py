"""GPU benchmark (issue: attribution engine): projected D-TRAK features for a CIFAR-size
UNet2DModel (google/ddpm-cifar10-32 layout, ~36 M parameters, random weights) at k = 32768.

    python benchmarks/gpu_features.py --out benchmarks/results/gpu_features.json
Measures raw vmap per-sample gradients/s (S = 1, L_Square) and end-to-end projected features/s
with the CountSketch projector, and a short run of the block-generated Gaussian projector."""
import argparse
import json
import time

import torch

from explorer.attribution.features import FeatureComputer, FeatureSpec
from explorer.attribution.timesteps import TimestepStrategy
from explorer.models import UNetConfig, make_unet

CIFAR = UNetConfig(sample_size=32, in_channels=3, out_channels=3, block_out_channels=(128, 256, 256, 256),
                   down_block_types=("DownBlock2D", "AttnDownBlock2D", "DownBlock2D", "DownBlock2D"),
                   up_block_types=("UpBlock2D", "UpBlock2D", "AttnUpBlock2D", "UpBlock2D"), layers_per_block=2,
                   norm_num_groups=32, attention_head_dim=None)


def timed(fn, n_items, reps=3):
    fn()
    torch.cuda.synchronize()
    t = time.time()
    for _ in range(reps):
        fn()
    torch.cuda.synchronize()
    return n_items * reps / (time.time() - t)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--out", default=None)
    p.add_argument("--n", type=int, default=256)
    args = p.parse_args()
    model = make_unet(CIFAR).cuda()
    n_params = sum(q.numel() for q in model.parameters())
    x = torch.randn(args.n, 3, 32, 32)
    res = {"device": torch.cuda.get_device_name(), "n_parameters": n_params, "k": 32768, "S": 1}
    for proj in ("countsketch", "gaussian"):
        fc = FeatureComputer(model, FeatureSpec("square", TimestepStrategy("uniform", 1), proj, 32768), "cuda")
        uids = list(range(args.n))
        eps = fc.noise(uids, (3, 32, 32))
        chunk = 64
        if proj == "countsketch":
            res["raw_gradients_per_s"] = timed(lambda: [g for _, g in fc.grads.chunks(x, eps, fc.ts, chunk)], args.n)
            res["countsketch_features_per_s"] = timed(
                lambda: [fc.projector(g) for _, g in fc.grads.chunks(x, eps, fc.ts, chunk)], args.n)
        else:
            xs, es = x[:chunk], eps[:chunk]
            res["gaussian_features_per_s"] = timed(lambda: fc.projector(fc.grads(xs, es, fc.ts)), chunk, reps=1)
    res["ratio_countsketch_to_raw"] = res["countsketch_features_per_s"] / res["raw_gradients_per_s"]
    print(json.dumps(res, indent=1))
    if args.out:
        json.dump(res, open(args.out, "w"), indent=1)


if __name__ == "__main__":
    main()
