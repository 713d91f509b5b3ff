"""``python -m precompute lds``: retrain on the LDS subsets (with their ground truth), then score every
(method, S) × split — λ tuned on the first half of the subsets, reported on the second."""
from __future__ import annotations

import os
import time
from dataclasses import asdict

import numpy as np
import torch

from explorer.attribution.registry import get_method
from explorer.attribution.timesteps import TimestepStrategy
from explorer.evaluation.lds import evaluate, make_subsets, masks_from_subsets, predictions
from explorer.evaluation.results import SPLITS, EvalResults, s_key
from explorer.files import CacheError
from explorer.models import ddim_sample, load_model
from explorer.paths import AssetPaths
from explorer.task import open_dataset

from .ensemble import keep_ensemble, subset_jobs
from .eval_config import EvalConfig
from .jobs import run_jobs
from .retrain import train_job


def run_lds(dataset: str, device: str = "cpu", engine: str = "local", address: str | None = None,
            until: str | None = None, cfg: EvalConfig | None = None) -> dict:
    cfg = cfg or EvalConfig()
    res = EvalResults(AssetPaths(dataset).eval)
    ds = open_dataset(AssetPaths(dataset))
    n = len(ds.train_idx)
    t0 = time.time()

    subsets = protocol_subsets(res, n, cfg)
    if not res.has_queries:
        write_queries(dataset, res, cfg, device)

    jobs = subset_jobs(dataset, subsets, cfg, device, queries=res.path("queries.npz"),
                       gt=(cfg.gt_t_every, cfg.gt_draws))
    run_jobs(train_job, jobs, engine, address, desc="subset models")
    res.save_outputs(np.stack([np.load(os.path.join(j["out_dir"], "outputs.npy")) for j in jobs]))
    keep_ensemble(dataset, [j["out_dir"] for j in jobs[:cfg.ensemble_models]])
    retrain_s = time.time() - t0
    if until == "retrain":
        return {"retrain_seconds": retrain_s}
    return score_lds(dataset, cfg, device, retrain_s)


def protocol_subsets(res: EvalResults, n: int, cfg: EvalConfig) -> np.ndarray:
    """The stored LDS subsets of ``n`` training images, drawn and stored on first use; SystemExit when the
    stored ones are another protocol's."""
    if not res.has_subsets:
        res.save_subsets(make_subsets(n, cfg.n_subsets, cfg.alpha, cfg.subset_seed))
    subsets = res.subsets()
    if len(subsets) != cfg.n_subsets:
        raise SystemExit(f"{res.path('subsets.npy')} holds {len(subsets)} subsets but {cfg.n_subsets} were asked "
                         f"for; delete the eval folder's subsets.npy and outputs.npy to start a new protocol")
    return subsets


def write_queries(dataset: str, res: EvalResults, cfg: EvalConfig, device: str) -> None:
    """Benchmark queries: n_val validation images (seeded choice) and n_gen DDIM-50 samples (seed j)."""
    from explorer.attribution.features import generated_uid
    ds = open_dataset(AssetPaths(dataset))
    model = load_model(AssetPaths(dataset).model, device)
    val = np.sort(np.random.default_rng(0).choice(len(ds.val_idx), min(cfg.n_val, len(ds.val_idx)), replace=False))
    gen = ddim_sample(model, list(range(cfg.n_gen)), device=device)
    x = torch.cat([ds.val_x[torch.as_tensor(val)], gen]).numpy().astype(np.float32)
    uid = np.concatenate([ds.val_idx[val], [generated_uid(s) for s in range(cfg.n_gen)]]).astype(np.int64)
    split = np.array([0] * len(val) + [1] * cfg.n_gen, dtype=np.int8)  # 0 validation, 1 generated
    res.save_queries(x=x, uid=uid, split=split, val_pos=val.astype(np.int64), gen_seed=np.arange(cfg.n_gen))


def score_rows(eng, cfg: EvalConfig, masks: np.ndarray, outputs: np.ndarray, tune: np.ndarray, report: np.ndarray,
               done=lambda name, S_key, split, projection: False):
    """(row, scores) for every (method, S) of ``cfg.plan`` × split not ``done``: λ tuned on subsets ``tune``,
    LDS reported on subsets ``report`` (rows of ``masks`` / ``outputs``, outputs (M, all queries))."""
    res = eng.results
    for name, S in cfg.plan:
        for split in SPLITS:
            cols = res.columns(split)
            m = get_method(name)
            S_key = s_key(m.needs.timesteps, S)
            projection = eng.store.projection if m.needs.gradients else None
            if done(name, S_key, split, projection) or (m.needs.generated_only and split != "generated"):
                continue
            qs = [eng.benchmark_query(int(c), trajectory=m.needs.generated_only) for c in cols]
            t0 = time.time()
            try:
                fn = eng.score_fn(qs, m, TimestepStrategy("uniform", S))
            except CacheError as e:  # e.g. ensembles before the ensemble stage ran: say so and go on
                print(f"skip {name} S={S}: {e}")
                continue
            r = evaluate(fn, masks, outputs[:, cols], list(cfg.lambdas) if m.needs.lam else None, tune, report,
                         cfg.n_boot)
            print(f"LDS {name:16s} S={S_key} {split:10s} {100 * r.mean:6.2f} "
                  f"[{100 * r.interval[0]:.2f}, {100 * r.interval[1]:.2f}] λ={r.lam}")
            yield ({"method": name, "S": S_key, "split": split, "lds": r.mean, "ci": list(r.interval), "lambda": r.lam,
                    "paper_style": r.paper_style, "projection": projection, "per_query": r.per_query.round(4).tolist(),
                    "seconds": time.time() - t0}, fn(r.lam))


def score_lds(dataset: str, cfg: EvalConfig, device: str = "cpu", retrain_s: float = 0.0,
              engine=None, redo: bool = False) -> dict:
    """LDS for every (method, S) × split: λ tuned on the first half of the subsets, reported on the
    second. Rows record the projection they used; a row of another projection is recomputed."""
    from explorer.engine import Engine
    eng = engine or Engine(dataset, device=device)
    res = eng.results
    masks = masks_from_subsets(res.subsets(), len(eng.data.train_idx))
    half = len(masks) // 2
    tune, report = np.arange(half), np.arange(half, len(masks))
    results = res.lds()
    results["config"] = {**asdict(cfg), "plan": None, "tune_subsets": tune.tolist(), "report_subsets": report.tolist()}

    def done(name, S_key, split, projection):
        row = res.row(name, S_key, split)
        return bool(row) and row.get("projection") == projection and not redo
    for row, scores in score_rows(eng, cfg, masks, res.outputs(), tune, report, done):
        res.save_result(row, scores, predictions(scores, masks), results)
    results["retrain_seconds"] = retrain_s or results.get("retrain_seconds", 0)
    res.save_lds(results)
    return results
