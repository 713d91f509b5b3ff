"""Retraining jobs (top-level functions: picklable for process pools and Ray): the full model's recipe on a
subset of the training images, resumable by fingerprint, with the ground-truth outputs LDS compares against."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from dataclasses import asdict

import numpy as np
import torch

from explorer.attribution.timesteps import seeded_noise
from explorer.evaluation.lds import measured_outputs
from explorer.files import read_json, save_npy, write_json
from explorer.models import UNET_CONFIGS, load_model, make_unet, save_model, unet_config_for
from explorer.paths import AssetPaths
from explorer.task import open_dataset
from explorer.training import TRAIN_CONFIGS, TrainConfig, train


def _recipe(dataset: str):
    ds = open_dataset(AssetPaths(dataset))
    return ds, UNET_CONFIGS.get(ds.name) or unet_config_for(ds.channels, ds.resolution), TRAIN_CONFIGS.get(ds.name, TrainConfig())


def job_fingerprint(dataset: str, indices: list[int], seed: int, epochs: int | None) -> str:
    """Hash of everything that makes a retrained model what it is: its exact training indices, seed,
    epochs and the whole recipe (UNet and training config)."""
    _, unet_cfg, cfg = _recipe(dataset)
    record = {"indices": [int(i) for i in indices], "seed": seed, "epochs": epochs or cfg.epochs,
              "unet": asdict(unet_cfg), "train": {**asdict(cfg), "seed": seed, "epochs": epochs or cfg.epochs}}
    return hashlib.sha256(json.dumps(record, sort_keys=True, default=list).encode()).hexdigest()[:16]


def train_job(dataset: str, indices: list[int], out_dir: str, seed: int, device: str, epochs: int | None = None,
              queries: str | None = None, gt: tuple | None = None) -> str:
    """Train the full recipe on training indices; optionally measure ground-truth outputs. A folder
    whose ``done.json`` records another job fingerprint (indices, seed, epochs, recipe) is retrained."""
    torch.set_num_threads(1)
    done, outputs = os.path.join(out_dir, "done.json"), os.path.join(out_dir, "outputs.npy")
    fingerprint = job_fingerprint(dataset, indices, seed, epochs)
    if os.path.exists(done):
        if read_json(done).get("fingerprint") == fingerprint:
            # trained already (e.g. by the ensemble stage); add ground truth if now asked
            if queries and not os.path.exists(outputs):
                save_npy(outputs, ground_truth(load_model(os.path.join(out_dir, "model"), device), queries, gt, device))
            return out_dir
        shutil.rmtree(out_dir)  # a different job left this folder: retrain from scratch
    t0 = time.time()
    ds, unet_cfg, cfg = _recipe(dataset)
    cfg = TrainConfig(**{**asdict(cfg), "seed": seed, "n_checkpoints": 0, **({"epochs": epochs} if epochs else {})})
    model = make_unet(unet_cfg, seed=seed)
    train(model, ds.train_x[torch.as_tensor(indices)], cfg, device=device)
    os.makedirs(out_dir, exist_ok=True)
    save_model(model.cpu(), os.path.join(out_dir, "model"))
    if queries:
        save_npy(outputs, ground_truth(model, queries, gt, device))
    write_json(done, {"n": len(indices), "seed": seed, "epochs": cfg.epochs, "fingerprint": fingerprint,
                      "indices_sha": hashlib.sha256(np.asarray(indices, np.int64).tobytes()).hexdigest()[:16],
                      "seconds": time.time() - t0})
    return out_dir


def ground_truth(model, queries_path: str, gt: tuple, device: str) -> np.ndarray:
    """Measured L_Simple for every benchmark query, averaged over timesteps × noise draws."""
    q = np.load(queries_path, allow_pickle=False)
    x = torch.from_numpy(q["x"].astype(np.float32))
    every, draws = gt
    ts = list(range(0, 1000, every))
    eps = torch.cat([seeded_noise(q["uid"].tolist(), ts, tuple(x.shape[1:]), seed=100 + d) for d in range(draws)], 1)
    return measured_outputs(model, x, eps, torch.tensor(ts * draws), device).astype(np.float32)
