"""Wall time of the digits evaluation on this machine, from a measured sample of its jobs.

    PYTHONPATH=. python benchmarks/eval_wall_time.py --out benchmarks/results/eval_wall_time.json
Trains ``--workers`` LDS subset models (full recipe + ground truth, exactly the LDS stage's jobs)
side by side with that many worker processes, and adds the LDS scoring time recorded in the shipped
``lds.json``. The 64-model total is extrapolated from the measured wall time, not run end to end."""
import argparse
import os
import tempfile
import time


from benchmarks.common import report
from explorer.evaluation.results import EvalResults
from explorer.paths import AssetPaths
from precompute.eval_config import EvalConfig
from precompute.retrain import train_job
from precompute.jobs import run_jobs


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--out")
    a = p.parse_args()
    cfg, res = EvalConfig(), EvalResults(AssetPaths("digits").eval)
    subsets = res.subsets()
    with tempfile.TemporaryDirectory() as tmp:
        jobs = [dict(dataset="digits", indices=subsets[j].tolist(), out_dir=os.path.join(tmp, str(j)), seed=0,
                     device="cpu", queries=res.path("queries.npz"), gt=(cfg.gt_t_every, cfg.gt_draws))
                for j in range(a.workers)]
        t = time.perf_counter()
        run_jobs(train_job, jobs, workers=a.workers)
        wall = time.perf_counter() - t
    retrain = wall * cfg.n_subsets / a.workers
    scoring = sum(r["seconds"] for r in res.lds()["rows"])
    report({"workers": a.workers, "measured_jobs": a.workers, "measured_wall_s": wall, "subsets": cfg.n_subsets,
            "retrain_and_ground_truth_s_extrapolated": retrain, "lds_scoring_s_recorded": scoring,
            "total_h": (retrain + scoring) / 3600}, a.out)


if __name__ == "__main__":
    main()
