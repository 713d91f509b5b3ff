"""Stage ``train``: the dataset's diffusion model (with intermediate checkpoints), its classifier,
the split index files, a sample grid and the sample-quality record."""
from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import asdict, replace

import torch

from explorer.files import read_json, write_json
from explorer.classifier import ClassifierConfig, save_classifier, train_classifier
from explorer.datasets import load_dataset, save_split
from explorer.images import grid
from explorer.models import UNET_CONFIGS, ddim_sample, make_unet, save_model, unet_config_for
from explorer.training import TRAIN_CONFIGS, TrainConfig, train
from explorer.paths import AssetPaths


def run(dataset: str, epochs: int | None = None, seed: int = 0, device: str = "cpu", n_samples: int = 64,
        data: str | None = None, resolution: int | None = None, channels: int | None = None) -> dict:
    """Trains ``assets/<dataset>/``; ``data`` is an image folder (default: ``dataset`` itself, an embedded
    name or a folder path) read at ``resolution`` × ``resolution`` with ``channels`` channels."""
    source = data or dataset
    options = {k: v for k, v in (("resolution", resolution), ("channels", channels)) if v}
    ds = load_dataset(source, **options)
    paths = AssetPaths(dataset)
    if ds.meta.get("skipped"):
        print(f"{ds.meta['skipped']} files in {source} are not images and were skipped")
    unet_cfg = UNET_CONFIGS.get(ds.name) or unet_config_for(ds.channels, ds.resolution)
    cfg = replace(TRAIN_CONFIGS.get(ds.name, TrainConfig()), seed=seed, **({"epochs": epochs} if epochs else {}))
    recipe = recipe_sha(ds.fingerprint(), asdict(unet_cfg), asdict(cfg), n_samples, options)
    if os.path.exists(paths.info) and os.path.exists(os.path.join(paths.model, "config.json")):
        info = read_json(paths.info)
        if info.get("recipe_sha") == recipe:
            print(f"{paths.dataset}: already trained on these images with this recipe; nothing rewritten "
                  f"(delete {paths.model} to retrain)")
            return info
    os.makedirs(paths.base, exist_ok=True)
    save_split(ds, paths.split)
    model = make_unet(unet_cfg, seed=seed)

    def on_checkpoint(epoch, m):
        if epoch < cfg.epochs:
            save_model(m, os.path.join(paths.checkpoints, f"epoch_{epoch:04d}"))

    state_file = os.path.join(paths.base, f"train_state_{recipe}.pt")  # resume point; removed when done
    if os.path.exists(state_file):
        print(f"{paths.dataset}: resuming the interrupted training run")
    t0 = time.time()
    losses = train(model, ds.train_x, cfg, device=device, on_checkpoint=on_checkpoint, progress=True,
                   state_file=state_file)
    train_s = time.time() - t0
    save_model(model.cpu(), paths.model)
    if os.path.exists(state_file):
        os.remove(state_file)

    t0 = time.time()
    samples = ddim_sample(model, list(range(n_samples)), device=device)
    sample_s = (time.time() - t0) / n_samples
    val_acc = confident = None
    if len(ds.classes) > 1:
        print("training classifier ...")
        clf = train_classifier(ds.train_x, ds.train_labels, ClassifierConfig(ds.channels, len(ds.classes)), seed=seed)
        save_classifier(clf, paths.classifier)
        with torch.no_grad():
            val_acc = (clf(ds.val_x).argmax(-1) == ds.val_labels).float().mean().item()
        confident = float((clf.predict(samples)[1] >= 0.9).float().mean())
    else:
        print("no class sub-folders: no classifier is trained (the page shows no class reading, class mix or "
              "embedding similarity for this model)")
    grid(samples, ncol=8, scale=4 if ds.resolution <= 8 else 2).save(os.path.join(paths.base, "samples.png"))
    info = {
        "dataset": ds.name, "n_train": len(ds.train_idx), "n_val": len(ds.val_idx), "unet": asdict(unet_cfg),
        "train": asdict(cfg), "n_parameters": sum(p.numel() for p in model.parameters()),
        "final_loss": losses[-1], "losses": losses, "train_seconds": train_s,
        "train_images_per_second": cfg.epochs * len(ds.train_idx) / train_s,
        "ddim50_seconds_per_image": sample_s, "classifier_val_accuracy": val_acc,
        "samples_confident_share": confident, "n_quality_samples": n_samples,
        "meta": ds.meta, "data_source": None if source == ds.name and not os.path.isdir(source) else os.path.abspath(source),
        "data_options": options, "recipe_sha": recipe,
    }
    write_json(paths.info, info)
    quality = (f"classifier val acc {val_acc:.3f}, {confident:.0%} of {n_samples} samples labelled with confidence "
               f"≥ 0.9" if val_acc is not None else "no classifier")
    print(f"{paths.dataset}: loss {losses[-1]:.4f}, {quality}")
    return info


def recipe_sha(data_sha: str, unet: dict, train_cfg: dict, n_samples: int, options: dict) -> str:
    """What decides a trained model's bytes: data, architecture, recipe (seed included), sample count.
    Equal hashes mean a re-run would reproduce the same files, so it is skipped."""
    blob = json.dumps([data_sha, unet, train_cfg, n_samples, options], sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]
