"""Stage ``features``: training-feature caches for the shipped methods.

Default plan: TRAK and D-TRAK at S = 10 and 100; every other gradient method at S = 10 (uniform
grid), k = 1024 CountSketch. Methods sharing a feature set (TRAK, relative/renormalized
influence, gradient dot/cosine, Journey-TRAK's training side) are built once."""
from __future__ import annotations

from tqdm.auto import tqdm

from explorer.attribution.methods import METHODS, get_method
from explorer.attribution.timesteps import TimestepStrategy
from explorer.cache import CacheError
from explorer.engine import Engine
from explorer.paths import AssetPaths

PLAN = [("trak", 10), ("dtrak", 10), ("trak", 100), ("dtrak", 100)] + [
    (m, 10) for m in ("kernel-elbo", "kernel-avg", "kernel-l1", "kernel-l2", "kernel-linf", "tracin",
                      "ensemble-trak", "ensemble-dtrak")]


def run(dataset: str, methods: list[str] | None = None, device: str = "cpu", S: list[int] | None = None) -> None:
    engine = Engine(dataset, device=device, cache_dir=AssetPaths(dataset).features)  # build into the shipped assets
    plan = [(m, s) for m in methods for s in (S or [10])] if methods else PLAN
    for name, s in plan:
        method = get_method(name)
        if not method.uses_timesteps:
            continue
        bar = tqdm(total=len(engine.data.train_idx), desc=f"{name} S={s}")

        def progress(done, total):
            bar.n = done
            bar.refresh()
        try:
            engine.train_features(method, TimestepStrategy("uniform", s), progress)
        except CacheError as e:  # ensembles before the ensemble stage has run
            print(f"skipped {name}: {e}")
        bar.close()


assert all(m in METHODS for m, _ in PLAN)
