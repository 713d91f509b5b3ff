"""What the page keeps per process and per visitor: the engines (one per model and projection), the
models on offer, the answer each page shows now (so a late reply for another is dropped), closed pages,
and the error policy: a visitor's mistake becomes one message, never a stack trace."""
from __future__ import annotations

import logging
import os
import threading
from collections import OrderedDict
from functools import lru_cache, wraps
from typing import Callable

import gradio as gr
import torch

from .. import ASSETS, CACHE
from ..attribution.registry import BASELINE_METHOD, DEFAULT_METHOD
from ..files import CacheError
from ..datasets import ImageError, data_missing
from ..engine import Engine
from ..images import png_file
from ..models import CheckpointError
from ..paths import AssetPaths
from ..tasks import is_trained
from ..attribution.projection import Projection
from ..store import BuildStopped


log = logging.getLogger("explorer")
MAX_UPLOAD_MB = 20
MAX_SEED = 2**32 - 1
MAX_PROMPT_CHARS = 200
THUMB = 112
STRATEGY_CHOICES = [("Uniform grid (the paper's)", "uniform"), ("Random", "random"), ("First S (t = 0…S−1)", "cumulative")]
PROJECTIONS = [(p.label[0].upper() + p.label[1:], p.name) for p in (Projection(), Projection("countsketch", 4096),
                                                                   Projection("countsketch", 1024))]
LEFT: set[str] = set()  # sessions whose page was closed (their builds stop when nobody else waits)


class Problem(Exception):
    """A message for the visitor, in their words."""


def _png(x, scale: int = 1) -> str:
    return png_file(x, scale, os.path.join(CACHE, "png"))


def tile(x: torch.Tensor, lines: list[str]) -> tuple[str, str]:
    """A gallery item: the image upscaled by an integer factor to about ``THUMB`` px (crisp pixels) and its
    caption as real text, one line each (the page's CSS shows it below the image, never over it)."""
    return _png(x, max(1, THUMB // x.shape[-1])), "\n".join(lines)


ROOT = ASSETS  # where the models on offer are (tests point it at a temporary folder)


def _trained() -> list[str]:
    return sorted(d for d in os.listdir(ROOT) if is_trained(AssetPaths(d, root=ROOT)))


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
def _engine(dataset: str, projection: str | None, root: str) -> Engine:
    if projection is None:
        return Engine(dataset, root=root, build_in_worker=BUILD_IN_WORKER)
    p = Projection.parse(projection)
    return Engine(dataset, projector=p.kind, k=p.k, root=root, build_in_worker=BUILD_IN_WORKER)


def engine(dataset: str, projection: str | None = None) -> Engine:
    """One engine per (model, projection): the default projection and its name share one instance, so
    features, kernels and builds are never held twice."""
    if dataset not in available_datasets():
        raise Problem(f"There is no model called {dataset!r}.")
    base = _engine(dataset, None, ROOT)
    if projection in (None, "default", base.store.projection):
        return base
    return _engine(dataset, projection, ROOT)


SOURCES = [("Benchmark image", "benchmark"), ("Generate", "generate"), ("Prompt", "prompt"), ("Upload", "upload")]


def style_choices(dataset: str) -> list:
    """(label, style word) pairs a text-to-image model's prompt may end with, and none; [] for other models."""
    eng = engine(dataset)
    styles = eng.task.styles if eng.task.conditional else []
    if not styles:
        return []
    artists = eng.data.meta.get("artists", {})
    return [(artists.get(s, s), s) for s in styles] + [("no style word", "")]


def source_choices(dataset: str) -> list:
    """The query sources this model has: a text-to-image model takes a prompt instead of a bare seed; no
    "Benchmark image" for a model without stored benchmark queries."""
    eng = engine(dataset)
    drop = {"generate" if eng.task.conditional else "prompt"}
    if not eng.results.has_queries:
        drop.add("benchmark")
    return [c for c in SOURCES if c[1] not in drop]


def first_source(dataset: str) -> str:
    """What the page opens on: a stored benchmark image, else a prompt (text-to-image) or a generated seed."""
    eng = engine(dataset)
    return "benchmark" if eng.results.has_queries else "prompt" if eng.task.conditional else "generate"


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


def page_closed(request: gr.Request):
    """A closed page no longer waits for anything: builds only it asked for stop."""
    LEFT.add(request.session_hash)
