"""The Gradio page, one module per concern, data flowing one way (session → queries → answers → layout):

- ``session``: engines per (model, projection), the models on offer, the answer each page shows now,
  closed pages, the error policy (a visitor's mistake is one message, never a stack trace);
- ``queries``: the query a visitor gave and its description;
- ``answers``: the callbacks (attribution, noise check, builds, compare, timesteps);
- ``evaluation_page``: the Evaluation tab (LDS, counterfactual, benchmark gallery) from stored results;
- ``lesson_page``: the Lesson tab, rendered fresh for every visitor;
- ``text``: the page's words, LaTeX delimiters and CSS;
- ``layout``: the components and the events that wire them.

No math here: every number comes from ``explorer.engine``, ``explorer.compare``, ``explorer.task`` or the
shipped evaluation results; figures from ``explorer.plots``; names from the methods registry. Slow work
(building missing training features) is a separate, shared event in a worker process, with an estimate
shown before it starts; answers from stored or cached features never queue behind it."""
from .answers import ATTR_OUTPUTS, attribute, build_features, build_timestep, compare, no_answer, stability, timestep_view
from .evaluation_page import evaluation
from .queries import make_query
from .layout import build_app
from .lesson_page import LESSON_PANELS, lesson_step, lesson_view
from .session import MAX_UPLOAD_MB, Problem, _png, _trained, available_datasets, engine, friendly, unavailable_note
from .text import CSS


__all__ = ["ATTR_OUTPUTS", "CSS", "LESSON_PANELS", "MAX_UPLOAD_MB", "Problem", "attribute", "available_datasets",
           "build_app", "build_features", "build_timestep", "compare", "engine", "evaluation", "friendly",
           "lesson_step", "lesson_view", "make_query", "no_answer", "stability", "timestep_view", "unavailable_note",
           "_png", "_trained"]
