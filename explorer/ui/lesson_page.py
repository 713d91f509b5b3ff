"""The Lesson tab: seven steps from shipped results, rendered fresh for every visitor."""
from __future__ import annotations

from functools import lru_cache

import gradio as gr

from .. import plots
from ..attribution.registry import METHODS
from ..lesson import TITLES, LessonMissing, lesson_step
from .session import Problem, engine, log, tile


LESSON_PANELS = 4  # image rows a lesson step may show
LESSON_PLOTS = {"histogram": plots.score_histogram, "scatter": plots.lds_scatter, "credit": plots.credit_bars,
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
