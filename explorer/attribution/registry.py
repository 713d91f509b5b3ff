"""The methods registry: every method of every family file, by name, plus the named roles that the page,
the lesson, precompute and the command line ask for instead of writing a method's name.

To add a method: write it in a family file of ``attribution/methods/`` (or a new one) and list it in
``FAMILIES`` here — nothing else in the project names methods."""
from __future__ import annotations

from .method import RULES, Method
from .methods import das, ekfac, gradient, journey, nda, similarity

FAMILIES = [gradient.METHODS, similarity.METHODS, journey.METHODS, gradient.ENSEMBLES, [das.DAS, ekfac.EKFAC, nda.NDA]]
DEFAULT_METHOD = "dtrak"  # what the page opens on and the CLI uses
BASELINE_METHOD = "trak"  # what the default is compared with (the paper's baseline)
GRADIENT_FREE_METHOD = "nda"  # the strongest method without gradients (lesson, counterfactual)
PIXEL_METHOD, EMBEDDING_METHOD = "pixel-cos", "embedding-cos"  # the similarity baselines the lesson shows
COUNTERFACTUAL_METHODS = (BASELINE_METHOD, DEFAULT_METHOD, GRADIENT_FREE_METHOD)  # removals retrained, besides random
S100_METHODS = (DEFAULT_METHOD, BASELINE_METHOD, "relative-if", "renormalized-if", "grad-dot", "grad-cos", "kernel-avg",
                "das", "ekfac", GRADIENT_FREE_METHOD)  # LDS also at S = 100 (the others cost too much there)
METHODS: dict[str, Method] = {}


def register(method: Method) -> Method:
    """Adds a method to the registry (the UI, the API and the evaluation stage list it)."""
    if method.rule not in RULES:
        raise ValueError(f"unknown score rule {method.rule!r}; use one of {sorted(RULES)}")
    METHODS[method.name] = method
    return method


def get_method(name: str) -> Method:
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; use one of {sorted(METHODS)}")
    return METHODS[name]


for _family in FAMILIES:
    for _m in _family:
        register(_m)
