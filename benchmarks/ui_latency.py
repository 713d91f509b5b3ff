"""The explorer under load on this machine: startup time, server time per endpoint, and a
concurrent load of mixed requests from several gradio_client clients on loopback.

    PYTHONPATH=. python benchmarks/ui_latency.py --out benchmarks/results/ui_latency.json
Goals (issue 5): start ≤ 15 s; a cached benchmark query ≤ 0.3 s server time; an uploaded image
with D-TRAK S = 10 ≤ 1 s; 8 clients × 30 s with zero errors."""
import argparse
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

import numpy as np
from PIL import Image

from benchmarks.common import percentiles, report


def server_times(upload_path: str, reps: int) -> dict:
    """Seconds inside the endpoint functions (no network, no queue), after one warm-up call."""
    from explorer import ui

    class P:
        def __call__(self, *a, **k):
            pass
    calls = {
        "attribute_benchmark_query": lambda i: ui.attribute("digits", "benchmark", 0, 50, i % 200, None, "dtrak",
                                                            "uniform", 10, None, 8, progress=P()),
        "attribute_upload": lambda i: ui.attribute("digits", "upload", 0, 50, 0, upload_path, "dtrak", "uniform", 10,
                                                   None, 8, progress=P()),
        "compare_benchmark_query": lambda i: ui.compare("digits", "benchmark", 0, 50, i % 200, None, "dtrak", "trak",
                                                        "uniform", 10, 8, progress=P()),
        "evaluation": lambda i: ui.evaluation("digits", "dtrak", 10, i % 200),
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


def launch(port: int, log):
    env = {**os.environ, "GRADIO_SERVER_PORT": str(port)}
    t = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "app.py"], env=env, stdout=log, stderr=subprocess.STDOUT)
    while True:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/config", timeout=1)
            return proc, time.perf_counter() - t
        except OSError:
            if proc.poll() is not None or time.perf_counter() - t > 120:
                raise RuntimeError("the app did not start")
            time.sleep(0.1)


def load(url: str, clients: int, seconds: float, upload_path: str) -> dict:
    from gradio_client import Client, handle_file
    base = dict(dataset="digits", steps=50, strategy="uniform", S=10, k=8)
    requests = [
        ("attribute_benchmark", lambda c, i: c.predict(source="benchmark", seed=0, bench_index=i % 200, upload=None,
                                                       method="dtrak", lam=None, api_name="/attribute", **base)),
        ("attribute_generate", lambda c, i: c.predict(source="generate", seed=i % 16, bench_index=0, upload=None,
                                                      method="trak", lam=None, api_name="/attribute", **base)),
        ("attribute_upload", lambda c, i: c.predict(source="upload", seed=0, bench_index=0,
                                                    upload=handle_file(upload_path), method="dtrak", lam=None,
                                                    api_name="/attribute", **base)),
        ("compare", lambda c, i: c.predict(source="benchmark", seed=0, bench_index=i % 200, upload=None,
                                           method_a="dtrak", method_b="trak", api_name="/compare", **base)),
        ("evaluation", lambda c, i: c.predict(dataset="digits", method="dtrak", S=10, bench_index=i % 200,
                                              api_name="/evaluation")),
    ]
    lat = {name: [] for name, _ in requests}
    errors = []
    stop = time.perf_counter() + seconds

    def client(j):  # each client downloads into its own folder, not the server's /tmp/gradio file cache
        c = Client(url, verbose=False, download_files=tempfile.mkdtemp(prefix=f"client{j}-"))
        i = j
        while time.perf_counter() < stop:
            name, fn = requests[i % len(requests)]
            t = time.perf_counter()
            try:
                fn(c, i)
                lat[name].append(time.perf_counter() - t)
            except Exception as e:  # recorded, not raised: the benchmark counts them
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


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--clients", type=int, default=8)
    p.add_argument("--seconds", type=float, default=30)
    p.add_argument("--reps", type=int, default=20)
    p.add_argument("--out")
    a = p.parse_args()
    upload = os.path.join(tempfile.mkdtemp(), "upload.png")
    Image.fromarray((np.random.default_rng(0).random((300, 200, 3)) * 255).astype(np.uint8)).save(upload)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = open(os.path.join(os.path.dirname(upload), "server.log"), "w+")
    proc, startup = launch(port, log)
    try:
        res = {"cpu_count": os.cpu_count(), "startup_s": startup,
               "load": load(f"http://127.0.0.1:{port}", a.clients, a.seconds, upload)}
    finally:
        proc.terminate()
        proc.wait(10)
    if res["load"]["errors"]:
        log.seek(0)
        res["load"]["server_log_tail"] = log.read()[-6000:]
    res["server_time_s"] = server_times(upload, a.reps)
    report(res, a.out)


if __name__ == "__main__":
    main()
