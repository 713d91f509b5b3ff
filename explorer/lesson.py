"""The guided lesson: seven steps through what the explorer shows, each built from shipped results only
(stored benchmark scores, ``lds.json``, the counterfactual, and ``lesson.json`` written by
``python -m precompute lesson``). Every number a step states is in its ``numbers`` and read from
those files here, never typed into the text."""
from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch

from .attribution.registry import (BASELINE_METHOD, DEFAULT_METHOD, EMBEDDING_METHOD, GRADIENT_FREE_METHOD,
                                   PIXEL_METHOD, get_method)

D, B, G = DEFAULT_METHOD, BASELINE_METHOD, GRADIENT_FREE_METHOD
DUPLICATE_METHODS = (D, B, G)
KNOWN_METHODS = (PIXEL_METHOD, EMBEDDING_METHOD, B, D, G)  # icons: the 48×48 drawings


@dataclass(frozen=True)
class LessonConfig:
    dataset: str = "digits"  # steps 1 and 3-6
    duplicates_dataset: str = "shapes"  # step 2: planted near-duplicate pairs
    known_dataset: str = "icons"  # step 2 too, when installed: copies nobody planted (48×48 drawings)
    credit_dataset: str = "emoji"  # step 7: a text-to-image LoRA trained on named artists' drawings
    query: int = 108  # benchmark image: generated from seed 8, also one of the counterfactual's seeds
    method: str = DEFAULT_METHOD
    S: int = 10
    k: int = 8
    walk: tuple[int, ...] = (50, 500, 950)  # timesteps of the walk: late (details), middle, early (coarse)
    pair: int = 0  # which planted pair step 2 shows


LESSON = LessonConfig()


@dataclass
class Panel:
    """One row of images: (image (C, H, W) in [-1, 1], caption lines)."""
    label: str
    items: list


@dataclass
class Step:
    title: str
    text: str  # Markdown (LaTeX allowed); states every value in ``numbers``
    look: str  # "What am I looking at?" in one line
    panels: list[Panel]
    plots: list  # (kind, kwargs) for explorer.plots: histogram | scatter | bars
    numbers: dict


TITLES = ("What attribution means", "A planted copy", "For and against", "Early vs late in denoising",
          "Is it right? (LDS)", "Remove and retrain", "Who gets the credit?")


def _tiles(eng, idx, scores, mark: dict | None = None) -> list:
    """Training images as (image, caption lines): rank, class (or its ``mark``), score."""
    labels, mark = eng.data.train_labels.numpy(), mark or {}
    return [(eng.data.train_x[int(i)], [f"#{r + 1} · {mark.get(int(i), eng.data.classes[labels[int(i)]])}",
                                        f"{float(s):.3g}"])
            for r, (i, s) in enumerate(zip(idx, scores))]


def _stored(eng):
    """(query, its stored D-TRAK scores, split, column) for the lesson's benchmark image."""
    split, col = eng.results.split_of(LESSON.query)
    scores = eng.results.stored_scores(LESSON.method, LESSON.S, split)
    if scores is None:
        raise LessonMissing(f"{eng.task.paths.dataset} has no stored {LESSON.method} benchmark scores")
    return eng.benchmark_query(LESSON.query), scores[col].astype(np.float64), split, col


class LessonMissing(Exception):
    """A shipped result the lesson reads is absent (the step says so instead of showing numbers)."""


def _top(s: np.ndarray, k: int, sign: int = 1) -> np.ndarray:
    return np.argsort(-sign * s, kind="stable")[:k]


def step_attribution(eng) -> Step:
    q, s, _, _ = _stored(eng)
    label, conf = eng.task.predict(q.x)
    top = _top(s, LESSON.k)
    same = int((eng.data.train_labels.numpy()[top] == eng.data.classes.index(label)).sum())
    seed = int(eng.results.queries["gen_seed"][eng.results.split_of(LESSON.query)[1]])
    n = len(s)
    return Step(
        TITLES[0],
        f"The model drew this image from random noise (seed {seed}); the classifier reads it as a **{label}** "
        f"({conf:.0%} sure). **Attribution** gives each of the {n} training images a score $\\tau(q, i)$: how much "
        f"training on image $i$ pushed the model towards this output $q$. D-TRAK's eight highest scores are below — "
        f"**{same} of the {LESSON.k} are {label}s**: the model drew a {label} from the {label}s it learned.",
        "Left: the generated image (the query). Right: the training images with the highest D-TRAK scores, "
        "best first; under each, its class and its score.",
        [Panel("Query: a generated image", [(q.x, [f"seed {seed}", f"reads as {label}"])]),
         Panel(f"Top {LESSON.k} D-TRAK proponents", _tiles(eng, top, s[top]))], [],
        {"seed": seed, "label": label, "confidence": conf, "same_class": same, "n_train": n})


def _known(icons) -> tuple[str, Panel | None, dict]:
    """The icons' unplanted copies for step 2: a sentence, a row of three (48×48 drawing, D-TRAK's #1) and the
    numbers, or nothing when the icons model or its known-answer results are absent."""
    kn = icons.results.lesson().get("known") if icons is not None else None
    if not kn:
        return "", None, {}
    from .datasets.icons import ICON_ROOT, icon_tensor
    m = kn["methods"]
    items = []
    for j in range(3):  # the first three pairs, as stored (not the best ones)
        first = m[D]["top"][j][0]
        name = os.path.splitext(kn["files"][j].split("/")[-1])[0]
        items += [(icon_tensor(os.path.join(ICON_ROOT, kn["files"][j])), ["48×48 drawing", name]),
                  (icons.data.train_x[first], ["D-TRAK #1", "ORIGINAL" if first == kn["original"][j] else "not it"])]
    numbers = {"icons_pairs": len(kn["original"]), "icons_dtrak_top1": m[D]["top1"],
               "icons_pixel_top1": m[PIXEL_METHOD]["top1"]}
    text = (f" Nobody planted copies in the *icons* set, yet {numbers['icons_pairs']} of its Oxygen icons also ship "
            f"drawn at 48×48: queried with that drawing, D-TRAK finds the 32×32 original first for "
            f"**{numbers['icons_dtrak_top1']:.0%}** (raw pixel cosine: {numbers['icons_pixel_top1']:.0%}).")
    return text, Panel("Icons: 48×48 drawing, D-TRAK's #1", items), numbers


def step_duplicates(eng, icons=None) -> Step:
    d = eng.results.lesson().get("duplicates")
    if d is None:
        raise LessonMissing(f"{eng.task.paths.dataset} has no stored duplicate search (python -m precompute lesson)")
    p, k = LESSON.pair, len(d["methods"][D]["top"][0])
    original, copy = d["original"][p], d["copy"][p]
    rank = {m: r["rank"][p] + 1 for m, r in d["methods"].items()}
    top5 = {m: sum(int(x < 5) for x in r["rank"]) for m, r in d["methods"].items()}
    n_pairs = len(d["original"])
    mark = {original: "ORIGINAL", copy: "itself"}  # in place of the class
    panels = [Panel("Query: a planted copy, and the original it was copied from",
                    [(eng.data.train_x[copy], ["query", "(the copy)"]), (eng.data.train_x[original], ["ORIGINAL", "(the answer)"])])]
    panels += [Panel(f"{get_method(m).label}: top {k}",
                     _tiles(eng, d["methods"][m]["top"][p], d["methods"][m]["scores"][p], mark)) for m in (D, B)]
    known_text, known_panel, known_numbers = _known(icons)
    return Step(
        TITLES[1],
        f"A test with a known answer. We planted {n_pairs} near-copies in the *shapes* training set: an image and "
        f"the same image with a little pixel noise. Query the copy and ask which training image it came from. "
        f"The copy itself is a training image, so it comes first; the right answer is its ORIGINAL. Here "
        f"D-TRAK ranks the original **#{rank[D]}**, TRAK **#{rank[B]}**. Over all {n_pairs} pairs, the "
        f"original is in the top 5 for **{top5[D]} of {n_pairs}** under D-TRAK and **{top5[B]} of "
        f"{n_pairs}** under TRAK (NDA, which needs no gradients: {top5[G]} of {n_pairs}).{known_text}",
        "Top row: the query and the answer we know. Then each method's top proponents, best first; the "
        "original is marked ORIGINAL where a method found it.",
        panels + ([known_panel] if known_panel else []), [],
        {"dtrak_rank": rank[D], "trak_rank": rank[B], "dtrak_top5": top5[D],
         "trak_top5": top5[B], "nda_top5": top5[G], "pairs": n_pairs, **known_numbers})


def step_opponents(eng) -> Step:
    q, s, _, _ = _stored(eng)
    pro, opp = _top(s, LESSON.k), _top(s, LESSON.k, -1)
    label, _ = eng.task.predict(q.x)
    opp_same = int((eng.data.train_labels.numpy()[opp] == eng.data.classes.index(label)).sum())
    half = float(np.median(np.abs(s)))
    return Step(
        TITLES[2],
        f"Scores have a sign. **Proponents** (the highest scores) pushed the model towards this image; "
        f"**opponents** (the most negative) pushed it away. Opponents are not simply other classes: here "
        f"**{opp_same} of the {LESSON.k}** are {label}s too — drawn differently, pulling the same weights another "
        f"way. The histogram shows all {len(s)} scores: half lie within ±{half:.2g} of zero; the top is "
        f"{s.max():.3g}, the lowest {s.min():.3g}.",
        "The histogram counts training images by score: a bell around zero (little influence either way), the "
        "proponents in its right tail and the opponents in its left.",
        [Panel("Query", [(q.x, ["query", ""])]), Panel(f"Top {LESSON.k} proponents", _tiles(eng, pro, s[pro])),
         Panel(f"Top {LESSON.k} opponents (most negative first)", _tiles(eng, opp, s[opp]))],
        [("histogram", {"scores": s, "title": "D-TRAK scores of every training image for this query"})],
        {"opp_same": opp_same, "half_within": half, "max": float(s.max()), "min": float(s.min())})


def step_walk(eng) -> Step:
    w = eng.results.lesson().get("walk")
    if w is None:
        raise LessonMissing(f"{eng.task.paths.dataset} has no stored timestep walk (python -m precompute lesson)")
    q = eng.benchmark_query(w["query"])
    first, last = w["steps"][-1], w["steps"][0]  # early in denoising = large t
    shared = len(set(first["top"]) & set(last["top"]))
    labels = eng.data.train_labels.numpy()
    label, _ = eng.task.predict(q.x)
    same = {st["t"]: int((labels[st["top"]] == eng.data.classes.index(label)).sum()) for st in w["steps"]}
    panels = []
    for st in reversed(w["steps"]):
        xt, _ = eng.task.noised_view(q, st["t"])
        panels.append(Panel(f"t = {st['t']}: what the model sees, then its top {len(st['top'])} proponents",
                            [(xt, [f"x_t, t = {st['t']}", ""])] + _tiles(eng, st["top"], st["scores"])))
    return Step(
        TITLES[3],
        f"A diffusion model removes noise step by step, from $t = 999$ (pure noise) to $t = 0$. Attributing at one "
        f"timestep asks which training images mattered *at that stage*. Of the top {len(first['top'])}, "
        f"{same[first['t']]} are {label}s at $t = {first['t']}$ (almost noise) and {same[last['t']]} at "
        f"$t = {last['t']}$ (fine details). The two lists share **{shared} of {len(first['top'])}** images: early steps "
        f"decide the coarse shape, late ones the strokes — D-TRAK averages over {LESSON.S} timesteps.",
        "Each row: the noised query the model sees at that t, then the training images that matter most there.",
        panels, [], {"shared": shared, **{f"same_t{t}": n for t, n in same.items()}})


def step_lds(eng) -> Step:
    _, _, split, col = _stored(eng)
    res = eng.results
    row = res.row(LESSON.method, LESSON.S, split)
    rows = [r for r in res.lds()["rows"] if r["split"] == split]
    if row is None:
        raise LessonMissing(f"{eng.task.paths.dataset} has no LDS results")
    trak = res.row(B, LESSON.S, split)
    best = max(rows, key=lambda r: r["lds"])
    report = res.lds()["config"]["report_subsets"]
    rho = row["per_query"][col]
    n_q = len(row["per_query"])
    best_S = "" if best["S"] is None else f" (S = {best['S']})"
    return Step(
        TITLES[4],
        f"Are the scores right? Retrain the model on many random halves $S_m$ of the data and measure each one's "
        f"loss on the query. Adding up the scores of the images in a half predicts that loss: "
        f"$\\hat y_m = \\sum_{{i \\in S_m}} -\\tau(q, i)$. For this image the prediction and the truth rank the "
        f"{len(report)} halves with Spearman $\\rho$ = **{rho:.2f}**. The **LDS** averages $\\rho$ over {n_q} "
        f"{split} images (in %): D-TRAK **{100 * row['lds']:.1f}**, TRAK **{100 * trak['lds']:.1f}**; the best "
        f"method on this model is {get_method(best['method']).label}{best_S} at {100 * best['lds']:.1f}.",
        "Scatter: one dot per retrained model, predicted loss across, measured loss up — a rising cloud means the "
        "scores know which images matter. Bars: every method's LDS with its 95 % bootstrap interval.",
        [], [("scatter", {"pred": res.stored_pred(LESSON.method, LESSON.S, split)[report, col],
                          "actual": res.outputs()[report, LESSON.query], "rho": rho,
                          "title": f"D-TRAK, this image ({split})"}),
             ("bars", {"rows": rows, "split": split})],
        {"rho": rho, "dtrak_lds": 100 * row["lds"], "trak_lds": 100 * trak["lds"], "best_lds": 100 * best["lds"],
         "best_method": best["method"], "queries": n_q, "halves": len(report)})


def step_counterfactual(eng) -> Step:
    loaded = eng.results.counterfactual()
    if loaded is None:
        raise LessonMissing(f"{eng.task.paths.dataset} has no counterfactual results")
    res, imgs = loaded
    seed = int(eng.results.queries["gen_seed"][eng.results.split_of(LESSON.query)[1]])
    j = res["seeds"].index(seed)
    med = {m: res["methods"][m]["l2_median"] for m in (D, "random")}
    this = {m: res["methods"][m]["l2"][j] for m in (D, "random")}
    def tile(key, lines):
        return torch.from_numpy(imgs[key][j].astype(np.float32)), lines
    return Step(
        TITLES[5],
        f"The strongest test: delete the top {res['k']} D-TRAK proponents ({res['k'] / res['n']:.0%} of the data), "
        f"retrain from the same seed, and regenerate from the same noise. If they really made the image, it should "
        f"change. Here it moves by pixel $L_2$ = **{this[D]:.2f}**, against {this['random']:.2f} when as many "
        f"random images are removed. Over {len(res['seeds'])} generated images the median is {med[D]:.2f} vs "
        f"{med['random']:.2f}: **{med[D] / med['random']:.1f}×** as far.",
        "Left: the image the full model draws. Middle: the same noise after retraining without D-TRAK's top "
        "proponents. Right: after removing as many random images.",
        [Panel(f"Seed {seed}: before and after retraining",
               [tile("original", ["original", ""]), tile(D, ["− D-TRAK top", f"L2 {this[D]:.2f}"]),
                tile("random", ["− random", f"L2 {this['random']:.2f}"])])], [],
        {"dtrak_l2": this[D], "random_l2": this["random"], "dtrak_median": med[D],
         "random_median": med["random"], "ratio": med[D] / med["random"], "removed": res["k"]})


def step_credit(eng) -> Step:
    """The paper's reason for attribution: crediting the people whose work a model learned from — one prompt's
    answer from the emoji LoRA, stored by ``python -m precompute known --dataset emoji``."""
    ex = (eng.results.known() or {}).get("lesson")
    if ex is None:
        raise LessonMissing(f"{eng.task.paths.dataset} has no stored credit example (python -m precompute known)")
    artists = eng.data.meta.get("artists", {})
    teams = [artists.get(n, n) for n in ex["styles"]]
    meta, idx = eng.data.meta, eng.data.train_idx
    tiles = [(eng.data.train_x[i], [f"#{r + 1} · {meta['name'][int(idx[i])]}", meta["author"][int(idx[i])]])
             for r, i in enumerate(ex["top"])]
    image = torch.tensor(ex["image"], dtype=torch.float32) / 127.5 - 1
    split = " and ".join(f"**{t} {c:.0%}**" for t, c in zip(teams, ex["credit"]))
    people = ", ".join(f"{name} ({share:.0%})" for name, share in ex["designers"])
    return Step(
        TITLES[6],
        f"A small Stable Diffusion-style model, LoRA-fine-tuned on {len(idx)} emoji drawn by two teams — Twitter's "
        f"Twemoji and OpenMoji's named designers — drew this for the prompt “{ex['prompt']}”. Summing D-TRAK's "
        f"positive scores by who drew each training image splits the credit {split}, against "
        f"{' / '.join(f'{s:.0%}' for s in ex['share'])} of the training set; credited most: {people}. This is why "
        f"the paper wants attribution: to credit, and perhaps pay, the people whose work a model learned from. "
        f"Read it with care: on this model the prompt's words carry much of the answer.",
        "Left: the generated image. Right: the training drawings with the highest D-TRAK scores, with who drew "
        "each. The plot: each team's share of the credit against its share of the training set.",
        [Panel("Query: a prompt's image", [(image, [ex["prompt"], f"seed {ex['seed']}"])]),
         Panel(f"Top {len(ex['top'])} D-TRAK proponents", tiles)],
        [("credit", {"groups": teams, "credit": np.array(ex["credit"]), "share": np.array(ex["share"]),
                     "title": "Credit for this output"})],
        {"prompt": ex["prompt"], "credit": dict(zip(teams, ex["credit"])), "designers": ex["designers"],
         "n_train": len(idx)})


STEPS = (step_attribution, step_duplicates, step_opponents, step_walk, step_lds, step_counterfactual, step_credit)


def lesson_step(i: int, engine) -> Step:
    """Step i (0-based) built from ``engine(dataset)``'s shipped results."""
    if STEPS[i] is step_duplicates:
        return step_duplicates(engine(LESSON.duplicates_dataset), _optional(engine, LESSON.known_dataset))
    if STEPS[i] is step_credit:
        return step_credit(engine(LESSON.credit_dataset))
    return STEPS[i](engine(LESSON.dataset))


def _optional(engine, name: str):
    """``engine(name)``, or None when that model is not offered on this machine."""
    try:
        return engine(name)
    except Exception:  # noqa: BLE001 - any reason it cannot open: the step shows what it has
        return None
