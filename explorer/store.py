"""The feature store: where each training feature set lives (shipped ``assets/`` first, then the
on-demand cache), manifest-checked loading, query-side features, kernels, and builds shared by
everyone who asks for the same set.

A missing set is built once per (model, output function, timesteps, projection), in a background
thread, however many callers wait for it; a build whose last waiting caller left stops after its
current shard (the finished shards stay on disk, so the next request resumes it).
"""
from __future__ import annotations

import hashlib
import json
import os
import threading
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from . import cache
from .build_rates import START_S, PhaseClock, Rates, features_key, gram_rate, spectrum_rate
from .memory import Held
from .attribution.features import FeatureComputer, FeatureSpec, embedding_features, pixel_features
from .attribution.kernel import Features, Kernel, eigenpairs
from .attribution.method import Fit
from .attribution.projection import Projection
from .attribution.timesteps import TimestepStrategy
from .files import atomic_write
from .models import load_model, weights_fingerprint
from .task import Task

Progress = Callable[[int, int, str], None]  # (done, total, phase): each phase of a build reports its own fraction
FEATURES, GRAM, SPECTRUM = "training features", "Gram matrix Φ Φᵀ", "eigendecomposition of the kernel"


class BuildStopped(RuntimeError):
    """Every caller waiting for a build left; it stopped after its current shard and resumes later."""


@dataclass(frozen=True)
class BuildOrder:
    """One feature set to build, as a fresh process needs it (all picklable): see ``explorer.build_worker``."""
    dataset: str
    root: str
    projector: str
    k: int
    seed: int
    cache_dir: str
    device: str
    model_dir: str
    output_fn: str
    strategy: TimestepStrategy


class _Job:
    def __init__(self, fn: Callable[[Progress, Callable[[], bool]], object]):
        self.fn, self.waiters, self.stop = fn, 0, False
        self.progress, self.result, self.error = (0, 1, FEATURES), None, None
        self.done = threading.Event()
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self):
        try:
            self.result = self.fn(self._set_progress, lambda: self.stop)
        except BaseException as e:  # handed to every waiting caller
            self.error = e
        self.done.set()

    def _set_progress(self, done: int, total: int, phase: str = FEATURES):
        self.progress = (done, total, phase)


class Builds:
    """One background job per key, shared by every caller that asks while it runs."""

    def __init__(self):
        self._lock = threading.Lock()
        self._jobs: dict[str, _Job] = {}

    def running(self, key: str | None = None) -> bool:
        """Whether the build ``key`` (any build, without a key) is running now."""
        jobs = list(self._jobs.values()) if key is None else [self._jobs.get(key)]
        return any(job is not None and not job.done.is_set() for job in jobs)

    def run(self, key: str, fn, progress: Progress | None = None, left: Callable[[], bool] = lambda: False):
        """Waits for the (shared) job ``fn(progress, should_stop)``; ``left()`` true means this
        caller has gone (the job stops once no caller is left)."""
        with self._lock:
            job = self._jobs.get(key)
            if job is None or job.done.is_set():
                job = self._jobs[key] = _Job(fn)
            job.waiters += 1
            job.stop = False
        try:
            while not job.done.wait(0.2):
                if progress:
                    progress(*job.progress)
                if left():
                    raise BuildStopped("the page that asked for this build was closed")
            if progress:  # the last report, which the polling above may have missed
                progress(*job.progress)
            if job.error is not None:
                raise job.error
            return job.result
        finally:
            with self._lock:
                job.waiters -= 1
                if job.waiters == 0:
                    job.stop = True
                    if job.done.is_set() and self._jobs.get(key) is job:
                        del self._jobs[key]


BUILDS = Builds()  # process-wide: every engine and visitor shares it


class FeatureStore:
    def __init__(self, task: Task, projector: str | None = None, k: int = 4096, seed: int = 0,
                 cache_dir: str | None = None, device: str = "cpu",
                 runner: Callable[[BuildOrder, Progress, Callable[[], bool]], None] | None = None):
        """``runner(order, progress, should_stop)`` builds missing features elsewhere (a worker process,
        ``explorer.build_worker.run_in_worker``) into this store's cache; None builds them in this process."""
        self.task, self.seed, self.device, self.runner = task, seed, device, runner
        if projector is None:
            default = Projection.default(len(task.data.train_idx), task.n_attributed_parameters)
            projector, k = default.kind, default.k
        self.projector, self.k = projector, k
        self.cache_dir = cache_dir or task.paths.runtime_features
        self._features = Held()  # within the process-wide memory budget (least recently used go first)
        self._kernels = Held()
        self._models: dict = {task.paths.model: task.model}
        self._probes: dict = {}  # timed gradient chunks (model inputs per second) per (model, output function)
        self.rates = Rates(self.cache_dir)  # measured build phases on this machine
        self._fits: dict = {}  # per (fit, model, timesteps): DAS residual sizes, EK-FAC factors
        self._fit_paths: dict = {}

    @property
    def projection(self) -> str:
        return Projection(self.projector, self.k).name

    def spec(self, output_fn: str, strategy: TimestepStrategy) -> FeatureSpec:
        return FeatureSpec(output_fn, strategy, self.projector, self.k, self.seed)

    # ---- models ----
    def model_dirs(self, which: str) -> list[str]:
        """final | checkpoints (TracIn: intermediate checkpoints + final) | ensemble (50 % subset models)."""
        paths = self.task.paths
        if which == "checkpoints":
            return paths.checkpoint_dirs()
        if which == "ensemble":
            dirs = paths.ensemble_dirs()
            if not dirs:
                raise cache.CacheError("this model has no ensemble models (the maintainer can train them with "
                                       "`python -m precompute ensemble`)")
            return dirs
        return [paths.model]

    def model(self, folder: str):
        if folder not in self._models:
            self._models[folder] = load_model(folder, self.device)
        return self._models[folder]

    # ---- training features ----
    def _folders(self, model_dir: str, spec: FeatureSpec) -> tuple[str, str]:
        name = os.path.relpath(model_dir, self.task.paths.base).replace(os.sep, "-")
        return os.path.join(self.task.paths.features, name, spec.key), os.path.join(self.cache_dir, name, spec.key)

    def _expected(self, model_dir: str, spec: FeatureSpec) -> dict:
        """What a cached feature set must have been built from: ``_provenance`` and the feature spec."""
        return {**self._provenance(model_dir), "spec": spec.to_json()}

    def _provenance(self, model_dir: str) -> dict:
        """The training data and model weights anything cached was computed from; a text-to-image task adds its
        captions' encoding (the same drawings under other captions have other gradients)."""
        out = {"dataset": self.task.data.name, "data_sha": self.task.data_hash,
               "weights_sha": weights_fingerprint(self.model(model_dir))}
        if self.task.train_context is not None:
            out["captions_sha"] = hashlib.sha256(self.task.train_context.numpy().tobytes()).hexdigest()[:16]
        return out

    def _load(self, model_dir: str, spec: FeatureSpec) -> Features | None:
        shipped, folder = self._folders(model_dir, spec)
        if folder in self._features:
            return self._features[folder]
        expected = self._expected(model_dir, spec)
        for candidate in dict.fromkeys([shipped, folder]):
            if os.path.exists(os.path.join(candidate, "manifest.json")):
                try:
                    self._features[folder] = cache.load(candidate, expected)
                    return self._features[folder]
                except cache.CacheError:
                    continue  # stale or incomplete: rebuilt into the cache
        return None

    def ready(self, models: list[str], output_fn: str, strategy: TimestepStrategy) -> bool:
        return all(self._load(m, self.spec(output_fn, strategy)) is not None for m in models)

    def gradients(self, model_dir: str, output_fn: str, strategy: TimestepStrategy, progress: Progress | None = None,
                  build: bool = True, left: Callable[[], bool] = lambda: False) -> Features:
        """The (n × k) training features of one model, loaded, or built (shared) when missing."""
        spec = self.spec(output_fn, strategy)
        feats = self._load(model_dir, spec)
        if feats is not None:
            return feats
        if not build:
            raise cache.CacheError("these training features are not computed yet")
        _, folder = self._folders(model_dir, spec)

        def job(report: Progress, should_stop: Callable[[], bool]) -> Features:
            clock = PhaseClock(report, FEATURES)
            if self.runner is not None:
                self.runner(BuildOrder(self.task.paths.dataset, self.task.paths.root, self.projector, self.k, self.seed,
                                       self.cache_dir, self.device, model_dir, output_fn, strategy), clock, should_stop)
                feats = cache.load(folder, self._expected(model_dir, spec))
            else:
                feats = self.build_here(model_dir, output_fn, strategy, clock, should_stop)
            clock.finish(self.rates, self._phase_work(output_fn, strategy, feats.k))
            return feats

        self._features[folder] = BUILDS.run(folder, job, progress, left)
        return self._features[folder]

    def build_here(self, model_dir: str, output_fn: str, strategy: TimestepStrategy, report: Progress,
                   should_stop: Callable[[], bool] = lambda: False) -> Features:
        """Builds one feature set in this thread, reporting every phase as it starts and ends (a build
        worker's whole job): the features (resuming from the shards on disk), their Gram matrix and the
        kernel's eigenpairs, so the first visitor after it waits for neither."""
        spec = self.spec(output_fn, strategy)
        _, folder = self._folders(model_dir, spec)
        feats = cache.build(folder, self._expected(model_dir, spec), len(self.task.data.train_idx),
                            self._rows(self.model(model_dir), spec, should_stop), lambda a, b: report(a, b, FEATURES))
        for phase, step in ((GRAM, self.gram), (SPECTRUM, self.spectrum)):
            report(0, 1, phase)
            step(feats)
            report(1, 1, phase)
        return feats

    def _rows(self, model, spec: FeatureSpec, should_stop: Callable[[], bool] = lambda: False):
        """``rows(a, b)`` for ``cache.build``: the features of training images a … b−1."""
        fc = self._computer(model, spec)
        x, uids, ctx = self.task.train_inputs, [int(i) for i in self.task.data.train_idx], self.task.train_context

        def rows(a, b):
            if should_stop():
                raise BuildStopped("nobody is waiting for this build any more; it resumes on the next request")
            return ((slice(a + s.start, a + s.stop), p)
                    for s, p in fc.iter_features(x[a:b], uids[a:b], None if ctx is None else ctx[a:b]))
        return rows

    def open_shards(self, model_dir: str, output_fn: str, strategy: TimestepStrategy) -> int:
        """Opens a feature build for workers on other processes or machines (``build_shard``); returns the
        number of shards. ``gradients`` then merges them (and computes any that are missing)."""
        spec = self.spec(output_fn, strategy)
        cache.begin(self._folders(model_dir, spec)[1], self._expected(model_dir, spec), len(self.task.data.train_idx))
        return cache.n_shards(len(self.task.data.train_idx))

    def build_shard(self, model_dir: str, output_fn: str, strategy: TimestepStrategy, i: int) -> None:
        """Computes shard i of a build opened by ``open_shards`` (one worker's part)."""
        spec = self.spec(output_fn, strategy)
        cache.write_shard(self._folders(model_dir, spec)[1], i, len(self.task.data.train_idx),
                          self._rows(self.model(model_dir), spec))

    def _phase_work(self, output_fn: str, strategy: TimestepStrategy, k: int) -> dict[str, tuple[str, float]]:
        """Per phase of one model's build: (its key in the measured rates, its units of work)."""
        n, S = len(self.task.data.train_idx), len(strategy.timesteps())
        return {"start": ("start", 1),
                FEATURES: (features_key(self.task.paths.dataset, output_fn, self.projection), n * S),
                GRAM: ("gram", n * n * k if n < k else 0),
                SPECTRUM: ("spectrum/" + ("dual" if n < k else "primal"), min(n, k) ** 3)}

    def estimate_seconds(self, models: list[str], output_fn: str, strategy: TimestepStrategy) -> float:
        """Build time of the missing sets: each phase's work at the rate measured by this machine's recent
        builds (``explorer.build_rates``), or, before any, from a timed gradient chunk of this model and timed
        matrix products; scaled by the current load."""
        missing = [m for m in models if self._load(m, self.spec(output_fn, strategy)) is None]
        if not missing:
            return 0.0
        k = self.task.n_attributed_parameters if self.projector == "exact" else self.k
        work = self._phase_work(output_fn, strategy, k)
        fallback = {"start": lambda: START_S, work[FEATURES][0]: lambda: 1 / self._probe_rate(output_fn),
                    "gram": gram_rate, work[SPECTRUM][0]: spectrum_rate}
        return len(missing) * self.rates.estimate(dict(work.values()), fallback)

    def _probe_rate(self, output_fn: str) -> float:
        """Model inputs per second of this model's gradients, from one timed chunk (8 images × 8 timesteps)."""
        key = (self.task.paths.model, output_fn)
        if key not in self._probes:
            fc = self._computer(self.task.model, self.spec(output_fn, TimestepStrategy("uniform", 8)))
            x, ctx = self.task.train_inputs[:8], self.task.train_context
            ctx = None if ctx is None else ctx[:8]
            fc(x, list(range(8)), ctx)  # warm-up
            t = time.perf_counter()
            fc(x, list(range(8)), ctx)
            self._probes[key] = 64 / (time.perf_counter() - t)
        return self._probes[key]

    def gram(self, feats: Features) -> np.ndarray | None:
        """Φ Φᵀ of stored features (n < k), kept in the cache under the features' checksum: computing it
        for exact digits gradients takes ~13 s, reading it a few ms. None for features not on disk."""
        if feats.sha is None or feats.n >= feats.k:
            return None
        path = os.path.join(self.cache_dir, "gram", f"{feats.sha[:32]}.npy")
        if os.path.exists(path):
            g = np.load(path)
            if g.shape == (feats.n, feats.n):
                return g
        g = feats.gram()
        cache.save_npy(path, g)
        return g

    def spectrum(self, feats: Features) -> tuple[np.ndarray, np.ndarray] | None:
        """The kernel's eigenpairs (``kernel.eigenpairs``) of stored features, cached like the Gram matrix."""
        if feats.sha is None:
            return None
        path = os.path.join(self.cache_dir, "spectrum", f"{feats.sha[:32]}")
        r = min(feats.n, feats.k)
        try:
            s, vecs = np.load(path + ".s.npy"), np.load(path + ".v.npy")
            if s.shape == (r,) and vecs.shape == (r, r):
                return s, vecs
        except (OSError, ValueError):
            pass
        s, vecs = eigenpairs(feats, self.gram(feats))
        cache.save_npy(path + ".v.npy", vecs)
        cache.save_npy(path + ".s.npy", s)  # written last: its presence means both are complete
        return s, vecs

    def kernel(self, key: tuple, feats: Features) -> Kernel:
        if key not in self._kernels:
            self._kernels[key] = Kernel(feats, spectrum=self.spectrum(feats))
        return self._kernels[key]

    def fitted(self, fit: Fit, model_dir: str, strategy: TimestepStrategy, progress: Progress | None = None,
               left: Callable[[], bool] = lambda: False):
        """A method's fit over the training set — ``fit.fn(model, training inputs, their uids, strategy, seed,
        context=, param_names=, schedule=)`` (DAS's residuals, EK-FAC's factors), with the task's encoded
        training captions (text-to-image; else None), attributed parameters (None: all) and noise schedule —
        once per (fit, model, timesteps): kept in memory for the life of the engine, and in the cache
        (``fits/``, named by the hash of everything the fit reads) so that a restarted server does not fit
        again. A missing fit runs as a shared build (a second caller joins the first's, with its progress);
        its time per training input is filed with the build rates. The fit is the method's; the store only
        memoises it."""
        key = (fit.name, model_dir, strategy.key)
        if key in self._fits:
            return self._fits[key]
        path = self._fit_path(fit.name, model_dir, strategy)

        def job(report: Progress, should_stop: Callable[[], bool]):
            value = _load_fit(path)
            if value is None:
                report(0, 1, fit.label)
                t0 = time.perf_counter()
                value = fit.fn(self.model(model_dir), self.task.train_inputs,
                               [int(u) for u in self.task.data.train_idx], strategy, self.seed,
                               context=self.task.train_context, param_names=self.task.param_names,
                               schedule=self.task.schedule)
                _save_fit(path, value)
                self.rates.record(_fit_key(fit), time.perf_counter() - t0, self._fit_units(strategy))
                report(1, 1, fit.label)
            self._fits[key] = value
            return value
        return BUILDS.run(path, job, progress, left)

    def has_fit(self, fit: Fit, model_dir: str, strategy: TimestepStrategy) -> bool:
        """Whether the fit is in memory or in the cache (no fitting)."""
        return (fit.name, model_dir, strategy.key) in self._fits or os.path.exists(
            self._fit_path(fit.name, model_dir, strategy))

    def fit_seconds(self, fit: Fit, output_fn: str, strategy: TimestepStrategy) -> float:
        """Time of one fit: its training inputs at the rate this machine's earlier fits took, or, before any,
        ``fit.passes`` times the rate of this model's gradients."""
        return self.rates.estimate({_fit_key(fit): self._fit_units(strategy)},
                                   {_fit_key(fit): lambda: fit.passes / self._probe_rate(output_fn)})

    def _fit_units(self, strategy: TimestepStrategy) -> int:
        return len(self.task.data.train_idx) * len(strategy.timesteps())

    def _fit_path(self, name: str, model_dir: str, strategy: TimestepStrategy) -> str:
        key = (name, model_dir, strategy.key)
        if key not in self._fit_paths:  # hashing the weights takes a moment: once per fit
            record = {**self._provenance(model_dir), "fit": name, "seed": self.seed,
                      "timesteps": [int(t) for t in strategy.timesteps()], "params": self.task.param_names}
            sha = hashlib.sha256(json.dumps(record, sort_keys=True).encode()).hexdigest()[:16]
            self._fit_paths[key] = os.path.join(self.cache_dir, "fits", f"{name}-{sha}.pt")
        return self._fit_paths[key]

    # ---- query features ----
    def query_gradients(self, model_dir: str, output_fn: str, strategy: TimestepStrategy, queries: list,
                        noise_seed: int | None = None) -> np.ndarray:
        fc = self._computer(self.model(model_dir), self.spec(output_fn, strategy), noise_seed)
        return fc(torch.stack([q.x for q in queries]), [q.uid for q in queries], self._context(queries))

    def raw_query_gradients(self, model_dir: str, output_fn: str, strategy: TimestepStrategy, queries: list,
                            noise_seed: int | None = None) -> tuple:
        """(the feature computer, the queries' unprojected gradient blocks): for methods that transform
        the gradient before projecting it (EK-FAC)."""
        fc = self._computer(self.model(model_dir), self.spec(output_fn, strategy), noise_seed)
        x = torch.stack([q.x for q in queries])
        chunks = [blocks for _, blocks in fc.grads.chunks(x, fc.noise([q.uid for q in queries], tuple(x.shape[1:])),
                                                          fc.ts, context=self._context(queries))]
        return fc, [torch.cat(col) for col in zip(*chunks)]  # chunked: memory bounded like the features

    def _computer(self, model, spec: FeatureSpec, noise_seed: int | None = None) -> FeatureComputer:
        """Gradients with respect to the task's attributed parameters (a LoRA's adapters; default all)."""
        return FeatureComputer(model, spec, self.device, self.task.param_names, noise_seed, self.task.schedule)

    @staticmethod
    def _context(queries: list) -> torch.Tensor | None:
        """The queries' encoded captions (text-to-image), stacked; None for unconditional queries."""
        if all(q.context is None for q in queries):
            return None
        if any(q.context is None for q in queries):
            raise ValueError("a text-to-image model's queries each need a caption")
        return torch.stack([q.context for q in queries])

    def journey_gradients(self, model_dir: str, output_fn: str, queries: list) -> np.ndarray:
        fc = FeatureComputer(self.model(model_dir), self.spec(output_fn, TimestepStrategy()), self.device)
        if any(q.trajectory is None for q in queries):
            raise ValueError("Journey-TRAK follows a generated image's sampling path: pick a generated query")
        return np.concatenate([fc.trajectory(q.trajectory[1], q.trajectory[0], q.uid) for q in queries])

    def representation(self, kind: str, queries: list | None) -> Features | np.ndarray:
        """Pixel or classifier-embedding vectors of the training set (queries None) or of queries (as images)."""
        x = self.task.data.train_x if queries is None else torch.stack([q.shown for q in queries])
        if queries is None and kind in self._features:
            return self._features[kind]
        out = pixel_features(x) if kind == "pixel" else embedding_features(self.task.classifier.embed, x)
        if queries is None:
            self._features[kind] = out = Features(out)
        return out


def _fit_key(fit: Fit) -> str:
    return f"fit-{fit.name}"  # seconds per training input and timestep


def _save_fit(path: str, value) -> None:
    """A fit (an array, or tensors in dataclasses registered with ``torch.serialization.add_safe_globals``),
    written whole or not at all; an array travels as a tensor so that the file loads with ``weights_only``."""
    array = isinstance(value, np.ndarray)
    atomic_write(path, lambda tmp: torch.save({"array": array, "value": torch.from_numpy(value) if array else value},
                                              tmp))


def _load_fit(path: str):
    """The fit stored at ``path``; None when there is none or it cannot be read (it is fitted again)."""
    if not os.path.exists(path):
        return None
    try:
        stored = torch.load(path, weights_only=True)
        return stored["value"].numpy() if stored["array"] else stored["value"]
    except Exception:  # noqa: BLE001 — a truncated or foreign file is refitted and overwritten
        return None
