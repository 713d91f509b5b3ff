"""GPU benchmark (issue 24): the adopted-Stable-Diffusion path — latent-space D-TRAK features with gradients of a
rank-128 LoRA only, in the paper's ArtBench setting: a UNet2DConditionModel in Stable Diffusion 1.x's layout
(860 M parameters, random weights: nothing is downloaded) on 32×32×4 latents (256-px images, miniSD), LoRA on
every attention processor's to_q / to_k / to_v / to_out.0, CLIP-width (77 × 768) caption states, the SD
scaled-linear β schedule, CountSketch k = 32768.

    PYTHONPATH=. python benchmarks/gpu_lora_features.py --out benchmarks/results/gpu_lora_features.json
    PYTHONPATH=. python benchmarks/gpu_lora_features.py --device cpu --smoke   # checks the script runs

Measured side by side in one run (S = 1, L_Square, n latents): features/s at fp32, with TF32 matmuls, and
under bf16 autocast (with the cosine between bf16 and fp32 features); the peak GPU memory of each; the
engine's chunk size. Budget: one command under 8 minutes of device time."""
import argparse
import time

import numpy as np
import torch

from benchmarks.common import report
from explorer import lora
from explorer.attribution.features import FeatureComputer, FeatureSpec
from explorer.attribution.timesteps import TimestepStrategy
from explorer.models import set_vmap_attention
from explorer.schedule import NoiseSchedule

SD15 = dict(sample_size=32, in_channels=4, out_channels=4, block_out_channels=(320, 640, 1280, 1280),
            down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
            up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3, layers_per_block=2,
            cross_attention_dim=768, attention_head_dim=8)
SMOKE = dict(sample_size=8, in_channels=4, out_channels=4, block_out_channels=(16, 32),
             down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
             layers_per_block=1, cross_attention_dim=16, attention_head_dim=2, norm_num_groups=8)


SD_SCHEDULE = NoiseSchedule({"beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012})


def sync(device):
    if device == "cuda":
        torch.cuda.synchronize()


def set_precision(precision: str) -> None:
    if torch.cuda.is_available():
        torch.backends.cuda.matmul.allow_tf32 = precision == "tf32"


def features(fc, z, eps, ctx, chunk, precision):
    out = []
    with torch.autocast(z.device.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
        for i in range(0, len(z), chunk):
            out.append(fc.project(z[i:i + chunk], eps[i:i + chunk], fc.ts, ctx[i:i + chunk]).float())
    return torch.cat(out)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--out")
    p.add_argument("--device", default="cuda")
    p.add_argument("--n", type=int, default=64)
    p.add_argument("--k", type=int, default=32768)
    p.add_argument("--rank", type=int, default=128)
    p.add_argument("--smoke", action="store_true", help="tiny UNet, n, k and rank: only checks that every path runs")
    args = p.parse_args()
    if args.smoke:
        args.n, args.k, args.rank = 4, 256, 4
    dev = args.device
    from diffusers import UNet2DConditionModel
    torch.manual_seed(0)
    unet = set_vmap_attention(UNet2DConditionModel(**(SMOKE if args.smoke else SD15))).to(dev).eval()
    lora.add_lora(unet, lora.LoRAConfig(rank=args.rank, alpha=args.rank))
    names = lora.lora_names(unet)
    c = unet.config
    z = torch.randn(args.n, c.in_channels, c.sample_size, c.sample_size, device=dev)
    ctx = torch.randn(args.n, 8 if args.smoke else 77, c.cross_attention_dim, device=dev)
    fc = FeatureComputer(unet, FeatureSpec("square", TimestepStrategy("uniform", 1), "countsketch", args.k), dev,
                         names, schedule=SD_SCHEDULE)
    fc.grads.context_shape = tuple(ctx.shape[1:])
    eps = fc.noise(list(range(args.n)), tuple(z.shape[1:])).to(dev)
    chunk = fc.chunk_size(tuple(z.shape[1:]))
    res = {"device": torch.cuda.get_device_name() if dev == "cuda" else "cpu", "torch": torch.__version__,
           "unet_parameters": sum(p.numel() for p in unet.parameters()), "lora_rank": args.rank,
           "lora_parameters": fc.grads.dim, "k": args.k, "S": 1, "n": args.n, "chunk": chunk,
           "latent_shape": list(z.shape[1:]), "context_shape": list(ctx.shape[1:]), "runs": []}
    kept = {}
    for precision in ("fp32", "tf32", "bf16"):
        set_precision(precision)
        row = {"precision": precision}
        try:
            features(fc, z[:chunk], eps[:chunk], ctx[:chunk], chunk, precision)  # warm-up
            if dev == "cuda":
                torch.cuda.reset_peak_memory_stats()
            sync(dev)
            t = time.perf_counter()
            kept[precision] = features(fc, z, eps, ctx, chunk, precision).cpu()
            sync(dev)
            row["features_per_s"] = args.n / (time.perf_counter() - t)
            if dev == "cuda":
                row["peak_gpu_gb"] = torch.cuda.max_memory_allocated() / 2 ** 30
        except Exception as e:  # noqa: BLE001 — one failing precision (e.g. out of memory) keeps the others
            row["error"] = repr(e)[:300]
            if dev == "cuda":
                torch.cuda.empty_cache()
        res["runs"].append(row)
        print(row, flush=True)
    set_precision("fp32")
    if "bf16" in kept and "fp32" in kept:
        cos = torch.nn.functional.cosine_similarity(kept["bf16"], kept["fp32"], dim=1).numpy()
        res["bf16_vs_fp32_feature_cosine"] = {"min": float(cos.min()), "median": float(np.median(cos))}
    report(res, args.out)


if __name__ == "__main__":
    main()
