"""Stage ``lesson``: the two results the guided lesson shows that no other stage stores, written to
``assets/<dataset>/eval/lesson.json`` (small: indices and scores only).

- ``duplicates`` (datasets with planted near-duplicate pairs): each pair's copy is queried with
  fresh noise; per method, the rank of its original among all training images (0 = top; the copy
  itself, a training image, is usually rank 0, so the original at rank 1 is a perfect answer) and
  the top-k shown;
- ``walk`` (datasets with benchmark queries): the lesson's query attributed at single timesteps,
  as the Timesteps tab does (one seeded noise draw, the per-timestep projection).

    python -m precompute lesson --dataset shapes      # duplicates
    python -m precompute lesson --dataset digits      # timestep walk
"""
from __future__ import annotations

import numpy as np

from explorer.attribution.timesteps import TimestepStrategy
from explorer.cache import write_json
from explorer.engine import TIMESTEP_PROJECTION, Engine
from explorer.lesson import DUPLICATE_METHODS, LESSON
from explorer.store import parse_projection


def duplicates(eng: Engine, k: int) -> dict | None:
    pairs = eng.data.meta.get("duplicates") if eng.data.meta else None
    if not pairs:
        return None
    pos = {int(d): i for i, d in enumerate(eng.data.train_idx)}
    original, copy = (np.array([pos[p[j]] for p in pairs]) for j in (0, 1))
    strategy = TimestepStrategy("uniform", LESSON.S)
    out = {"original": original.tolist(), "copy": copy.tolist(), "S": LESSON.S, "projection": eng.store.projection,
           "methods": {}}
    for name in DUPLICATE_METHODS:
        s = eng.scores([eng.task.train_query(int(c), fresh=True) for c in copy], name, strategy)
        rank = (s > s[np.arange(len(pairs)), original][:, None]).sum(1)
        top = np.argsort(-s, 1, kind="stable")[:, :k]
        out["methods"][name] = {"rank": rank.tolist(), "top": top.tolist(),
                                "scores": np.take_along_axis(s, top, 1).tolist()}
    return out


def walk(eng: Engine, k: int) -> dict | None:
    if not eng.results.has_queries:
        return None
    q = eng.benchmark_query(LESSON.query)
    steps = []
    for t in LESSON.walk:
        res = eng.attribute(q, LESSON.method, TimestepStrategy.single(t), topk=k)
        steps.append({"t": t, "top": res.top.proponents[0].tolist(), "scores": res.top.proponent_scores[0].tolist()})
    return {"query": LESSON.query, "method": LESSON.method, "projection": eng.store.projection, "steps": steps}


def run(dataset: str, device: str = "cpu") -> dict:
    base = Engine(dataset, device=device)
    out = {"k": LESSON.k}
    if (d := duplicates(base, LESSON.k)) is not None:
        out["duplicates"] = d
    if (w := walk(Engine(dataset, *parse_projection(TIMESTEP_PROJECTION), device=device), LESSON.k)) is not None:
        out["walk"] = w
    write_json(base.results.path("lesson.json"), out)
    return out
