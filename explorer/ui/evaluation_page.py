"""The Evaluation tab: LDS bars for both splits, one benchmark image's scatter, the counterfactual, and the
benchmark gallery — read from the stored results (``explorer.evaluation.results``), no math here."""
from __future__ import annotations

import gradio as gr
import numpy as np
import torch

from .. import plots
from ..attribution.registry import METHODS, get_method
from ..engine import Engine
from ..evaluation.results import s_key
from .session import _png, engine, tile


def evaluation(dataset, method, S, bench_index):
    """LDS bars for both splits, the scatter for one benchmark query, the counterfactual view."""
    eng = engine(dataset)
    res = eng.results
    labels = {name: m.label for name, m in METHODS.items()}
    cf = _counterfactual(eng)
    unit, fixed = _retrained(eng)
    if not res.has_lds and eng.task.info.get("imported_from"):
        empty = plots.message("No LDS for a model trained elsewhere")
        return (gr.update(value="This model was trained elsewhere and adopted as it is: LDS and the counterfactual "
                                "need retraining it many times with its own recipe, so they are not available.",
                          visible=True), empty, empty, empty, "", empty, gr.update(value=[]), "")
    if not res.has_lds:
        retrains = f"64 {unit}s retrained on random halves of the data{fixed}"
        msg = (f"No LDS results for {dataset} yet: they need {retrains}, which the maintainer runs offline. The "
               f"counterfactual below is what this model has so far." if res.has_counterfactual else
               f"No evaluation results for {dataset} yet. The maintainer computes them offline: {retrains}, for "
               f"LDS; more for the counterfactual.")
        empty = plots.message("No LDS results for this model")
        return gr.update(value=msg, visible=True), empty, empty, empty, "", *cf
    m = get_method(method)
    split, col = res.split_of(int(bench_index))
    S_key = s_key(m.needs.timesteps, S)
    row, pred = res.row(m.name, S_key, split), res.stored_pred(m.name, S_key, split)
    if row is None or pred is None:
        scatter = plots.message(f"{m.label} (S = {S}) was not evaluated on {split} images")
        explain = ""
    else:
        report = res.lds()["config"]["report_subsets"]
        actual = res.outputs()[:, int(bench_index)]
        scatter = plots.lds_scatter(pred[report, col], actual[report], row["per_query"][col],
                                    f"{m.label} · image #{int(bench_index)} ({split})")
        explain = (f"Each dot is one {unit} retrained on a random half of the training set{fixed}. Across: the loss "
                   f"on this image that {m.label} predicts for that half (Σ −score); up: the loss the retrained "
                   f"{unit} really has. A good attribution ranks the halves alike — Spearman ρ = "
                   f"{row['per_query'][col]:.2f} here (1 perfect, 0 no signal); LDS averages ρ over "
                   f"{len(res.columns(split))} {split} images.")
    return (gr.update(value="", visible=False), plots.lds_bars(res.lds()["rows"], "validation", labels),
            plots.lds_bars(res.lds()["rows"], "generated", labels), scatter, explain, *cf)


def _retrained(eng: Engine) -> tuple[str, str]:
    """What one retrain of this model is, in words: a LoRA over a fixed base (only its parameters are attributed),
    or the whole model — (what is retrained, what stays)."""
    return ("LoRA", ", on the fixed base model") if eng.task.param_names is not None else ("model", "")


def _counterfactual(eng: Engine):
    """(the counterfactual plot, the regenerated images one row per query, the explanation)."""
    loaded = eng.results.counterfactual()
    if loaded is None:
        return plots.message("No counterfactual results for this model yet"), gr.update(value=[]), ""
    res, imgs = loaded
    labels = {"random": "random images", **{n: m.label for n, m in METHODS.items()}}
    order = plots.removal_order(res["methods"], labels)
    fig = plots.counterfactual_points(res["methods"], labels)
    gal = []
    for j, s in enumerate(res["seeds"]):
        named = f"“{res['prompts'][j]}”, seed {s}" if "prompts" in res else f"seed {s}"  # text-to-image: a prompt
        gal.append(tile(torch.from_numpy(imgs["original"][j].astype(np.float32)), [named, "full training set"]))
        for m in order:
            removed = f"{res['k']} random images" if m == "random" else f"{labels[m]}'s top {res['k']}"
            gal.append(tile(torch.from_numpy(imgs[m][j].astype(np.float32)),
                            [f"without {removed}", f"L2 {res['methods'][m]['l2'][j]:.2f}"]))
    text = (f"**Counterfactual.** For each of {len(res['seeds'])} generated images, the {res['k']} training images "
            f"(of {res['n']}, 20 %) each method credits most were removed, the {_retrained(eng)[0]} retrained with the "
            f"same seed and the image regenerated from the same noise; the grey reference removes as many random "
            f"images. If an attribution is right, its removal moves the image more than the random one. Below: one "
            f"row per generated image, the original first.")
    return fig, gr.update(value=gal, columns=1 + len(order)), text


def benchmark_number(dataset) -> dict:
    """The benchmark-image box's first value (the first generated image) and its label naming this model's
    ranges of real and generated images."""
    res = engine(dataset).results
    if not res.has_queries:
        return {"value": 0, "label": "Benchmark image #"}
    n_real, n = len(res.columns("validation")), len(res.queries["split"])
    return {"value": n_real, "label": f"Benchmark image # (0–{n_real - 1} real, {n_real}–{n - 1} generated)"}


def benchmark_gallery(dataset):
    eng = engine(dataset)
    if not eng.results.has_queries:
        return []
    q = eng.results.queries
    shown = q["image"] if "image" in q else q["x"]  # a latent model's queries carry their images
    return [(_png(torch.from_numpy(x.astype(np.float32)), max(1, 48 // x.shape[-1])),
             f"#{i} {'real' if s == 0 else 'generated'}") for i, (x, s) in enumerate(zip(shown, q["split"]))]
