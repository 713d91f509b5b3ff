"""Stages ``lds`` and ``counterfactual``: real retraining, ground truth, scoring, results.

Heavy, independent jobs (one model per subset or removal set) fan out through ``jobs.run_jobs``
and write to ``runs/<dataset>/`` (not shipped); results go to ``assets/<dataset>/eval/`` through
``explorer.evaluation.results`` (the one owner of that layout). Every step is skipped when its
output exists and was made from the same inputs (resumable)."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from dataclasses import asdict, dataclass, field

import numpy as np
import torch

from explorer.attribution.registry import COUNTERFACTUAL_METHODS, METHODS, S100_METHODS, get_method
from explorer.attribution.timesteps import TimestepStrategy, seeded_noise
from explorer.files import CacheError, load_npy, read_json, save_npy, save_npz, write_json
from explorer.evaluation import counterfactual as cf
from explorer.evaluation.lds import evaluate, make_subsets, masks_from_subsets, measured_outputs, predictions
from explorer.evaluation.results import SPLITS, EvalResults, s_key
from explorer.models import UNET_CONFIGS, ddim_sample, load_model, make_unet, save_model, unet_config_for
from explorer.training import TRAIN_CONFIGS, TrainConfig, train
from explorer.paths import AssetPaths
from explorer.task import open_dataset

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
    cf_methods: tuple = COUNTERFACTUAL_METHODS  # besides random removal
    ensemble_models: int = 4
    epochs: int | None = None  # None: the full model's recipe
    plan: list = field(default_factory=lambda: [(m, 10) for m in METHODS] + [(m, 100) for m in S100_METHODS])


def runs_dir(dataset: str) -> str:
    return os.path.join(os.environ.get("EXPLORER_RUNS", "runs"), os.path.basename(os.path.normpath(dataset)))


def _recipe(dataset: str):
    ds = open_dataset(AssetPaths(dataset))
    return ds, UNET_CONFIGS.get(ds.name) or unet_config_for(ds.channels, ds.resolution), TRAIN_CONFIGS.get(ds.name, TrainConfig())


# ---- jobs (top-level functions: picklable for process pools and Ray) ----
def job_fingerprint(dataset: str, indices: list[int], seed: int, epochs: int | None) -> str:
    """Hash of everything that makes a retrained model what it is: its exact training indices, seed,
    epochs and the whole recipe (UNet and training config)."""
    _, unet_cfg, cfg = _recipe(dataset)
    record = {"indices": [int(i) for i in indices], "seed": seed, "epochs": epochs or cfg.epochs,
              "unet": asdict(unet_cfg), "train": {**asdict(cfg), "seed": seed, "epochs": epochs or cfg.epochs}}
    return hashlib.sha256(json.dumps(record, sort_keys=True, default=list).encode()).hexdigest()[:16]


def train_job(dataset: str, indices: list[int], out_dir: str, seed: int, device: str, epochs: int | None = None,
              queries: str | None = None, gt: tuple | None = None) -> str:
    """Train the full recipe on training indices; optionally measure ground-truth outputs. A folder
    whose ``done.json`` records another job fingerprint (indices, seed, epochs, recipe) is retrained."""
    torch.set_num_threads(1)
    done, outputs = os.path.join(out_dir, "done.json"), os.path.join(out_dir, "outputs.npy")
    fingerprint = job_fingerprint(dataset, indices, seed, epochs)
    if os.path.exists(done):
        if read_json(done).get("fingerprint") == fingerprint:
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
    write_json(done, {"n": len(indices), "seed": seed, "epochs": cfg.epochs, "fingerprint": fingerprint,
                      "indices_sha": hashlib.sha256(np.asarray(indices, np.int64).tobytes()).hexdigest()[:16],
                      "seconds": time.time() - t0})
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
            until: str | None = None, cfg: EvalConfig | None = None) -> dict:
    cfg = cfg or EvalConfig()
    paths = AssetPaths(dataset)
    os.makedirs(paths.eval, exist_ok=True)
    ds = open_dataset(AssetPaths(dataset))
    n = len(ds.train_idx)
    t0 = time.time()

    subsets_path = os.path.join(paths.eval, "subsets.npy")
    if not os.path.exists(subsets_path):
        save_npy(subsets_path, make_subsets(n, cfg.n_subsets, cfg.alpha, cfg.subset_seed))
    subsets = load_npy(subsets_path, mmap=False)
    if len(subsets) != cfg.n_subsets:
        raise SystemExit(f"{subsets_path} holds {len(subsets)} subsets but {cfg.n_subsets} were asked for; "
                         f"delete the eval folder's subsets.npy and outputs.npy to start a new protocol")
    queries_path = os.path.join(paths.eval, "queries.npz")
    if not os.path.exists(queries_path):
        write_queries(dataset, queries_path, cfg, device)

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
    n = len(open_dataset(AssetPaths(dataset)).train_idx)
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


def write_queries(dataset: str, path: str, cfg: EvalConfig, device: str) -> None:
    """Benchmark queries: n_val validation images (seeded choice) and n_gen DDIM-50 samples (seed j)."""
    from explorer.attribution.features import GENERATED_UID
    ds = open_dataset(AssetPaths(dataset))
    model = load_model(AssetPaths(dataset).model, device)
    val = np.sort(np.random.default_rng(0).choice(len(ds.val_idx), min(cfg.n_val, len(ds.val_idx)), replace=False))
    gen = ddim_sample(model, list(range(cfg.n_gen)), device=device)
    x = torch.cat([ds.val_x[torch.as_tensor(val)], gen]).numpy().astype(np.float32)
    uid = np.concatenate([ds.val_idx[val], GENERATED_UID + np.arange(cfg.n_gen)]).astype(np.int64)
    split = np.array([0] * len(val) + [1] * cfg.n_gen, dtype=np.int8)  # 0 validation, 1 generated
    save_npz(path, x=x, uid=uid, split=split, val_pos=val.astype(np.int64), gen_seed=np.arange(cfg.n_gen))


def score_lds(dataset: str, cfg: EvalConfig, device: str = "cpu", retrain_s: float = 0.0,
              engine=None, redo: bool = False) -> dict:
    """LDS for every (method, S) × split: λ tuned on the first half of the subsets, reported on the
    second. Rows record the projection they used; a row of another projection is recomputed."""
    from explorer.engine import Engine
    eng = engine or Engine(dataset, device=device)
    res = eng.results
    outputs = res.outputs()
    masks = masks_from_subsets(res.subsets(), len(eng.data.train_idx))
    half = len(masks) // 2
    tune, report = np.arange(half), np.arange(half, len(masks))
    results = res.lds()
    results["config"] = {**asdict(cfg), "plan": None, "tune_subsets": tune.tolist(), "report_subsets": report.tolist()}
    for name, S in cfg.plan:
        for split in SPLITS:
            cols = res.columns(split)
            m = get_method(name)
            S_key = s_key(m.uses_timesteps, S)
            projection = eng.store.projection if m.uses_gradients else None
            row = res.row(name, S_key, split)
            if (row and row.get("projection") == projection and not redo) or (m.generated_only and split != "generated"):
                continue
            qs = [eng.benchmark_query(int(c), trajectory=m.generated_only) for c in cols]
            t0 = time.time()
            try:
                fn = eng.score_fn(qs, m, TimestepStrategy("uniform", S))
            except CacheError as e:  # e.g. ensembles before the ensemble stage ran: say so and go on
                print(f"skip {name} S={S}: {e}")
                continue
            r = evaluate(fn, masks, outputs[:, cols], list(cfg.lambdas) if m.uses_lambda else None, tune, report,
                         cfg.n_boot)
            scores = fn(r.lam)
            res.save_result({"method": name, "S": S_key, "split": split, "lds": r.mean, "ci": list(r.interval),
                             "lambda": r.lam, "paper_style": r.paper_style, "projection": projection,
                             "per_query": r.per_query.round(4).tolist(), "seconds": time.time() - t0},
                            scores, predictions(scores, masks), results)
            print(f"LDS {name:16s} S={S_key} {split:10s} {100 * r.mean:6.2f} "
                  f"[{100 * r.interval[0]:.2f}, {100 * r.interval[1]:.2f}] λ={r.lam}")
    results["retrain_seconds"] = retrain_s or results.get("retrain_seconds", 0)
    write_json(res.path("lds.json"), results)
    return results


# ---- counterfactual ----
def run_counterfactual(dataset: str, device: str = "cpu", engine: str = "local", address: str | None = None,
                       cfg: EvalConfig | None = None) -> dict:
    """Incremental: a removal method already in ``counterfactual.json`` (same queries, same removed
    images) keeps its result; only methods added to ``cfg.cf_methods`` are retrained and measured."""
    from explorer.classifier import load_classifier
    from explorer.engine import Engine
    cfg = cfg or EvalConfig()
    paths, runs = AssetPaths(dataset), runs_dir(dataset)
    os.makedirs(paths.eval, exist_ok=True)
    ds = open_dataset(AssetPaths(dataset))
    n, k = len(ds.train_idx), int(round(cfg.cf_fraction * len(ds.train_idx)))
    removed_path = os.path.join(paths.eval, "counterfactual_removed.npz")
    removed = dict(np.load(removed_path, allow_pickle=False)) if os.path.exists(removed_path) else {}
    missing = [m for m in cfg.cf_methods if m not in removed]
    if missing or not removed:
        eng = Engine(dataset, device=device)
        removed.setdefault("seeds", np.sort(np.random.default_rng(cfg.cf_seed).choice(cfg.n_gen, cfg.cf_queries,
                                                                                      replace=False)))
        qs = [eng.task.generated(int(s)) for s in removed["seeds"]]
        for name in missing:
            removed[name] = cf.top_proponents(eng.scores(qs, name, TimestepStrategy("uniform", cfg.cf_S)), k)
        removed.setdefault("random", cf.random_removal(n, k, len(removed["seeds"]), cfg.cf_seed))
        save_npz(removed_path, **removed)
    seeds, methods = removed["seeds"], ("random", *cfg.cf_methods)
    prev = EvalResults(paths.eval).counterfactual()
    if prev is not None and prev[0]["seeds"] != seeds.tolist():
        prev = None  # other queries: everything is measured again
    todo = [m for m in methods if prev is None or m not in prev[0]["methods"]]
    # the full model's own training seed, so a retrained model differs from it only by the removed data
    train_seed = json.load(open(paths.info))["train"]["seed"]
    jobs = [dict(dataset=dataset, indices=cf.keep_indices(n, removed[m][i]).tolist(),
                 out_dir=os.path.join(runs, "counterfactual", f"{m}_{int(s):03d}"), seed=train_seed, device=device,
                 epochs=cfg.epochs)
            for m in todo for i, s in enumerate(seeds)]
    t0 = time.time()
    run_jobs(train_job, jobs, engine, address, desc="counterfactual retrains")
    retrain_s = time.time() - t0
    base = ddim_sample(load_model(paths.model, device), seeds.tolist(), device=device)
    clf = load_classifier(paths.classifier)
    out = prev[0] if prev else {"k": k, "n": n, "seeds": seeds.tolist(), "train_seed": train_seed, "methods": {},
                                "retrain_seconds": 0.0}
    out["retrain_seconds"] += retrain_s
    images = prev[1] if prev else {"original": base.numpy().astype(np.float16)}
    for m in todo:
        regen = torch.cat([ddim_sample(load_model(os.path.join(runs, "counterfactual", f"{m}_{int(s):03d}", "model"), device),
                                       [int(s)], device=device) for s in seeds])
        images[m] = regen.numpy().astype(np.float16)
        l2, cos = cf.pixel_l2(base, regen), cf.embedding_cosine(clf.embed, base, regen)
        out["methods"][m] = {"l2": l2.tolist(), "cosine": cos.tolist(), "l2_median": float(np.median(l2)),
                             "cosine_median": float(np.median(cos)), "l2_mean": float(l2.mean()),
                             "cosine_mean": float(cos.mean())}
        print(f"counterfactual {m:7s} median L2 {np.median(l2):.3f}  median cosine {np.median(cos):.3f}")
    save_npz(os.path.join(paths.eval, "counterfactual_images.npz"), **images)
    write_json(os.path.join(paths.eval, "counterfactual.json"), out)
    return out
