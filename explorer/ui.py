"""Gradio layout and callbacks. No math here: every number comes from ``explorer.engine``,
``explorer.compare`` or the shipped evaluation results; figures from ``explorer.plots``."""
from __future__ import annotations

import json
import os
from functools import lru_cache

import gradio as gr
import numpy as np
import torch

from . import ASSETS, CACHE, plots
from .attribution.features import GENERATED_UID
from .attribution.methods import METHODS, get_method
from .attribution.outputs import OUTPUT_FUNCTIONS
from .attribution.timesteps import TimestepStrategy
from .cache import CacheError
from .compare import class_mix, overlap_at_k, spearman
from .data import ImageError, open_image
from .engine import Engine, Query, tuned_lambda
from .images import png_file
from .models import CheckpointError, add_noise, alphas_cumprod
from .paths import AssetPaths

MAX_UPLOAD_MB = 20
METHOD_CHOICES = [(f"{m.group} · {m.label}", m.name) for m in METHODS.values()]


def _png(x: torch.Tensor, scale: int) -> str:
    """Images go to the page as PNG files written once (exact pixels; safe under concurrent requests)."""
    return png_file(x, scale, os.path.join(CACHE, "png"))


def available_datasets() -> list[str]:
    return sorted(d for d in os.listdir(ASSETS) if os.path.exists(os.path.join(ASSETS, d, "model", "config.json")))


@lru_cache(maxsize=4)
def engine(dataset: str) -> Engine:
    if dataset not in available_datasets():
        raise gr.Error(f"no model for {dataset!r} under assets/; train one with `python -m precompute train --dataset {dataset}`")
    return Engine(dataset)


@lru_cache(maxsize=64)
def _generated(dataset: str, seed: int, steps: int) -> Query:
    return engine(dataset).query_generated(seed, steps)


@lru_cache(maxsize=4)
def _benchmark(dataset: str) -> dict | None:
    """The benchmark queries (read once per dataset)."""
    path = os.path.join(ASSETS, dataset, "eval", "queries.npz")
    return dict(np.load(path, allow_pickle=False)) if os.path.exists(path) else None


def scale_for(dataset: str) -> int:
    return max(1, 96 // engine(dataset).data.resolution)


def make_query(dataset: str, source: str, seed: float, steps: float, bench_index: float, upload,
               trajectory: bool = False) -> Query:
    """A query from the page's inputs; user errors become one clear message. Generated benchmark
    queries are read from the benchmark file unless their DDIM ``trajectory`` is needed."""
    eng = engine(dataset)
    if source == "generate":
        return _generated(dataset, int(seed), int(steps))
    if source == "benchmark":
        bench = _benchmark(dataset)
        if bench is None:
            raise gr.Error("this model has no benchmark queries; run `python -m precompute lds`")
        i = int(bench_index)
        if not 0 <= i < len(bench["x"]):
            raise gr.Error(f"benchmark index must be in 0..{len(bench['x']) - 1}")
        kind = "val" if bench["split"][i] == 0 else "generated"
        if kind == "generated" and trajectory:
            return _generated(dataset, int(bench["uid"][i] - GENERATED_UID), 50)
        label = (f"seed {int(bench['uid'][i] - GENERATED_UID)}" if kind == "generated"
                 else eng.data.classes[int(eng.data.val_labels[int(bench["val_pos"][i])])])
        return Query(kind, torch.from_numpy(bench["x"][i].astype(np.float32)), int(bench["uid"][i]), label)
    if upload is None:
        raise gr.Error("no file uploaded: choose a PNG or JPEG image")
    path = upload if isinstance(upload, str) else getattr(upload, "name", upload)
    if os.path.getsize(path) == 0:
        raise gr.Error("the uploaded file is empty: choose a PNG or JPEG image")
    if os.path.getsize(path) > MAX_UPLOAD_MB * 2**20:
        raise gr.Error(f"the upload is larger than {MAX_UPLOAD_MB} MB: downscale it first")
    try:
        return eng.query_upload(open_image(path))
    except ImageError as e:
        raise gr.Error(str(e)) from e


def _strategy(kind: str, S: float) -> TimestepStrategy:
    return TimestepStrategy(kind, int(S))


def _gallery(eng: Engine, idx: np.ndarray, scores: np.ndarray, scale: int) -> list:
    labels = eng.data.train_labels.numpy()
    return [(_png(eng.data.train_x[i], scale), f"#{r + 1} · score {s:.3g} · train {i} · label {eng.data.classes[labels[i]]}")
            for r, (i, s) in enumerate(zip(idx, scores))]


def _attribute(dataset, source, seed, steps, bench_index, upload, method, strategy, S, lam, k, progress):
    eng = engine(dataset)
    m = get_method(method)
    q = make_query(dataset, source, seed, steps, bench_index, upload, trajectory=m.query == "journey")
    if m.query == "journey" and q.trajectory is None:
        raise gr.Error("Journey-TRAK follows the DDIM trajectory: pick a generated query")
    if m.uses_lambda and lam is not None and float(lam) <= 0:
        raise gr.Error("λ must be positive (empty: the λ tuned by LDS)")
    lam = float(lam) if m.uses_lambda and lam is not None else None
    try:
        res = (eng.benchmark_attribution(int(bench_index), method, S, lam, int(k))
               if source == "benchmark" and strategy == "uniform" else None)
        res = res or eng.attribute(q, method, _strategy(strategy, S), lam, int(k),
                                   progress=lambda a, b: progress(a / b, desc=f"building training features {a}/{b}"))
    except (CacheError, CheckpointError, ValueError) as e:
        raise gr.Error(str(e)) from e
    return eng, q, res


def attribute(dataset, source, seed, steps, bench_index, upload, method, strategy, S, lam, k, progress=gr.Progress()):
    """Query → proponents, opponents, histogram, class mix, the query image as the model sees it."""
    eng, q, res = _attribute(dataset, source, seed, steps, bench_index, upload, method, strategy, S, lam, k, progress)
    sc = scale_for(dataset)
    labels = eng.data.train_labels.numpy()
    top = res.top
    info = (f"**{METHODS[res.method].label}** · query: {q.kind} {q.label} · "
            + (f"λ = {res.lam:g} · " if res.lam is not None else "") + (f"timesteps {res.strategy}" if res.strategy else ""))
    return (_png(q.x, sc), info, _gallery(eng, top.proponents[0], top.proponent_scores[0], sc),
            _gallery(eng, top.opponents[0], top.opponent_scores[0], sc), plots.score_histogram(res.scores),
            plots.class_mix(class_mix(labels, top.proponents[0], len(eng.data.classes)), eng.data.classes,
                            f"Classes of the top-{int(k)} proponents"))


def compare(dataset, source, seed, steps, bench_index, upload, method_a, method_b, strategy, S, k, progress=gr.Progress()):
    """Two methods side by side: galleries, overlap@k and Spearman of the score vectors."""
    _, _, a = _attribute(dataset, source, seed, steps, bench_index, upload, method_a, strategy, S, None, k, progress)
    eng, _, b = _attribute(dataset, source, seed, steps, bench_index, upload, method_b, strategy, S, None, k, progress)
    sc = scale_for(dataset)
    text = (f"overlap@{int(k)} = **{overlap_at_k(a.scores, b.scores, int(k)):.2f}** · "
            f"Spearman ρ of the score vectors = **{spearman(a.scores, b.scores):.3f}**")
    return (_gallery(eng, a.top.proponents[0], a.top.proponent_scores[0], sc),
            _gallery(eng, b.top.proponents[0], b.top.proponent_scores[0], sc), text)


def timestep_view(dataset, source, seed, steps, bench_index, upload, method, t, k, progress=gr.Progress()):
    """x_t, the model's x̂₀ and the top proponents when attributing at the single timestep t."""
    eng = engine(dataset)
    q = make_query(dataset, source, seed, steps, bench_index, upload)
    m = get_method(method)
    if not m.uses_timesteps or m.query == "journey":
        raise gr.Error("pick a gradient method (e.g. TRAK or D-TRAK) to walk the timesteps")
    t = int(t)
    abar = alphas_cumprod()
    from .attribution.timesteps import seeded_noise
    eps = seeded_noise([q.uid], [t], tuple(q.x.shape), 0)[0]
    xt = add_noise(q.x[None], eps, torch.tensor([t]), abar)
    with torch.no_grad():
        pred = eng.model(xt, torch.tensor([t])).sample
    x0 = ((xt - (1 - abar[t]).sqrt() * pred) / abar[t].sqrt()).clamp(-1, 1)
    res = eng.attribute(q, method, TimestepStrategy.single(t), None, int(k),
                        progress=lambda a, b: progress(a / b, desc=f"features at t={t}: {a}/{b}"))
    sc = scale_for(dataset)
    return _png(xt[0], sc), _png(x0[0], sc), _gallery(eng, res.top.proponents[0], res.top.proponent_scores[0], sc)


def _eval(dataset: str) -> dict | None:
    path = os.path.join(ASSETS, dataset, "eval", "lds.json")
    return json.load(open(path)) if os.path.exists(path) else None


def evaluation(dataset, method, S, bench_index):
    """LDS bars for both splits, the scatter for one benchmark query, the counterfactual table."""
    res = _eval(dataset)
    if res is None:
        counterfactual = _counterfactual(dataset)
        if not counterfactual[0]:
            raise gr.Error(f"no evaluation results for {dataset}; run `python -m precompute lds --dataset {dataset}` "
                           f"and `python -m precompute counterfactual --dataset {dataset}`")
        no_lds = plots.message(f"No LDS results for {dataset} yet (`python -m precompute lds --dataset {dataset}`)")
        return no_lds, no_lds, no_lds, *counterfactual
    bench = _benchmark(dataset)
    i = int(bench_index)
    split = "validation" if bench["split"][i] == 0 else "generated"
    col = i - int(np.flatnonzero(bench["split"] == bench["split"][i])[0])
    S_key = int(S) if get_method(method).uses_timesteps else None
    tag = f"{method}_S{S_key}_{split}"
    pred_path = os.path.join(ASSETS, dataset, "eval", "pred", tag + ".npy")
    row = next((r for r in res["rows"] if (r["method"], r["S"], r["split"]) == (method, S_key, split)), None)
    if row is None or not os.path.exists(pred_path):
        scatter = plots.message(f"No LDS result for {tag}")
    else:
        pred = np.load(pred_path, allow_pickle=False)[:, col]
        actual = np.load(os.path.join(ASSETS, dataset, "eval", "outputs.npy"), allow_pickle=False)[:, i]
        report = res["config"]["report_subsets"]
        scatter = plots.lds_scatter(pred[report], actual[report], row["per_query"][col],
                                    f"{METHODS[method].label} · {split} query {col} (reporting subsets)")
    return (plots.lds_bars(res["rows"], "validation"), plots.lds_bars(res["rows"], "generated"), scatter,
            *_counterfactual(dataset))


def _counterfactual(dataset: str):
    path = os.path.join(ASSETS, dataset, "eval", "counterfactual.json")
    if not os.path.exists(path):
        return [], "No counterfactual results shipped for this model yet (`python -m precompute counterfactual`)."
    res = json.load(open(path))
    imgs = np.load(os.path.join(ASSETS, dataset, "eval", "counterfactual_images.npz"), allow_pickle=False)
    sc = scale_for(dataset)
    gallery = []
    for j, s in enumerate(res["seeds"]):
        gallery.append((_png(torch.from_numpy(imgs["original"][j].astype(np.float32)), sc), f"seed {s} · original"))
        for m in ("random", "trak", "dtrak"):
            mm = res["methods"][m]
            gallery.append((_png(torch.from_numpy(imgs[m][j].astype(np.float32)), sc),
                            f"seed {s} · without top-{res['k']} of {m} · L2 {mm['l2'][j]:.2f} · cos {mm['cosine'][j]:.3f}"))
    table = "| removal | median pixel L2 ↑ | median embedding cosine ↓ |\n|---|---|---|\n" + "\n".join(
        f"| {m} | {res['methods'][m]['l2_median']:.3f} | {res['methods'][m]['cosine_median']:.3f} |"
        for m in ("random", "trak", "dtrak"))
    return gallery, table


def lambda_box(dataset, method):
    """The λ box shows the λ the LDS benchmark chose for this method (editable), or is disabled."""
    m = get_method(method)
    if not m.uses_lambda:
        return gr.update(value=None, interactive=False, label="λ (not used by this method)")
    return gr.update(value=tuned_lambda(AssetPaths(dataset), m.name), interactive=True,
                     label="λ (tuned by LDS; edit to override)")


def benchmark_gallery(dataset):
    """Thumbnails of the benchmark queries (validation images, then generated ones)."""
    bench = _benchmark(dataset)
    if bench is None:
        return []
    sc = max(1, scale_for(dataset) // 2)
    return [(_png(torch.from_numpy(x.astype(np.float32)), sc), f"#{i} · {'validation' if s == 0 else 'generated'}")
            for i, (x, s) in enumerate(zip(bench["x"], bench["split"]))]


def pick_benchmark(evt: gr.SelectData):
    """Clicking a benchmark thumbnail makes it the query."""
    return "benchmark", evt.index


def training_image(dataset, evt: gr.SelectData):
    """Clicking a gallery thumbnail shows the training image large with its metadata."""
    caption = evt.value.get("caption", "") if isinstance(evt.value, dict) else ""
    idx = int(caption.split("train ")[1].split(" ")[0]) if "train " in caption else 0
    eng = engine(dataset)
    return _png(eng.data.train_x[idx], 24 if eng.data.resolution <= 8 else 12), (
        f"training index {idx} · dataset index {int(eng.data.train_idx[idx])} · "
        f"label {eng.data.classes[int(eng.data.train_labels[idx])]}")


LEARN = """
### How to read this explorer
**Data attribution** asks: which training images made the model produce this output? Each method gives every
training image *i* a score for a query *q*; large positive = **proponent** (it made the query more likely),
negative = **opponent**.

**Features.** For a diffusion model the "output" is a function *f* of the prediction ε_θ(x_t, t) at noise level *t*.
We take its gradient with respect to the weights θ, average over S timesteps and project it to k numbers:
φ(x) = Pᵀ (1/S) Σ_s ∇_θ f(x, t_s, ε_s).

**Output functions** (the paper's Table 1): """ + ", ".join(f"{o.label} = {o.formula}" for o in OUTPUT_FUNCTIONS.values()) + """.
TRAK uses L_Simple (the training loss); **D-TRAK** uses L_Square, which ignores the noise target — and, surprisingly,
attributes better.

**Kernel score** (TRAK, D-TRAK): score(q, i) = φ(q)ᵀ (ΦᵀΦ + λI)⁻¹ φ(x_i), Φ stacking all training features; λ
regularises. *Relative* / *renormalized* influence divide by ‖(ΦᵀΦ+λI)⁻¹φ(x_i)‖ or ‖φ(x_i)‖. *Gradient dot/cosine*
skip the kernel; *TracIn* / *GAS* average them over training checkpoints; *Journey-TRAK* takes the query's gradients
along its own DDIM sampling path; *ensembles* average kernel scores of models trained on random halves.

**LDS** (linear datamodeling score): train M models on random halves S_m of the data, measure each one's loss on
the query, and check whether Σ_{i∈S_m} −score(q, i) ranks the subsets the same way (Spearman ρ, averaged over
queries). 100 % = perfect ranking, 0 = no signal.

**Counterfactual**: delete a method's top 20 % proponents, retrain, regenerate from the same noise. If the
attribution is right, the image should change a lot (large pixel L2, low embedding cosine).
"""


def build(default_dataset: str | None = None) -> gr.Blocks:
    datasets = available_datasets()
    default = default_dataset or ("digits" if "digits" in datasets else datasets[0])
    with gr.Blocks(title="Diffusion Attribution Explorer") as demo:
        gr.Markdown("# Diffusion Attribution Explorer\nWhich training images does a diffusion model's output come "
                    "from? D-TRAK, TRAK and their baselines, with the evaluation that says how good each is.")
        with gr.Row():
            dataset = gr.Dropdown(datasets, value=default, label="Model")
            source = gr.Radio(["generate", "benchmark", "upload"], value="generate", label="Query")
            seed = gr.Number(0, label="Seed", precision=0)
            steps = gr.Slider(5, 100, 50, step=1, label="DDIM steps")
            bench_index = gr.Number(0, label="Benchmark query #", precision=0)
        upload = gr.File(label="Upload an image (any size or mode; converted to the model's format)", type="filepath")
        with gr.Accordion("Benchmark queries (click one to use it)", open=False):
            bench_gal = gr.Gallery(label="Benchmark queries", columns=20, height=220, allow_preview=False,
                                   elem_id="benchmark-queries")
        with gr.Row():
            method = gr.Dropdown(METHOD_CHOICES, value="dtrak", label="Method")
            strategy = gr.Dropdown(["uniform", "random", "cumulative"], value="uniform", label="Timesteps")
            S = gr.Dropdown([1, 10, 100, 1000], value=10, label="S (timesteps)")
            lam = gr.Number(tuned_lambda(AssetPaths(default), "dtrak"), label="λ (tuned by LDS; edit to override)")
            k = gr.Slider(4, 32, 8, step=1, label="top-k")
        with gr.Tabs():
            with gr.Tab("Attribute"):
                go_btn = gr.Button("Attribute", variant="primary")
                with gr.Row():
                    query_img = gr.Image(label="Query (as the model sees it)", type="filepath", height=200)
                    info = gr.Markdown()
                    big = gr.Image(label="Selected training image", type="filepath", height=200)
                    big_info = gr.Markdown()
                pro = gr.Gallery(label="Top proponents", columns=8, height=240, elem_id="proponents")
                opp = gr.Gallery(label="Top opponents", columns=8, height=240, elem_id="opponents")
                with gr.Row():
                    hist = gr.Plot(label="Score histogram")
                    mix = gr.Plot(label="Class mix")
            with gr.Tab("Compare"):
                method_b = gr.Dropdown(METHOD_CHOICES, value="trak", label="Compare with")
                cmp_btn = gr.Button("Compare")
                cmp_text = gr.Markdown()
                with gr.Row():
                    gal_a = gr.Gallery(label="Method (above)", columns=4, height=240)
                    gal_b = gr.Gallery(label="Compared method", columns=4, height=240)
            with gr.Tab("Timesteps"):
                t = gr.Slider(0, 999, 500, step=1, label="t", elem_id="t-slider")
                with gr.Row():
                    xt_img = gr.Image(label="x_t", type="filepath", height=180)
                    x0_img = gr.Image(label="model's x̂₀", type="filepath", height=180)
                t_gal = gr.Gallery(label="Top proponents at this single timestep", columns=8, height=220)
            with gr.Tab("Evaluation"):
                ev_btn = gr.Button("Show evaluation")
                with gr.Row():
                    lds_val = gr.Plot(label="LDS, validation", elem_id="lds-val")
                    lds_gen = gr.Plot(label="LDS, generated")
                scatter = gr.Plot(label="Predicted vs actual for the benchmark query")
                cf_table = gr.Markdown(elem_id="counterfactual")
                cf_gal = gr.Gallery(label="Counterfactual: original and regenerated without the top-k proponents",
                                    columns=4, height=300)
            with gr.Tab("Learn"):
                gr.Markdown(LEARN)

        q_inputs = [dataset, source, seed, steps, bench_index, upload]
        go_btn.click(attribute, q_inputs + [method, strategy, S, lam, k], [query_img, info, pro, opp, hist, mix],
                     api_name="attribute", concurrency_limit=1)
        cmp_btn.click(compare, q_inputs + [method, method_b, strategy, S, k], [gal_a, gal_b, cmp_text],
                      api_name="compare", concurrency_limit=1)
        t.release(timestep_view, q_inputs + [method, t, k], [xt_img, x0_img, t_gal], api_name="timestep",
                  concurrency_limit=1)
        ev_btn.click(evaluation, [dataset, method, S, bench_index], [lds_val, lds_gen, scatter, cf_gal, cf_table],
                     api_name="evaluation")
        pro.select(training_image, dataset, [big, big_info], api_name=False)
        bench_gal.select(pick_benchmark, None, [source, bench_index], api_name=False)
        dataset.change(benchmark_gallery, dataset, bench_gal, api_name="benchmark_queries")
        method.change(lambda_box, [dataset, method], lam, api_name="default_lambda")
        demo.load(benchmark_gallery, dataset, bench_gal, api_name=False)
        for trigger in (demo.load, dataset.change):
            trigger(lambda_box, [dataset, method], lam, api_name=False)
        opp.select(training_image, dataset, [big, big_info], api_name=False)
    demo.queue(default_concurrency_limit=1, max_size=64)
    return demo
