"""Stage ``features``: training-feature caches (in the feature cache, ``.cache/`` or
``$EXPLORER_CACHE``; nothing is written under ``assets/``).

Default plan: TRAK and D-TRAK at S = 10 — what the page needs for an uploaded image at once.
Every other (method, S) is built when first asked for, or here with ``--method``. Methods sharing
a feature set (TRAK, relative/renormalized influence, gradient dot/cosine, Journey-TRAK's training
side) are built once."""
from __future__ import annotations

from tqdm.auto import tqdm

from explorer.attribution.registry import BASELINE_METHOD, DEFAULT_METHOD, get_method
from explorer.attribution.timesteps import TimestepStrategy
from explorer.engine import Engine
from explorer.store import FEATURES

from .jobs import run_jobs

PLAN = [(DEFAULT_METHOD, 10), (BASELINE_METHOD, 10)]  # what the app builds at its first start


def run(dataset: str, methods: list[str] | None = None, device: str = "cpu", S: list[int] | None = None,
        engine: str = "local", address: str | None = None, cache_dir: str | None = None) -> None:
    """Builds the plan's missing feature sets. ``engine="ray"`` fans each set out as one job per shard of
    training images (``--address`` of a Ray cluster, else a local instance with ``PRECOMPUTE_WORKERS``
    CPUs); the shards are then merged into the one manifest-checked cache, as a local build writes it."""
    eng = Engine(dataset, device=device, cache_dir=cache_dir)
    plan = [(m, s) for m in methods for s in (S or [10])] if methods else PLAN
    for name, s in plan:
        method, strategy = get_method(name), TimestepStrategy("uniform", s)
        if eng.ready(method, strategy):
            continue
        if engine != "local" and method.needs.gradients:
            for model_dir in eng.store.model_dirs(method.models):
                jobs = [dict(dataset=dataset, model_dir=model_dir, output_fn=method.output_fn, S=s, shard=i,
                             device=device, cache_dir=eng.store.cache_dir)
                        for i in range(eng.store.open_shards(model_dir, method.output_fn, strategy))]
                run_jobs(shard_job, jobs, engine, address, desc=f"{method.label} S={s} shards")
        with tqdm(total=len(eng.data.train_idx), desc=f"{method.label} S={s} ({eng.store.projection})",
                  unit="img") as bar:
            def progress(done, total, phase=FEATURES):
                if phase == FEATURES:
                    bar.update(done - bar.n)
                else:
                    bar.set_postfix_str(phase)
            eng.build(method, strategy, progress)  # merges the shards (and computes any that are missing)


def shard_job(dataset: str, model_dir: str, output_fn: str, S: int, shard: int, device: str, cache_dir: str) -> int:
    """One worker's part of a feature build: shard ``shard`` of the default projection's features."""
    Engine(dataset, device=device, cache_dir=cache_dir).store.build_shard(model_dir, output_fn,
                                                                          TimestepStrategy("uniform", S), shard)
    return shard
