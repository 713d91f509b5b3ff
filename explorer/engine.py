"""The engine composes a task (data + model + classifier), a feature store (cached training
features, query features, kernels) and the methods registry into one call: a query + a method +
a timestep strategy → ranked proponents and opponents.

    engine = Engine("digits")
    [result] = engine.answer(Request((engine.task.generated(seed=3),), "dtrak", TimestepStrategy("uniform", 10)))
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from .attribution import damping
from .attribution.kernel import Features, Kernel, TopK, blockwise_topk
from .attribution.registry import get_method
from .attribution.method import Method
from .attribution.timesteps import DEFAULT_S, TimestepStrategy
from .evaluation.results import EvalResults, s_key
from .store import FeatureStore, Progress
from .task import Query
from .tasks import open_task

TIMESTEP_PROJECTION = "countsketch4096"  # per-timestep views (Timesteps tab, lesson): one small set per t
LEGACY_PROJECTION = "countsketch1024"  # results written before rows recorded their projection


@dataclass
class Attribution:
    method: str
    scores: np.ndarray  # (n,) over training indices
    top: TopK  # for one query
    lam: float | None
    strategy: TimestepStrategy | None
    projection: str | None  # None for gradient-free methods
    stored: bool = False  # read from the LDS stage's stored benchmark scores


@dataclass(frozen=True)
class Request:
    """One question to the engine: attribute ``queries`` with ``method`` under ``strategy`` (None: uniform,
    S = 10) and ``lam`` (None: the λ LDS tuned, or the untuned fallback), returning the top ``k``.
    ``bench``: the one query is that benchmark image, whose stored answer is read when one matches.
    ``build``: build missing training features now (else ``NotComputed`` says what it would cost)."""
    queries: tuple
    method: str | Method
    strategy: TimestepStrategy | None = None
    lam: float | None = None
    k: int = 8
    bench: int | None = None
    build: bool = True
    progress: Progress | None = None


class Refused(ValueError):
    """The method cannot answer this request on this model; the message says why and what to pick."""


class NotComputed(Exception):
    """The training features a request needs are not on disk and it did not ask to build them."""

    def __init__(self, method: Method, strategy: TimestepStrategy, seconds: float):
        self.method, self.strategy, self.seconds = method, strategy, seconds
        super().__init__(f"{method.label} with {strategy.label} has not been computed for this model yet")


@dataclass
class Scorer:
    """λ ↦ (m, n) scores of prepared queries (features and kernels computed once); ``lam`` is the default."""
    method: Method
    train: list[Features]
    query: list
    kernels: list[Kernel] | None
    lam: float | None

    def __call__(self, lam: float | None = None) -> np.ndarray:
        return self.method.score(self.train, self.query, self.lam if lam is None else lam, self.kernels)


def _method(m: str | Method) -> Method:
    return get_method(m) if isinstance(m, str) else m


def query_split(query: Query) -> str:
    """The benchmark split whose tuned λ applies to a query: generated images → generated, real ones → validation."""
    return "generated" if query.kind == "generated" else "validation"


class Engine:
    def __init__(self, dataset: str, projector: str | None = None, k: int = 4096, seed: int = 0, device: str = "cpu",
                 root: str | None = None, cache_dir: str | None = None, build_in_worker: bool = False):
        """``build_in_worker``: missing training features are built by a worker process at lower CPU priority
        (``explorer.build_worker``), as the app does, instead of in this process."""
        self.task = open_task(dataset, root, device)
        runner = None
        if build_in_worker:
            from .build_worker import run_in_worker
            runner = run_in_worker
        self.store = FeatureStore(self.task, projector, k, seed, cache_dir, device, runner)
        self.results = EvalResults(self.task.paths.eval)

    @property
    def data(self):
        return self.task.data

    # ---- what a call will cost ----
    def _feature_sets(self, m: Method, strategy: TimestepStrategy) -> tuple[list[str], str] | None:
        if not m.needs.gradients:
            return None
        return self.store.model_dirs(m.models), m.output_fn

    def _missing_fits(self, m: Method, strategy: TimestepStrategy) -> list[str]:
        """The models whose fit (EK-FAC's curvature, DAS's residuals) the method still lacks."""
        need = self._feature_sets(m, strategy)
        return [d for d in need[0] if not self.store.has_fit(m.fit, d, strategy)] if need and m.fit else []

    def ready(self, method: str | Method, strategy: TimestepStrategy) -> bool:
        """True when every training feature set and fit the method needs is on disk (no build)."""
        m = _method(method)
        need = self._feature_sets(m, strategy)
        return need is None or (self.store.ready(need[0], need[1], strategy) and not self._missing_fits(m, strategy))

    def estimate_seconds(self, method: str | Method, strategy: TimestepStrategy) -> float:
        m = _method(method)
        need = self._feature_sets(m, strategy)
        return 0.0 if need is None else self.store.estimate_seconds(need[0], need[1], strategy) + sum(
            self.store.fit_seconds(m.fit, m.output_fn, strategy) for _ in self._missing_fits(m, strategy))

    def build(self, method: str | Method, strategy: TimestepStrategy, progress: Progress | None = None,
              left: Callable[[], bool] = lambda: False) -> None:
        """Builds (or joins the running build of) the method's missing training features, then its fit."""
        m = _method(method)
        need = self._feature_sets(m, strategy)
        for d in (need[0] if need else []):
            self.store.gradients(d, need[1], strategy, progress, True, left)
            if m.fit:
                self.store.fitted(m.fit, d, strategy, progress, left)

    # ---- what a method may answer ----
    def check(self, method: str | Method, queries: list[Query]) -> None:
        """``Refused`` (naming what to pick instead) when the method cannot answer these queries on this model."""
        m = _method(method)
        if self.task.train_context is not None and not m.needs.captions:
            raise Refused(f"{m.label} does not attribute text-to-image models yet: its query path runs the model "
                          f"without the prompt. Use D-TRAK, TRAK, DAS, EK-FAC or a similarity method.")
        if m.needs.classifier and self.task.classifier is None:
            raise Refused(f"{m.label} needs a classifier, and this model's images have no class labels.")
        if m.needs.generated_only and any(q.trajectory is None for q in queries):
            raise Refused(f"{m.label} follows a generated image's sampling path: pick a generated image.")

    # ---- answering ----
    def answer(self, req: Request) -> list[Attribution]:
        """One Attribution per query of the request: the stored benchmark answer when the request names a
        benchmark image and one matches, else scored now (``NotComputed`` when features are missing and the
        request does not build them). The page and ``python -m explorer attribute`` both ask this."""
        m = _method(req.method)
        self.check(m, list(req.queries))
        st = req.strategy or TimestepStrategy.default()
        if req.bench is not None and st.kind == "uniform":
            stored = self.benchmark_attribution(req.bench, m.name, st.S, req.lam, req.k)
            if stored is not None:
                return [stored]
        if not req.build and not self.ready(m, st):
            raise NotComputed(m, st, self.estimate_seconds(m, st))
        scorer = self.score_fn(list(req.queries), m, st, req.progress, req.build)
        s = scorer(req.lam)
        top = blockwise_topk(lambda rows: s[rows], len(s), req.k)
        lam = (scorer.lam if req.lam is None else req.lam) if m.needs.lam else None
        return [Attribution(m.name, s[j], top.row(j), lam, st if m.needs.timesteps else None,
                            self.store.projection if m.needs.gradients else None) for j in range(len(s))]

    def attribute(self, query: Query, method: str | Method, strategy: TimestepStrategy | None = None,
                  lam: float | None = None, topk: int = 8, progress: Progress | None = None,
                  build: bool = True) -> Attribution:
        """One query scored now (no stored answer): ``answer`` for a request of one."""
        return self.answer(Request((query,), method, strategy, lam, topk, progress=progress, build=build))[0]

    # ---- scoring ----
    def score_fn(self, queries: list[Query], method: str | Method, strategy: TimestepStrategy | None = None,
                 progress: Progress | None = None, build: bool = True) -> "Scorer":
        """λ ↦ (m, n) scores; features and kernels are computed once, so a λ sweep is cheap."""
        m = _method(method)
        self.check(m, queries)
        strategy = strategy or TimestepStrategy.default()
        train = m.train_features(self.store, strategy, progress, build)
        kernels = None
        if m.needs.kernel:
            kernels = [self.store.kernel((m.feature_key(), strategy.key, self.store.projection, i), t)
                       for i, t in enumerate(train)]
        query = m.query_features(self.store, queries, strategy)
        lam = self.default_lambda(m, strategy.S, query_split(queries[0]), train) if m.needs.lam else None
        return Scorer(m, train, query, kernels, lam)

    def scores(self, queries: list[Query], method: str | Method, strategy: TimestepStrategy | None = None,
               lam: float | None = None, progress: Progress | None = None, build: bool = True) -> np.ndarray:
        """(m, n) scores of queries against every training image."""
        return self.score_fn(queries, method, strategy, progress, build)(lam)

    def topk(self, queries: list[Query], method: str, strategy: TimestepStrategy | None = None,
             lam: float | None = None, k: int = 8, block: int = 256) -> TopK:
        """Top-k proponents and opponents of many queries, scored one block of ``block`` queries at
        a time: memory is bounded by the block and the training features, not by len(queries)."""
        m = _method(method)
        return blockwise_topk(lambda rows: self.scores(queries[rows], m, strategy, lam), len(queries), k, block)

    def stability(self, query: Query, method: str | Method, strategy: TimestepStrategy | None = None,
                  lam: float | None = None, topk: int = 8, draws: int = 8) -> tuple[np.ndarray, np.ndarray]:
        """The method's own Monte-Carlo noise, query side: the query's noise is drawn afresh ``draws``
        times (training features fixed). Returns (draws, n) scores' top-k sets as a (draws, topk)
        index array and the (n,) count of draws in which each training image is in the top-k."""
        m = _method(method)
        strategy = strategy or TimestepStrategy.default()
        if not m.needs.gradients or m.needs.generated_only:
            raise ValueError(f"{m.label} has no query-gradient noise to resample")
        scorer = self.score_fn([query], m, strategy, None, False)
        lam = scorer.lam if lam is None else lam
        drawn = [m.query_features(self.store, [query], strategy, noise_seed=1000 + r) for r in range(draws)]
        if all(isinstance(f, np.ndarray) for d in drawn for f in d):  # every draw in one pass over the features
            s = m.score(scorer.train, [np.concatenate(per_model) for per_model in zip(*drawn)], lam, scorer.kernels)
        else:
            s = np.concatenate([m.score(scorer.train, d, lam, scorer.kernels) for d in drawn])
        tops = blockwise_topk(lambda rows: s[rows], draws, topk).proponents
        return tops, np.bincount(tops.ravel(), minlength=s.shape[1])

    # ---- λ and stored benchmark results ----
    def default_lambda(self, method: str | Method, S: int | None = DEFAULT_S, split: str = "validation",
                       train: list[Features] | None = None) -> float:
        """The λ the LDS stage tuned for (method, S, split); S = 10's when S was not evaluated; else the
        untuned fallback: scaled to the training features (``train``) where the task asks for it (LoRA
        gradients), else ``FALLBACK_LAMBDA`` (``explorer.attribution.damping``)."""
        m = _method(method)
        for s in (S, DEFAULT_S):
            lam = self.results.lam(m.name, s_key(m.needs.timesteps, s), split)
            if lam is not None:
                return float(lam)
        if self.task.scaled_lambda and train and m.needs.kernel:  # EK-FAC's λ is relative to its own curvature
            return damping.scaled(train[0].norms())
        return damping.FALLBACK_LAMBDA

    def benchmark_query(self, i: int, trajectory: bool = False) -> Query:
        """Benchmark image i as a query (a text-to-image model's under its stored caption or prompt)."""
        q = self.results.queries
        split, _ = self.results.split_of(i)
        if split == "generated":
            seed = int(q["gen_seed"][self.results.split_of(i)[1]])
            if trajectory:
                return self.task.generated(seed)
            query = Query("generated", torch.from_numpy(q["x"][i].astype(np.float32)), int(q["uid"][i]))
        else:
            query = Query("val", torch.from_numpy(q["x"][i].astype(np.float32)), int(q["uid"][i]),
                          self.data.classes[int(self.data.val_labels[int(q["val_pos"][i])])])
        if "image" in q:  # a latent-space model: x is the latent, this its image
            query.image = torch.from_numpy(q["image"][i].astype(np.float32))
        return self.task.captioned(query, str(q["caption"][i])) if "caption" in q else query

    def benchmark_attribution(self, i: int, method: str, S: int, lam: float | None = None, topk: int = 8
                              ) -> Attribution | None:
        """Benchmark query i's attribution as stored by the LDS stage (uniform timesteps, the λ LDS tuned,
        this engine's projection) or, before any LDS, by the ``answers`` stage (its default λ), or None when
        that result was not stored or ``lam`` asks for another λ. Reading it costs no gradients."""
        m = get_method(method)
        if not self.results.has_queries:
            return None
        split, col = self.results.split_of(i)
        S_key = s_key(m.needs.timesteps, S)
        row = self.results.answer_row(m.name, S_key, split)
        if row is None or (m.needs.gradients and row.get("projection", LEGACY_PROJECTION) != self.store.projection):
            return None
        if m.needs.lam and lam is not None and not np.isclose(lam, row["lambda"]):
            return None
        stored = self.results.stored_scores(m.name, S_key, split)
        if stored is None:
            return None
        s = np.asarray(stored[col], np.float64)
        return Attribution(m.name, s, blockwise_topk(lambda rows: s[None], 1, topk), row["lambda"],
                           TimestepStrategy("uniform", int(S)) if m.needs.timesteps else None,
                           self.store.projection if m.needs.gradients else None, stored=True)
