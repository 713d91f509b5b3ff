"""``python -m precompute adopt --dataset NAME --pipeline DIR --lora FILE_OR_DIR --data FOLDER``: adopt your own
Stable Diffusion LoRA, as it is (no retraining), for attribution in latent space.

- ``DIR``: a diffusers ``StableDiffusionPipeline`` folder (``model_index.json``, ``unet/``, ``vae/``,
  ``text_encoder/``, ``tokenizer/``, ``scheduler/``), read from disk only;
- ``FILE_OR_DIR``: the LoRA in the format ``load_lora_weights`` reads (``pytorch_lora_weights.safetensors`` or
  the folder holding it); its rank is read from the weights, α from ``--lora-alpha`` (default: the rank);
- ``FOLDER``: the LoRA's training images with captions, ``metadata.jsonl`` (``file_name``, ``text``, optional
  ``contributor``) or ``.txt`` sidecars, contributors from the column or from sub-folders.

The model is opened once, as the app opens it, and every check runs there (``explorer.stable_diffusion``: the
scheduler family, ε-prediction, T = 1000, the parts fit each other; the LoRA fits the UNet; every image has a
caption); a refusal removes what was written. ``assets/<NAME>/train.json`` records the three paths (not
copies) and what was found.
"""
from __future__ import annotations

import os
import shutil
from collections import Counter

from explorer.attribution.registry import DEFAULT_METHOD, get_method
from explorer.attribution.timesteps import TimestepStrategy
from explorer.attribution.timesteps import DEFAULT_S
from explorer.engine import Engine
from explorer.files import write_json
from explorer.paths import AssetPaths


def run(dataset: str, pipeline: str, lora: str, data: str, lora_alpha: float | None = None,
        root: str | None = None) -> dict:
    """Records the three paths, then opens the model once as the app will (``StableDiffusionTask`` runs every
    check); a refusal removes what was written, so nothing half-adopted is listed."""
    paths = AssetPaths(dataset, **({"root": root} if root else {}))
    fresh = not os.path.isdir(paths.base)
    rec = {"pipeline": os.path.abspath(pipeline), "lora": os.path.abspath(lora), "data": os.path.abspath(data),
           "lora_alpha": lora_alpha}
    os.makedirs(paths.base, exist_ok=True)
    write_json(paths.info, {"dataset": dataset, "stable_diffusion": rec})
    m, st = get_method(DEFAULT_METHOD), TimestepStrategy.default()
    try:
        eng = Engine(dataset, root=root)
        estimate = eng.estimate_seconds(m, st)  # a timed gradient probe of this model
    except BaseException:
        if fresh:
            shutil.rmtree(paths.base, ignore_errors=True)
        else:
            os.remove(paths.info)
        raise
    task, cfg = eng.task, eng.task.scheduler_config
    unet, res = task.model, task.data.resolution
    people = Counter(task.data.meta["author"])
    rec.update({"lora_rank": min(p.shape[0] for n, p in unet.named_parameters() if "lora_A" in n),
                "n_lora_parameters": task.n_attributed_parameters, "scheduler": cfg.get("_class_name"),
                "prediction_type": cfg.get("prediction_type", "epsilon"), "beta_schedule": cfg.get("beta_schedule"),
                "pixel_resolution": res, "latent_shape": [unet.config.in_channels, unet.config.sample_size,
                                                          unet.config.sample_size]})
    info = {"dataset": dataset, "n_train": len(task.data.train_idx), "contributors": dict(sorted(people.items())),
            "stable_diffusion": rec, "feature_build_estimate_s": estimate}
    write_json(paths.info, info)
    print(f"{dataset}: adopted {pipeline} with its LoRA (LoRA rank {rec['lora_rank']}, {rec['n_lora_parameters']:,} "
          f"parameters, the gradients' length) for {info['n_train']} captioned images by {len(people)} contributors "
          f"({', '.join(f'{p} {c}' for p, c in people.most_common(5))}); {res}-px images, latents "
          f"{'×'.join(map(str, rec['latent_shape']))}, {rec['scheduler']} ({rec['beta_schedule']}, ε-prediction).\n"
          f"Restart the app to find {dataset} in the model list. Its {m.label} training features (S = {DEFAULT_S}, "
          f"{eng.store.projection}) take about {_duration(estimate)} on this machine; "
          f"`python -m precompute features --dataset {dataset}` builds them ahead of the first visitor. LDS and the "
          f"counterfactual need the LoRA retrained on subsets with your recipe: not available for adopted pipelines.")
    return info


def _duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.0f} min" if seconds < 7200 else f"{seconds / 3600:.1f} h"
