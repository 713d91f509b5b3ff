"""The callbacks that answer: attribution, its noise check, builds, comparison, timesteps, evaluation.
No math here: numbers come from ``explorer.engine``, ``explorer.compare`` and the stored results; figures
from ``explorer.plots``; names from the methods registry."""
from __future__ import annotations

import uuid

import gradio as gr
import numpy as np

from .. import plots
from ..attribution.projection import Projection
from ..attribution.registry import get_method
from ..attribution.timesteps import T, TimestepStrategy
from ..compare import class_mix, credit, group_shares, overlap_at_k, spearman
from ..engine import TIMESTEP_PROJECTION, Attribution, Engine, NotComputed, Refused, Request
from ..store import BUILDS, FEATURES
from .session import LEFT, Problem, _png, answering, engine, still_showing, tile
from .queries import describe_query, make_query


def gallery(eng: Engine, idx, scores, stability=None, draws: int = 0) -> list:
    """Tiles with their caption lines: rank and what the image is (its name where the dataset names its
    images, else its caption, else its class), score (and stability), and whose drawing it is where the dataset records it."""
    labels, meta, train_idx = eng.data.train_labels.numpy(), eng.data.meta, eng.data.train_idx
    out = []
    for r, (i, s) in enumerate(zip(idx, scores)):
        uid = int(train_idx[i])
        what = meta["name"][uid] if "name" in meta else meta["caption"][uid] if "caption" in meta else \
            eng.data.classes[labels[i]]
        lines = [f"#{r + 1} · {what}", f"{s:.3g}"]
        if stability is not None:
            lines[1] += f" · {int(stability[i])}/{draws}"
        if "author" in meta:  # emoji: the designer or team credited for the drawing
            lines.append(meta["author"][int(train_idx[i])])
        elif eng.data.train_styles is not None:  # icons: whose theme it is
            ids, names = eng.data.train_styles
            lines.append(names[ids[i]].capitalize())
        out.append(tile(eng.data.train_x[i], lines))
    return out


def _strategy(kind: str, S) -> TimestepStrategy:
    try:
        return TimestepStrategy.offered(kind, S)
    except ValueError as e:
        raise Problem(str(e)) from e


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
        parts.append(Projection.parse(res.projection).label)
    if res.stored:
        parts.append("read from the stored benchmark results")
    return " · ".join(parts)


def _compute(dataset, source, seed, steps, bench_index, upload, invert, method, strategy, S, projection, lam, k,
             prompt=""):
    """(engine, query, attribution) — or a Problem naming what is missing and what it would cost."""
    m = get_method(method)
    eng = engine(dataset, projection)
    lam = _lam(lam) if m.needs.lam else None
    st = _strategy(strategy, S) if m.needs.timesteps else None
    q = make_query(dataset, source, seed, steps, bench_index, upload, invert, trajectory=m.needs.generated_only,
                   prompt=prompt)
    try:
        [res] = eng.answer(Request((q,), m, st, lam, int(k), int(bench_index) if source == "benchmark" else None,
                                   build=False))
    except Refused as e:
        raise Problem(str(e)) from e
    except NotComputed as e:
        raise NotReady(eng, e, q) from e
    return eng, q, res


class NotReady(Exception):
    def __init__(self, eng: Engine, missing: NotComputed, query):
        self.engine, self.query = eng, query
        secs = missing.seconds
        when = f"about {secs / 60:.0f} min" if secs >= 90 else f"about {max(secs, 1):.0f} s"
        super().__init__(f"{missing}: {when} on this machine, once — then it is ready for every visitor. "
                         f"Click **Compute it** to start.")


ATTR_OUTPUTS = 10  # status, query image, text, proponents, opponents, histogram, class mix, shown, stability, build


def no_answer() -> dict[int, object]:
    """The result panels emptied (index into the attribute outputs): what stays must answer the controls."""
    return {1: None, 2: "", 3: gr.update(value=[], label="Top proponents"), 4: gr.update(value=[]),
            5: plots.message(""), 6: plots.message(""), 7: None, 8: "", 9: gr.update(visible=False)}


def attribute(dataset, source, seed, steps, bench_index, upload, invert, method, strategy, S, projection, lam, k,
              prompt="", request: gr.Request = None):
    """Query → status, query image, its description, the settings used, proponents, opponents,
    histogram, class mix, shown (indices and the answer's key), stability line, build button. A setting not
    computed yet shows the query and, where the results go, what it would cost and the button to start it."""
    answering(request, None)
    try:
        eng, q, res = _compute(dataset, source, seed, steps, bench_index, upload, invert, method, strategy, S,
                               projection, lam, k, prompt)
    except NotReady as e:
        out = [gr.update(value=f"⏳ {e}", visible=True)] + [None] * (ATTR_OUTPUTS - 1)
        for i, v in no_answer().items():
            out[i] = v
        out[1] = _png(e.query.shown, max(1, 128 // e.engine.data.resolution))
        out[2] = describe_query(dataset, e.query, source, bench_index)
        out[9] = gr.update(visible=True)
        return out
    m = get_method(method)
    top = res.top
    key = uuid.uuid4().hex
    answering(request, key)
    checking = m.needs.gradients and not m.needs.generated_only
    return [gr.update(value="", visible=False), _png(q.shown, max(1, 128 // eng.data.resolution)),
            describe_query(dataset, q, source, bench_index) + "\n\n" + _settings_text(eng, res),
            gr.update(value=gallery(eng, top.proponents[0], top.proponent_scores[0]), label="Top proponents"),
            gr.update(value=gallery(eng, top.opponents[0], top.opponent_scores[0]), label=m.opponents),
            plots.score_histogram(res.scores),
            mix_plot(eng, top.proponents[0], res.scores),
            {"pro": top.proponents[0].tolist(), "opp": top.opponents[0].tolist(),
             "pro_scores": top.proponent_scores[0].tolist(), "dataset": dataset, "key": key},
            "*Checking how stable this answer is under the method's own noise…*" if checking else "",
            gr.update(visible=False)]


def mix_plot(eng: Engine, top: np.ndarray, scores: np.ndarray):
    """Who made this output: for a dataset whose drawings name their makers (emoji), each artist's share of
    the positive attribution against its share of the training set, and the designers credited most;
    else the classes of the top proponents, stacked by style where the dataset records one (icons)."""
    labels, classes = eng.data.train_labels.numpy(), eng.data.classes
    if eng.data.train_styles is None:
        return plots.class_mix(class_mix(labels, top, len(classes)), classes, f"Classes of the top {len(top)} proponents")
    ids, names = eng.data.train_styles
    everyone = group_shares(ids, len(names))
    if "author" in eng.data.meta:
        artists = eng.data.meta.get("artists", {})
        authors = np.array(eng.data.meta["author"])[eng.data.train_idx]
        people = sorted(set(authors))
        by_person = credit(scores, np.array([people.index(a) for a in authors]), len(people))
        best = np.argsort(-by_person, kind="stable")[:3]
        who = "<br>".join(f"{people[b]} {100 * by_person[b]:.0f} %" for b in best if by_person[b] > 0)
        return plots.credit_bars([artists.get(n, n) for n in names], credit(scores, ids, len(names)), everyone,
                                 f"Credit for this output<br><sup>most credited: {who}</sup>")
    counts = class_mix(labels, top, len(classes), ids, len(names))
    names = [n.capitalize() for n in names]
    shares = " · ".join(f"{n} {c}" for n, c in zip(names, counts.sum(1)))
    base = " · ".join(f"{n} {100 * f:.0f} %" for n, f in zip(names, everyone))
    return plots.class_mix(counts, classes, f"Top {len(top)}: {shares}<br><sup>all training images: {base}</sup>",
                           names)


def stability(dataset, source, seed, steps, bench_index, upload, invert, method, strategy, S, projection, lam, k,
              shown, prompt="", request: gr.Request = None, draws: int = 8):
    """Beside each proponent: in how many of ``draws`` fresh draws of the query's noise it stays in the top-k.
    A check that finishes after its page moved on (another query, model or setting) is dropped."""
    m = get_method(method)
    if not shown or shown.get("dataset") != dataset or not m.needs.gradients or m.needs.generated_only:
        return gr.skip(), ""
    eng = engine(dataset, projection)
    st = _strategy(strategy, S)
    if not eng.ready(m, st):
        return gr.skip(), "The noise check runs once this method's training features are loaded."
    if BUILDS.running():  # a visitor's build holds the CPU: the check would make every answer wait
        return gr.skip(), ("*The noise check is paused while a computation runs on the server; click Attribute "
                           "again later to see how stable this answer is.*")
    q = make_query(dataset, source, seed, steps, bench_index, upload, invert, prompt=prompt)
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
            lam, k, prompt=""):
    """Two methods on the same query: galleries, overlap@k and Spearman of the score vectors."""
    runs = []
    for method in (method_a, method_b):
        try:
            runs.append(_compute(dataset, source, seed, steps, bench_index, upload, invert, method, strategy, S,
                                 projection, lam if get_method(method).needs.lam else None, k, prompt))
        except NotReady as e:
            raise Problem(str(e).replace("Click **Compute it** to start.", "Compute it on the Attribute tab first."))
    (eng, q, a), (_, _, b) = runs
    text = (f"**{get_method(method_a).label}** vs **{get_method(method_b).label}**: "
            f"{overlap_at_k(a.scores, b.scores, int(k)):.0%} of the top {int(k)} are shared; Spearman ρ of the two "
            f"score vectors over all {len(a.scores)} training images = {spearman(a.scores, b.scores):.2f} "
            f"(1: same ranking, 0: unrelated).")
    return (gr.update(value="", visible=False), _png(q.shown, max(1, 128 // eng.data.resolution)), text,
            gr.update(value=gallery(eng, a.top.proponents[0], a.top.proponent_scores[0]),
                      label=f"{get_method(method_a).label} · {_settings_text(eng, a).split(' · ', 1)[-1]}"),
            gr.update(value=gallery(eng, b.top.proponents[0], b.top.proponent_scores[0]),
                      label=f"{get_method(method_b).label} · {_settings_text(eng, b).split(' · ', 1)[-1]}"))


def timestep_view(dataset, source, seed, steps, bench_index, upload, invert, method, t, k, prompt=""):
    """x_t, the model's x̂₀ and the top proponents when attributing at the single timestep t."""
    m = get_method(method)
    if not m.needs.gradients or m.needs.generated_only:
        raise Problem("Pick a gradient method such as D-TRAK or TRAK to walk the timesteps.")
    if t is None or not 0 <= int(t) < T:
        raise Problem(f"t must be between 0 and {T - 1}.")
    t = int(t)
    eng = engine(dataset, TIMESTEP_PROJECTION)
    q = make_query(dataset, source, seed, steps, bench_index, upload, invert, prompt=prompt)
    xt, x0 = eng.task.noised_view(q, t, eng.store.seed)
    st = TimestepStrategy.single(t)
    if not eng.ready(m, st) and (secs := eng.estimate_seconds(m, st)) > 15:
        raise Problem(f"Attributing at t = {t} needs {m.label}'s features at that timestep (about "
                      f"{secs:.0f} s); click **Show this timestep** to compute them.")
    res = eng.attribute(q, m, st, None, int(k))  # a single timestep takes seconds: built (shared) at once
    sc = max(1, 128 // eng.data.resolution)
    return (gr.update(value="", visible=False), _png(q.shown, sc), _png(xt, sc), _png(x0, sc),
            gr.update(value=gallery(eng, res.top.proponents[0], res.top.proponent_scores[0]),
                      label=f"Top {m.label} proponents at t = {t} alone ({Projection.parse(TIMESTEP_PROJECTION).label})"),
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


def method_info(method):
    m = get_method(method)
    return (f"{m.description}\n\n$${m.formula}$$", gr.update(interactive=m.needs.lam, value=None),
            gr.update(interactive=m.needs.timesteps), gr.update(interactive=m.needs.timesteps))
