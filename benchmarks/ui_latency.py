"""The explorer as visitors meet it, on this machine, from a fresh feature cache (a first start):

1. start-up: seconds until the server answers;
2. first view: seconds from opening the page (Chromium, 1280×720) to the eighth proponent thumbnail,
   with no click — while the start-up build of D-TRAK and TRAK runs in the background;
3. the start-up build itself (exact D-TRAK + TRAK, S = 10, with their Gram matrices);
4. two browsers: A starts an uncached build (random timesteps, S = 10); meanwhile B asks for benchmark
   images: B's latency per request;
5. load: N gradio_client clients × T seconds of mixed requests (benchmark, generated, upload, compare,
   evaluation), errors counted;
6. server time per endpoint, in process (no network, no queue).

    PYTHONPATH=. python benchmarks/ui_latency.py --out benchmarks/results/ui_latency.json

Goals (issue 10): first view ≤ 20 s after the server is up; B ≤ 3 s while A builds; zero load errors.
"""
import argparse
import os
import sys
import tempfile
import threading
import time

import numpy as np
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import percentiles, report  # noqa: E402
from screenshots import browser, served  # noqa: E402
from explorer.attribution.registry import BASELINE_METHOD, DEFAULT_METHOD  # noqa: E402

SETTINGS = (DEFAULT_METHOD, "uniform", 10, "exact", None, 8)


def attribute_args(source, seed=0, bench=100, upload=None, method=DEFAULT_METHOD):
    return ("digits", source, seed, 50, bench, upload, False, method, *SETTINGS[1:])


def first_view_and_two_browsers(url: str) -> dict:
    from playwright.sync_api import sync_playwright
    out = {}
    with sync_playwright() as p:
        a = browser(p).new_page(viewport={"width": 1280, "height": 720})
        t = time.perf_counter()
        a.goto(url)
        a.locator("#proponents img").nth(7).wait_for(timeout=60_000)
        out["first_view_s"] = time.perf_counter() - t
        a.locator("#settings").get_by_role("button").first.click()
        a.get_by_label("Timesteps", exact=True).click()
        a.get_by_role("option", name="Random").click()
        a.locator("#attribute").click()
        a.locator("#build").wait_for(state="visible", timeout=60_000)
        out["estimate_shown"] = a.locator("#status").inner_text()
        a.locator("#build").click()
        b = browser(p).new_page(viewport={"width": 1280, "height": 720})
        b.goto(url)
        b.locator("#proponents img").nth(7).wait_for(timeout=60_000)
        lat = []
        for i in (7, 150, 42, 199, 3):
            before = b.locator("#query-info").inner_text()
            b.locator("#bench-index input").fill(str(i))
            t = time.perf_counter()
            b.locator("#attribute").click()
            b.wait_for_function("t => document.querySelector('#query-info').innerText !== t", arg=before,
                                timeout=60_000)
            lat.append(time.perf_counter() - t)
        out["b_latency_while_a_builds_s"] = percentiles(lat)
        out["a_build_still_running"] = a.locator("#build").is_visible() or "processing" in a.content()
        a.context.browser.close()
        b.context.browser.close()
    return out


def load(url: str, clients: int, seconds: float, upload_path: str) -> dict:
    from gradio_client import Client, handle_file
    requests = [
        ("attribute_benchmark", lambda c, i: c.predict(*attribute_args("benchmark", bench=i % 200),
                                                       api_name="/attribute")),
        ("attribute_generate", lambda c, i: c.predict(*attribute_args("generate", seed=i % 16, method=BASELINE_METHOD),
                                                      api_name="/attribute")),
        ("attribute_upload", lambda c, i: c.predict(*attribute_args("upload", upload=handle_file(upload_path)),
                                                    api_name="/attribute")),
        ("compare", lambda c, i: c.predict("digits", "benchmark", 0, 50, i % 200, None, False, DEFAULT_METHOD, BASELINE_METHOD,
                                           "uniform", 10, "exact", None, 8, api_name="/compare")),
        ("evaluation", lambda c, i: c.predict("digits", DEFAULT_METHOD, 10, i % 200, api_name="/evaluation")),
    ]
    lat = {name: [] for name, _ in requests}
    errors = []
    stop = time.perf_counter() + seconds

    def client(j):  # each client downloads into its own folder
        c = Client(url, verbose=False, download_files=tempfile.mkdtemp(prefix=f"client{j}-"))
        i = j
        while time.perf_counter() < stop:
            name, fn = requests[i % len(requests)]
            t = time.perf_counter()
            try:
                out = fn(c, i)
                if isinstance(out[0], dict) and out[0].get("visible"):  # a message instead of a result
                    raise RuntimeError(out[0].get("value"))
                lat[name].append(time.perf_counter() - t)
            except Exception as e:  # noqa: BLE001 - recorded, not raised: the benchmark counts them
                errors.append(f"{name}: {e}")
            i += 1
    threads = [threading.Thread(target=client, args=(j,)) for j in range(clients)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    all_lat = [x for v in lat.values() for x in v]
    return {"clients": clients, "seconds": seconds, "requests": len(all_lat), "errors": len(errors),
            "error_examples": errors[:3], "latency_s": percentiles(all_lat),
            "per_endpoint": {k: percentiles(v) for k, v in lat.items() if v}}


def server_times(upload_path: str, reps: int) -> dict:
    """Seconds inside the endpoint functions (no network, no queue), after one warm-up call."""
    from explorer import ui
    calls = {
        "attribute_benchmark_query": lambda i: ui.attribute(*attribute_args("benchmark", bench=i % 200)),
        "attribute_upload": lambda i: ui.attribute(*attribute_args("upload", upload=upload_path)),
        "stability_upload": lambda i: ui.stability(*attribute_args("upload", upload=upload_path),
                                                   {"dataset": "digits", "pro": list(range(8)), "pro_scores": [0] * 8}),
        "compare_benchmark_query": lambda i: ui.compare("digits", "benchmark", 0, 50, i % 200, None, False, DEFAULT_METHOD,
                                                        BASELINE_METHOD, "uniform", 10, "exact", None, 8),
        "evaluation": lambda i: ui.evaluation("digits", DEFAULT_METHOD, 10, i % 200),
    }
    out = {}
    for name, fn in calls.items():
        fn(0)
        times = []
        for i in range(reps):
            t = time.perf_counter()
            fn(i)
            times.append(time.perf_counter() - t)
        out[name] = percentiles(times)
    return out


def main():
    p = argparse.ArgumentParser(allow_abbrev=False)
    p.add_argument("--clients", type=int, default=8)
    p.add_argument("--seconds", type=float, default=30)
    p.add_argument("--reps", type=int, default=10)
    p.add_argument("--out")
    a = p.parse_args()
    tmp = tempfile.mkdtemp(prefix="ui-latency-")
    os.environ["EXPLORER_CACHE"] = os.path.join(tmp, "cache")  # a first start: nothing built yet
    upload = os.path.join(tmp, "upload.png")
    Image.fromarray((np.random.default_rng(0).random((300, 200, 3)) * 255).astype(np.uint8)).save(upload)
    t = time.perf_counter()
    with served(os.path.join(tmp, "server.log")) as (url, _):
        res = {"cpu_count": os.cpu_count(), "startup_s": time.perf_counter() - t}
        from gradio_client import Client
        c = Client(url, verbose=False)
        res.update(first_view_and_two_browsers(url))
        t = time.perf_counter()
        for m in (DEFAULT_METHOD, BASELINE_METHOD):  # joins the start-up build; returns when both sets are on disk
            c.predict("digits", m, "uniform", 10, "exact", api_name="/build")
        res["startup_build_done_after_s"] = res["startup_s"] + res["first_view_s"] + (time.perf_counter() - t)
        res["load"] = load(url, a.clients, a.seconds, upload)
    res["server_time_s"] = server_times(upload, a.reps)
    report(res, a.out)


if __name__ == "__main__":
    main()
