"""CPU benchmark of the attribution engine on the shipped digits model (side by side, one run).

    PYTHONPATH=. python benchmarks/cpu_features.py --out benchmarks/results/cpu_features.json
- raw per-sample gradients/s (S = 10, L_Square; vmap output as per-parameter blocks, nothing
  concatenated) — the limit;
- projected features/s at k = 4096 with CountSketch, the block-generated Gaussian and the factorized
  (LoGra-style) projection, which never forms per-sample gradients;
- the same three routes (raw, CountSketch, factorized) on the 35.7 M-parameter CIFAR-layout UNet
  (S = 1, ``--large-n`` samples);
- peak memory of one chunk of each route (each in a fresh process: the peak RSS above the RSS before
  the engine's own chunk runs, the peak reset through /proc/self/clear_refs);
- the CountSketch projection alone vs its legacy form (concatenate, multiply by signs, scatter);
- query latency of an uploaded image attributed with D-TRAK S = 10 against cached features (p50/p95)."""
import argparse
import json
import subprocess
import sys
import time

import numpy as np
import torch
from PIL import Image

from benchmarks.common import legacy_countsketch, per_second, percentiles, report
from explorer.attribution.features import FeatureComputer, FeatureSpec
from explorer.attribution.timesteps import TimestepStrategy
from explorer.engine import Engine
from explorer.attribution.registry import DEFAULT_METHOD  # noqa: E402


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--large-n", type=int, default=64, help="samples of the 35.7 M UNet per route and round")
    p.add_argument("--out")
    p.add_argument("--memory-child", nargs=2, metavar=("MODEL", "ROUTE"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.memory_child:
        return print(json.dumps(memory(*args.memory_child)))
    eng = Engine("digits")
    x = eng.data.train_x[:256]
    uids = list(range(256))
    res = {"torch_threads": torch.get_num_threads(), "n": 256, "S": 10, "k": 4096}
    fcs = {proj: FeatureComputer(eng.task.model, FeatureSpec("square", TimestepStrategy("uniform", 10), proj, 4096))
           for proj in ("countsketch", "gaussian", "factorized")}
    fc = fcs["countsketch"]
    eps = fc.noise(uids, (1, 8, 8))
    runs = {"raw_gradients": lambda: sum(1 for _ in fc.grads.chunks(x, eps, fc.ts)),  # each chunk dropped
            **{f"{p}_features": (lambda f: lambda: f(x, uids))(f) for p, f in fcs.items()}}
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
    res["factorized_over_raw"] = res["factorized_features_per_s"] / res["raw_gradients_per_s"]
    res["large"] = large(args.large_n, min(args.rounds, 3))
    res["peak_memory_mib"] = {f"{model}/{route}": child_memory(model, route)
                              for model in ("digits", "large") for route in ("raw", "countsketch", "factorized")}
    for model in ("digits", "large"):
        mem = res["peak_memory_mib"]
        res[f"{model}_factorized_memory_over_raw"] = mem[f"{model}/factorized"] / mem[f"{model}/raw"]
    img = Image.fromarray((np.random.default_rng(0).random((32, 32)) * 255).astype(np.uint8))
    eng.attribute(eng.task.upload(img), DEFAULT_METHOD, TimestepStrategy("uniform", 10))  # warm: kernel + mmap
    lat = []
    for _ in range(30):
        t = time.perf_counter()
        eng.attribute(eng.task.upload(img), DEFAULT_METHOD, TimestepStrategy("uniform", 10))
        lat.append(time.perf_counter() - t)
    res["upload_query_latency_s"] = percentiles(lat)
    report(res, args.out)


def setup(model: str, route: str, S: int):
    """(FeatureComputer, images, uids) for digits' shipped model or the CIFAR-layout UNet."""
    from benchmarks.gpu_features import CIFAR
    from explorer.models import make_unet
    if model == "digits":
        net, shape = Engine("digits").task.model, (1, 8, 8)
    else:
        net, shape = make_unet(CIFAR, seed=0).eval(), (3, 32, 32)
    proj = "countsketch" if route == "raw" else route
    fc = FeatureComputer(net, FeatureSpec("square", TimestepStrategy("uniform", S), proj, 4096))
    return fc, torch.randn(256, *shape, generator=torch.Generator().manual_seed(0)), list(range(256))


def memory(model: str, route: str) -> float:
    """Peak RSS growth (MiB) while one chunk of ``route`` runs, the chunk the engine itself would use."""
    S = 10 if model == "digits" else 1
    fc, x, uids = setup(model, route, S)
    chunk = fc.chunk_size(tuple(x.shape[1:]))
    x, uids = x[:chunk], uids[:chunk]
    eps = fc.noise(uids, tuple(x.shape[1:]))
    with open("/proc/self/clear_refs", "w") as f:  # reset the peak (VmHWM) to the current RSS: setup's
        f.write("5")                                  # transient allocations must not count
    before = _status_kib("VmRSS")
    if route == "raw":
        fc.grads.parts(x, eps, fc.ts)
    else:
        fc.project(x, eps, fc.ts)
    return (_status_kib("VmHWM") - before) / 1024


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field + ":"))


def child_memory(model: str, route: str) -> float:
    out = subprocess.run([sys.executable, __file__, "--memory-child", model, route], capture_output=True, text=True,
                         check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def large(n: int, rounds: int) -> dict:
    """Raw per-sample gradients, CountSketch and factorized features/s on the 35.7 M UNet, S = 1, k = 4096."""
    fcs = {r: setup("large", r, 1)[0] for r in ("countsketch", "factorized")}
    _, x, uids = setup("large", "raw", 1)
    x, uids = x[:n], uids[:n]
    cs = fcs["countsketch"]
    eps = cs.noise(uids, tuple(x.shape[1:]))
    runs = {"raw_gradients": lambda: sum(1 for _ in cs.grads.chunks(x, eps, cs.ts)),
            **{f"{r}_features": (lambda f: lambda: f(x, uids))(f) for r, f in fcs.items()}}
    rates = {name: [] for name in runs}
    for _ in range(rounds):
        for name, fn in runs.items():
            t = time.perf_counter()
            fn()
            rates[name].append(n / (time.perf_counter() - t))
    out = {"parameters": sum(p.numel() for p in cs.grads.params.values()), "n": n, "S": 1, "k": 4096,
           **{f"{name}_per_s": float(np.median(r)) for name, r in rates.items()}}
    out["factorized_over_raw"] = out["factorized_features_per_s"] / out["raw_gradients_per_s"]
    out["countsketch_over_raw"] = out["countsketch_features_per_s"] / out["raw_gradients_per_s"]
    return out


if __name__ == "__main__":
    main()
