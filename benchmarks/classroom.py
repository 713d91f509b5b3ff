"""A class sharing one server: N ``gradio_client`` visitors open the first view and step through the
lesson while one visitor's build runs (loopback only, bounded in time).

Per step: p50 / p95 / max seconds over the visitors, errors, and whether every visitor received every
image and plot the step has (counted against the lesson's own data, in process). Also the stored-answer
bar of issue 23: benchmark answers asked by 5 visitors while the build runs (goal p95 < 2 s), timed as a
browser gets them: the reply and then its images, fetched 6 at a time.

    PYTHONPATH=. python benchmarks/classroom.py --out benchmarks/results/classroom.json

Run it alone (no training, no test suite): the numbers are this machine's, under this load only."""
import argparse
import os
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import percentiles, report  # noqa: E402
from screenshots import served  # noqa: E402
from explorer.attribution.registry import BASELINE_METHOD, DEFAULT_METHOD  # noqa: E402

BUILD = ("digits", DEFAULT_METHOD, "random", 10, "exact")  # a build nobody has cached: random timesteps
STEPS = 7


def expected_items() -> list[tuple[int, int]]:
    """Per lesson step: (images in its galleries, plots), from the lesson's data in process."""
    from explorer.ui.lesson_page import _lesson_content
    out = []
    for i in range(STEPS):
        _, _, panels, plots = _lesson_content(i)
        out.append((sum(len(items) for items, _ in panels), len(plots)))
    return out


def received(out, panels: int = 4) -> tuple[int, int]:
    """(images, plots) in a /lesson_next reply: text, look, 4 gallery updates, 2 plot updates (the step
    buttons and the session's step are not part of the API's reply)."""
    value = lambda u: u.get("value") if isinstance(u, dict) else u  # noqa: E731
    gals, figs = out[2:2 + panels], out[2 + panels:2 + panels + 2]
    return sum(len(value(g) or []) for g in gals), sum(value(f) is not None for f in figs)


def visitor(url: str, j: int, expect, lat: dict, errors: list, complete: list) -> None:
    from gradio_client import Client
    c = Client(url, verbose=False, download_files=tempfile.mkdtemp(prefix=f"visitor{j}-"))
    ok = True
    t = time.perf_counter()
    try:
        c.predict("digits", "benchmark", 0, 50, 100, None, False, DEFAULT_METHOD, "uniform", 10, "exact", None, 8,
                  api_name="/attribute")
        lat["first_view"].append(time.perf_counter() - t)
    except Exception as e:  # noqa: BLE001 - counted
        errors.append(f"first view: {e}")
        ok = False
    for i in range(STEPS):
        t = time.perf_counter()
        try:
            out = c.predict(api_name="/lesson_next")
            lat[f"lesson_{i + 1}"].append(time.perf_counter() - t)
            ok &= received(out) == expect[i]
        except Exception as e:  # noqa: BLE001
            errors.append(f"lesson step {i + 1}: {e}")
            ok = False
    complete.append(ok)


def urls(reply) -> list[str]:
    """Every file URL in a reply (``download_files=False`` leaves them as they were sent)."""
    if isinstance(reply, dict):
        return ([reply["url"]] if isinstance(reply.get("url"), str) else []) + [u for v in reply.values() for u in urls(v)]
    if isinstance(reply, (list, tuple)):
        return [u for v in reply for u in urls(v)]
    return []


def stored_answers(url: str, visitors: int, per_visitor: int) -> dict:
    """Benchmark answers asked by ``visitors`` at once, each as a browser gets it: the reply, then its
    images fetched over 6 connections at once (a browser's per-host limit). Seconds per answer."""
    import httpx
    from concurrent.futures import ThreadPoolExecutor
    reply, full = [], []

    def one(j):
        c = Client(url, verbose=False, download_files=False)
        with httpx.Client() as http, ThreadPoolExecutor(6) as pool:
            for i in range(per_visitor):
                t = time.perf_counter()
                out = c.predict("digits", "benchmark", 0, 50, (7 + 31 * (j * per_visitor + i)) % 200, None, False,
                                DEFAULT_METHOD, "uniform", 10, "exact", None, 8, api_name="/attribute")
                reply.append(time.perf_counter() - t)
                files = urls(out)
                assert len(files) >= 17, files  # the query and 16 thumbnails
                for r in pool.map(http.get, files):
                    r.raise_for_status()
                full.append(time.perf_counter() - t)
    from gradio_client import Client
    threads = [threading.Thread(target=one, args=(j,)) for j in range(visitors)]
    [th.start() for th in threads]
    [th.join() for th in threads]
    return {"reply_s": percentiles(reply), "with_images_s": percentiles(full)}


def main():
    p = argparse.ArgumentParser(allow_abbrev=False)
    p.add_argument("--visitors", type=int, default=30)
    p.add_argument("--out")
    a = p.parse_args()
    from gradio_client import Client
    tmp = tempfile.mkdtemp(prefix="classroom-")
    os.environ["EXPLORER_CACHE"] = os.path.join(tmp, "cache")  # the build below is nobody's cached set
    res = {"cpu_count": os.cpu_count(), "visitors": a.visitors, "build": BUILD}
    with served(os.path.join(tmp, "server.log")) as (url, _):
        boss = Client(url, verbose=False)
        for m in (DEFAULT_METHOD, BASELINE_METHOD):  # the start-up build first: the stored answers and lesson need none
            boss.predict("digits", m, "uniform", 10, "exact", api_name="/build")
        build_done = threading.Event()
        t_build = time.perf_counter()

        def build():
            Client(url, verbose=False).predict(*BUILD, api_name="/build")
            res["build_s"] = time.perf_counter() - t_build
            build_done.set()
        threading.Thread(target=build, daemon=True).start()
        time.sleep(3)  # the build is running in its worker
        lat = {k: [] for k in ["first_view"] + [f"lesson_{i + 1}" for i in range(STEPS)]}
        errors, complete = [], []
        expect = expected_items()
        threads = [threading.Thread(target=visitor, args=(url, j, expect, lat, errors, complete))
                   for j in range(a.visitors)]
        [th.start() for th in threads]
        [th.join() for th in threads]
        res["class"] = {k: percentiles(v) for k, v in lat.items() if v}
        res["class_errors"], res["class_error_examples"] = len(errors), errors[:3]
        res["every_visitor_got_every_image_and_plot"] = all(complete) and len(complete) == a.visitors
        res["build_running_after_class"] = not build_done.is_set()
        res["stored_answers_5_visitors_during_build"] = stored_answers(url, 5, 6)
        res["build_running_after_stored_answers"] = not build_done.is_set()
        build_done.wait(900)
    report(res, a.out)


if __name__ == "__main__":
    main()
