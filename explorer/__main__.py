"""``python -m explorer attribute``: attribute a batch of images from the command line, with the
same engine (features, kernels, λ) as the page.

    python -m explorer attribute --dataset digits --images generated/ --method dtrak --top 10 --out results.json

Each image is read as an upload (converted to the model's format). The output (``.json`` or ``.csv``)
names, for each image, its top proponents and opponents: training index, file name (image-folder
models), label and score, with the method, timesteps, λ and projection used.
"""
from __future__ import annotations

import argparse
import csv
import os
import sys

from tqdm.auto import tqdm

from .attribution.registry import DEFAULT_METHOD, METHODS, get_method
from .attribution.timesteps import TimestepStrategy
from .files import CacheError, atomic_write, write_json
from .datasets import IMAGE_EXTENSIONS, ImageError, open_image
from .engine import Engine

BATCH = 32


def image_paths(path: str) -> list[str]:
    if os.path.isfile(path):
        return [path]
    if not os.path.isdir(path):
        raise FileNotFoundError(f"{path} is neither an image nor a folder")
    out = sorted(os.path.join(path, f) for f in os.listdir(path) if f.lower().endswith(IMAGE_EXTENSIONS))
    if not out:
        raise FileNotFoundError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) in {path}")
    return out


def attribute(engine: Engine, paths: list[str], method: str, strategy: TimestepStrategy, lam: float | None,
              top: int, progress: bool = True) -> dict:
    """{settings..., "results": [{"image", "proponents": [...], "opponents": [...]}]}, scored BATCH images at a time."""
    m = get_method(method)
    if m.generated_only:
        raise ValueError(f"{m.label} needs a generated image's sampling path; files have none")
    data = engine.data
    files = data.meta.get("files")
    lam = engine.default_lambda(m, strategy.S, "validation") if lam is None else lam

    def entry(rank: int, i: int, score: float) -> dict:
        uid = int(data.train_idx[i])
        return {"rank": rank, "train_index": int(i), "dataset_index": uid, "file": files[uid] if files else None,
                "label": data.classes[int(data.train_labels[i])], "score": float(score)}

    results = []
    for a in tqdm(range(0, len(paths), BATCH), desc=f"{m.label}", unit="batch", disable=not progress):
        chunk = paths[a:a + BATCH]
        queries = [engine.task.upload(open_image(p)) for p in chunk]
        t = engine.topk(queries, m, strategy, lam, top)
        for j, p in enumerate(chunk):
            results.append({"image": p,
                            "proponents": [entry(r + 1, i, s) for r, (i, s) in
                                           enumerate(zip(t.proponents[j], t.proponent_scores[j]))],
                            "opponents": [entry(r + 1, i, s) for r, (i, s) in
                                          enumerate(zip(t.opponents[j], t.opponent_scores[j]))]})
    return {"dataset": data.name, "method": m.name, "method_label": m.label,
            "timesteps": [int(x) for x in strategy.timesteps()] if m.uses_timesteps else None,
            "lambda": lam if m.uses_lambda else None,
            "projection": engine.store.projection if m.uses_gradients else None, "results": results}


def save(out: dict, path: str) -> None:
    if path.endswith(".csv"):
        def write(tmp):
            with open(tmp, "w", newline="") as f:
                w = csv.writer(f)
                w.writerow(["image", "kind", "rank", "train_index", "dataset_index", "file", "label", "score"])
                for r in out["results"]:
                    for kind in ("proponents", "opponents"):
                        for e in r[kind]:
                            w.writerow([r["image"], kind[:-1], e["rank"], e["train_index"], e["dataset_index"],
                                        e["file"] or "", e["label"], f"{e['score']:.6g}"])
        atomic_write(path, write)
    else:
        write_json(path, out)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m explorer", description=__doc__.split("\n\n")[0], allow_abbrev=False)
    sub = p.add_subparsers(dest="command", required=True)
    a = sub.add_parser("attribute", help="attribute images (a file or a folder) to the training set",
                       allow_abbrev=False)
    a.add_argument("--dataset", required=True, help="a model in assets/ (digits, shapes, or one you trained)")
    a.add_argument("--images", required=True, help="an image file or a folder of images")
    a.add_argument("--method", default=DEFAULT_METHOD, choices=sorted(METHODS))
    a.add_argument("--S", type=int, default=10, help="number of timesteps (uniform)")
    a.add_argument("--lam", type=float, default=None, help="λ (default: the one LDS tuned, else 1)")
    a.add_argument("--top", type=int, default=10)
    a.add_argument("--out", required=True, help="results.json or results.csv")
    a.add_argument("--device", default="cpu")
    args = p.parse_args(argv)
    if not args.out.endswith((".json", ".csv")):
        p.error("--out must end in .json or .csv")
    try:
        engine = Engine(args.dataset, device=args.device)
        out = attribute(engine, image_paths(args.images), args.method, TimestepStrategy("uniform", args.S), args.lam,
                        args.top)
    except (FileNotFoundError, ImageError, CacheError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    save(out, args.out)
    print(f"{len(out['results'])} images attributed with {out['method_label']} → {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
