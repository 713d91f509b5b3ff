"""Stage ``lesson``: the two results the guided lesson shows that no other stage stores, written to
``assets/<dataset>/eval/lesson.json`` (small: indices and scores only).

- ``duplicates`` (datasets with planted near-duplicate pairs): each pair's copy is queried with
  fresh noise; per method, the rank of its original among all training images (0 = top; the copy
  itself, a training image, is usually rank 0, so the original at rank 1 is a perfect answer) and
  the top-k shown;
- ``known`` (icons): every Oxygen training icon that also ships at 48×48 is queried with that drawing,
  downscaled (``explorer.datasets.icons.known_answers``); per method, the rank of its 32×32 original and the
  top-1 / top-5 rates;
- ``walk`` (datasets with benchmark queries): the lesson's query attributed at single timesteps,
  as the Timesteps tab does (one seeded noise draw, the per-timestep projection).

    python -m precompute lesson --dataset shapes      # duplicates
    python -m precompute lesson --dataset digits      # timestep walk
    python -m precompute lesson --dataset icons       # known answers
"""
from __future__ import annotations

import os

import numpy as np

from explorer.attribution.features import KNOWN_UID
from explorer.attribution.timesteps import TimestepStrategy
from explorer.engine import TIMESTEP_PROJECTION, Engine
from explorer.lesson import DUPLICATE_METHODS, KNOWN_METHODS, LESSON
from explorer.attribution.projection import Projection


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


def known(eng: Engine) -> dict | None:
    if eng.data.name != "icons":
        return None
    from explorer.datasets.icons import ICON_ROOT, icon_tensor, known_answers
    from explorer.task import Query
    pairs = known_answers(eng.data)
    original = np.array([p for p, _ in pairs])
    queries = [Query("upload", icon_tensor(path), KNOWN_UID + int(p)) for p, path in pairs]
    strategy = TimestepStrategy("uniform", LESSON.S)
    out = {"original": original.tolist(), "files": [os.path.relpath(f, ICON_ROOT) for _, f in pairs], "S": LESSON.S,
           "projection": eng.store.projection, "methods": {}}
    for name in KNOWN_METHODS:
        s = eng.scores(queries, name, strategy)
        rank = (s > s[np.arange(len(pairs)), original][:, None]).sum(1)
        out["methods"][name] = {"top1": float(np.mean(rank < 1)), "top5": float(np.mean(rank < 5)),
                                "rank": rank.tolist(), "top": np.argsort(-s, 1, kind="stable")[:, :5].tolist()}
        print(f"known answers, {name}: top-1 {np.mean(rank < 1):.1%}, top-5 {np.mean(rank < 5):.1%}")
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
    if (kn := known(base)) is not None:
        out["known"] = kn
    p = Projection.parse(TIMESTEP_PROJECTION)
    if (w := walk(Engine(dataset, p.kind, p.k, device=device), LESSON.k)) is not None:
        out["walk"] = w
    base.results.save_lesson(out)
    return out
