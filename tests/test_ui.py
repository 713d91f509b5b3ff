"""The explorer: endpoints in process, through gradio_client against a launched server, and in a
real browser (Playwright driving Debian's Chromium)."""
import os
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
from PIL import Image


class _P:
    def __call__(self, *a, **k):
        pass


def test_attribute_endpoint_in_process():
    from explorer import ui
    img, info, pro, opp, hist, mix = ui.attribute("digits", "generate", 3, 50, 0, None, "dtrak", "uniform", 10, None, 8,
                                                  progress=_P())
    assert Image.open(img).size == (96, 96) and "D-TRAK" in info and img.endswith(".png")
    assert len(pro) == 8 and len(opp) == 8
    scores = [float(c.split("score ")[1].split(" ")[0]) for _, c in pro]
    assert scores == sorted(scores, reverse=True) and pro[0][1].startswith("#1 · score")
    opp_scores = [float(c.split("score ")[1].split(" ")[0]) for _, c in opp]
    assert opp_scores == sorted(opp_scores) and opp_scores[0] < scores[-1]
    assert len(hist.data[0].x) == 1528 and sum(mix.data[0].y) == 8


def test_compare_and_evaluation_in_process():
    from explorer import ui
    a, b, text = ui.compare("digits", "benchmark", 0, 50, 3, None, "dtrak", "trak", "uniform", 10, 8, progress=_P())
    assert len(a) == len(b) == 8 and "overlap@8" in text and "Spearman" in text
    val, gen, scatter, cf_gallery, cf_table = ui.evaluation("digits", "dtrak", 10, 3)
    methods = {x for trace in val.data for x in trace.x}
    assert {"trak", "dtrak", "pixel-cos"} <= methods
    assert len(scatter.data[0].x) == 32 and "Spearman ρ" in scatter.layout.title.text
    assert len(cf_gallery) == 8 * 4 and "| dtrak |" in cf_table  # original + 3 removals per query
    assert Image.open(cf_gallery[0][0]).size == (96, 96)


def test_evaluation_without_lds_still_shows_the_counterfactual():
    from explorer import ui
    val, gen, scatter, cf_gallery, cf_table = ui.evaluation("shapes", "dtrak", 10, 0)
    assert "No LDS results for shapes" in val.layout.title.text and not val.data
    assert len(cf_gallery) == 8 * 4 and "| dtrak |" in cf_table


def test_timestep_walk_in_process():
    """At t = 0 the noised query is the query; at t = 999 it is noise; attribution changes along t."""
    from explorer import ui
    q = np.asarray(Image.open(ui._png(ui.make_query("digits", "benchmark", 0, 50, 3, None).x, 12)), np.float64)
    views = {t: ui.timestep_view("digits", "benchmark", 0, 50, 3, None, "dtrak", t, 8, progress=_P()) for t in (0, 999)}
    diff = {t: np.abs(np.asarray(Image.open(v[0]), np.float64) - q).mean() for t, v in views.items()}
    assert diff[0] < 5 and diff[999] > 40, diff
    assert all(Image.open(v[1]).size == (96, 96) and len(v[2]) == 8 for v in views.values())
    assert [c for _, c in views[0][2]] != [c for _, c in views[999][2]]
    with pytest.raises(Exception, match="gradient method"):
        ui.timestep_view("digits", "benchmark", 0, 50, 3, None, "pixel-cos", 10, 8, progress=_P())


def test_lambda_box_and_benchmark_gallery():
    from explorer import ui
    tuned = ui.lambda_box("digits", "dtrak")
    assert tuned["interactive"] and tuned["value"] == ui.engine("digits").default_lambda(ui.get_method("dtrak")) > 0
    assert ui.lambda_box("digits", "pixel-cos")["interactive"] is False
    gallery = ui.benchmark_gallery("digits")
    assert len(gallery) == 200 and gallery[0][1] == "#0 · validation" and gallery[-1][1] == "#199 · generated"
    with pytest.raises(Exception, match="positive"):
        ui.attribute("digits", "benchmark", 0, 50, 3, None, "dtrak", "uniform", 10, -1, 8, progress=_P())


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server():
    port = _free_port()
    env = {**os.environ, "GRADIO_SERVER_PORT": str(port), "HF_HUB_OFFLINE": "1", "GRADIO_ANALYTICS_ENABLED": "False"}
    log = open(os.path.join(os.environ["EXPLORER_CACHE"], f"server-{port}.log"), "w+")  # read on failure
    proc = subprocess.Popen([sys.executable, "app.py"], env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    start = time.time()
    while time.time() - start < 90:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            time.sleep(0.5)
    else:
        proc.kill()
        log.seek(0)
        raise RuntimeError(log.read()[-2000:])
    yield url
    proc.terminate()
    proc.wait(10)


def _images(tmp_path):
    paths = {}
    Image.fromarray((np.random.default_rng(0).random((40, 30, 4)) * 255).astype(np.uint8), "RGBA").save(
        p := tmp_path / "rgba.png")
    paths["rgba"] = p
    Image.fromarray(np.full((20, 20), 40000, np.uint16)).save(p := tmp_path / "deep.png")
    paths["16bit"] = p
    (p := tmp_path / "notes.txt").write_text("not an image")
    paths["text"] = p
    raw = paths["rgba"].read_bytes()
    (p := tmp_path / "trunc.png").write_bytes(raw[: len(raw) // 3])
    paths["truncated"] = p
    Image.new("1", (20000, 20000)).save(p := tmp_path / "huge.png")
    paths["huge"] = p
    (p := tmp_path / "empty.png").write_bytes(b"")
    paths["empty"] = p
    return paths


def test_gradio_client_flow_and_bad_inputs(server, tmp_path):
    from gradio_client import Client, handle_file
    c = Client(server, verbose=False)
    base = dict(dataset="digits", seed=2, steps=50, bench_index=0, strategy="uniform", S=10, k=8)
    out = c.predict(source="generate", upload=None, method="dtrak", lam=None, api_name="/attribute", **base)
    assert len(out[2]) == 8 and "D-TRAK" in out[1]
    cmp = c.predict(dataset="digits", source="generate", seed=2, steps=50, bench_index=0, upload=None,
                    method_a="dtrak", method_b="trak", strategy="uniform", S=10, k=8, api_name="/compare")
    assert "overlap@8" in cmp[2]
    xt, x0, gal = c.predict(dataset="digits", source="generate", seed=2, steps=50, bench_index=0, upload=None,
                            method="dtrak", t=300, k=8, api_name="/timestep")
    assert len(gal) == 8 and os.path.exists(xt) and os.path.exists(x0)
    assert c.predict(dataset="digits", method="dtrak", api_name="/default_lambda")["value"] > 0
    assert len(c.predict(dataset="digits", api_name="/benchmark_queries")) == 200
    paths = _images(tmp_path)
    for name in ("rgba", "16bit"):
        out = c.predict(source="upload", upload=handle_file(str(paths[name])), method="dtrak", lam=None,
                        api_name="/attribute", **base)
        assert len(out[2]) == 8, name
    for name, msg in (("text", "not a readable image"), ("truncated", "not a readable image"), ("huge", "limit"),
                      ("empty", "empty")):
        with pytest.raises(Exception, match=msg):
            c.predict(source="upload", upload=handle_file(str(paths[name])), method="dtrak", lam=None,
                      api_name="/attribute", **base)
    with pytest.raises(Exception, match="no file uploaded"):
        c.predict(source="upload", upload=None, method="dtrak", lam=None, api_name="/attribute", **base)
    out = c.predict(source="generate", upload=None, method="trak", lam=None, api_name="/attribute", **base)
    assert len(out[2]) == 8  # still serving after the bad inputs


def test_browser(server, tmp_path):
    from playwright.sync_api import sync_playwright
    os.makedirs("docs", exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
            "--no-first-run", "--disable-sync"])
        page = browser.new_page(viewport={"width": 1300, "height": 1400})
        page.goto(server)
        page.get_by_role("button", name="Attribute").click()
        thumbs = page.locator("#proponents img")
        thumbs.nth(7).wait_for(timeout=60_000)
        assert thumbs.count() >= 8
        first = page.locator("#proponents").inner_text()
        page.screenshot(path="docs/attribute.png", full_page=True)
        page.get_by_label("Method").first.click()
        page.get_by_role("option", name="Kernel (TRAK family) · TRAK", exact=True).click()
        page.get_by_role("button", name="Attribute").click()
        page.wait_for_function("t => document.querySelector('#proponents').innerText !== t", arg=first, timeout=60_000)
        page.get_by_role("tab", name="Evaluation").click()
        page.get_by_role("button", name="Show evaluation").click()
        page.locator("#lds-val .js-plotly-plot").wait_for(timeout=60_000)
        page.locator("#counterfactual").get_by_text("removal").or_(
            page.get_by_text("No counterfactual results")).wait_for(timeout=60_000)
        page.screenshot(path="docs/evaluation.png", full_page=True)
        page.get_by_role("tab", name="Attribute").click()
        page.get_by_text("Benchmark queries (click one to use it)").click()
        page.locator("#benchmark-queries img").nth(3).click()
        page.wait_for_function("() => document.querySelector('input[value=benchmark]').checked", timeout=30_000)
        page.get_by_role("button", name="Attribute").click()
        page.get_by_text("query: val").wait_for(timeout=60_000)
        page.get_by_role("radio", name="upload").check()
        Image.new("RGB", (64, 64), (255, 255, 255)).save(tmp_path / "white.png")
        page.locator("input[type=file]").set_input_files(str(tmp_path / "white.png"))
        page.wait_for_timeout(1500)
        page.get_by_role("button", name="Attribute").click()
        page.get_by_text("query: upload").wait_for(timeout=60_000)
        browser.close()
