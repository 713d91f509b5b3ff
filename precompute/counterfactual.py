"""``python -m precompute counterfactual``: remove each method's top proponents of a few generated images,
retrain with the full model's seed, regenerate from the same noise, measure the change."""
from __future__ import annotations

import json
import os
import time

import numpy as np
import torch

from explorer.attribution.timesteps import TimestepStrategy
from explorer.evaluation import counterfactual as cf
from explorer.evaluation.results import EvalResults
from explorer.models import ddim_sample, load_model
from explorer.paths import AssetPaths
from explorer.task import open_dataset

from .eval_config import EvalConfig, runs_dir
from .jobs import run_jobs
from .retrain import train_job


def run_counterfactual(dataset: str, device: str = "cpu", engine: str = "local", address: str | None = None,
                       cfg: EvalConfig | None = None) -> dict:
    """Incremental: a removal method already in ``counterfactual.json`` (same queries, same removed
    images) keeps its result; only methods added to ``cfg.cf_methods`` are retrained and measured."""
    from explorer.classifier import load_classifier
    from explorer.engine import Engine
    cfg = cfg or EvalConfig()
    paths, runs = AssetPaths(dataset), runs_dir(dataset)
    results = EvalResults(paths.eval)
    ds = open_dataset(AssetPaths(dataset))
    n, k = len(ds.train_idx), int(round(cfg.cf_fraction * len(ds.train_idx)))
    removed = results.removed()
    missing = [m for m in cfg.cf_methods if m not in removed]
    if missing or not removed:
        eng = Engine(dataset, device=device)
        removed.setdefault("seeds", np.sort(np.random.default_rng(cfg.cf_seed).choice(cfg.n_gen, cfg.cf_queries,
                                                                                      replace=False)))
        qs = [eng.task.generated(int(s)) for s in removed["seeds"]]
        for name in missing:
            removed[name] = cf.top_proponents(eng.scores(qs, name, TimestepStrategy("uniform", cfg.cf_S)), k)
        removed.setdefault("random", cf.random_removal(n, k, len(removed["seeds"]), cfg.cf_seed))
        results.save_removed(removed)
    seeds, methods = removed["seeds"], ("random", *cfg.cf_methods)
    prev = results.counterfactual()
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
        out["methods"][m] = cf.change_summary(l2, cos)
        print(f"counterfactual {m:7s} median L2 {np.median(l2):.3f}  median cosine {np.median(cos):.3f}")
    results.save_counterfactual(out, images)
    return out
