"""The house keeps its shape: data flows one way. Reads the imports of ``explorer/`` and ``precompute/`` with
``ast`` (nothing is imported) and fails on any import circle and on any import against the layer order."""
import ast
import os
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# Lowest first. A module may import its own layer's modules or lower ones; a module belongs to the layer of
# the longest name below that is it or one of its packages.
LAYERS = [
    ["explorer", "explorer.paths", "explorer.files", "explorer.images", "explorer.plots", "explorer.compare",
     "explorer.memory"],
    ["explorer.datasets.core"],
    ["explorer.datasets.digits", "explorer.datasets.shapes", "explorer.datasets.icons", "explorer.datasets.emoji",
     "explorer.datasets.folder", "explorer.datasets.captioned"],
    ["explorer.datasets.registry"],
    ["explorer.datasets"],
    ["explorer.schedule", "explorer.models", "explorer.training", "explorer.autoencoder", "explorer.text2image", "explorer.stable_diffusion", "explorer.lora", "explorer.classifier", "explorer.batched_train"],
    ["explorer.attribution"],  # the math: outputs, timesteps, gradients, projectors, kernel, features
    ["explorer.attribution.method"],  # the interface
    ["explorer.attribution.methods"],  # one file per family
    ["explorer.attribution.registry"],
    ["explorer.evaluation"],
    ["explorer.cache", "explorer.task", "explorer.t2i_task", "explorer.sd_task", "explorer.tasks", "explorer.store", "explorer.build_worker", "explorer.engine", "explorer.lesson"],
    ["explorer.ui", "explorer.__main__", "precompute"],
]


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph(roots=("explorer", "precompute")) -> dict[str, set[str]]:
    files = [p for r in roots for p in (ROOT / r).rglob("*.py")]
    names = {module_name(p): p for p in files}
    graph = {}
    for name, path in names.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        found = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = package
                for _ in range(max(node.level - 1, 0)):
                    base = base.rpartition(".")[0]
                mod = (base + "." + node.module if node.module else base) if node.level else node.module or ""
                targets = [mod] + [mod + "." + a.name for a in node.names]
            else:
                continue
            for t in targets:
                while t and t not in names:
                    t = t.rpartition(".")[0]
                if t and t != name and not name.startswith(t + "."):  # a package's own __init__ is no edge
                    found.add(t)
        graph[name] = found
    return graph


def layer_of(name: str) -> int:
    best = None
    for i, layer in enumerate(LAYERS):
        for prefix in layer:
            if (name == prefix or name.startswith(prefix + ".")) and (best is None or len(prefix) > len(best[1])):
                best = (i, prefix)
    assert best is not None, f"{name} is in no layer: add it to LAYERS in {os.path.basename(__file__)}"
    return best[0]


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v), on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_no_import_circles():
    assert circles(import_graph()) == []


def test_every_import_follows_the_layer_order():
    graph = import_graph()
    upward = [f"{a} (layer {layer_of(a)}) imports {b} (layer {layer_of(b)})"
              for a, deps in sorted(graph.items()) for b in sorted(deps) if layer_of(b) > layer_of(a)]
    assert upward == []


def test_the_guard_sees_a_circle_and_an_upward_import():
    """The checks above on a graph broken on purpose (what a scratch edit of the tree would give)."""
    graph = import_graph()
    assert "explorer.attribution.registry" in graph["explorer.engine"]  # the graph is read, not empty
    broken = {**graph, "explorer.attribution.kernel": graph["explorer.attribution.kernel"] | {"explorer.store"}}
    assert any("explorer.store" in c and "explorer.attribution.kernel" in c for c in circles(broken))
    assert layer_of("explorer.store") > layer_of("explorer.attribution.kernel")


def method_name_literals() -> list[str]:
    """Every string literal in ``explorer/``, ``precompute/`` and ``benchmarks/`` outside
    ``explorer/attribution/`` that is exactly a registered method's name: code asks the registry (or its named
    roles) instead."""
    from explorer.attribution.registry import METHODS
    found = []
    for root in ("explorer", "precompute", "benchmarks"):
        for path in sorted((ROOT / root).rglob("*.py")):
            if "attribution" in path.relative_to(ROOT).parts:
                continue
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value in METHODS:
                    found.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.value!r}")
    return found


def test_no_method_name_is_written_outside_the_attribution_package():
    assert method_name_literals() == []
