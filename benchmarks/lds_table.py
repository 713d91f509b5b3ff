"""Prints the README's LDS table from the shipped ``lds.json`` (so the README never drifts from it).

    PYTHONPATH=. python benchmarks/lds_table.py --dataset digits"""
import argparse
import os

from explorer import ASSETS
from explorer.attribution.methods import METHODS
from explorer.evaluation.results import EvalResults


def cell(r) -> str:
    """LDS % [95 % interval]; † marks rows scored before this round with the k = 1024 CountSketch."""
    if r is None:
        return ""
    proj = " †" if "projection" not in r and r["S"] is not None else ""
    return f"{100 * r['lds']:.1f} [{100 * r['ci'][0]:.1f}, {100 * r['ci'][1]:.1f}]{proj}"


def main():
    a = argparse.ArgumentParser()
    a.add_argument("--dataset", default="digits")
    res = EvalResults(os.path.join(ASSETS, a.parse_args().dataset, "eval"))
    print("| method | validation S=10 | validation S=100 | generated S=10 | generated S=100 |\n|---|---|---|---|---|")
    for name, m in METHODS.items():
        cells = [cell(res.row(name, S if m.uses_timesteps else None, split)) for split in ("validation", "generated")
                 for S in (10, 100)]
        if not m.uses_timesteps:
            cells[1] = cells[3] = ""
        if any(cells):
            print(f"| {m.label} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
