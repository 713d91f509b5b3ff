"""Stage ``features``: training-feature caches (in the feature cache, ``.cache/`` or
``$EXPLORER_CACHE``; nothing is written under ``assets/``).

Default plan: TRAK and D-TRAK at S = 10 — what the page needs for an uploaded image at once.
Every other (method, S) is built when first asked for, or here with ``--method``. Methods sharing
a feature set (TRAK, relative/renormalized influence, gradient dot/cosine, Journey-TRAK's training
side) are built once."""
from __future__ import annotations

from tqdm.auto import tqdm

from explorer.attribution.methods import get_method
from explorer.attribution.timesteps import TimestepStrategy
from explorer.engine import Engine

PLAN = [("dtrak", 10), ("trak", 10)]


def run(dataset: str, methods: list[str] | None = None, device: str = "cpu", S: list[int] | None = None,
        engine: Engine | None = None) -> None:
    engine = engine or Engine(dataset, device=device)
    plan = [(m, s) for m in methods for s in (S or [10])] if methods else PLAN
    for name, s in plan:
        method, strategy = get_method(name), TimestepStrategy("uniform", s)
        if engine.ready(method, strategy):
            continue
        with tqdm(total=len(engine.data.train_idx), desc=f"{method.label} S={s} ({engine.store.projection})",
                  unit="img") as bar:
            def progress(done, total):
                bar.update(done - bar.n)
            engine.build(method, strategy, progress)
