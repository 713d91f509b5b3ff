"""``python -m precompute train --dataset NAME --data FOLDER --model DIR``: adopt a diffusers
``UNet2DModel`` trained elsewhere, as it is (no retraining), for the images it was trained on.

``DIR`` holds the UNet saved with ``save_pretrained`` (``DIR/config.json`` or a pipeline's ``DIR/unet/``)
and, if present, its scheduler (``DIR/scheduler/`` or ``DIR/scheduler_config.json``). The attribution
math assumes this project's noise schedule (DDPM, T = 1000, linear β from 1e-4 to 0.02, ε-prediction); a
scheduler that differs is refused with what differs. LDS and the counterfactual need retraining with the
model's own recipe, so an adopted model has neither (the page says so); checkpoints and ensembles are absent.
"""
from __future__ import annotations

import json
import os

import torch

from explorer.files import write_json
from explorer.classifier import ClassifierConfig, save_classifier, train_classifier
from explorer.datasets import load_dataset, save_split
from explorer.images import grid
from explorer.models import CheckpointError, check_scheduler, ddim_sample, load_model, save_model
from explorer.paths import AssetPaths


def find_unet(model_dir: str) -> str:
    for folder in (model_dir, os.path.join(model_dir, "unet")):
        path = os.path.join(folder, "config.json")
        if os.path.isfile(path) and json.load(open(path)).get("_class_name") == "UNet2DModel":
            return folder
    raise CheckpointError(f"no diffusers UNet2DModel in {model_dir} (expected config.json there or in unet/)")


def run(dataset: str, model_dir: str, data: str, seed: int = 0, n_samples: int = 16, root: str | None = None) -> dict:
    unet_dir = find_unet(model_dir)
    check_scheduler(model_dir)
    model = load_model(unet_dir)
    cfg = model.config
    ds = load_dataset(data, resolution=cfg.sample_size, channels=cfg.in_channels)
    paths = AssetPaths(dataset, **({"root": root} if root else {}))
    os.makedirs(paths.base, exist_ok=True)
    save_split(ds, paths.split)
    save_model(model, paths.model)
    val_acc = None
    if len(ds.classes) > 1:
        clf = train_classifier(ds.train_x, ds.train_labels, ClassifierConfig(ds.channels, len(ds.classes)), seed=seed)
        save_classifier(clf, paths.classifier)
        with torch.no_grad():
            val_acc = (clf(ds.val_x).argmax(-1) == ds.val_labels).float().mean().item()
    samples = ddim_sample(model, list(range(n_samples)))
    grid(samples, ncol=8, scale=4 if ds.resolution <= 8 else 2).save(os.path.join(paths.base, "samples.png"))
    info = {"dataset": ds.name, "n_train": len(ds.train_idx), "n_val": len(ds.val_idx),
            "n_parameters": sum(p.numel() for p in model.parameters()), "imported_from": os.path.abspath(model_dir),
            "classifier_val_accuracy": val_acc, "meta": ds.meta, "data_source": os.path.abspath(data),
            "data_options": {"resolution": cfg.sample_size, "channels": cfg.in_channels}}
    write_json(paths.info, info)
    print(f"{paths.dataset}: adopted {unet_dir} ({info['n_parameters']:,} parameters) for {len(ds.x)} images; "
          f"no retraining, so no LDS or counterfactual for this model")
    return info
