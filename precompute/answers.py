"""Stage ``answers``: the benchmark queries and the first answers a model opens on, before its LDS.

A model the maintainer has not retrained 64 times yet (shapes, icons) still opens on a stored answer,
like digits: ``queries.npz`` (validation images and DDIM samples, as the LDS stage writes them) and the
scores of the page's default methods at uniform S = 10 with the default λ, filed through
``explorer.evaluation.results`` (``answers.json``). The LDS stage later files its own tuned rows over them.

    python -m precompute answers --dataset shapes
"""
from __future__ import annotations

import time

from explorer.attribution.registry import BASELINE_METHOD, DEFAULT_METHOD, get_method
from explorer.attribution.timesteps import TimestepStrategy
from explorer.evaluation.results import SPLITS, EvalResults, s_key
from explorer.paths import AssetPaths

from .eval_config import EvalConfig
from .lds import write_queries

ANSWERED = (DEFAULT_METHOD, BASELINE_METHOD)


def run(dataset: str, device: str = "cpu", cfg: EvalConfig | None = None) -> list[dict]:
    from explorer.attribution.timesteps import DEFAULT_S as S
    from explorer.engine import Engine
    cfg = cfg or EvalConfig()
    stored = EvalResults(AssetPaths(dataset).eval)
    if not stored.has_queries:
        write_queries(dataset, stored, cfg, device)
    eng = Engine(dataset, device=device)
    res, rows = eng.results, []
    for name in ANSWERED:
        m = get_method(name)
        for split in SPLITS:
            key = s_key(m.needs.timesteps, S)
            row = res.answer_row(name, key, split)
            if row and row.get("projection") == eng.store.projection and res.stored_scores(name, key, split) is not None:
                continue
            qs = [eng.benchmark_query(int(c)) for c in res.columns(split)]
            t0 = time.time()
            scorer = eng.score_fn(qs, m, TimestepStrategy("uniform", S))
            scores = scorer()
            row = {"method": name, "S": key, "split": split, "lambda": scorer.lam, "projection": eng.store.projection,
                   "seconds": time.time() - t0}
            res.save_answer(row, scores)
            rows.append(row)
            print(f"answers {name} S={key} {split}: {len(qs)} queries in {row['seconds']:.0f} s")
    return rows
