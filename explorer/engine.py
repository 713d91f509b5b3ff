"""One query call: a dataset's shipped model + an image + a method + a timestep strategy →
ranked proponents and opponents. Training features come from the cache (built with a progress
callback when missing); query features are computed on the fly.

    engine = Engine("digits")
    result = engine.attribute(engine.query_generated(seed=3), "dtrak", TimestepStrategy("uniform", 10))
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from functools import cached_property
from typing import Callable

import numpy as np
import torch

from . import cache
from .attribution.features import (GENERATED_UID, UPLOAD_UID, FeatureComputer, FeatureSpec, embedding_features,
                                   pixel_features)
from .attribution.kernel import Kernel, TopK, blockwise_topk
from .attribution.methods import Method, get_method, score
from .attribution.timesteps import TimestepStrategy
from .classifier import load_classifier
from .data import Dataset, load_dataset, to_model_tensor
from .models import ddim_sample, load_model, weights_fingerprint
from .paths import AssetPaths

Progress = Callable[[int, int], None]


@dataclass
class Query:
    """A query image (C, H, W) in [-1, 1]; ``uid`` seeds its noise; generated queries keep their
    DDIM trajectory (for Journey-TRAK)."""
    kind: str  # train | val | generated | upload
    x: torch.Tensor
    uid: int
    label: str = ""
    trajectory: tuple | None = None  # (timesteps, x0 predictions)


@dataclass
class Attribution:
    method: str
    scores: np.ndarray  # (n,) over training indices
    top: TopK  # for one query
    lam: float | None
    strategy: str | None


@dataclass
class Engine:
    dataset: str
    k: int = 1024
    projector: str = "countsketch"
    seed: int = 0
    device: str = "cpu"
    root: str | None = None
    cache_dir: str | None = None  # where missing training features are built (default: paths.runtime_features)
    _kernels: dict = field(default_factory=dict, repr=False)
    _features: dict = field(default_factory=dict, repr=False)

    def __post_init__(self):
        self.paths = AssetPaths(self.dataset, **({"root": self.root} if self.root else {}))
        self.data: Dataset = load_dataset(self.dataset)
        self.model = load_model(self.paths.model, self.device)
        self.classifier = load_classifier(self.paths.classifier)
        self.data_hash = self.data.fingerprint()

    # ---- models per method ----
    def models_for(self, method: Method) -> list[str]:
        if method.checkpoints == "all":
            return self.paths.checkpoint_dirs()
        if method.checkpoints == "ensemble":
            folder = os.path.join(self.paths.base, "ensemble")
            names = sorted(os.listdir(folder)) if os.path.isdir(folder) else []
            if not names:
                raise cache.CacheError(f"no ensemble models under {folder}; run `python -m precompute ensemble --dataset "
                                       f"{self.dataset}` (it trains the 50 % subset models ensembles average over)")
            return [os.path.join(folder, n) for n in names]
        return [self.paths.model]

    def _model(self, folder: str):
        if folder == self.paths.model:
            return self.model
        key = ("model", folder)
        if key not in self._features:
            self._features[key] = load_model(folder, self.device)
        return self._features[key]

    def spec(self, method: Method, strategy: TimestepStrategy) -> FeatureSpec:
        return FeatureSpec(method.output_fn, strategy, self.projector, self.k, self.seed)

    # ---- training features ----
    def train_features(self, method: Method, strategy: TimestepStrategy | None, progress: Progress | None = None,
                       build: bool = True) -> list[np.ndarray]:
        """One (n, k) float16 array per model of the method (cached; built when missing if ``build``)."""
        if method.features == "pixel":
            return [pixel_features(self.data.train_x)]
        if method.features == "embedding":
            key = ("embedding",)
            if key not in self._features:
                self._features[key] = embedding_features(self.classifier.embed, self.data.train_x)
            return [self._features[key]]
        out = []
        for folder in self.models_for(method):
            out.append(self._grad_features(folder, self.spec(method, strategy), progress, build))
        return out

    def _grad_features(self, model_dir: str, spec: FeatureSpec, progress: Progress | None, build: bool) -> np.ndarray:
        model = self._model(model_dir)
        name = os.path.relpath(model_dir, self.paths.base).replace(os.sep, "-")
        shipped = os.path.join(self.paths.features, name, spec.key)
        folder = os.path.join(self.cache_dir or self.paths.runtime_features, name, spec.key)
        key = ("grad", folder)
        if key in self._features:
            return self._features[key]
        expected = {"dataset": self.data.name, "data_sha": self.data_hash, "weights_sha": weights_fingerprint(model),
                    "spec": spec.to_json()}
        arr, errors = None, []
        for candidate in dict.fromkeys([shipped, folder]):  # shipped first, then the on-demand cache
            try:
                arr = cache.load(candidate, expected)
                break
            except cache.CacheError as e:
                errors.append(e)
        if arr is None:
            if not build:
                raise errors[0] if os.path.isdir(shipped) else errors[-1]
            fc = FeatureComputer(model, spec, self.device)
            x, uids = self.data.train_x, [int(i) for i in self.data.train_idx]
            arr = cache.build(folder, expected, len(uids),
                              lambda a, b: ((slice(a + s.start, a + s.stop), p)
                                            for s, p in fc.iter_features(x[a:b], uids[a:b])), progress)
        self._features[key] = arr
        return arr

    def kernel(self, method: Method, strategy: TimestepStrategy, i: int, train: np.ndarray) -> Kernel:
        key = (self.spec(method, strategy).key, method.checkpoints, i)
        if key not in self._kernels:
            self._kernels[key] = Kernel(train)
        return self._kernels[key]

    # ---- queries ----
    def query_train(self, i: int) -> Query:
        return Query("train", self.data.train_x[i], int(self.data.train_idx[i]), self.data.classes[self.data.train_labels[i]])

    def query_val(self, j: int) -> Query:
        return Query("val", self.data.val_x[j], int(self.data.val_idx[j]), self.data.classes[self.data.val_labels[j]])

    def query_generated(self, seed: int, steps: int = 50) -> Query:
        x, ts, x0 = ddim_sample(self.model, [seed], steps=steps, device=self.device, return_trajectory=True)
        label, conf = self.classifier.predict(x)
        return Query("generated", x[0], GENERATED_UID + seed, f"{self.data.classes[label[0]]} ({conf[0]:.2f})",
                     (ts, x0[:, 0]))

    def query_upload(self, img) -> Query:
        x = to_model_tensor(img, self.data.channels, self.data.resolution)
        return Query("upload", x, UPLOAD_UID)

    def query_features(self, method: Method, strategy: TimestepStrategy | None, queries: list[Query]) -> list[np.ndarray]:
        x = torch.stack([q.x for q in queries])
        if method.features == "pixel":
            return [pixel_features(x)]
        if method.features == "embedding":
            return [embedding_features(self.classifier.embed, x)]
        out = []
        for folder in self.models_for(method):
            fc = FeatureComputer(self._model(folder), self.spec(method, strategy), self.device)
            if method.query == "journey":
                if any(q.trajectory is None for q in queries):
                    raise ValueError("Journey-TRAK needs a generated query (it follows the DDIM trajectory)")
                out.append(np.concatenate([fc.trajectory(q.trajectory[1], q.trajectory[0], q.uid) for q in queries]))
            else:
                out.append(fc(x, [q.uid for q in queries]))
        return out

    # ---- the one call ----
    def score_fn(self, queries: list[Query], method: str | Method, strategy: TimestepStrategy | None = None,
                 progress: Progress | None = None) -> Callable[[float | None], np.ndarray]:
        """λ ↦ (m, n) scores; features and kernels are computed once, so a λ sweep is cheap."""
        m = get_method(method) if isinstance(method, str) else method
        strategy = strategy or TimestepStrategy()
        train = self.train_features(m, strategy, progress)
        kernels = [self.kernel(m, strategy, i, t) for i, t in enumerate(train)] if m.uses_lambda else None
        query = self.query_features(m, strategy, queries)
        return lambda lam: score(m, train, query, self.default_lambda(m) if lam is None else lam, kernels)

    def scores(self, queries: list[Query], method: str | Method, strategy: TimestepStrategy | None = None,
               lam: float | None = None, progress: Progress | None = None) -> np.ndarray:
        """(m, n) scores of queries against every training image."""
        return self.score_fn(queries, method, strategy, progress)(lam)

    def attribute(self, query: Query, method: str, strategy: TimestepStrategy | None = None, lam: float | None = None,
                  topk: int = 8, progress: Progress | None = None) -> Attribution:
        m = get_method(method)
        lam = self.default_lambda(m) if lam is None else lam
        s = self.scores([query], m, strategy, lam, progress)
        top = blockwise_topk(lambda rows: s[rows], 1, topk)
        return Attribution(m.name, s[0], top, lam if m.uses_lambda else None,
                           (strategy or TimestepStrategy()).key if m.uses_timesteps else None)

    def benchmark_attribution(self, i: int, method: str, S: int, lam: float | None = None, topk: int = 8
                              ) -> Attribution | None:
        """Benchmark query i's attribution as stored by the LDS stage (uniform timesteps, the λ LDS
        tuned), or None when that result was not computed or ``lam`` asks for another λ. Reading it
        costs no gradients."""
        m = get_method(method)
        if self._benchmark_results is None:
            return None
        split_ids, lambdas = self._benchmark_results
        split = "validation" if split_ids[i] == 0 else "generated"
        S_key = int(S) if m.uses_timesteps else None
        key = (m.name, S_key, split)
        path = os.path.join(self.paths.eval, "scores", f"{m.name}_S{S_key}_{split}.npy")
        if key not in lambdas or not os.path.exists(path) or (m.uses_lambda and lam is not None and lam != lambdas[key]):
            return None
        col = i - int(np.flatnonzero(split_ids == split_ids[i])[0])
        s = np.asarray(cache.load_npy(path)[col], np.float64)
        return Attribution(m.name, s, blockwise_topk(lambda rows: s[None], 1, topk), lambdas[key],
                           TimestepStrategy("uniform", int(S)).key if m.uses_timesteps else None)

    @cached_property
    def _benchmark_results(self) -> tuple[np.ndarray, dict] | None:
        """(split of each benchmark query, {(method, S, split): λ}) from the LDS stage, read once."""
        results, queries = os.path.join(self.paths.eval, "lds.json"), os.path.join(self.paths.eval, "queries.npz")
        if not (os.path.exists(results) and os.path.exists(queries)):
            return None
        with open(results) as f:
            rows = json.load(f)["rows"]
        return (np.load(queries, allow_pickle=False)["split"],
                {(r["method"], r["S"], r["split"]): r["lambda"] for r in rows})

    def topk(self, queries: list[Query], method: str, strategy: TimestepStrategy | None = None,
             lam: float | None = None, k: int = 8, block: int = 256) -> TopK:
        """Top-k proponents and opponents of many queries, scored one block of ``block`` queries at
        a time: memory is bounded by the block and the training features, not by len(queries)."""
        m = get_method(method)
        return blockwise_topk(lambda rows: self.scores(queries[rows], m, strategy, lam), len(queries), k, block)

    def default_lambda(self, method: Method) -> float:
        return tuned_lambda(self.paths, method.name)


def tuned_lambda(paths: AssetPaths, method: str) -> float:
    """λ chosen by the LDS benchmark (validation split, S = 10) when its results exist, else 1."""
    path = os.path.join(paths.eval, "best_lambda.json")
    if os.path.exists(path):
        return float(json.load(open(path)).get(method, 1.0))
    return 1.0
