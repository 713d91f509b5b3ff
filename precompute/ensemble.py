"""``python -m precompute ensemble``: the first LDS subset models (the same jobs, so a later LDS run reuses
them), kept under assets/<dataset>/ensemble/ for the ensemble methods."""
from __future__ import annotations

import os
import shutil

import numpy as np

from explorer.evaluation.lds import make_subsets
from explorer.paths import AssetPaths
from explorer.task import open_dataset

from .eval_config import EvalConfig, runs_dir
from .jobs import run_jobs
from .retrain import train_job


def run_ensemble(dataset: str, device: str = "cpu", engine: str = "local", address: str | None = None,
                 cfg: EvalConfig | None = None) -> list[str]:
    """Only the first ``cfg.ensemble_models`` LDS subset models (the same jobs, so a later LDS run
    reuses them), kept under assets/<dataset>/ensemble/ for the ensemble methods."""
    cfg = cfg or EvalConfig()
    n = len(open_dataset(AssetPaths(dataset)).train_idx)
    subsets = make_subsets(n, cfg.ensemble_models, cfg.alpha, cfg.subset_seed)  # = the LDS subsets 0..M-1
    jobs = subset_jobs(dataset, subsets, cfg, device)
    run_jobs(train_job, jobs, engine, address, desc="ensemble models")
    return keep_ensemble(dataset, [j["out_dir"] for j in jobs])


def subset_jobs(dataset: str, subsets: np.ndarray, cfg: EvalConfig, device: str, **extra) -> list[dict]:
    """One ``train_job`` per subset; job j writes to runs/<dataset>/lds/subset_j."""
    return [dict(dataset=dataset, indices=s.tolist(), out_dir=os.path.join(runs_dir(dataset), "lds", f"subset_{j:03d}"),
                 seed=cfg.train_seed, device=device, epochs=cfg.epochs, **extra) for j, s in enumerate(subsets)]


def keep_ensemble(dataset: str, run_dirs: list[str]) -> list[str]:
    out = []
    for j, run in enumerate(run_dirs):
        out.append(os.path.join(AssetPaths(dataset).base, "ensemble", f"model_{j:02d}"))
        if not os.path.exists(out[-1]):
            shutil.copytree(os.path.join(run, "model"), out[-1])
    return out
