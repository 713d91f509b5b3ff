"""GPU benchmark (issue: attribution engine): projected D-TRAK features for a CIFAR-size
UNet2DModel (google/ddpm-cifar10-32 layout, ~36 M parameters, random weights) at k = 32768.

    PYTHONPATH=. python benchmarks/gpu_features.py --out benchmarks/results/gpu_features.json
    PYTHONPATH=. python benchmarks/gpu_features.py --device cpu --smoke   # checks the script runs
On the offline device machine, carry the diffusers wheel (`.whl/`) and first run
`pip install --no-deps .whl/*.whl`.

Everything is measured side by side in one run (S = 1, L_Square, n samples):
- raw vmap per-sample gradients/s (per-parameter blocks, nothing concatenated) — the limit;
- CountSketch features/s (the engine's projector), and the legacy form (concatenate, multiply
  by the signs, scatter) it replaced;
- the same with the projection of chunk i on a second CUDA stream while chunk i+1's gradients
  are computed;
- each at fp32 (cuDNN TF32 convolutions, PyTorch's default), with TF32 matmuls too, and under
  bf16 autocast — with the cosine between bf16 and fp32 features, the price of the speed;
- the factorized (LoGra-style) projection, which never forms per-sample gradients, at each precision
  and a few chunk sizes (goal: ≥ 1000 features/s at k = 32768);
- a short run of the block-generated Gaussian projector, the paper's projection."""
import argparse
import contextlib
import time

import numpy as np
import torch

from benchmarks.common import legacy_countsketch, report
from explorer.attribution.features import FeatureComputer, FeatureSpec
from explorer.attribution.timesteps import TimestepStrategy
from explorer.models import UNetConfig, make_unet

CIFAR = UNetConfig(sample_size=32, in_channels=3, out_channels=3, block_out_channels=(128, 256, 256, 256),
                   down_block_types=("DownBlock2D", "AttnDownBlock2D", "DownBlock2D", "DownBlock2D"),
                   up_block_types=("UpBlock2D", "UpBlock2D", "AttnUpBlock2D", "UpBlock2D"), layers_per_block=2,
                   norm_num_groups=32, attention_head_dim=None)
SMOKE = UNetConfig(sample_size=8, in_channels=3, out_channels=3, block_out_channels=(8, 16),
                   down_block_types=("DownBlock2D", "AttnDownBlock2D"), up_block_types=("AttnUpBlock2D", "UpBlock2D"),
                   layers_per_block=1, norm_num_groups=4, attention_head_dim=None)


def sync(device):
    if device == "cuda":
        torch.cuda.synchronize()


def rate(fn, n, device, reps):
    fn()
    sync(device)
    t = time.perf_counter()
    for _ in range(reps):
        fn()
    sync(device)
    return n * reps / (time.perf_counter() - t)


def overlapped(fc, x, eps, chunk, precision):
    """Projects chunk i on a side stream while the default stream computes chunk i+1."""
    side, out = torch.cuda.Stream(), []
    for parts in chunks(fc, x, eps, chunk, precision):
        ready = torch.cuda.current_stream().record_event()
        with torch.cuda.stream(side):
            side.wait_event(ready)
            out.append(fc.projector(parts))
            for q in parts:
                q.record_stream(side)
    torch.cuda.current_stream().wait_stream(side)
    return out


def chunks(fc, x, eps, chunk, precision):
    """Gradient blocks of each chunk of x, computed at the given precision."""
    for i in range(0, len(x), chunk):
        with autocast(x.device.type, precision):
            parts = fc.grads.parts(x[i:i + chunk], eps[i:i + chunk], fc.ts)
        yield parts


def autocast(device, precision):
    return torch.autocast(device, torch.bfloat16) if precision == "bf16" else contextlib.nullcontext()


def set_precision(precision):
    torch.backends.cuda.matmul.allow_tf32 = precision == "tf32"


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--out")
    p.add_argument("--device", default="cuda")
    p.add_argument("--n", type=int, default=256)
    p.add_argument("--k", type=int, default=32768)
    p.add_argument("--chunks", type=int, nargs="+", help="samples per vmap call (default: the engine's, 64, 128)")
    p.add_argument("--fact-chunks", type=int, nargs="+", default=[64, 256], help="samples per factorized pass")
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--smoke", action="store_true", help="tiny model, n and k: only checks that every path runs")
    args = p.parse_args()
    if args.smoke:
        args.n, args.k, args.chunks, args.reps, args.fact_chunks = 8, 256, [4], 1, [4]
    dev = args.device
    torch.manual_seed(0)
    model = make_unet(SMOKE if args.smoke else CIFAR).to(dev)
    size = model.config.sample_size
    x = torch.randn(args.n, 3, size, size, device=dev)
    spec = FeatureSpec("square", TimestepStrategy("uniform", 1), "countsketch", args.k)
    fc = FeatureComputer(model, spec, dev)
    eps = fc.noise(list(range(args.n)), (3, size, size)).to(dev)
    args.chunks = args.chunks or [fc.chunk_size((3, size, size)), 64, 128]
    res = {"device": torch.cuda.get_device_name() if dev == "cuda" else "cpu", "torch": torch.__version__,
           "n_parameters": fc.grads.dim, "k": args.k, "S": 1, "n": args.n, "runs": []}
    features, legacy = {}, legacy_countsketch(fc.projector)
    for precision in ("fp32", "tf32", "bf16"):
        set_precision(precision)
        for chunk in args.chunks:
            runs = {"raw_gradients": lambda: sum(1 for _ in chunks(fc, x, eps, chunk, precision)),
                    "countsketch": lambda: [fc.projector(parts) for parts in chunks(fc, x, eps, chunk, precision)],
                    "countsketch_legacy": lambda: [legacy(parts) for parts in chunks(fc, x, eps, chunk, precision)]}
            if dev == "cuda":
                runs["countsketch_overlapped"] = lambda: overlapped(fc, x, eps, chunk, precision)
            row = {"precision": precision, "chunk": chunk}
            for name, fn in runs.items():
                try:  # one failing variant (e.g. out of memory) must not cost the others' numbers
                    row[f"{name}_per_s"] = rate(fn, args.n, dev, args.reps)
                except Exception as e:  # noqa: BLE001 — recorded in the result
                    row[f"{name}_error"] = repr(e)[:300]
                    if dev == "cuda":
                        torch.cuda.empty_cache()
            if "countsketch_per_s" in row and "raw_gradients_per_s" in row:
                row["countsketch_over_raw"] = row["countsketch_per_s"] / row["raw_gradients_per_s"]
            res["runs"].append(row)
            print(row, flush=True)
        features[precision] = torch.cat([fc.projector(parts) for parts in chunks(fc, x, eps, args.chunks[0],
                                                                                  precision)]).cpu()
    fact = FeatureComputer(model, FeatureSpec("square", TimestepStrategy("uniform", 1), "factorized", args.k), dev)
    for precision in ("fp32", "tf32", "bf16"):
        set_precision(precision)
        for chunk in args.fact_chunks:
            def run_fact():
                with autocast(x.device.type, precision):
                    return [fact.project(x[i:i + chunk], eps[i:i + chunk], fact.ts) for i in range(0, args.n, chunk)]
            row = {"precision": precision, "chunk": chunk}
            try:
                row["factorized_per_s"] = rate(run_fact, args.n, dev, args.reps)
            except Exception as e:  # noqa: BLE001 — recorded in the result
                row["factorized_error"] = repr(e)[:300]
                if dev == "cuda":
                    torch.cuda.empty_cache()
            res["runs"].append(row)
            print(row, flush=True)
    set_precision("fp32")
    cos = torch.nn.functional.cosine_similarity(features["bf16"], features["fp32"], dim=1).numpy()
    res["bf16_vs_fp32_feature_cosine"] = {"min": float(cos.min()), "median": float(np.median(cos))}
    gauss = FeatureComputer(model, FeatureSpec("square", TimestepStrategy("uniform", 1), "gaussian", args.k), dev)
    xs, es, c = x[:args.chunks[0]], eps[:args.chunks[0]], args.chunks[0]
    res["gaussian_features_per_s"] = rate(lambda: gauss.projector(gauss.grads.parts(xs, es, gauss.ts)), c, dev, 1)
    for kind in ("countsketch", "factorized"):
        res[f"best_{kind}"] = max(res["runs"], key=lambda r: max([v for k, v in r.items()
                                                                   if k.startswith(kind) and k.endswith("_per_s")] or [0]))
    report(res, args.out)


if __name__ == "__main__":
    main()
