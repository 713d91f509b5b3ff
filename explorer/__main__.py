"""``python -m explorer attribute``: attribute a batch of images, or of prompts to a text-to-image model,
from the command line, with the same engine (features, kernels, λ) as the page.

    python -m explorer attribute --dataset digits --images generated/ --method dtrak --top 10 --out results.json
    python -m explorer attribute --dataset mysd --prompts prompts.txt --seed 0 --out results.json

Each image is read as an upload (converted to the model's format; under ``--caption`` for a text-to-image
model); each line of a prompts file is drawn with seed ``--seed`` + its line's position among the prompts,
then attributed. The output (``.json`` or ``.csv``) names, for each query, its top proponents and opponents:
training index, file name (folder models), label, caption and contributor (captioned data) and score, with
the method, timesteps, λ and projection used; for data with contributors, each one's share of the credit
(of the positive attribution, ``explorer.compare.credit``).
"""
from __future__ import annotations

import argparse
import csv
import os
import sys
from typing import Callable

from tqdm.auto import tqdm

from .attribution.registry import DEFAULT_METHOD, METHODS, get_method
from .attribution.timesteps import TimestepStrategy
from .compare import credit
from .files import CacheError, atomic_write, write_json
from .datasets import IMAGE_EXTENSIONS, ImageError, open_image
from .engine import Engine, Request

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


def image_queries(engine: Engine, paths: list[str], caption: str = "") -> list[tuple[dict, Callable]]:
    """(record, make query) per image file, read as an upload."""
    read = ((lambda p: engine.task.upload(open_image(p), caption)) if engine.task.conditional
            else (lambda p: engine.task.upload(open_image(p))))
    return [({"image": p}, lambda p=p: read(p)) for p in paths]


def prompt_queries(engine: Engine, path: str, seed: int, steps: int) -> list[tuple[dict, Callable]]:
    """(record, make query) per non-empty line of a prompts file, drawn from seed ``seed + position``."""
    if not engine.task.conditional:
        raise ValueError(f"{engine.data.name} draws without text: attribute --images instead of --prompts")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no prompts file {path}")
    prompts = [line.strip() for line in open(path) if line.strip()]
    if not prompts:
        raise ValueError(f"{path} holds no prompts (one per line)")
    return [({"prompt": text, "seed": seed + j}, lambda text=text, s=seed + j: engine.task.prompt(text, s, steps))
            for j, text in enumerate(prompts)]


def attribute(engine: Engine, items: list[tuple[dict, Callable]], method: str, strategy: TimestepStrategy,
              lam: float | None, top: int, progress: bool = True) -> dict:
    """{settings..., "results": [{record..., "proponents": [...], "opponents": [...], "credit"?}]}, scored
    BATCH queries at a time."""
    m = get_method(method)
    data = engine.data
    meta = data.meta
    groups = data.train_styles

    def entry(rank: int, i: int, score: float) -> dict:
        uid = int(data.train_idx[i])
        out = {"rank": rank, "train_index": int(i), "dataset_index": uid,
               "file": meta["files"][uid] if "files" in meta else None,
               "label": data.classes[int(data.train_labels[i])], "score": float(score)}
        out.update({key: meta[name][uid] for key, name in (("caption", "caption"), ("contributor", "author"))
                    if name in meta})
        return out

    results, used = [], None
    for a in tqdm(range(0, len(items), BATCH), desc=f"{m.label}", unit="batch", disable=not progress):
        chunk = items[a:a + BATCH]
        answers = engine.answer(Request(tuple(make() for _, make in chunk), m, strategy, lam, top))
        for (record, _), res in zip(chunk, answers):
            t = res.top
            row = {**record,
                   "proponents": [entry(r + 1, i, v) for r, (i, v) in
                                  enumerate(zip(t.proponents[0], t.proponent_scores[0]))],
                   "opponents": [entry(r + 1, i, v) for r, (i, v) in
                                 enumerate(zip(t.opponents[0], t.opponent_scores[0]))]}
            if groups is not None:
                row["credit"] = dict(zip(groups[1], credit(res.scores, groups[0], len(groups[1])).tolist()))
            results.append(row)
            used = res
    return {"dataset": data.name, "method": m.name, "method_label": m.label,
            "timesteps": [int(x) for x in strategy.timesteps()] if m.needs.timesteps else None,
            "lambda": used.lam if used else None,
            "projection": engine.store.projection if m.needs.gradients else None, "results": results}


def save(out: dict, path: str) -> None:
    if path.endswith(".csv"):
        def write(tmp):
            with open(tmp, "w", newline="") as f:
                w = csv.writer(f)
                first = "prompt" if out["results"] and "prompt" in out["results"][0] else "image"
                w.writerow([first, "kind", "rank", "train_index", "dataset_index", "file", "label", "caption",
                            "contributor", "score"])
                for r in out["results"]:
                    for kind in ("proponents", "opponents"):
                        for e in r[kind]:
                            w.writerow([r[first], kind[:-1], e["rank"], e["train_index"],
                                        e["dataset_index"], e["file"] or "", e["label"], e.get("caption", ""),
                                        e.get("contributor", ""), f"{e['score']:.6g}"])
        atomic_write(path, write)
    else:
        write_json(path, out)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m explorer", description=__doc__.split("\n\n")[0], allow_abbrev=False)
    sub = p.add_subparsers(dest="command", required=True)
    a = sub.add_parser("attribute", help="attribute images (a file or a folder) to the training set",
                       allow_abbrev=False)
    a.add_argument("--dataset", required=True, help="a model in assets/ (digits, shapes, or one you trained)")
    what = a.add_mutually_exclusive_group(required=True)
    what.add_argument("--images", help="an image file or a folder of images")
    what.add_argument("--prompts", help="text-to-image models: a file with one prompt per line")
    a.add_argument("--caption", default="", help="text-to-image models: the caption --images are read under")
    a.add_argument("--seed", type=int, default=0, help="--prompts: the first prompt's seed (then +1 per prompt)")
    a.add_argument("--steps", type=int, default=50, help="--prompts: DDIM steps")
    a.add_argument("--method", default=DEFAULT_METHOD, choices=sorted(METHODS))
    a.add_argument("--S", type=int, default=10, help="number of timesteps (uniform)")
    a.add_argument("--lam", type=float, default=None, help="λ (default: the one LDS tuned, else the untuned fallback)")
    a.add_argument("--top", type=int, default=10)
    a.add_argument("--out", required=True, help="results.json or results.csv")
    a.add_argument("--device", default="cpu")
    args = p.parse_args(argv)
    if not args.out.endswith((".json", ".csv")):
        p.error("--out must end in .json or .csv")
    try:
        engine = Engine(args.dataset, device=args.device)
        items = (prompt_queries(engine, args.prompts, args.seed, args.steps) if args.prompts
                 else image_queries(engine, image_paths(args.images), args.caption))
        out = attribute(engine, items, args.method, TimestepStrategy("uniform", args.S), args.lam, args.top)
    except (FileNotFoundError, ImageError, CacheError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    save(out, args.out)
    print(f"{len(out['results'])} {'prompts' if args.prompts else 'images'} attributed with {out['method_label']} → {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
