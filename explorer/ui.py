"""Gradio layout and callbacks. No math here: every number comes from ``explorer.engine``,
``explorer.compare``, ``explorer.task`` or the shipped evaluation results; figures from
``explorer.plots``; names from the methods registry.

Errors a visitor can cause end in a message on the control or panel concerned; the other panels
keep what they showed. Slow work (building missing training features) is a separate, shared
event with an estimate shown before it starts; answers from stored or cached features never
queue behind it."""
from __future__ import annotations

import logging
import os
import threading
import uuid
from collections import OrderedDict
from functools import lru_cache, wraps
from typing import Callable

import gradio as gr
import numpy as np
import torch

from . import ASSETS, CACHE, plots
from .attribution.registry import BASELINE_METHOD, DEFAULT_METHOD, METHODS, get_method
from .attribution.outputs import OUTPUT_FUNCTIONS
from .attribution.timesteps import T, TimestepStrategy
from .files import CacheError
from .compare import class_mix, group_shares, overlap_at_k, spearman
from .datasets import ImageError, data_missing, open_image
from .engine import TIMESTEP_PROJECTION, Attribution, Engine
from .evaluation.results import s_key
from .images import png_file
from .lesson import TITLES, LessonMissing, lesson_step
from .models import CheckpointError
from .store import BUILDS, FEATURES, BuildStopped, parse_projection

log = logging.getLogger("explorer")
MAX_UPLOAD_MB = 20
MAX_SEED = 2**32 - 1
THUMB = 112
LESSON_PANELS = 4  # image rows a lesson step may show
STRATEGY_CHOICES = [("Uniform grid (the paper's)", "uniform"), ("Random", "random"), ("First S (t = 0…S−1)", "cumulative")]
PROJECTIONS = [("Exact (no projection)", "exact"), ("CountSketch, k = 4096", "countsketch4096"),
               ("CountSketch, k = 1024", "countsketch1024")]
LEFT: set[str] = set()  # sessions whose page was closed (their builds stop when nobody else waits)


class Problem(Exception):
    """A message for the visitor, in their words."""


def _png(x, scale: int = 1) -> str:
    return png_file(x, scale, os.path.join(CACHE, "png"))


def tile(x: torch.Tensor, lines: list[str]) -> tuple[str, str]:
    """A gallery item: the image upscaled by an integer factor to about ``THUMB`` px (crisp pixels) and its
    caption as real text, one line each (the page's CSS shows it below the image, never over it)."""
    return _png(x, max(1, THUMB // x.shape[-1])), "\n".join(lines)


def _trained() -> list[str]:
    return sorted(d for d in os.listdir(ASSETS) if os.path.exists(os.path.join(ASSETS, d, "model", "config.json")))


def available_datasets() -> list[str]:
    """Trained models whose training images this machine has (the icons are read from installed themes)."""
    return [d for d in _trained() if data_missing(d) is None]


def unavailable_note() -> str:
    """One line for the page about trained models whose images are not on this server, or ''."""
    missing = [d for d in _trained() if data_missing(d) is not None]
    return (f"The {' and '.join(missing)} model{'s are' if len(missing) > 1 else ' is'} not offered here: "
            f"{'their' if len(missing) > 1 else 'its'} training images are not installed on this server."
            if missing else "")


BUILD_IN_WORKER = os.environ.get("EXPLORER_BUILD_WORKER", "1") == "1"  # builds never share the page's process


@lru_cache(maxsize=8)
def _engine(dataset: str, projection: str | None) -> Engine:
    if projection is None:
        return Engine(dataset, build_in_worker=BUILD_IN_WORKER)
    projector, k = parse_projection(projection)
    return Engine(dataset, projector=projector, k=k, build_in_worker=BUILD_IN_WORKER)


def engine(dataset: str, projection: str | None = None) -> Engine:
    """One engine per (model, projection): the default projection and its name share one instance, so
    features, kernels and builds are never held twice."""
    if dataset not in available_datasets():
        raise Problem(f"There is no model called {dataset!r}.")
    base = _engine(dataset, None)
    if projection in (None, "default", base.store.projection):
        return base
    return _engine(dataset, projection)


SOURCES = [("Benchmark image", "benchmark"), ("Generate", "generate"), ("Upload", "upload")]


def source_choices(dataset: str) -> list:
    """The query sources this model has: no "Benchmark image" for a model without stored benchmark queries."""
    return [c for c in SOURCES if c[1] != "benchmark" or engine(dataset).results.has_queries]


def first_source(dataset: str) -> str:
    """What the page opens on: a stored benchmark image, or (models without an evaluation) a generated one."""
    return "benchmark" if engine(dataset).results.has_queries else "generate"


def default_projection(dataset: str) -> str:
    return engine(dataset).store.projection


def warm_up(dataset: str) -> threading.Thread:
    """Loads (or builds, once, in the background) what an uploaded image needs at once: D-TRAK and
    TRAK at S = 10 with the default projection, and their kernels."""
    def run():
        eng = engine(dataset)
        for name in (DEFAULT_METHOD, BASELINE_METHOD):
            try:
                eng.attribute(eng.benchmark_query(0) if eng.results.has_queries else eng.task.val_query(0), name)
            except (CacheError, BuildStopped, ValueError) as e:
                log.warning("warm-up of %s %s: %s", dataset, name, e)
    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


def friendly(n_outputs: int, status_index: int = 0, cleared: Callable[[], dict[int, object]] | None = None):
    """Turns a visitor's error into a message in the status output; the other outputs keep their content,
    except those ``cleared()`` names (index → value): results that no longer answer what the controls say."""
    def wrap(fn):
        @wraps(fn)
        def inner(*args, **kwargs):
            try:
                return fn(*args, **kwargs)
            except (Problem, ImageError) as e:
                msg = str(e)
            except CheckpointError:
                msg = "This model's files are missing or damaged; the maintainer has to retrain it."
            except CacheError:
                msg = "The stored training features for this choice are not available."
            except BuildStopped:
                msg = "The computation was stopped because its page was closed; it resumes where it stopped next time."
            except Exception:  # noqa: BLE001 - the visitor gets one sentence, the log gets the trace
                log.exception("unexpected error in %s", fn.__name__)
                msg = "Something went wrong on the server (it has been logged). Try another choice."
            out = [gr.skip()] * n_outputs
            for i, v in (cleared() if cleared else {}).items():
                out[i] = v
            out[status_index] = gr.update(value=f"⚠️ {msg}", visible=True)
            return out
        return inner
    return wrap


# ---- queries ----
def make_query(dataset: str, source: str, seed, steps, bench_index, upload, invert: bool = False,
               trajectory: bool = False):
    """The query the visitor gave last: a benchmark image, a generated seed, or an upload."""
    eng = engine(dataset)
    if source == "benchmark":
        if not eng.results.has_queries:
            raise Problem("This model has no benchmark images; generate an image or upload one.")
        n = len(eng.results.queries["x"])
        if bench_index is None or not 0 <= int(bench_index) < n:
            raise Problem(f"Pick a benchmark image between 0 and {n - 1}.")
        return eng.benchmark_query(int(bench_index), trajectory)
    if source == "generate":
        check_seed(seed)
        if steps is None or not 5 <= int(steps) <= 100:
            raise Problem("DDIM steps must be between 5 and 100.")
        return _generated(dataset, int(seed), int(steps))
    if upload is None:
        raise Problem("No image uploaded yet: use “Upload your own image”.")
    if os.path.getsize(upload) == 0:
        raise Problem("The uploaded file is empty: choose a PNG or JPEG image.")
    if os.path.getsize(upload) > MAX_UPLOAD_MB * 2**20:
        raise Problem(f"The upload is larger than {MAX_UPLOAD_MB} MB: downscale it first.")
    try:
        q = eng.task.upload(open_image(upload))
    except ImageError as e:
        raise Problem(str(e).split(" (")[0] + ". Upload a PNG or JPEG image.") from e
    if invert:
        q.x = -q.x
    return q


def check_seed(seed) -> None:
    if seed is None or not float(seed).is_integer() or not 0 <= float(seed) <= MAX_SEED:
        raise Problem(f"The seed must be a whole number from 0 to {MAX_SEED:,}.")


@lru_cache(maxsize=64)
def _generated(dataset: str, seed: int, steps: int):
    return engine(dataset).task.generated(seed, steps)


def describe_query(dataset: str, q, source: str, bench_index) -> str:
    """One or two sentences: what the query is and what the classifier thinks it shows."""
    eng = engine(dataset)
    fam = eng.task.familiarity(q.x)
    guess = ("no classifier (this model's images have no class labels)" if fam["label"] is None else
             f"the classifier reads it as **{fam['label']}** ({fam['confidence']:.0%} confident)")
    if source == "benchmark":
        split, col = eng.results.split_of(int(bench_index))
        what = (f"Benchmark image #{int(bench_index)}: validation image {col} (label {q.label}), never trained on"
                if split == "validation" else f"Benchmark image #{int(bench_index)}: generated image {col} (seed {col})")
    elif source == "generate":
        what = f"Generated by the model from seed {q.uid - 10_000_000} (DDIM, deterministic)"
    else:
        what = "Your upload, converted to the model's format"
    text = f"{what}; {guess}."
    if source == "upload":
        if fam["inverted"]:
            text += (" ⚠️ Its colours look **inverted** compared with the training images (light background) — "
                     "tick *Invert colours* to use it the way the model saw its training data.")
        elif fam["unusual"]:
            text += (f" ⚠️ It is **unlike the training data** (its distance to the nearest training image, "
                     f"{fam['distance']:.1f}, is beyond what 99 % of real held-out images show, {fam['p99']:.1f}): "
                     f"attributions of such an image mean little, since no training image explains it.")
    return text


# ---- galleries ----
def gallery(eng: Engine, idx, scores, stability=None, draws: int = 0) -> list:
    labels = eng.data.train_labels.numpy()
    out = []
    for r, (i, s) in enumerate(zip(idx, scores)):
        lines = [f"#{r + 1} · {eng.data.classes[labels[i]]}", f"{s:.3g}"]
        if stability is not None:
            lines[1] += f" · {int(stability[i])}/{draws}"
        if eng.data.train_styles is not None:  # icons: whose drawing it is
            ids, names = eng.data.train_styles
            lines.append(names[ids[i]].capitalize())
        out.append(tile(eng.data.train_x[i], lines))
    return out


def _strategy(kind: str, S) -> TimestepStrategy:
    if S is None or int(S) not in (1, 10, 100, 1000):
        raise Problem("S must be 1, 10, 100 or 1000.")
    return TimestepStrategy(kind, int(S))


def _lam(lam):
    if lam is None or lam == "":
        return None
    if float(lam) <= 0:
        raise Problem("λ must be positive (leave it empty to use the λ tuned by LDS).")
    return float(lam)


def _settings_text(eng: Engine, res: Attribution) -> str:
    m = get_method(res.method)
    parts = [f"**{m.label}**"]
    if res.strategy is not None:
        parts.append(res.strategy.label)
    if res.lam is not None:
        parts.append(f"λ = {res.lam:g}")
    if res.projection is not None:
        parts.append("exact gradients (no projection)" if res.projection == "exact"
                     else f"CountSketch k = {res.projection.removeprefix('countsketch')}")
    if res.stored:
        parts.append("read from the stored benchmark results")
    return " · ".join(parts)


def _compute(dataset, source, seed, steps, bench_index, upload, invert, method, strategy, S, projection, lam, k):
    """(engine, query, attribution) — or a Problem naming what is missing and what it would cost."""
    m = get_method(method)
    eng = engine(dataset, projection)
    lam = _lam(lam) if m.uses_lambda else None
    st = _strategy(strategy, S) if m.uses_timesteps else None
    if m.generated_only and source != "generate" and not (
            source == "benchmark" and eng.results.has_queries and eng.results.split_of(int(bench_index))[0] == "generated"):
        raise Problem(f"{m.label} follows a generated image's sampling path: pick a generated image.")
    if m.needs_classifier and eng.task.classifier is None:
        raise Problem(f"{m.label} needs a classifier, and this model's images have no class labels.")
    q = make_query(dataset, source, seed, steps, bench_index, upload, invert, trajectory=m.generated_only)
    res = None
    if source == "benchmark" and strategy == "uniform":
        res = eng.benchmark_attribution(int(bench_index), method, S, lam, int(k))
    if res is None:
        if not eng.ready(m, st):
            raise NotReady(eng, m, st, q)
        res = eng.attribute(q, m, st, lam, int(k), build=False)
    return eng, q, res


class NotReady(Exception):
    def __init__(self, eng: Engine, m, st: TimestepStrategy, query):
        self.engine, self.query = eng, query
        secs = eng.estimate_seconds(m, st)
        when = f"about {secs / 60:.0f} min" if secs >= 90 else f"about {max(secs, 1):.0f} s"
        super().__init__(f"{m.label} with {st.label} has not been computed for this model yet: {when} on this "
                         f"machine, once — then it is ready for every visitor. Click **Compute it** to start.")


# what each page shows now: session → the key of its latest answer (a late noise check for another is dropped)
SHOWING: OrderedDict[str, str | None] = OrderedDict()


def answering(request: gr.Request | None, key: str | None) -> None:
    session = getattr(request, "session_hash", None)
    if session is not None:
        SHOWING[session] = key
        SHOWING.move_to_end(session)
        while len(SHOWING) > 10_000:
            SHOWING.popitem(last=False)


def still_showing(request: gr.Request | None, key: str | None) -> bool:
    session = getattr(request, "session_hash", None)
    return session is None or SHOWING.get(session) == key


ATTR_OUTPUTS = 10  # status, query image, text, proponents, opponents, histogram, class mix, shown, stability, build


def no_answer() -> dict[int, object]:
    """The result panels emptied (index into the attribute outputs): what stays must answer the controls."""
    return {1: None, 2: "", 3: gr.update(value=[], label="Top proponents"), 4: gr.update(value=[]),
            5: plots.message(""), 6: plots.message(""), 7: None, 8: "", 9: gr.update(visible=False)}


def attribute(dataset, source, seed, steps, bench_index, upload, invert, method, strategy, S, projection, lam, k,
              request: gr.Request = None):
    """Query → status, query image, its description, the settings used, proponents, opponents,
    histogram, class mix, shown (indices and the answer's key), stability line, build button. A setting not
    computed yet shows the query and, where the results go, what it would cost and the button to start it."""
    answering(request, None)
    try:
        eng, q, res = _compute(dataset, source, seed, steps, bench_index, upload, invert, method, strategy, S,
                               projection, lam, k)
    except NotReady as e:
        out = [gr.update(value=f"⏳ {e}", visible=True)] + [None] * (ATTR_OUTPUTS - 1)
        for i, v in no_answer().items():
            out[i] = v
        out[1] = _png(e.query.x, max(1, 128 // e.engine.data.resolution))
        out[2] = describe_query(dataset, e.query, source, bench_index)
        out[9] = gr.update(visible=True)
        return out
    m = get_method(method)
    top = res.top
    key = uuid.uuid4().hex
    answering(request, key)
    checking = m.uses_gradients and not m.generated_only
    return [gr.update(value="", visible=False), _png(q.x, max(1, 128 // eng.data.resolution)),
            describe_query(dataset, q, source, bench_index) + "\n\n" + _settings_text(eng, res),
            gr.update(value=gallery(eng, top.proponents[0], top.proponent_scores[0]), label="Top proponents"),
            gr.update(value=gallery(eng, top.opponents[0], top.opponent_scores[0]), label=m.opponents),
            plots.score_histogram(res.scores),
            mix_plot(eng, top.proponents[0]),
            {"pro": top.proponents[0].tolist(), "opp": top.opponents[0].tolist(),
             "pro_scores": top.proponent_scores[0].tolist(), "dataset": dataset, "key": key},
            "*Checking how stable this answer is under the method's own noise…*" if checking else "",
            gr.update(visible=False)]


def mix_plot(eng: Engine, top: np.ndarray):
    """Classes of the top proponents; stacked by artist's style when the dataset records one (icons)."""
    labels, classes = eng.data.train_labels.numpy(), eng.data.classes
    if eng.data.train_styles is None:
        return plots.class_mix(class_mix(labels, top, len(classes)), classes, f"Classes of the top {len(top)} proponents")
    ids, names = eng.data.train_styles
    counts = class_mix(labels, top, len(classes), ids, len(names))
    everyone = group_shares(ids, len(names))
    names = [n.capitalize() for n in names]
    shares = " · ".join(f"{n} {c}" for n, c in zip(names, counts.sum(1)))
    base = " · ".join(f"{n} {100 * f:.0f} %" for n, f in zip(names, everyone))
    return plots.class_mix(counts, classes, f"Top {len(top)}: {shares}<br><sup>all training images: {base}</sup>",
                           names)


def stability(dataset, source, seed, steps, bench_index, upload, invert, method, strategy, S, projection, lam, k,
              shown, request: gr.Request = None, draws: int = 8):
    """Beside each proponent: in how many of ``draws`` fresh draws of the query's noise it stays in the top-k.
    A check that finishes after its page moved on (another query, model or setting) is dropped."""
    m = get_method(method)
    if not shown or shown.get("dataset") != dataset or not m.uses_gradients or m.generated_only:
        return gr.skip(), ""
    eng = engine(dataset, projection)
    st = _strategy(strategy, S)
    if not eng.ready(m, st):
        return gr.skip(), "The noise check runs once this method's training features are loaded."
    if BUILDS.running():  # a visitor's build holds the CPU: the check would make every answer wait
        return gr.skip(), ("*The noise check is paused while a computation runs on the server; click Attribute "
                           "again later to see how stable this answer is.*")
    q = make_query(dataset, source, seed, steps, bench_index, upload, invert)
    tops, counts = eng.stability(q, m, st, _lam(lam), int(k), draws)
    if not still_showing(request, shown.get("key")):
        return gr.skip(), gr.skip()
    stay = np.mean([len(set(shown["pro"]) & set(t.tolist())) / len(shown["pro"]) for t in tops])
    return (gallery(eng, shown["pro"], shown["pro_scores"], counts, draws),
            f"**Stability of this answer under the method's own noise:** with {draws} fresh draws of the query's "
            f"noise (training side fixed), {stay:.0%} of these top-{int(k)} stay in the top {int(k)}; the count under "
            f"each proponent says in how many draws it stayed.")


def build_features(dataset, method, strategy, S, projection, request: gr.Request, progress=gr.Progress()):
    """Builds (or joins the running build of) the training features a choice needs, shared by all visitors."""
    m = get_method(method)
    eng = engine(dataset, projection)
    st = _strategy(strategy, S)
    session = getattr(request, "session_hash", None)
    eng.build(m, st, lambda a, b, phase=FEATURES: progress(
        a / b, desc=f"{phase}: {a} of {b} images" if phase == FEATURES else f"{phase} ({'done' if a else 'running'})"),
              left=lambda: session in LEFT)
    return gr.update(value="", visible=False), gr.update(visible=False)


def compare(dataset, source, seed, steps, bench_index, upload, invert, method_a, method_b, strategy, S, projection,
            lam, k):
    """Two methods on the same query: galleries, overlap@k and Spearman of the score vectors."""
    runs = []
    for method in (method_a, method_b):
        try:
            runs.append(_compute(dataset, source, seed, steps, bench_index, upload, invert, method, strategy, S,
                                 projection, lam if get_method(method).uses_lambda else None, k))
        except NotReady as e:
            raise Problem(str(e).replace("Click **Compute it** to start.", "Compute it on the Attribute tab first."))
    (eng, q, a), (_, _, b) = runs
    text = (f"**{get_method(method_a).label}** vs **{get_method(method_b).label}**: "
            f"{overlap_at_k(a.scores, b.scores, int(k)):.0%} of the top {int(k)} are shared; Spearman ρ of the two "
            f"score vectors over all {len(a.scores)} training images = {spearman(a.scores, b.scores):.2f} "
            f"(1: same ranking, 0: unrelated).")
    return (gr.update(value="", visible=False), _png(q.x, max(1, 128 // eng.data.resolution)), text,
            gr.update(value=gallery(eng, a.top.proponents[0], a.top.proponent_scores[0]),
                      label=f"{get_method(method_a).label} · {_settings_text(eng, a).split(' · ', 1)[-1]}"),
            gr.update(value=gallery(eng, b.top.proponents[0], b.top.proponent_scores[0]),
                      label=f"{get_method(method_b).label} · {_settings_text(eng, b).split(' · ', 1)[-1]}"))


def timestep_view(dataset, source, seed, steps, bench_index, upload, invert, method, t, k):
    """x_t, the model's x̂₀ and the top proponents when attributing at the single timestep t."""
    m = get_method(method)
    if not m.uses_gradients or m.generated_only:
        raise Problem("Pick a gradient method such as D-TRAK or TRAK to walk the timesteps.")
    if t is None or not 0 <= int(t) < T:
        raise Problem(f"t must be between 0 and {T - 1}.")
    t = int(t)
    eng = engine(dataset, TIMESTEP_PROJECTION)
    q = make_query(dataset, source, seed, steps, bench_index, upload, invert)
    xt, x0 = eng.task.noised_view(q, t, eng.store.seed)
    st = TimestepStrategy.single(t)
    if not eng.ready(m, st) and (secs := eng.estimate_seconds(m, st)) > 15:
        raise Problem(f"Attributing at t = {t} needs {m.label}'s features at that timestep (about "
                      f"{secs:.0f} s); click **Show this timestep** to compute them.")
    res = eng.attribute(q, m, st, None, int(k))  # a single timestep takes seconds: built (shared) at once
    sc = max(1, 128 // eng.data.resolution)
    return (gr.update(value="", visible=False), _png(q.x, sc), _png(xt, sc), _png(x0, sc),
            gr.update(value=gallery(eng, res.top.proponents[0], res.top.proponent_scores[0]),
                      label=f"Top {m.label} proponents at t = {t} alone (CountSketch k = 4096)"),
            f"**t = {t}** of {T}: " + ("almost clean — fine details decide." if t < 200 else
                                       "half noise — shapes and layout decide." if t < 700 else
                                       "almost pure noise — only coarse brightness and colour remain."))


def build_timestep(dataset, method, t, request: gr.Request, progress=gr.Progress()):
    m = get_method(method)
    eng = engine(dataset, TIMESTEP_PROJECTION)
    session = getattr(request, "session_hash", None)
    eng.build(m, TimestepStrategy.single(int(t)), lambda a, b, phase=FEATURES: progress(
        a / b, desc=f"features at t = {int(t)}" if phase == FEATURES else f"{phase} ({'done' if a else 'running'})"),
              left=lambda: session in LEFT)
    return gr.update(value="", visible=False)


def evaluation(dataset, method, S, bench_index):
    """LDS bars for both splits, the scatter for one benchmark query, the counterfactual view."""
    eng = engine(dataset)
    res = eng.results
    labels = {name: m.label for name, m in METHODS.items()}
    cf = _counterfactual(eng)
    if not res.has_lds and eng.task.info.get("imported_from"):
        empty = plots.message("No LDS for a model trained elsewhere")
        return (gr.update(value="This model was trained elsewhere and adopted as it is: LDS and the counterfactual "
                                "need retraining it many times with its own recipe, so they are not available.",
                          visible=True), empty, empty, empty, "", empty, gr.update(value=[]), "")
    if not res.has_lds:
        msg = (f"No LDS results for {dataset} yet: they need 64 models retrained on random halves of the data, which "
               f"the maintainer runs offline. The counterfactual below is what this model has so far."
               if cf[0] else f"No evaluation results for {dataset} yet: the maintainer computes them offline "
                             f"(64 retrained models for LDS, 24 for the counterfactual).")
        empty = plots.message("No LDS results for this model")
        return gr.update(value=msg, visible=True), empty, empty, empty, "", *cf
    m = get_method(method)
    split, col = res.split_of(int(bench_index))
    S_key = s_key(m.uses_timesteps, S)
    row, pred = res.row(m.name, S_key, split), res.stored_pred(m.name, S_key, split)
    if row is None or pred is None:
        scatter = plots.message(f"{m.label} (S = {S}) was not evaluated on {split} images")
        explain = ""
    else:
        report = res.lds()["config"]["report_subsets"]
        actual = res.outputs()[:, int(bench_index)]
        scatter = plots.lds_scatter(pred[report, col], actual[report], row["per_query"][col],
                                    f"{m.label} · benchmark image #{int(bench_index)} ({split})")
        explain = (f"Each dot is one model retrained on a random half of the training set. Across: the loss on "
                   f"this image that {m.label} predicts for that half (Σ −score); up: the loss the retrained model "
                   f"really has. A good attribution ranks the halves alike — Spearman ρ = "
                   f"{row['per_query'][col]:.2f} here (1 perfect, 0 no signal); LDS averages ρ over 100 images.")
    return (gr.update(value="", visible=False), plots.lds_bars(res.lds()["rows"], "validation", labels),
            plots.lds_bars(res.lds()["rows"], "generated", labels), scatter, explain, *cf)


def _counterfactual(eng: Engine):
    """(the counterfactual plot, the regenerated images one row per query, the explanation)."""
    loaded = eng.results.counterfactual()
    if loaded is None:
        return plots.message("No counterfactual results for this model yet"), gr.update(value=[]), ""
    res, imgs = loaded
    labels = {"random": "random images", **{n: m.label for n, m in METHODS.items()}}
    order = [m for m in labels if m in res["methods"] and m != "random"] + ["random"] * ("random" in res["methods"])
    fig = plots.counterfactual_points(res["methods"], labels)
    gal = []
    for j, s in enumerate(res["seeds"]):
        gal.append(tile(torch.from_numpy(imgs["original"][j].astype(np.float32)), [f"seed {s}", "full training set"]))
        for m in order:
            removed = f"{res['k']} random images" if m == "random" else f"{labels[m]}'s top {res['k']}"
            gal.append(tile(torch.from_numpy(imgs[m][j].astype(np.float32)),
                            [f"without {removed}", f"L2 {res['methods'][m]['l2'][j]:.2f}"]))
    text = (f"**Counterfactual.** For each of {len(res['seeds'])} generated images, the {res['k']} training images "
            f"(of {res['n']}, 20 %) each method credits most were removed, the model retrained with the same seed "
            f"and the image regenerated from the same noise; the grey reference removes as many random images. "
            f"If an attribution is right, its removal moves the image more than the random one. Below: one row per "
            f"generated image, the original first.")
    return fig, gr.update(value=gal, columns=1 + len(order)), text


def benchmark_gallery(dataset):
    eng = engine(dataset)
    if not eng.results.has_queries:
        return []
    q = eng.results.queries
    return [(_png(torch.from_numpy(x.astype(np.float32)), max(1, 48 // x.shape[-1])),
             f"#{i} {'real' if s == 0 else 'generated'}") for i, (x, s) in enumerate(zip(q["x"], q["split"]))]


def training_image(dataset, shown, which: str, evt: gr.SelectData):
    """Clicking a thumbnail shows that training image large (the index comes with the gallery, not its text)."""
    if not shown or shown.get("dataset") != dataset:
        return gr.skip(), gr.skip()
    i = shown[which][evt.index]
    eng = engine(dataset)
    return _png(eng.data.train_x[i], max(1, 160 // eng.data.resolution)), (
        f"Training image {i} (dataset index {int(eng.data.train_idx[i])}), label "
        f"**{eng.data.classes[int(eng.data.train_labels[i])]}**")


def pick_proponent(dataset, shown, evt: gr.SelectData):
    return training_image(dataset, shown, "pro", evt)


def pick_opponent(dataset, shown, evt: gr.SelectData):
    return training_image(dataset, shown, "opp", evt)


def pick_benchmark(evt: gr.SelectData):
    """Clicking a benchmark thumbnail makes it the query."""
    return "benchmark", evt.index


def page_closed(request: gr.Request):
    """A closed page no longer waits for anything: builds only it asked for stop."""
    LEFT.add(request.session_hash)


def method_info(method):
    m = get_method(method)
    return (f"{m.description}\n\n$${m.formula}$$", gr.update(interactive=m.uses_lambda, value=None),
            gr.update(interactive=m.uses_timesteps), gr.update(interactive=m.uses_timesteps))


LESSON_PLOTS = {"histogram": plots.score_histogram, "scatter": plots.lds_scatter,
                "bars": lambda rows, split: plots.lds_bars(rows, split, {n: m.label for n, m in METHODS.items()})}


@lru_cache(maxsize=len(TITLES))
def _lesson_content(i: int):
    """Lesson step i as plain data (memoised: the step reads files and renders tiles once per process):
    heading, look line, panels as (PNG paths, label), plots as (kind, kwargs) — or None when missing.
    Never memoise Gradio updates themselves: Gradio consumes an update's value when it sends it, so a
    shared update object would reach the first visitor only."""
    try:
        step = lesson_step(i, engine)
    except (LessonMissing, Problem) as e:
        log.warning("lesson step %d: %s", i + 1, e)
        return None
    panels = tuple((tuple(tile(x, lines) for x, lines in p.items), p.label) for p in step.panels)
    return f"### {i + 1}. {step.title}\n\n{step.text}", f"*What am I looking at?* {step.look}", panels, step.plots


def lesson_view(i: int):
    """Lesson step i → its text, its "what am I looking at" line, three galleries, two plots, the step shown,
    and the step buttons (the current one highlighted); fresh update objects on every call."""
    content = _lesson_content(i)
    if content is None:
        text = (f"### {i + 1}. {TITLES[i]}\n\n⚠️ This step needs evaluation results that are not installed with "
                f"this copy of the explorer; the other steps still work.")
        return ([text, ""] + [gr.update(value=[], visible=False) for _ in range(LESSON_PANELS)]
                + [gr.update(visible=False) for _ in range(2)] + [i] + _step_buttons(i))
    heading, look, panels, step_plots = content
    gals = [gr.update(value=list(items), label=label, visible=True) for items, label in panels]
    figs = [gr.update(value=LESSON_PLOTS[kind](**kw), visible=True) for kind, kw in step_plots]
    return ([heading, look] + gals + [gr.update(value=[], visible=False) for _ in range(LESSON_PANELS - len(gals))]
            + figs + [gr.update(visible=False) for _ in range(2 - len(figs))] + [i] + _step_buttons(i))


def _step_buttons(current: int) -> list:
    return [gr.update(variant="primary" if j == current else "secondary") for j in range(len(TITLES))]


def learn_text() -> str:
    rows = "\n".join(f"| {m.label} | {m.group} | ${m.formula}$ |" for m in METHODS.values())
    outs = "\n".join(f"| {o.label} | ${o.latex}$ |" for o in OUTPUT_FUNCTIONS.values())
    return LEARN.format(methods=rows, outputs=outs)


LEARN = r"""
### What the explorer shows
**Data attribution** asks which training images made a model produce an output. A method gives every training
image $x_i$ a score $\tau(q, i)$ for a query $q$: large positive = **proponent** (it made the output more likely),
negative = **opponent**.

**Features.** For a diffusion model the "output" is a function $f$ of the predicted noise $\epsilon_\theta(x_t,t)$
at noise level $t$. Its gradient with respect to the weights, averaged over $S$ timesteps, is each image's feature
$$g(x)=\tfrac1S\sum_s\nabla_\theta f(x,t_s,\epsilon_s;\theta),\qquad \phi(x)=P^\top g(x)$$
where $P$ is a random projection to $k$ numbers, or nothing at all in the **exact** mode (the default for the small
shipped models: $k = p$, the method's own answer).

**Output functions** (the paper's Table 1):

| name | $f$ |
|---|---|
{outputs}

TRAK uses $L_\text{{Simple}}$, the training loss; **D-TRAK** uses $L_\text{{Square}}$, which ignores the noise
target — and, surprisingly, attributes better.

**Timestep strategies** (each (image, $t$) has its own seeded noise $\epsilon$):

| strategy | timesteps |
|---|---|
| Uniform grid (the paper's) | $t_s=\lfloor sT/S\rfloor,\ s=0,\dots,S-1$ |
| Random | $t_s\sim\mathcal U\{{0,\dots,T-1\}},\ S$ seeded draws |
| First $S$ | $t_s=s,\ s=0,\dots,S-1$ |
| One timestep (Timesteps tab) | $\{{t\}}$ |

**Methods**

| method | family | score |
|---|---|---|
{methods}

with $\tau(q,i)=\phi(q)^\top(\Phi^\top\Phi+\lambda I)^{{-1}}\phi(x_i)$, $\Phi$ stacking the training features.

**LDS** (linear datamodeling score): train $M$ models on random halves $S_m$ of the data, measure each one's loss
$y_m(q)$ on the query, and check whether $\hat y_m(q)=\sum_{{i\in S_m}}-\tau(q,i)$ ranks the halves the same way:
$$\mathrm{{LDS}}=\mathbb E_q\,\rho_\text{{Spearman}}\big(\hat y_\cdot(q),\,y_\cdot(q)\big).$$
100 % is a perfect ranking, 0 no signal. $\lambda$ is tuned on half of the models and LDS reported on the other half.

**Counterfactual**: delete a method's top 20 % proponents $R$, retrain ($\theta_{{\setminus R}}$), regenerate from the
same noise $z$ with DDIM, and measure how far the image moved:
$$L_2=\big\|\mathrm{{DDIM}}_\theta(z)-\mathrm{{DDIM}}_{{\theta_{{\setminus R}}}}(z)\big\|_2,\qquad
\cos=\frac{{e(x)^\top e(x')}}{{\|e(x)\|\,\|e(x')\|}}$$
with $e$ the classifier's embedding. If the attribution is right the image changes more than after removing as many
random images (large $L_2$, low cosine).
"""
LATEX = [{"left": "$$", "right": "$$", "display": True}, {"left": "$", "right": "$", "display": False}]
HOWTO = ("New to data attribution? Take the six-step lesson (the button below). **1.** Pick a query: a benchmark image, a "
         "generated seed, or your own upload. **2.** Pick a method (D-TRAK is the paper's). **3.** Read the training "
         "images that most raised (proponents) or lowered (opponents) the model's output; the *Evaluation* tab says "
         "how far each method can be trusted.")
# after an answer: a message in the result area (a problem, or "not computed yet") is scrolled into view
SHOW_STATUS = """() => { const s = document.querySelector('#status');
  if (s && s.offsetParent !== null && s.innerText.trim()) s.scrollIntoView({block: 'center'}); }"""
CSS = """
.gallery-item img, #query-img img, #big img, .thumbnail-item img { image-rendering: pixelated; }
#status, #cmp-status, #t-status, #ev-status { border-left: 4px solid #f59e0b; padding-left: 8px; }
.katex-display { overflow-x: auto; overflow-y: hidden; }
/* galleries of tiles: the caption is text below the image (rank, label, score), never over it; rows wrap */
.tiles .grid-wrap { padding-top: 32px !important; overflow-y: visible !important; height: auto !important;
  min-height: 0 !important; max-height: none !important; }
.tiles .grid-container { grid-template-rows: none !important; grid-auto-rows: auto !important; gap: 6px !important;
  grid-template-columns: repeat(var(--grid-cols), minmax(0, 1fr)) !important; }
.tiles .thumbnail-item { aspect-ratio: auto !important; height: auto !important; display: flex;
  flex-direction: column; overflow: visible !important; }
.tiles .thumbnail-item img { aspect-ratio: 1; object-fit: contain; }
.tiles .caption-label { position: static !important; max-width: 100% !important; white-space: pre-line !important;
  font-size: 14px !important; line-height: 1.3; text-align: center !important; border: none !important;
  background: none !important; opacity: 1 !important; font-variant-numeric: tabular-nums; padding: 2px 0 !important; }
#start-lesson { max-width: 14em; }
#cf-gallery .grid-container { max-width: 760px; }
.tiles .thumbnail-item { max-width: 150px; }
.tiles .caption-label { overflow-wrap: anywhere; }
/* a phone: the answer first, the controls below it; four tiles a row */
@media (max-width: 640px) {
  #results-col { order: -1; }
  .tiles .grid-container { grid-template-columns: repeat(4, minmax(0, 1fr)) !important; }
  .tiles .caption-label { font-size: 12px !important; }
}
"""


def build_app(default_dataset: str | None = None, warm: bool = True) -> gr.Blocks:
    datasets = available_datasets()
    for d in set(_trained()) - set(datasets):
        log.warning("the %s model is not listed: %s", d, data_missing(d))
    default = default_dataset or ("digits" if "digits" in datasets else datasets[0])
    if warm:
        warm_up(default)
    choices = [(m.label, m.name) for m in METHODS.values()]  # read at build time: registered methods appear
    with gr.Blocks(title="Diffusion Attribution Explorer") as demo:
        gr.Markdown("### Diffusion Attribution Explorer — which training images does a diffusion model's output come from?")
        gr.Markdown(HOWTO)
        lesson_btn = gr.Button("▶ Start the six-step lesson", size="sm", elem_id="start-lesson")
        shown = gr.State(None)
        # the uploaded file: a hidden component (not a State) so API clients can upload through Gradio too
        upload_path = gr.File(None, type="filepath", visible=False, label="Upload (image file)")
        with gr.Row(elem_id="main-row"):
            with gr.Column(scale=1, min_width=260, elem_id="controls-col"):
                dataset = gr.Dropdown(datasets, value=default, label="Model", info=unavailable_note() or None)
                first = first_source(default)
                source = gr.Radio(source_choices(default), value=first, label="Query", elem_id="source")
                bench_index = gr.Number(100, label="Benchmark image # (0–99 real, 100–199 generated)", precision=0,
                                        elem_id="bench-index", visible=first == "benchmark")
                with gr.Accordion("Browse benchmark images", open=False, visible=first == "benchmark") as bench_box:
                    bench_gal = gr.Gallery(columns=8, height=260, allow_preview=False, show_label=False, elem_classes=["tiles"],
                                           elem_id="benchmark-queries")
                seed = gr.Number(0, label="Seed", precision=None, visible=first == "generate", elem_id="seed")
                seed_msg = gr.Markdown(visible=False, elem_id="seed-msg")
                steps = gr.Slider(5, 100, 50, step=1, label="DDIM steps", visible=first == "generate")
                upload_btn = gr.UploadButton("Upload your own image", file_types=["image"], size="sm",
                                             elem_id="upload")
                invert = gr.Checkbox(False, label="Invert colours", visible=False)
                method = gr.Dropdown(choices, value=DEFAULT_METHOD, label="Method", elem_id="method")
                method_doc = gr.Markdown(latex_delimiters=LATEX)
                with gr.Accordion("Settings", open=False, elem_id="settings"):
                    strategy = gr.Dropdown(STRATEGY_CHOICES, value="uniform", label="Timesteps")
                    S = gr.Dropdown([1, 10, 100, 1000], value=10, label="S (number of timesteps)")
                    projection = gr.Dropdown(PROJECTIONS, value=default_projection(default), label="Gradient features")
                    lam = gr.Number(None, label="λ override (empty: the λ LDS tuned)", elem_id="lam")
                    k = gr.Slider(4, 32, 8, step=1, label="How many proponents")
                go_btn = gr.Button("Attribute", variant="primary", elem_id="attribute")
            with gr.Column(scale=4, elem_id="results-col"):
                with gr.Tabs() as tabs:
                    with gr.Tab("Attribute"):
                        with gr.Row(equal_height=False):
                            query_img = gr.Image(label="Query", type="filepath", height=150, width=150,
                                                 elem_id="query-img", scale=0, min_width=150, buttons=[])
                            info = gr.Markdown(elem_id="query-info")
                        # a problem or a setting not computed yet is said where the results go
                        status = gr.Markdown(visible=False, elem_id="status")
                        build_btn = gr.Button("Compute it", visible=False, elem_id="build", variant="primary")
                        pro = gr.Gallery(label="Top proponents", columns=8, height="auto", elem_classes=["tiles"],
                                         allow_preview=False, elem_id="proponents")
                        stab = gr.Markdown(elem_id="stability")
                        opp = gr.Gallery(label="Top opponents", columns=8, height="auto", elem_classes=["tiles"],
                                         allow_preview=False, elem_id="opponents")
                        with gr.Row():
                            big = gr.Image(label="Clicked training image", type="filepath", height=180, scale=0,
                                           min_width=180, elem_id="big")
                            big_info = gr.Markdown("Click a thumbnail to see it large.")
                        gr.Markdown("*What am I looking at?* The histogram counts training images by score: most "
                                    "sit near 0 (no influence); the proponents are the far right tail, the opponents "
                                    "the left. The class mix counts the labels of the top proponents: a good "
                                    "attribution of a clear “3” is mostly 3s. For icons it also splits them by "
                                    "artist (Oxygen or Tango): does a generated icon borrow from one style?")
                        with gr.Row():
                            hist = gr.Plot(label="Score histogram")
                            mix = gr.Plot(label="Class mix")
                    with gr.Tab("Compare"):
                        gr.Markdown("Two methods on the same query and settings: do they agree on what it came from?")
                        cmp_status = gr.Markdown(visible=False, elem_id="cmp-status")
                        method_b = gr.Dropdown(choices, value=BASELINE_METHOD, label="Compare with")
                        cmp_btn = gr.Button("Compare")
                        with gr.Row(equal_height=False):
                            cmp_query = gr.Image(label="Query", type="filepath", height=150, width=150, scale=0,
                                                 min_width=150)
                            cmp_text = gr.Markdown()
                        gal_a = gr.Gallery(label="Method", columns=8, height="auto", allow_preview=False, elem_classes=["tiles"])
                        gal_b = gr.Gallery(label="Compared with", columns=8, height="auto", allow_preview=False,
                                           elem_classes=["tiles"])
                        gr.Markdown("*What am I looking at?* Each row is one method's top proponents for the same "
                                    "query. *Shared* counts the training images both rows contain; Spearman ρ "
                                    "compares the two methods' scores over the whole training set (1 = same order).")
                    with gr.Tab("Timesteps"):
                        gr.Markdown("Attribution at one noise level *t*: which training images matter early "
                                    "(t near 999, coarse) vs late (t near 0, details) in denoising.")
                        with gr.Row():
                            t = gr.Slider(0, T - 1, 500, step=1, label="t (drag, or type a value and press Enter)",
                                          elem_id="t-slider")
                            t_btn = gr.Button("Show this timestep", scale=0)
                        t_status = gr.Markdown(visible=False, elem_id="t-status")
                        t_text = gr.Markdown(elem_id="t-label")
                        with gr.Row():
                            t_query = gr.Image(label="Query", type="filepath", height=150, width=150)
                            xt_img = gr.Image(label="Noised query x_t", type="filepath", height=150, width=150)
                            x0_img = gr.Image(label="Model's guess of the clean image x̂₀", type="filepath",
                                              height=150, width=150)
                        t_gal = gr.Gallery(label="Top proponents at this timestep", columns=8, height="auto", elem_classes=["tiles"],
                                           allow_preview=False)
                        gr.Markdown("*What am I looking at?* x_t is the query with the noise of step t added; x̂₀ is "
                                    "the model's guess of the clean image from it. The row lists the training images "
                                    "whose gradients at this one step best match the query's.")
                    with gr.Tab("Evaluation") as ev_tab:
                        gr.Markdown("How far to trust each method: LDS (does it predict retraining?) and the "
                                    "counterfactual (does removing its proponents change the image?).")
                        ev_btn = gr.Button("Show for the chosen method and benchmark image", size="sm")
                        ev_status = gr.Markdown(visible=False, elem_id="ev-status")
                        with gr.Row():
                            lds_gen = gr.Plot(label="LDS, generated images", elem_id="lds-gen")
                            cf_plot = gr.Plot(label="Counterfactual, generated images", elem_id="cf-plot")
                        with gr.Row():
                            lds_val = gr.Plot(label="LDS, real held-out images", elem_id="lds-val")
                            scatter = gr.Plot(label="Predicted vs measured, for the benchmark image", elem_id="scatter")
                        scatter_text = gr.Markdown()
                        gr.Markdown("*What am I looking at?* Bars: each method's LDS in %, how well its scores "
                                    "predict the loss of models retrained on random halves of the data (whiskers: "
                                    "95 % bootstrap interval). Points: for each generated image, how far it moved "
                                    "when each method's top proponents were removed and the model retrained. "
                                    "Scatter: one dot per retrained model for the chosen benchmark image; a rising "
                                    "cloud means the scores are right about it.")
                        cf_table = gr.Markdown(elem_id="counterfactual")
                        cf_gal = gr.Gallery(label="The original and the images regenerated after each removal",
                                            columns=5, height="auto", allow_preview=False, elem_classes=["tiles"],
                                            elem_id="cf-gallery")
                    with gr.Tab("Lesson", id="lesson", elem_id="lesson-tab") as lesson_tab:
                        gr.Markdown("Six short steps, a minute each, from shipped results (nothing to compute): "
                                    "what attribution is, how to read it, and how far to trust it.")
                        with gr.Row(elem_id="lesson-steps"):
                            step_btns = [gr.Button(f"{j + 1}. {title}", size="sm", elem_id=f"lesson-step-{j + 1}",
                                                   min_width=120) for j, title in enumerate(TITLES)]
                        lesson_text = gr.Markdown(elem_id="lesson-text", latex_delimiters=LATEX)
                        lesson_look = gr.Markdown(elem_id="lesson-look")
                        lesson_gals = [gr.Gallery(columns=9, height="auto", allow_preview=False, visible=False,
                                                  elem_classes=["tiles"], elem_id=f"lesson-gallery-{j + 1}")
                                       for j in range(LESSON_PANELS)]
                        with gr.Row():
                            lesson_plots = [gr.Plot(visible=False, show_label=False, elem_id=f"lesson-plot-{j + 1}")
                                            for j in range(2)]
                        lesson_next = gr.Button("Next step →", elem_id="lesson-next")
                        lesson_at = gr.State(-1)
                    with gr.Tab("Learn"):
                        gr.Markdown(learn_text(), latex_delimiters=LATEX)

        q_in = [dataset, source, seed, steps, bench_index, upload_path, invert]
        settings = [method, strategy, S, projection, lam, k]
        attr_out = [status, query_img, info, pro, opp, hist, mix, shown, stab, build_btn]
        f_attr = friendly(ATTR_OUTPUTS, cleared=no_answer)(attribute)
        f_stab = friendly(2, 1)(stability)

        def run_attribute(trigger, **kw):
            answer = trigger(f_attr, q_in + settings, attr_out, concurrency_id="fast", concurrency_limit=2, **kw)
            answer.then(None, js=SHOW_STATUS)
            return answer.success(f_stab, q_in + settings + [shown], [pro, stab], concurrency_id="fast",
                                  api_name=False, show_progress="hidden")

        run_attribute(go_btn.click, api_name="attribute")
        run_attribute(demo.load, api_name=False)
        build_btn.click(friendly(2)(build_features), [dataset, method, strategy, S, projection], [status, build_btn],
                        concurrency_id="build", concurrency_limit=8, api_name="build").success(
            f_attr, q_in + settings, attr_out, concurrency_id="fast", api_name=False)

        def show_source(src):
            return (gr.update(visible=src == "benchmark"), gr.update(visible=src == "benchmark"),
                    gr.update(visible=src == "generate"), gr.update(visible=src == "generate"),
                    gr.update(visible=src == "upload"), gr.update(visible=False))
        source.change(show_source, source, [bench_index, bench_box, seed, steps, invert, seed_msg], api_name=False,
                      queue=False)

        def on_upload(file):
            return "upload", file, False
        run_attribute(upload_btn.upload(on_upload, upload_btn, [source, upload_path, invert], api_name=False).then)

        def on_seed(value):
            try:
                check_seed(value)
            except Problem as e:
                return gr.skip(), gr.update(value=f"⚠️ {e}", visible=True)
            return "generate", gr.update(value="", visible=False)

        def seed_gate(value):
            """Stops the chain on a bad seed: its one message is the one beside the seed box."""
            try:
                check_seed(value)
            except Problem as e:
                raise gr.Error(str(e), visible=False, print_exception=False) from None
        run_attribute(seed.submit(on_seed, seed, [source, seed_msg], api_name=False).then(
            seed_gate, seed, None, api_name=False, queue=False).success)
        bench_gal.select(pick_benchmark, None, [source, bench_index], api_name=False).then(
            f_attr, q_in + settings, attr_out, concurrency_id="fast", api_name=False)
        invert.input(f_attr, q_in + settings, attr_out, concurrency_id="fast", api_name=False)
        method.change(method_info, method, [method_doc, lam, strategy, S], api_name=False, queue=False)
        demo.load(method_info, method, [method_doc, lam, strategy, S], api_name=False, queue=False)
        pro.select(pick_proponent, [dataset, shown], [big, big_info], api_name=False)
        opp.select(pick_opponent, [dataset, shown], [big, big_info], api_name=False)

        # each tab reports its own problems, so one tab's message never hides or replaces another's
        cmp_out = [cmp_status, cmp_query, cmp_text, gal_a, gal_b]
        cmp_btn.click(friendly(len(cmp_out))(compare), q_in + [method, method_b, strategy, S, projection, lam, k],
                      cmp_out, concurrency_id="fast", api_name="compare")

        t_out = [t_status, t_query, xt_img, x0_img, t_gal, t_text]
        f_t = friendly(len(t_out))(timestep_view)
        t_in = q_in + [method, t, k]
        t.change(f_t, t_in, t_out, concurrency_id="fast", trigger_mode="always_last", api_name="timestep")
        t_btn.click(friendly(1)(build_timestep), [dataset, method, t], [t_status], concurrency_id="build",
                    api_name=False).success(f_t, t_in, t_out, concurrency_id="fast", api_name=False)
        # the first Timesteps view may build a one-timestep set (seconds): on the build lane, never ahead of answers
        demo.load(f_t, t_in, t_out, concurrency_id="build", api_name=False)

        ev_out = [ev_status, lds_val, lds_gen, scatter, scatter_text, cf_plot, cf_gal, cf_table]
        f_ev = friendly(len(ev_out))(evaluation)
        ev_btn.click(f_ev, [dataset, method, S, bench_index], ev_out, concurrency_id="fast", api_name="evaluation")
        ev_tab.select(f_ev, [dataset, method, S, bench_index], ev_out, concurrency_id="fast", api_name=False)

        lesson_out = [lesson_text, lesson_look, *lesson_gals, *lesson_plots, lesson_at, *step_btns]
        for j, b in enumerate(step_btns):
            b.click(lambda j=j: lesson_view(j), None, lesson_out, api_name=False, concurrency_id="fast")
        lesson_next.click(lambda at: lesson_view((at + 1) % len(TITLES)), lesson_at, lesson_out, api_name=False,
                          concurrency_id="fast")
        lesson_btn.click(lambda: gr.Tabs(selected="lesson"), None, tabs, api_name=False, queue=False).then(
            lambda: lesson_view(0), None, lesson_out, api_name=False, concurrency_id="fast")
        lesson_tab.select(lambda at: lesson_view(0) if at < 0 else [gr.skip()] * len(lesson_out), lesson_at,
                          lesson_out, api_name=False, concurrency_id="fast")

        # a model switch clears every result of the old model (nothing of it stays under the new name)
        cleared = {**dict.fromkeys([query_img, shown, big, t_query, xt_img, x0_img]),
                   **dict.fromkeys([info, stab, big_info, cmp_text, t_text, scatter_text, cf_table], ""),
                   **dict.fromkeys([pro, opp, gal_a, gal_b, t_gal, cf_gal], ())}
        figures, notes = [hist, mix, lds_val, lds_gen, scatter, cf_plot], [status, cmp_status, t_status, ev_status]

        def reset(d, request: gr.Request):
            answering(request, None)
            return {**{c: list(v) if isinstance(v, tuple) else v for c, v in cleared.items()},
                    **{c: plots.message("") for c in figures}, **{c: gr.update(value="", visible=False) for c in notes},
                    build_btn: gr.update(visible=False), bench_index: 100, projection: default_projection(d),
                    source: gr.update(choices=source_choices(d), value=first_source(d)),
                    bench_gal: benchmark_gallery(d)}
        dataset.change(reset, dataset, [*cleared, *figures, *notes, build_btn, bench_index, projection, source,
                                        bench_gal], api_name=False).then(
            f_attr, q_in + settings, attr_out, concurrency_id="fast", api_name=False)
        demo.load(benchmark_gallery, dataset, bench_gal, api_name="benchmark_queries")
        demo.unload(page_closed)
    demo.queue(default_concurrency_limit=2, max_size=64)
    return demo

