"""``python -m precompute <stage> --dataset D``: stages train, ensemble, features, lds, counterfactual, answers,
lesson, all.

``answers`` stores the benchmark queries and the default methods' scores a model opens on before its LDS.

The emoji text-to-image setting has its own stages: ``data`` (the drawings from the npm packages) and
``vae`` (the autoencoder of its latent space), ``base`` (the base text-to-image model), ``lora`` (its LoRA fine-tune on two artists; both resumable),
``known`` (the known-answer tables of its attribution), ``lds`` (64 LoRAs retrained on halves of the LoRA's
training drawings) and ``counterfactual`` (16 LoRAs retrained without top proponents; both resumable per LoRA,
``precompute/emoji_eval.py``): ``python -m precompute all --dataset emoji``.

``ensemble`` trains only the 50 % subset models the ensemble methods need (``lds`` trains them too).
Your own images: ``python -m precompute all --dataset NAME --data FOLDER`` trains the model (and a
classifier when the folder has class sub-folders) and builds its features; the app then lists NAME.
Your own Stable Diffusion LoRA: ``python -m precompute adopt --dataset NAME --pipeline DIR --lora FILE_OR_DIR
--data FOLDER`` (``precompute/adopt_pipeline.py`` says what it reads and refuses)."""
from __future__ import annotations

import argparse
import os
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m precompute", description=__doc__, allow_abbrev=False)
    p.add_argument("stage", choices=["data", "vae", "base", "lora", "known", "adopt", "train", "ensemble", "features", "lds",
                                     "counterfactual", "answers", "lesson", "all"])
    p.add_argument("--dataset", required=True, help="digits, shapes, a name for --data, or a path to an image folder")
    p.add_argument("--data", default=None, help="train: an image folder (class sub-folders become labels); the "
                   "model is saved as assets/<dataset>/ and listed in the app")
    p.add_argument("--model", default=None, help="train: adopt this diffusers UNet2DModel folder (save_pretrained) "
                   "for --data instead of training one")
    p.add_argument("--pipeline", default=None, help="adopt: a diffusers StableDiffusionPipeline folder")
    p.add_argument("--lora", default=None, help="adopt: its LoRA (pytorch_lora_weights.safetensors or its folder)")
    p.add_argument("--lora-alpha", type=float, default=None, help="adopt: the LoRA's alpha (default: its rank)")
    p.add_argument("--resolution", type=int, default=None, help="train: image size for --data (default 32)")
    p.add_argument("--channels", type=int, default=None, choices=[1, 3], help="train: 1 (grey) or 3 (RGB, default)")
    p.add_argument("--epochs", type=int, default=None, help="override the dataset's training epochs")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cuda" if _cuda() else "cpu")
    p.add_argument("--method", action="append", default=None, help="feature sets to build (repeatable)")
    p.add_argument("--engine", default="local", choices=["local", "ray"])
    p.add_argument("--address", default=None, help="Ray cluster address (with --engine ray)")
    p.add_argument("--subsets", type=int, default=None, help="number of LDS subsets")
    p.add_argument("--until", default=None, choices=["retrain"], help="lds: stop after retraining + ground truth")
    p.add_argument("--interim", action="store_true", default=None,
                   help="lds (emoji): score the LoRAs finished so far into runs/emoji/lds_interim.json; retrains nothing")
    args = p.parse_args(argv)
    if args.stage in ("data", "vae", "base", "lora", "known") and args.dataset != "emoji":
        p.error(f"the {args.stage} stage builds the emoji text-to-image setting: use --dataset emoji")
    everything = ["train", "features"] if args.data else ["data", "vae", "base", "lora", "known", "lds", "counterfactual"] if args.dataset == "emoji" else ["train", "ensemble", "features", "lds", "counterfactual", "lesson"]
    stages = everything if args.stage == "all" else [args.stage]
    used = {"subsets": {"lds"}, "until": {"lds"}, "interim": {"lds"}, "method": {"features"}, "address": {"features", "ensemble", "lds", "counterfactual"},
            "data": {"train", "adopt"}, "resolution": {"train"}, "channels": {"train"}, "model": {"train"},
            "pipeline": {"adopt"}, "lora": {"adopt"}, "lora_alpha": {"adopt"}}
    if args.stage == "adopt" and not (args.pipeline and args.lora and args.data):
        p.error("adopt needs --pipeline DIR, --lora FILE_OR_DIR and --data FOLDER (the LoRA's captioned training images)")
    if args.interim and args.dataset != "emoji":
        p.error("--interim scores the emoji LoRAs finished so far; other models' LDS is scored when its retrains end")
    if args.model and not args.data:
        p.error("--model needs --data: the images the model was trained on")
    for flag, where in used.items():
        if getattr(args, flag) is not None and not where & set(stages):
            p.error(f"--{flag} is used only by the {' / '.join(sorted(where))} stage(s), not by {args.stage}")
    from .eval_config import EvalConfig
    cfg = EvalConfig(**({"n_subsets": args.subsets} if args.subsets else {}), epochs=args.epochs)
    from explorer.datasets import ImageError
    from explorer.models import CheckpointError
    try:
        run_stages(args, stages, cfg)
    except (ImageError, FileNotFoundError, CheckpointError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.data and args.stage == "all":
        print(f"{args.dataset} is ready: restart the app to find it in the model list. Its evaluation (LDS: 64 "
              f"retrained models; counterfactual: 24) is a separate, long step: python -m precompute lds "
              f"--dataset {args.dataset}")
    return 0


def run_stages(args, stages: list[str], cfg) -> None:
    for stage in stages:
        if stage in ("data", "vae", "base", "lora", "known"):
            from . import emoji
            {"data": emoji.run_data, "vae": emoji.run_vae, "base": emoji.run_base, "lora": emoji.run_lora, "known": emoji.run_known}[stage]()
        elif stage == "adopt":
            from . import adopt_pipeline
            adopt_pipeline.run(args.dataset, args.pipeline, args.lora, args.data, args.lora_alpha)
        elif stage == "train" and args.model:
            from . import adopt
            adopt.run(args.dataset, args.model, args.data, seed=args.seed)
        elif stage == "train":
            from . import train
            train.run(args.dataset, epochs=args.epochs, seed=args.seed, device=args.device, data=args.data,
                      resolution=args.resolution, channels=args.channels)
        elif stage == "features":
            from . import features
            features.run(args.dataset, methods=args.method, device=args.device, engine=args.engine, address=args.address)
        elif stage == "answers":
            from . import answers
            answers.run(args.dataset, device=args.device)
        elif stage == "lesson":
            from . import lesson
            lesson.run(args.dataset, device=args.device)
        elif stage in ("lds", "counterfactual") and args.dataset == "emoji":
            from . import emoji_eval
            if stage == "lds" and args.interim:
                emoji_eval.interim_lds()
            else:
                emoji_eval.run_lds(until=args.until) if stage == "lds" else emoji_eval.run_counterfactual()
        else:
            from . import counterfactual, ensemble, lds
            kw = {"until": args.until} if stage == "lds" else {}
            run = {"lds": lds.run_lds, "ensemble": ensemble.run_ensemble, "counterfactual": counterfactual.run_counterfactual}
            run[stage](args.dataset, device=args.device, engine=args.engine,
                                              address=args.address, cfg=cfg, **kw)


def _cuda() -> bool:
    import torch
    return torch.cuda.is_available()


if __name__ == "__main__":
    sys.exit(main())
