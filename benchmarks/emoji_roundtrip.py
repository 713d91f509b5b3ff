"""The emoji page's round trip, prompt → image → attribution, as the server answers it: the page's own
``attribute`` callback (draw the prompt with the LoRA, DDIM 50 with guidance; attribute it with D-TRAK at
S = 10 against the 492 training drawings; render proponents, opponents, histogram and credit plot), then the
noise-stability check the page asks for next. Training features are built first (not timed).

    PYTHONPATH=. python benchmarks/emoji_roundtrip.py --out benchmarks/results/emoji_roundtrip.json

Run it alone (no training, no test suite): the numbers are this machine's, under this load only."""
import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import percentiles, report  # noqa: E402

PROMPTS = ["red apple", "hamburger", "penguin", "pizza", "dog face", "sunflower", "octopus", "frog", "banana",
           "strawberry", "lion face", "turtle"]


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--out", default=None)
    p.add_argument("--n", type=int, default=12)
    a = p.parse_args()
    import torch

    from explorer import ui
    from explorer.attribution.registry import DEFAULT_METHOD
    from explorer.attribution.timesteps import TimestepStrategy
    eng = ui.engine("emoji")
    st = TimestepStrategy("uniform", 10)
    t0 = time.perf_counter()
    eng.build(DEFAULT_METHOD, st)
    build_s = time.perf_counter() - t0
    call = ui.friendly(ui.ATTR_OUTPUTS, cleared=ui.no_answer)(ui.attribute)
    answer, check, draw = [], [], []
    for i in range(a.n):
        prompt = f"{PROMPTS[i % len(PROMPTS)]}, {('twemoji', 'openmoji')[i % 2]}"
        args = ("emoji", "prompt", i, 50, 0, None, False, DEFAULT_METHOD, "uniform", 10, eng.store.projection,
                None, 8)
        t = time.perf_counter()
        eng.task.prompt(prompt, seed=1000 + i)  # the drawing alone, another seed (no cache hit)
        draw.append(time.perf_counter() - t)
        t = time.perf_counter()
        out = call(*args, prompt)
        answer.append(time.perf_counter() - t)
        assert out[0]["visible"] is False, out[0]  # an answer, not a message
        t = time.perf_counter()
        ui.stability(*args, out[7], prompt=prompt)
        check.append(time.perf_counter() - t)
    report({"what": "emoji prompt -> image -> D-TRAK S=10 answer, server side (the page's attribute callback)",
            "projection": eng.store.projection, "threads": torch.get_num_threads(), "features_build_s": build_s,
            "draw_only_s": percentiles(draw), "answer_s": percentiles(answer), "stability_check_s": percentiles(check)},
           a.out)


if __name__ == "__main__":
    main()
