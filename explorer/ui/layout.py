"""The page: components, their layout and the events that wire them to the callbacks."""
from __future__ import annotations

import gradio as gr

from .. import plots
from ..attribution.registry import BASELINE_METHOD, DEFAULT_METHOD, METHODS
from ..attribution.timesteps import T
from ..datasets import data_missing
from ..lesson import TITLES
from ..text2image import with_style
from .session import PROJECTIONS, Problem, STRATEGY_CHOICES, _trained, answering, available_datasets, default_projection, first_source, friendly, log, page_closed, source_choices, style_choices, unavailable_note, warm_up
from .text import HOWTO, LATEX, SHOW_STATUS, learn_text
from .lesson_page import LESSON_PANELS, lesson_view
from .answers import ATTR_OUTPUTS, attribute, build_features, build_timestep, compare, method_info, no_answer, pick_benchmark, pick_opponent, pick_proponent, stability, timestep_view
from .evaluation_page import benchmark_gallery, benchmark_number, evaluation
from .queries import check_seed, example_prompt


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
        lesson_btn = gr.Button("▶ Start the seven-step lesson", size="sm", elem_id="start-lesson")
        shown = gr.State(None)
        # the uploaded file: a hidden component (not a State) so API clients can upload through Gradio too
        upload_path = gr.File(None, type="filepath", visible=False, label="Upload (image file)")
        with gr.Row(elem_id="main-row"):
            with gr.Column(scale=1, min_width=260, elem_id="controls-col"):
                dataset = gr.Dropdown(datasets, value=default, label="Model", info=unavailable_note() or None)
                first = first_source(default)
                source = gr.Radio(source_choices(default), value=first, label="Query", elem_id="source")
                bench_index = gr.Number(**benchmark_number(default), precision=0, elem_id="bench-index",
                                        visible=first == "benchmark")
                with gr.Accordion("Browse benchmark images", open=False, visible=first == "benchmark") as bench_box:
                    bench_gal = gr.Gallery(columns=8, height=260, allow_preview=False, show_label=False, elem_classes=["tiles"],
                                           elem_id="benchmark-queries")
                prompt_box = gr.Textbox(example_prompt(default), label="Prompt", max_lines=1,
                                        visible=first == "prompt", elem_id="prompt")
                styles = style_choices(default)
                style = gr.Radio(styles, value=None, label="Style (the drawing team the prompt asks for)",
                                 visible=first == "prompt" and bool(styles), elem_id="style")
                seed = gr.Number(0, label="Seed", precision=None, visible=first in ("generate", "prompt"),
                                 elem_id="seed")
                seed_msg = gr.Markdown(visible=False, elem_id="seed-msg")
                steps = gr.Slider(5, 100, 50, step=1, label="DDIM steps", visible=first in ("generate", "prompt"))
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
                                    "artist (Oxygen or Tango): does a generated icon borrow from one style? For a "
                                    "model trained on named artists' drawings it shows the credit instead: each "
                                    "artist's share of the positive attribution beside its share of the training "
                                    "set, and the designers credited most.")
                        with gr.Row():
                            hist = gr.Plot(label="Score histogram")
                            mix = gr.Plot(label="Class mix · credit", elem_id="mix")
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
                        gr.Markdown("Seven short steps, a minute each, from shipped results (nothing to compute): "
                                    "what attribution is, how to read it, how far to trust it, and who gets the credit.")
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
        attr_in = q_in + settings + [prompt_box]  # the prompt last: API callers of unconditional models omit it
        attr_out = [status, query_img, info, pro, opp, hist, mix, shown, stab, build_btn]
        f_attr = friendly(ATTR_OUTPUTS, cleared=no_answer)(attribute)
        f_stab = friendly(2, 1)(stability)

        def run_attribute(trigger, **kw):
            answer = trigger(f_attr, attr_in, attr_out, concurrency_id="fast", concurrency_limit=2, **kw)
            answer.then(None, js=SHOW_STATUS)
            return answer.success(f_stab, q_in + settings + [shown, prompt_box], [pro, stab], concurrency_id="fast",
                                  api_name=False, show_progress="hidden")

        run_attribute(go_btn.click, api_name="attribute")
        run_attribute(demo.load, api_name=False)
        build_btn.click(friendly(2)(build_features), [dataset, method, strategy, S, projection], [status, build_btn],
                        concurrency_id="build", concurrency_limit=8, api_name="build").success(
            f_attr, attr_in, attr_out, concurrency_id="fast", api_name=False)

        def show_source(src, d):
            drawn = src in ("generate", "prompt")
            return (gr.update(visible=src == "benchmark"), gr.update(visible=src == "benchmark"),
                    gr.update(visible=drawn), gr.update(visible=drawn), gr.update(visible=src == "upload"),
                    gr.update(visible=False), gr.update(visible=src == "prompt"),
                    gr.update(visible=src == "prompt" and bool(style_choices(d))))
        source.change(show_source, [source, dataset], [bench_index, bench_box, seed, steps, invert, seed_msg,
                                                       prompt_box, style], api_name=False, queue=False)
        style.input(lambda p, s, d: with_style(p or "", s or "", [w for _, w in style_choices(d) if w]),
                    [prompt_box, style, dataset], prompt_box, api_name=False, queue=False)
        run_attribute(prompt_box.submit(lambda: "prompt", None, source, api_name=False, queue=False).then)

        def on_upload(file):
            return "upload", file, False
        run_attribute(upload_btn.upload(on_upload, upload_btn, [source, upload_path, invert], api_name=False).then)

        def on_seed(value, src):
            try:
                check_seed(value)
            except Problem as e:
                return gr.skip(), gr.update(value=f"⚠️ {e}", visible=True)
            return "prompt" if src == "prompt" else "generate", gr.update(value="", visible=False)

        def seed_gate(value):
            """Stops the chain on a bad seed: its one message is the one beside the seed box."""
            try:
                check_seed(value)
            except Problem as e:
                raise gr.Error(str(e), visible=False, print_exception=False) from None
        run_attribute(seed.submit(on_seed, [seed, source], [source, seed_msg], api_name=False).then(
            seed_gate, seed, None, api_name=False, queue=False).success)
        bench_gal.select(pick_benchmark, None, [source, bench_index], api_name=False).then(
            f_attr, attr_in, attr_out, concurrency_id="fast", api_name=False)
        invert.input(f_attr, attr_in, attr_out, concurrency_id="fast", api_name=False)
        method.change(method_info, method, [method_doc, lam, strategy, S], api_name=False, queue=False)
        demo.load(method_info, method, [method_doc, lam, strategy, S], api_name=False, queue=False)
        pro.select(pick_proponent, [dataset, shown], [big, big_info], api_name=False)
        opp.select(pick_opponent, [dataset, shown], [big, big_info], api_name=False)

        # each tab reports its own problems, so one tab's message never hides or replaces another's
        cmp_out = [cmp_status, cmp_query, cmp_text, gal_a, gal_b]
        cmp_btn.click(friendly(len(cmp_out))(compare), q_in + [method, method_b, strategy, S, projection, lam, k, prompt_box],
                      cmp_out, concurrency_id="fast", api_name="compare")

        t_out = [t_status, t_query, xt_img, x0_img, t_gal, t_text]
        f_t = friendly(len(t_out))(timestep_view)
        t_in = q_in + [method, t, k, prompt_box]
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
        # also the API of a lesson walk (each client session keeps its own step; benchmarks/classroom.py uses it)
        lesson_next.click(lambda at: lesson_view((at + 1) % len(TITLES)), lesson_at, lesson_out,
                          api_name="lesson_next", concurrency_id="fast")
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
                    build_btn: gr.update(visible=False), bench_index: gr.update(**benchmark_number(d)),
                    projection: default_projection(d),
                    source: gr.update(choices=source_choices(d), value=first_source(d)),
                    bench_gal: benchmark_gallery(d), prompt_box: example_prompt(d),
                    style: gr.update(choices=style_choices(d), value=None,
                                     visible=first_source(d) == "prompt" and bool(style_choices(d)))}
        dataset.change(reset, dataset, [*cleared, *figures, *notes, build_btn, bench_index, projection, source,
                                        bench_gal, prompt_box, style], api_name=False).then(
            f_attr, attr_in, attr_out, concurrency_id="fast", api_name=False)
        demo.load(benchmark_gallery, dataset, bench_gal, api_name="benchmark_queries")
        demo.unload(page_closed)
    demo.queue(default_concurrency_limit=2, max_size=64)
    return demo
