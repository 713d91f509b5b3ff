"""Prints the README's LDS table from the shipped ``lds.json`` with each method's costs from
``benchmarks/results/method_costs.json`` (S = 10 / S = 100), or (``--fidelity``) its fidelity table from
``benchmarks/results/fidelity.json``, so the README never drifts from the recorded numbers.

    PYTHONPATH=. python benchmarks/lds_table.py --dataset digits
    PYTHONPATH=. python benchmarks/lds_table.py --fidelity"""
import argparse
import json
import os
from collections import defaultdict

import numpy as np

from explorer import ASSETS
from explorer.attribution.registry import DEFAULT_METHOD, METHODS
from explorer.evaluation.results import EvalResults


def cell(r) -> str:
    """LDS % [95 % interval]; † marks rows scored before this round with the k = 1024 CountSketch."""
    if r is None:
        return ""
    proj = " †" if "projection" not in r and r["S"] is not None else ""
    return f"{100 * r['lds']:.1f} [{100 * r['ci'][0]:.1f}, {100 * r['ci'][1]:.1f}]{proj}"


def fidelity_table(path: str = os.path.join(os.path.dirname(__file__), "results", "fidelity.json")) -> None:
    groups = defaultdict(list)
    for r in json.load(open(path))["rows"]:
        groups[(r["method"], r["projection"], bool(r.get("noise_redrawn")))].append(r)
    print("| method | features | bytes / training set | top-10 overlap with exact | Spearman with exact | "
          "LDS validation | LDS generated |\n|---|---|---|---|---|---|---|")
    order = {"exact": 0, "countsketch": 1, "factorized": 2}
    kind = lambda proj: proj.rstrip("0123456789")  # noqa: E731
    for (method, proj, redrawn), rows in sorted(groups.items(), key=lambda g: (
            g[0][0] != DEFAULT_METHOD, g[0][2], order[kind(g[0][1])], int(g[0][1].removeprefix(kind(g[0][1])) or 0))):
        name = ("exact (noise redrawn)" if redrawn else "exact" if proj == "exact"
                else f"{'CountSketch' if kind(proj) == 'countsketch' else 'Factorized (LoGra)'} k = "
                     f"{proj.removeprefix(kind(proj))}")
        name += f" ({len(rows)} seed{'s' if len(rows) > 1 else ''})"
        size = f"{rows[0]['bytes'] / 1e6:.0f} MB" if "bytes" in rows[0] else ""

        def mean(split):
            v = 100 * np.array([r[split]["lds"] for r in rows])
            return f"{v.mean():.1f}" + (f" ± {v.std():.1f}" if len(v) > 1 else "")
        print(f"| {METHODS[method].label} | {name} | {size} | {np.mean([r['top10'] for r in rows]):.2f} | "
              f"{np.mean([r['spearman'] for r in rows]):.3f} | {mean('validation')} | {mean('generated')} |")


def main():
    a = argparse.ArgumentParser(allow_abbrev=False)
    a.add_argument("--dataset", default="digits")
    a.add_argument("--fidelity", action="store_true")
    args = a.parse_args()
    if args.fidelity:
        return fidelity_table()
    res = EvalResults(os.path.join(ASSETS, args.dataset, "eval"))
    costs_path = os.path.join(os.path.dirname(__file__), "results", "method_costs.json")
    costs = {(r["method"], r["S"]): r for r in json.load(open(costs_path))["rows"]} if os.path.exists(costs_path) else {}

    def cost(name, S_values, field):
        v = [costs[(name, S)][field] for S in S_values if (name, S) in costs]
        return " / ".join(f"{x:.2g}" if x < 10 else f"{x:.0f}" for x in v)
    print("| method | validation S=10 | validation S=100 | generated S=10 | generated S=100 | query s (upload) | "
          "build s |\n|---|---|---|---|---|---|---|")
    for name, m in METHODS.items():
        cells = [cell(res.row(name, S if m.needs.timesteps else None, split)) for split in ("validation", "generated")
                 for S in (10, 100)]
        if not m.needs.timesteps:
            cells[1] = cells[3] = ""
        S_values = (10, 100) if m.needs.timesteps else (None,)
        if any(cells):
            print(f"| {m.label} | " + " | ".join(cells) + f" | {cost(name, S_values, 'query_seconds')} | "
                  f"{cost(name, S_values, 'build_seconds')} |")


if __name__ == "__main__":
    main()
