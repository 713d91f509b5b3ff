"""Fan-out of independent jobs (one subset model, one counterfactual retrain): locally (in
process, or a pool of worker processes) or on a Ray cluster (``--engine ray [--address]``).
Each job writes its own result file atomically and is skipped when that file exists, so a killed
run resumes where it stopped and every engine gives the same results."""
from __future__ import annotations

import os
from concurrent.futures import ProcessPoolExecutor
from typing import Any, Callable

from tqdm.auto import tqdm


def run_jobs(fn: Callable[..., Any], jobs: list[dict], engine: str = "local", address: str | None = None,
             workers: int | None = None, desc: str = "jobs") -> list[Any]:
    """Runs ``fn(**job)`` for every job; returns results in job order."""
    workers = workers or int(os.environ.get("PRECOMPUTE_WORKERS", "1"))
    if engine == "ray":
        import ray  # optional dependency: pip install "ray[default]"

        if not ray.is_initialized():
            ray.init(address=address, **({} if address else {"num_cpus": workers}), include_dashboard=False,
                     log_to_driver=False)
        remote = ray.remote(fn)
        refs = [remote.remote(**job) for job in jobs]
        results = []
        for ref in tqdm(refs, desc=desc):
            results.append(ray.get(ref))
        return results
    if engine != "local":
        raise ValueError(f"unknown engine {engine!r}; use local or ray")
    if workers <= 1:
        return [fn(**job) for job in tqdm(jobs, desc=desc)]
    import multiprocessing as mp

    with ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn")) as pool:
        futures = [pool.submit(fn, **job) for job in jobs]
        return [f.result() for f in tqdm(futures, desc=desc)]
