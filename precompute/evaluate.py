"""Stages ``lds`` and ``counterfactual``: real retraining, ground truth, scoring, results.

Heavy, independent jobs (one model per subset or removal set) fan out through ``jobs.run_jobs``
and write to ``runs/<dataset>/`` (not shipped); results go to ``assets/<dataset>/eval/``:
  subsets.npy, queries.npz, outputs.npy                    LDS ground truth
  lds.json, best_lambda.json, scores/*.npy, pred/*.npy     LDS per method × S × split
  counterfactual.json, counterfactual_images.npz          counterfactual view
Every step is skipped when its output exists (resumable)."""
from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import asdict, dataclass, field

import numpy as np
import torch

from explorer.attribution.methods import METHODS, get_method
from explorer.attribution.timesteps import TimestepStrategy, seeded_noise
from explorer.cache import load_npy, save_npy, write_json
from explorer.data import load_dataset
from explorer.evaluation import counterfactual as cf
from explorer.evaluation.lds import evaluate, make_subsets, masks_from_subsets, measured_outputs, predictions
from explorer.models import (TRAIN_CONFIGS, UNET_CONFIGS, TrainConfig, ddim_sample, load_model, make_unet, save_model,
                             train, unet_config_for)
from explorer.paths import AssetPaths

from .jobs import run_jobs


@dataclass
class EvalConfig:
    n_subsets: int = 64
    alpha: float = 0.5
    subset_seed: int = 42
    train_seed: int = 0
    n_val: int = 100
    n_gen: int = 100
    gt_t_every: int = 4  # ground truth at t = 0, 4, 8, ... (250 timesteps)
    gt_draws: int = 2  # noise draws per timestep
    lambdas: tuple = (1e-3, 1e-2, 1e-1, 1, 10, 100, 1e3, 1e4)
    n_boot: int = 200
    cf_queries: int = 8
    cf_fraction: float = 0.2  # the paper's 1000 of 5000
    cf_seed: int = 42  # picks the counterfactual queries and the random removals
    cf_S: int = 100
    ensemble_models: int = 4
    epochs: int | None = None  # None: the full model's recipe
    plan: list = field(default_factory=lambda: [(m, 10) for m in METHODS] + [
        (m, 100) for m in ("trak", "dtrak", "relative-if", "renormalized-if", "grad-dot", "grad-cos")])


def runs_dir(dataset: str) -> str:
    return os.path.join(os.environ.get("EXPLORER_RUNS", "runs"), os.path.basename(os.path.normpath(dataset)))


def _recipe(dataset: str):
    ds = load_dataset(dataset)
    return ds, UNET_CONFIGS.get(ds.name) or unet_config_for(ds.channels, ds.resolution), TRAIN_CONFIGS.get(ds.name, TrainConfig())


# ---- jobs (top-level functions: picklable for process pools and Ray) ----
def train_job(dataset: str, indices: list[int], out_dir: str, seed: int, device: str, epochs: int | None = None,
              queries: str | None = None, gt: tuple | None = None) -> str:
    """Train the full recipe on training indices; optionally measure ground-truth outputs."""
    torch.set_num_threads(1)
    done, outputs = os.path.join(out_dir, "done.json"), os.path.join(out_dir, "outputs.npy")
    if os.path.exists(done):
        record = json.load(open(done))
        if (record.get("n"), record.get("seed")) == (len(indices), seed):
            # trained already (e.g. by the ensemble stage); add ground truth if now asked
            if queries and not os.path.exists(outputs):
                save_npy(outputs, ground_truth(load_model(os.path.join(out_dir, "model"), device), queries, gt, device))
            return out_dir
        shutil.rmtree(out_dir)  # a different job left this folder: retrain from scratch
    t0 = time.time()
    ds, unet_cfg, cfg = _recipe(dataset)
    cfg = TrainConfig(**{**asdict(cfg), "seed": seed, "n_checkpoints": 0, **({"epochs": epochs} if epochs else {})})
    model = make_unet(unet_cfg, seed=seed)
    train(model, ds.train_x[torch.as_tensor(indices)], cfg, device=device)
    os.makedirs(out_dir, exist_ok=True)
    save_model(model.cpu(), os.path.join(out_dir, "model"))
    if queries:
        save_npy(outputs, ground_truth(model, queries, gt, device))
    write_json(done, {"n": len(indices), "seed": seed, "seconds": time.time() - t0})
    return out_dir


def ground_truth(model, queries_path: str, gt: tuple, device: str) -> np.ndarray:
    """Measured L_Simple for every benchmark query, averaged over timesteps × noise draws."""
    q = np.load(queries_path, allow_pickle=False)
    x = torch.from_numpy(q["x"].astype(np.float32))
    every, draws = gt
    ts = list(range(0, 1000, every))
    eps = torch.cat([seeded_noise(q["uid"].tolist(), ts, tuple(x.shape[1:]), seed=100 + d) for d in range(draws)], 1)
    return measured_outputs(model, x, eps, torch.tensor(ts * draws), device).astype(np.float32)


# ---- LDS ----
def run_lds(dataset: str, device: str = "cpu", engine: str = "local", address: str | None = None,
            n_subsets: int | None = None, until: str | None = None, cfg: EvalConfig | None = None) -> dict:
    cfg = cfg or EvalConfig(**({"n_subsets": n_subsets} if n_subsets else {}))
    paths = AssetPaths(dataset)
    os.makedirs(paths.eval, exist_ok=True)
    ds = load_dataset(dataset)
    n = len(ds.train_idx)
    t0 = time.time()

    subsets_path = os.path.join(paths.eval, "subsets.npy")
    if not os.path.exists(subsets_path):
        save_npy(subsets_path, make_subsets(n, cfg.n_subsets, cfg.alpha, cfg.subset_seed))
    subsets = load_npy(subsets_path, mmap=False)
    queries_path = os.path.join(paths.eval, "queries.npz")
    if not os.path.exists(queries_path):
        _write_queries(dataset, queries_path, cfg, device)

    jobs = _subset_jobs(dataset, subsets, cfg, device, queries=queries_path, gt=(cfg.gt_t_every, cfg.gt_draws))
    run_jobs(train_job, jobs, engine, address, desc="subset models")
    outputs = np.stack([np.load(os.path.join(j["out_dir"], "outputs.npy")) for j in jobs])
    save_npy(os.path.join(paths.eval, "outputs.npy"), outputs)
    _keep_ensemble(dataset, [j["out_dir"] for j in jobs[:cfg.ensemble_models]])
    retrain_s = time.time() - t0
    if until == "retrain":
        return {"retrain_seconds": retrain_s}
    return score_lds(dataset, cfg, device, retrain_s)


def run_ensemble(dataset: str, device: str = "cpu", engine: str = "local", address: str | None = None,
                 cfg: EvalConfig | None = None) -> list[str]:
    """Only the first ``cfg.ensemble_models`` LDS subset models (the same jobs, so a later LDS run
    reuses them), kept under assets/<dataset>/ensemble/ for the ensemble methods."""
    cfg = cfg or EvalConfig()
    n = len(load_dataset(dataset).train_idx)
    subsets = make_subsets(n, cfg.ensemble_models, cfg.alpha, cfg.subset_seed)  # = the LDS subsets 0..M-1
    jobs = _subset_jobs(dataset, subsets, cfg, device)
    run_jobs(train_job, jobs, engine, address, desc="ensemble models")
    return _keep_ensemble(dataset, [j["out_dir"] for j in jobs])


def _subset_jobs(dataset: str, subsets: np.ndarray, cfg: EvalConfig, device: str, **extra) -> list[dict]:
    """One ``train_job`` per subset; job j writes to runs/<dataset>/lds/subset_j."""
    return [dict(dataset=dataset, indices=s.tolist(), out_dir=os.path.join(runs_dir(dataset), "lds", f"subset_{j:03d}"),
                 seed=cfg.train_seed, device=device, epochs=cfg.epochs, **extra) for j, s in enumerate(subsets)]


def _keep_ensemble(dataset: str, run_dirs: list[str]) -> list[str]:
    out = []
    for j, run in enumerate(run_dirs):
        out.append(os.path.join(AssetPaths(dataset).base, "ensemble", f"model_{j:02d}"))
        if not os.path.exists(out[-1]):
            shutil.copytree(os.path.join(run, "model"), out[-1])
    return out


def _write_queries(dataset: str, path: str, cfg: EvalConfig, device: str) -> None:
    """Benchmark queries: n_val validation images (seeded choice) and n_gen DDIM-50 samples (seed j)."""
    from explorer.attribution.features import GENERATED_UID
    ds = load_dataset(dataset)
    model = load_model(AssetPaths(dataset).model, device)
    val = np.sort(np.random.default_rng(0).choice(len(ds.val_idx), min(cfg.n_val, len(ds.val_idx)), replace=False))
    gen = ddim_sample(model, list(range(cfg.n_gen)), device=device)
    x = torch.cat([ds.val_x[torch.as_tensor(val)], gen]).numpy().astype(np.float32)
    uid = np.concatenate([ds.val_idx[val], GENERATED_UID + np.arange(cfg.n_gen)]).astype(np.int64)
    split = np.array([0] * len(val) + [1] * cfg.n_gen, dtype=np.int8)  # 0 validation, 1 generated
    tmp = path + ".tmp.npz"
    np.savez(tmp, x=x, uid=uid, split=split, val_pos=val.astype(np.int64), gen_seed=np.arange(cfg.n_gen))
    os.replace(tmp, path)


def score_lds(dataset: str, cfg: EvalConfig, device: str = "cpu", retrain_s: float = 0.0) -> dict:
    """LDS for every (method, S) × split: λ tuned on the first half of the subsets, reported on the second."""
    from explorer.engine import Engine, Query
    paths = AssetPaths(dataset)
    eng = Engine(dataset, device=device, cache_dir=paths.features)
    q = np.load(os.path.join(paths.eval, "queries.npz"), allow_pickle=False)
    outputs = load_npy(os.path.join(paths.eval, "outputs.npy"), mmap=False).astype(np.float64)
    masks = masks_from_subsets(load_npy(os.path.join(paths.eval, "subsets.npy"), mmap=False), len(eng.data.train_idx))
    half = len(masks) // 2
    tune, report = np.arange(half), np.arange(half, len(masks))
    results_path = os.path.join(paths.eval, "lds.json")
    results = json.load(open(results_path)) if os.path.exists(results_path) else {"rows": []}
    done = {(r["method"], r["S"], r["split"]) for r in results["rows"]}
    queries = [Query("val" if s == 0 else "generated", torch.from_numpy(x), int(u))
               for x, u, s in zip(q["x"], q["uid"], q["split"])]
    gen_traj = None
    for split_id, split in ((0, "validation"), (1, "generated")):
        cols = np.flatnonzero(q["split"] == split_id)
        for name, S in cfg.plan:
            m = get_method(name)
            S_key = S if m.uses_timesteps else None
            if (name, S_key, split) in done or (m.query == "journey" and split_id == 0):
                continue
            if m.query == "journey" and gen_traj is None:
                gen_traj = [eng.query_generated(int(s)).trajectory for s in q["gen_seed"]]
            qs = [queries[c] for c in cols]
            if m.query == "journey":
                for qq, tr in zip(qs, gen_traj):
                    qq.trajectory = tr
            t0 = time.time()
            try:
                fn = eng.score_fn(qs, m, TimestepStrategy("uniform", S))
            except Exception as e:  # e.g. ensembles without models: record and go on
                print(f"skip {name} S={S}: {e}")
                continue
            res = evaluate(fn, masks, outputs[:, cols], list(cfg.lambdas) if m.uses_lambda else None, tune, report,
                           cfg.n_boot)
            tag = f"{name}_S{S_key}_{split}"
            scores = fn(res.lam)
            for sub, arr in (("scores", scores.astype(np.float16)), ("pred", predictions(scores, masks).astype(np.float32))):
                os.makedirs(os.path.join(paths.eval, sub), exist_ok=True)
                save_npy(os.path.join(paths.eval, sub, tag + ".npy"), arr)
            results["rows"].append({"method": name, "S": S_key, "split": split, "lds": res.mean,
                                    "ci": list(res.interval), "lambda": res.lam, "paper_style": res.paper_style,
                                    "per_query": res.per_query.round(4).tolist(), "seconds": time.time() - t0})
            print(f"LDS {name:16s} S={S_key} {split:10s} {100 * res.mean:6.2f} "
                  f"[{100 * res.interval[0]:.2f}, {100 * res.interval[1]:.2f}] λ={res.lam}")
            results["config"] = {**asdict(cfg), "plan": None, "tune_subsets": tune.tolist(), "report_subsets": report.tolist()}
            write_json(results_path, results)
    best = {r["method"]: r["lambda"] for r in results["rows"] if r["lambda"] is not None and r["split"] == "validation"
            and r["S"] == 10}
    write_json(os.path.join(paths.eval, "best_lambda.json"), best)
    results["retrain_seconds"] = retrain_s or results.get("retrain_seconds", 0)
    write_json(results_path, results)
    return results


# ---- counterfactual ----
def run_counterfactual(dataset: str, device: str = "cpu", engine: str = "local", address: str | None = None,
                       n_subsets: int | None = None, cfg: EvalConfig | None = None) -> dict:
    from explorer.classifier import load_classifier
    from explorer.engine import Engine
    cfg = cfg or EvalConfig()
    paths, runs = AssetPaths(dataset), runs_dir(dataset)
    os.makedirs(paths.eval, exist_ok=True)
    ds = load_dataset(dataset)
    n, k = len(ds.train_idx), int(round(cfg.cf_fraction * len(ds.train_idx)))
    removed_path = os.path.join(paths.eval, "counterfactual_removed.npz")
    if not os.path.exists(removed_path):
        eng = Engine(dataset, device=device, cache_dir=paths.features)
        seeds = np.sort(np.random.default_rng(cfg.cf_seed).choice(cfg.n_gen, cfg.cf_queries, replace=False))
        qs = [eng.query_generated(int(s)) for s in seeds]
        removed = {"seeds": seeds}
        for name in ("trak", "dtrak"):
            removed[name] = cf.top_proponents(eng.scores(qs, name, TimestepStrategy("uniform", cfg.cf_S)), k)
        removed["random"] = cf.random_removal(n, k, len(seeds), cfg.cf_seed)
        tmp = removed_path + ".tmp.npz"
        np.savez(tmp, **removed)
        os.replace(tmp, removed_path)
    removed = np.load(removed_path, allow_pickle=False)
    seeds, methods = removed["seeds"], ("random", "trak", "dtrak")
    # the full model's own training seed, so a retrained model differs from it only by the removed data
    train_seed = json.load(open(paths.info))["train"]["seed"]
    jobs = [dict(dataset=dataset, indices=cf.keep_indices(n, removed[m][i]).tolist(),
                 out_dir=os.path.join(runs, "counterfactual", f"{m}_{int(s):03d}"), seed=train_seed, device=device,
                 epochs=cfg.epochs)
            for m in methods for i, s in enumerate(seeds)]
    t0 = time.time()
    run_jobs(train_job, jobs, engine, address, desc="counterfactual retrains")
    retrain_s = time.time() - t0
    base = ddim_sample(load_model(paths.model, device), seeds.tolist(), device=device)
    clf = load_classifier(paths.classifier)
    out = {"k": k, "n": n, "seeds": seeds.tolist(), "train_seed": train_seed, "methods": {}, "retrain_seconds": retrain_s}
    images = {"original": base.numpy().astype(np.float16)}
    for m in methods:
        regen = torch.cat([ddim_sample(load_model(os.path.join(runs, "counterfactual", f"{m}_{int(s):03d}", "model"), device),
                                       [int(s)], device=device) for s in seeds])
        images[m] = regen.numpy().astype(np.float16)
        l2, cos = cf.pixel_l2(base, regen), cf.embedding_cosine(clf.embed, base, regen)
        out["methods"][m] = {"l2": l2.tolist(), "cosine": cos.tolist(), "l2_median": float(np.median(l2)),
                             "cosine_median": float(np.median(cos)), "l2_mean": float(l2.mean()),
                             "cosine_mean": float(cos.mean())}
        print(f"counterfactual {m:7s} median L2 {np.median(l2):.3f}  median cosine {np.median(cos):.3f}")
    tmp = os.path.join(paths.eval, "counterfactual_images.tmp.npz")
    np.savez(tmp, **images)
    os.replace(tmp, os.path.join(paths.eval, "counterfactual_images.npz"))
    write_json(os.path.join(paths.eval, "counterfactual.json"), out)
    return out
