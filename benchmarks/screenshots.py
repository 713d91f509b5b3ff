"""Screenshots of every tab at 1280×720 and at 390 px wide, from a real Chromium on a launched app.

    PYTHONPATH=. python benchmarks/screenshots.py --out docs            # the README's pictures
    PYTHONPATH=. python benchmarks/screenshots.py --out /tmp/shots --narrow
The test suite never writes these; this script is the one way ``docs/`` screenshots are made."""
import argparse
import os
import socket
import subprocess
import sys
import time
from contextlib import contextmanager

TABS = ["Attribute", "Compare", "Timesteps", "Evaluation", "Lesson", "Learn"]
LESSON_STEPS = 7


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(port: int, log_path: str, env: dict | None = None, cwd: str | None = None) -> subprocess.Popen:
    """Starts ``python app.py`` (in ``cwd``, default here) on ``port`` and waits until it answers."""
    env = {**os.environ, "GRADIO_SERVER_PORT": str(port), "HF_HUB_OFFLINE": "1", "GRADIO_ANALYTICS_ENABLED": "False",
           **(env or {})}
    log = open(log_path, "w+")
    proc = subprocess.Popen([sys.executable, "app.py"], env=env, stdout=log, stderr=subprocess.STDOUT, cwd=cwd)
    start = time.time()
    while time.time() - start < 120:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return proc
        except OSError:
            if proc.poll() is not None:
                break
            time.sleep(0.3)
    proc.kill()
    log.seek(0)
    raise RuntimeError(log.read()[-3000:])


@contextmanager
def served(log_path: str, env: dict | None = None, cwd: str | None = None):
    """``python app.py`` on a free port for the ``with`` block: yields (url, process), then stops it."""
    port = free_port()
    proc = launch(port, log_path, env, cwd)
    try:
        yield f"http://127.0.0.1:{port}", proc
    finally:
        proc.terminate()
        proc.wait(10)


def browser(p):
    return p.chromium.launch(executable_path="/usr/bin/chromium", args=[
        "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--no-first-run", "--disable-sync"])


def open_tab(page, name: str) -> None:
    """Clicks a tab, through the overflow menu when a narrow page has folded it there."""
    tab = page.get_by_role("tab", name=name)
    if not tab.is_visible():
        page.locator(".overflow-menu button, button.overflow-menu").first.click()
    page.get_by_role("tab", name=name).or_(page.get_by_role("button", name=name)).last.click()


def emoji_view(page, prompt: str, path: str) -> None:
    open_tab(page, "Attribute")
    page.get_by_label("Model").first.click()
    page.get_by_role("option", name="emoji").click()
    page.locator("#source").get_by_text("Prompt").click()  # the model opens on a stored benchmark image
    box = page.locator("#prompt input, #prompt textarea").first
    box.wait_for(timeout=300_000)
    box.fill(prompt)
    page.locator("#style").get_by_text("Twitter (Twemoji)").click()
    page.wait_for_timeout(1000)
    page.locator("#attribute").click()
    build = page.locator("#build")
    try:
        build.wait_for(timeout=20_000)
        build.click()
    except Exception:  # already computed: the answer comes at once
        pass
    page.locator("#proponents img").nth(7).wait_for(timeout=600_000)
    page.locator("#mix .js-plotly-plot").wait_for(timeout=60_000)
    page.get_by_text("Stability of this answer").first.wait_for(timeout=300_000)  # the gallery is redrawn with it
    # lazy images off screen (a phone scrolled down to the button) are not drawn in a full-page picture
    page.evaluate("() => document.querySelectorAll('img[loading=lazy]').forEach(i => i.loading = 'eager')")
    page.wait_for_function("() => [...document.querySelectorAll('#proponents img, #query-img img')]"
                           ".every(i => i.complete && i.naturalWidth > 0)", timeout=60_000)
    page.wait_for_timeout(2000)
    page.screenshot(path=path, full_page=True)


def main():
    a = argparse.ArgumentParser()
    a.add_argument("--out", required=True)
    a.add_argument("--narrow", action="store_true", help="also 390 px wide")
    a.add_argument("--icons", action="store_true", help="also the icons model's Attribute view (themes installed)")
    a.add_argument("--icons-seed", type=int, default=3)
    a.add_argument("--emoji", default=None, metavar="PROMPT",
                   help="also the emoji LoRA's answer to PROMPT in Twemoji's style (building its features if needed)")
    args = a.parse_args()
    from playwright.sync_api import sync_playwright
    os.makedirs(args.out, exist_ok=True)
    with served(os.path.join(args.out, "server.log")) as (url, _):
        with sync_playwright() as p:
            b = browser(p)
            sizes = [("", 1280, 720)] + ([("_390", 390, 844)] if args.narrow else [])
            for suffix, w, h in sizes:
                page = b.new_page(viewport={"width": w, "height": h})
                page.goto(url)
                page.locator("#proponents img").first.wait_for(timeout=120_000)
                page.wait_for_timeout(1500)
                for tab in TABS:
                    open_tab(page, tab)
                    if tab == "Compare":
                        page.get_by_role("button", name="Compare").click()
                    if tab == "Evaluation":  # opening the tab shows it; the whole tab too (the regenerated images)
                        page.locator("#cf-plot .js-plotly-plot").wait_for(timeout=60_000)
                        page.wait_for_timeout(3000)
                        page.screenshot(path=os.path.join(args.out, f"evaluation_full{suffix}.png"), full_page=True)
                    if tab == "Lesson":  # one picture per step
                        for j in range(1, LESSON_STEPS + 1):
                            page.locator(f"#lesson-step-{j}").click()
                            page.locator("#lesson-text").get_by_text(f"{j}. ").first.wait_for(timeout=60_000)
                            page.wait_for_timeout(2500)
                            page.screenshot(path=os.path.join(args.out, f"lesson_{j}{suffix}.png"))
                            page.locator("#lesson-tab").screenshot(  # the whole step, for the README
                                path=os.path.join(args.out, f"lesson_{j}_panel{suffix}.png"))
                        continue
                    page.wait_for_timeout(4000)
                    page.screenshot(path=os.path.join(args.out, f"{tab.lower()}{suffix}.png"))
                if args.icons:  # the showcase: a generated icon, proponents with their artist, the style mix
                    open_tab(page, "Attribute")
                    page.get_by_label("Model").first.click()
                    page.get_by_role("option", name="icons").click()
                    page.get_by_role("radio", name="Generate").check()
                    page.locator("#seed input").fill(str(args.icons_seed))
                    page.locator("#seed input").press("Enter")
                    page.locator("#query-info").get_by_text("seed").first.wait_for(timeout=300_000)
                    page.locator("#proponents img").nth(7).wait_for(timeout=300_000)
                    page.wait_for_timeout(4000)
                    page.screenshot(path=os.path.join(args.out, f"icons{suffix}.png"), full_page=True)
                if args.emoji:  # a typed prompt, a style, the proponents with their designers, the credit panel
                    emoji_view(page, args.emoji, os.path.join(args.out, f"emoji{suffix}.png"))
                page.close()
            b.close()


if __name__ == "__main__":
    main()
