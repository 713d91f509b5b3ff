"""What each method costs on this machine (digits, exact gradients, 2 CPU cores), for the leaderboard:

- build seconds: the training side from an empty cache — features (when the method needs gradients),
  the Gram matrix, the kernel's eigendecomposition, and what the method fits on top (DAS's residuals,
  EK-FAC's curvature). Methods sharing a feature set (TRAK, relative / renormalized influence, gradient
  dot / cosine, EK-FAC) share its build: theirs is that build plus their own extra work (``own_seconds``).
- query seconds: one new query on the upload path (an uploaded image: query gradients + scoring against
  every training image), median of 3 after a warm-up; Journey-TRAK's query (generated images only)
  includes sampling the query's 50-step DDIM path.

    PYTHONPATH=. python benchmarks/method_costs.py --out benchmarks/results/method_costs.json
Resumable: rows already in ``--out`` are kept. Run nothing else meanwhile (2 cores)."""
import argparse
import json
import os
import tempfile
import time

import numpy as np
from PIL import Image

from explorer.attribution.registry import METHODS
from explorer.attribution.timesteps import TimestepStrategy
from explorer.engine import Engine


def upload(eng: Engine, j: int):
    """Validation image j as a person would upload it (a 64×64 PNG read back through the upload path)."""
    arr = ((eng.data.val_x[j, 0].numpy() + 1) * 127.5).round().astype(np.uint8)
    return eng.task.upload(Image.fromarray(arr).resize((64, 64), Image.NEAREST))


def main():
    a = argparse.ArgumentParser(allow_abbrev=False)
    a.add_argument("--dataset", default="digits")
    a.add_argument("--out", default=None)
    a.add_argument("--cache", default=None, help="feature cache to reuse (default: a new empty one)")
    a.add_argument("--redo", action="append", default=[], help="re-measure this method's rows (repeatable)")
    args = a.parse_args()
    done = json.load(open(args.out)) if args.out and os.path.exists(args.out) else {"rows": []}
    done["rows"] = [r for r in done["rows"] if r["method"] not in args.redo]
    have = {(r["method"], r["S"]) for r in done["rows"]}
    # an empty cache, so builds are measured; --cache reuses one (then only what is missing there is timed)
    eng = Engine(args.dataset, cache_dir=args.cache or tempfile.mkdtemp(prefix="costs-"))
    built = {r["key"]: r for r in done["rows"] if r["shares_build_with"] is None}  # feature set → its first row
    lds = {(r["method"], r["S"]) for r in eng.results.lds()["rows"]}
    for name, m in METHODS.items():
        for S in ((10, 100) if m.needs.timesteps else (None,)):
            if (name, S) not in lds or (name, S) in have:
                continue
            st = TimestepStrategy("uniform", S or 10)
            key = repr((m.feature_key(), st.key if m.needs.gradients else None))

            def query(j):
                q = eng.task.generated(1000 + j) if m.needs.generated_only else upload(eng, j)
                t0 = time.perf_counter()
                eng.attribute(q, m, st)
                return time.perf_counter() - t0
            first = query(0)  # builds what is missing and loads the kernel, then answers
            q = float(np.median([query(j) for j in (1, 2, 3)]))
            shared, own = built.get(key), max(first - q, 0.0)  # own: what the first call did beyond answering
            row = {"method": name, "S": S, "query_seconds": q, "key": key, "own_seconds": own,
                   "build_seconds": (shared["build_seconds"] if shared else 0.0) + own,
                   "shares_build_with": shared["method"] if shared else None}
            built.setdefault(key, row)
            done["rows"].append(row)
            print(json.dumps(row), flush=True)
            if args.out:
                with open(args.out, "w") as f:
                    json.dump(done, f, indent=1)


if __name__ == "__main__":
    main()
