"""The evaluation protocol's settings (LDS and counterfactual), one dataclass, and where retraining runs go."""
from __future__ import annotations

import os
from dataclasses import dataclass, field

from explorer.attribution.damping import LAMBDA_GRID
from explorer.attribution.registry import COUNTERFACTUAL_METHODS, METHODS, S100_METHODS


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
    lambdas: tuple = LAMBDA_GRID
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
