"""A task: one dataset, the diffusion model trained on it, and its classifier, loaded from
``assets/<name>/``. Queries (training, validation, generated, uploaded images) are made here.

    task = Task("digits")
    q = task.generated(seed=3)
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import torch

from .attribution.features import FRESH_UID, UPLOAD_UID, generated_uid
from .files import read_json
from .classifier import load_classifier
from .datasets import Dataset, load_dataset, to_model_tensor
from .attribution.timesteps import seeded_noise
from .models import ddim_sample, load_model, predict_x0
from .paths import AssetPaths
from .schedule import DDPM, NoiseSchedule


def read_info(paths: AssetPaths) -> dict:
    """What training recorded (``train.json``): recipe, data source, or where an adopted model came from."""
    return read_json(paths.info) if os.path.exists(paths.info) else {}


def open_dataset(paths: AssetPaths, info: dict | None = None) -> Dataset:
    """The data the model under ``paths`` was trained on: an embedded dataset by name, or the image
    folder (with its resolution and channels) that ``train.json`` (``info``) recorded at training."""
    info = read_info(paths) if info is None else info
    source = info.get("data_source") or paths.dataset
    if info.get("data_source") and not os.path.isdir(source):
        raise FileNotFoundError(f"the images this model was trained on ({source}) are no longer there")
    return load_dataset(source, **info.get("data_options", {}))


@dataclass
class Query:
    """A query: ``x`` the model's input (an image (C, H, W) in [-1, 1], or a latent-space model's latent),
    ``image`` what the page shows when that is not x (a latent's decoded image); ``uid`` seeds its noise;
    generated queries keep their DDIM trajectory (for Journey-TRAK)."""
    kind: str  # train | val | generated | upload
    x: torch.Tensor
    uid: int
    label: str = ""
    trajectory: tuple | None = None  # (timesteps, x0 predictions)
    caption: str = ""  # text-to-image: the prompt or caption the query is read under
    context: torch.Tensor | None = None  # its encoded caption (L, hidden)
    image: torch.Tensor | None = None  # (3, H, W) in [-1, 1] where x is a latent

    @property
    def shown(self) -> torch.Tensor:
        """The query as an image (pixel methods and the page read this)."""
        return self.x if self.image is None else self.image


class Task:
    conditional = False  # a text-to-image task: its queries carry a caption, it generates from a prompt
    scaled_lambda = False  # the untuned λ follows the training features' scale (LoRA gradients are tiny)
    param_names: list[str] | None = None  # attribution's gradients are taken w.r.t. these (None: all parameters)
    train_context: torch.Tensor | None = None  # (n, L, hidden) encoded training captions (text-to-image tasks)
    schedule: NoiseSchedule = DDPM  # the model's noise schedule (an adopted pipeline brings its own)

    def __init__(self, name: str, root: str | None = None, device: str = "cpu"):
        self.paths = AssetPaths(name, **({"root": root} if root else {}))
        self.device = device
        self.info = read_info(self.paths)
        self.data: Dataset = open_dataset(self.paths, self.info)
        self.model = load_model(self.paths.model, device)
        # unlabelled image folders have no classifier: no class reading, no embedding similarity
        self.classifier = load_classifier(self.paths.classifier) if os.path.isdir(self.paths.classifier) else None
        self.data_hash = self.data.fingerprint()

    @property
    def train_inputs(self) -> torch.Tensor:
        """The training set as the model sees it: the images (a latent-space task: their latents)."""
        return self.data.train_x

    @property
    def n_attributed_parameters(self) -> int:
        params = dict(self.model.named_parameters())
        return sum(params[n].numel() for n in (self.param_names or params))

    def train_query(self, i: int, fresh: bool = False) -> Query:
        """Training image i as a query; ``fresh``: with noise drawn afresh, not its training features' own."""
        return Query("train", self.data.train_x[i], (FRESH_UID if fresh else 0) + int(self.data.train_idx[i]),
                     self.data.classes[self.data.train_labels[i]])

    def val_query(self, j: int) -> Query:
        return Query("val", self.data.val_x[j], int(self.data.val_idx[j]), self.data.classes[self.data.val_labels[j]])

    def generated(self, seed: int, steps: int = 50) -> Query:
        x, ts, x0 = ddim_sample(self.model, [seed], steps=steps, device=self.device, return_trajectory=True)
        return Query("generated", x[0], generated_uid(seed), trajectory=(ts, x0[:, 0]))

    def upload(self, img) -> Query:
        return Query("upload", to_model_tensor(img, self.data.channels, self.data.resolution), UPLOAD_UID)

    def inverted(self, q: Query) -> Query:
        """The query with its colours inverted (x ↦ −x in [−1, 1])."""
        q.x = -q.x
        return q

    def predict(self, x: torch.Tensor) -> tuple[str, float]:
        """The classifier's label and confidence for one image."""
        if self.classifier is None:
            return None, None
        label, conf = self.classifier.predict(x[None])
        return self.data.classes[int(label[0])], float(conf[0])

    def noised_view(self, query: Query, t: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        """(x_t, the model's x̂₀) for the query at timestep t, with the query's own seeded noise."""
        eps = seeded_noise([query.uid], [t], tuple(query.x.shape), seed)[:, 0]
        xt, x0 = predict_x0(self.model, query.x[None], eps, t)
        return xt[0], x0[0]

    @cached_property
    def _embedding_reference(self) -> tuple[np.ndarray, float, float]:
        """(training embeddings, 99th percentile of validation images' nearest-training distance — without a
        validation split, of each training image's nearest other one —, mean border pixel of the training images)."""
        train = self._embed(self.data.train_x)
        if len(self.data.val_idx):
            d = nearest_distance(self._embed(self.data.val_x), train)
        else:
            d = nearest_distance(train, train, skip_self=True)
        return train, float(np.percentile(d, 99)), float(_border(self.data.train_x).mean())

    def _embed(self, x: torch.Tensor) -> np.ndarray:
        """The classifier's embedding, or the raw pixels where there is no classifier."""
        if self.classifier is None:
            return x.flatten(1).numpy()
        with torch.no_grad():
            return self.classifier.embed(x).numpy()

    def familiarity(self, x: torch.Tensor) -> dict:
        """How much an image looks like the training data: the classifier's label and confidence,
        the nearest-neighbour distance of its embedding to the training set against the 99th
        percentile of validation images' (``unusual`` beyond it), and whether its colours look
        inverted (its border is nearer the training border when negated)."""
        train, p99, border = self._embedding_reference
        e = self._embed(x[None])
        dist = float(nearest_distance(e, train)[0])
        label, conf = self.predict(x)
        b = float(_border(x[None]).mean())
        return {"label": label, "confidence": conf, "distance": dist, "p99": p99, "unusual": dist > p99,
                "inverted": abs(-b - border) + 0.5 < abs(b - border)}


def nearest_distance(a: np.ndarray, b: np.ndarray, skip_self: bool = False, block: int = 256) -> np.ndarray:
    """min_j ‖a_i − b_j‖ per row of a, from ‖a‖² + ‖b‖² − 2 a·b in float64, ``block`` rows at a time (memory
    O(block · len(b)), not len(a) · len(b) · d); ``skip_self``: a is b and j = i does not count."""
    a, b = a.astype(np.float64), b.astype(np.float64)
    bb = (b ** 2).sum(1)
    out = np.empty(len(a))
    for s in range(0, len(a), block):
        rows = a[s:s + block]
        d2 = (rows ** 2).sum(1)[:, None] + bb[None] - 2 * rows @ b.T
        if skip_self:
            d2[np.arange(len(rows)), np.arange(s, s + len(rows))] = np.inf
        out[s:s + block] = np.sqrt(np.clip(d2.min(1), 0, None))
    return out


def _border(x: torch.Tensor) -> torch.Tensor:
    """Mean of each image's outermost pixel ring (N,)."""
    ring = torch.cat([x[..., 0, :], x[..., -1, :], x[..., :, 0], x[..., :, -1]], -1)
    return ring.flatten(1).mean(1)

