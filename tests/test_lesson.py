"""The guided lesson: every number it states is the one in the shipped results files (read here with
plain numpy / json, independently of explorer.lesson), and a real browser clicks through all seven steps."""
import json
import os

import numpy as np
import pytest

from explorer import ASSETS
from explorer.lesson import LESSON, TITLES

EVAL = os.path.join(ASSETS, LESSON.dataset, "eval")


def _json(*parts):
    with open(os.path.join(ASSETS, *parts)) as f:
        return json.load(f)


@pytest.fixture(scope="module")
def steps():
    from explorer import ui
    from explorer.lesson import lesson_step
    return [lesson_step(i, ui.engine) for i in range(len(TITLES))]


def _stored_scores():
    queries = np.load(os.path.join(EVAL, "queries.npz"))
    split = "generated" if queries["split"][LESSON.query] == 1 else "validation"
    col = LESSON.query - int(np.flatnonzero(queries["split"] == queries["split"][LESSON.query])[0])
    s = np.load(os.path.join(EVAL, "scores", f"{LESSON.method}_S{LESSON.S}_{split}.npy")).astype(np.float64)[col]
    return s, split, col, int(queries["gen_seed"][col])


def test_step_numbers_equal_the_shipped_results(steps):
    s, split, col, seed = _stored_scores()
    from sklearn.datasets import load_digits
    labels = load_digits().target[np.load(os.path.join(ASSETS, LESSON.dataset, "split", "train_idx.npy"))]
    one, dup, opp, walk, lds, cf, who = steps
    # 1: the stored D-TRAK top 8 of the benchmark image, and how many share the classifier's reading
    top = np.argsort(-s, kind="stable")[:LESSON.k]
    assert one.numbers["seed"] == seed and one.numbers["n_train"] == len(s)
    assert one.numbers["same_class"] == (labels[top] == int(one.numbers["label"])).sum()
    assert f"**{one.numbers['same_class']} of the {LESSON.k} are {one.numbers['label']}s**" in one.text
    assert [t[1][1] for t in one.panels[1].items] == [f"{v:.3g}" for v in s[top]]
    # 2: planted pairs, from the shapes lesson.json
    d = _json(LESSON.duplicates_dataset, "eval", "lesson.json")["duplicates"]
    for m in ("dtrak", "trak", "nda"):
        n5 = sum(r < 5 for r in d["methods"][m]["rank"])
        assert dup.numbers[f"{m}_top5"] == n5
    assert f"**{dup.numbers['dtrak_top5']} of 8** under D-TRAK and **{dup.numbers['trak_top5']} of 8** under TRAK" in dup.text
    assert dup.numbers["dtrak_rank"] == d["methods"]["dtrak"]["rank"][LESSON.pair] + 1
    assert f"D-TRAK ranks the original **#{dup.numbers['dtrak_rank']}**" in dup.text
    # 3: the histogram is the whole stored score vector; the share near zero and the extremes
    half = np.median(np.abs(s))
    assert opp.numbers["half_within"] == pytest.approx(half) and f"±{half:.2g} of zero" in opp.text
    assert f"the top is {s.max():.3g}, the lowest {s.min():.3g}." in opp.text
    bottom = np.argsort(s, kind="stable")[:LESSON.k]
    assert opp.numbers["opp_same"] == (labels[bottom] == int(one.numbers["label"])).sum()
    assert f"**{opp.numbers['opp_same']} of the {LESSON.k}**" in opp.text
    np.testing.assert_array_equal(opp.plots[0][1]["scores"], s)
    # 4: the timestep walk, from the digits lesson.json
    w = _json(LESSON.dataset, "eval", "lesson.json")["walk"]
    shared = len(set(w["steps"][0]["top"]) & set(w["steps"][-1]["top"]))
    assert [st["t"] for st in w["steps"]] == list(LESSON.walk) and w["query"] == LESSON.query
    assert walk.numbers["shared"] == shared and f"**{shared} of {LESSON.k}**" in walk.text
    for st in w["steps"]:
        assert walk.numbers[f"same_t{st['t']}"] == (labels[st["top"]] == int(one.numbers["label"])).sum()
    # 5: LDS, from lds.json
    rows = {(r["method"], r["S"], r["split"]): r for r in _json(LESSON.dataset, "eval", "lds.json")["rows"]}
    rho = rows[("dtrak", LESSON.S, split)]["per_query"][col]
    assert lds.numbers["rho"] == rho and f"**{rho:.2f}**" in lds.text
    for m in ("dtrak", "trak"):
        v = 100 * rows[(m, LESSON.S, split)]["lds"]
        assert lds.numbers[f"{m}_lds"] == pytest.approx(v) and f"**{v:.1f}**" in lds.text
    best = max(r["lds"] for r in rows.values() if r["split"] == split)
    assert f"at {100 * best:.1f}." in lds.text and lds.numbers["best_lds"] == pytest.approx(100 * best)
    # 6: the counterfactual, from counterfactual.json
    c = _json(LESSON.dataset, "eval", "counterfactual.json")
    j = c["seeds"].index(seed)
    ratio = c["methods"]["dtrak"]["l2_median"] / c["methods"]["random"]["l2_median"]
    assert cf.numbers["dtrak_l2"] == c["methods"]["dtrak"]["l2"][j] and f"**{c['methods']['dtrak']['l2'][j]:.2f}**" in cf.text
    assert f"**{ratio:.1f}×**" in cf.text and cf.numbers["ratio"] == pytest.approx(ratio)
    assert cf.numbers["removed"] == c["k"] and cf.numbers["random_l2"] == c["methods"]["random"]["l2"][j]
    # 7: who gets the credit, from the emoji LoRA's known.json: the split re-derived from the shipped drawings' makers
    ex = _json(LESSON.credit_dataset, "eval", "known.json")["lesson"]
    data = _json(LESSON.credit_dataset, "data", "emoji.json")["lora"]
    assert who.numbers["prompt"] == ex["prompt"] and f"“{ex['prompt']}”" in who.text
    twemoji = dict(zip(ex["styles"], ex["credit"]))["twemoji"]
    assert who.numbers["credit"]["Twitter (Twemoji)"] == twemoji and f"**Twitter (Twemoji) {twemoji:.0%}**" in who.text
    assert abs(sum(ex["credit"]) - 1) < 1e-9 and ex["share"] == [0.5, 0.5]
    from explorer.datasets.emoji import load_emoji
    idx = load_emoji().train_idx
    top_makers = [data[int(idx[i])]["author"] for i in ex["top"]]
    assert [t[1][1] for t in who.panels[1].items] == top_makers  # each proponent names who drew it
    assert f"{ex['designers'][0][0]} ({ex['designers'][0][1]:.0%})" in who.text


def test_the_shipped_timestep_walk_is_what_the_lesson_stage_computes():
    """Catches a stale lesson.json (another model, query or projection): the walk recomputed here."""
    from explorer.engine import TIMESTEP_PROJECTION, Engine
    from explorer.attribution.projection import Projection
    from precompute.lesson import walk
    shipped = _json(LESSON.dataset, "eval", "lesson.json")["walk"]
    p = Projection.parse(TIMESTEP_PROJECTION)
    fresh = walk(Engine(LESSON.dataset, p.kind, p.k), LESSON.k)
    assert shipped["projection"] == fresh["projection"] == TIMESTEP_PROJECTION
    for a, b in zip(shipped["steps"], fresh["steps"]):
        assert a["t"] == b["t"] and len(set(a["top"]) & set(b["top"])) >= LESSON.k - 1, (a, b)


def test_every_step_shows_images_or_plots(steps):
    for st in steps:
        assert st.panels or st.plots, st.title
        for p in st.panels:
            assert p.items and all(x.ndim == 3 for x, _ in p.items), (st.title, p.label)


def _walk_lesson(page, steps, shown):
    """One visitor's walk: step buttons and *Next*; each step shows its title, its number, every image
    of its galleries and its plots."""
    from screenshots import open_tab
    page.locator("#proponents img").first.wait_for(timeout=60_000)
    open_tab(page, "Lesson")  # opening the tab shows step 1
    for j, how in [(1, None), (2, "#lesson-next"), (3, "#lesson-next"), (6, "#lesson-step-6"),
                   (4, "#lesson-step-4"), (5, "#lesson-next")]:
        if how:
            page.locator(how).click()
        text = page.locator("#lesson-text")
        text.get_by_text(f"{j}. {TITLES[j - 1]}").wait_for(timeout=30_000)
        assert shown[j - 1] in text.inner_text(), (j, shown[j - 1], text.inner_text())
        st = steps[j - 1]
        for g, panel in enumerate(st.panels, 1):
            page.locator(f"#lesson-gallery-{g} img").nth(len(panel.items) - 1).wait_for(timeout=10_000)
        for f in range(1, len(st.plots) + 1):
            page.locator(f"#lesson-plot-{f} .js-plotly-plot").wait_for(timeout=10_000)
        if j == 5:
            assert text.locator(".katex").count() >= 2  # the formulas render as math, not as $…$ text


def test_browser_walks_through_the_lesson(server, steps):
    """Two visitors in turn, each in a browser context of their own (what a class sharing one Space is):
    the second sees every image and plot the first saw. Then the Learn tab's formulas are valid LaTeX."""
    from playwright.sync_api import sync_playwright

    from screenshots import browser, open_tab
    shown = [f"{steps[0].numbers['same_class']} of the {LESSON.k} are", f"{steps[1].numbers['dtrak_top5']} of 8",
             f"±{steps[2].numbers['half_within']:.2g}", f"{steps[3].numbers['shared']} of {LESSON.k}",
             f"{steps[4].numbers['rho']:.2f}", f"{steps[5].numbers['ratio']:.1f}×"]
    with sync_playwright() as p:
        chromium = browser(p)
        for visitor in range(2):
            context = chromium.new_context(viewport={"width": 1280, "height": 720})
            page = context.new_page()
            page.goto(server)
            _walk_lesson(page, steps, shown)
            if visitor == 0:
                context.close()
        open_tab(page, "Learn")  # one formula per method, output function, strategy and metric, all valid LaTeX
        page.locator(".katex").nth(40).wait_for(timeout=10_000)
        bad = page.locator(".katex-error, .katex-mathml mstyle[mathcolor='#cc0000']")  # parse errors, unknown commands (red)
        assert bad.count() == 0, bad.first.text_content()
        chromium.close()


def test_every_visitor_gets_the_step_values():
    """Gradio pops an update's value when it sends it (``postprocess_update_dict``): a step's galleries and
    plots must still carry their values for the second and every later visitor."""
    from explorer import ui
    for i, st in enumerate(ui.lesson_step(i, ui.engine) for i in range(len(TITLES))):
        for visitor in range(3):
            out = ui.lesson_view(i)
            gals, figs = out[2:2 + ui.LESSON_PANELS], out[2 + ui.LESSON_PANELS:4 + ui.LESSON_PANELS]
            for p, g in zip(st.panels, gals):
                assert len(g["value"]) == len(p.items), (i, visitor)
            for f in figs[:len(st.plots)]:
                assert f["value"] is not None, (i, visitor)
            for u in gals + figs:  # what Gradio does to each update it sends
                u.pop("value", None)
