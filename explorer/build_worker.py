"""Training-feature builds in a worker process at lower CPU priority, so the serving process keeps
answering stored queries and first views while a visitor's build runs (one process per build; the
shared ``store.BUILDS`` registry still runs one build per feature set, for every visitor at once).

The worker (``python -m explorer.build_worker ORDER_JSON``, a fresh interpreter: nothing of the server's
threads, locks or entry script) opens the same task and store from their names, builds the features and
their Gram matrix and eigenpairs into the same manifest-checked on-disk cache, and prints
``progress DONE TOTAL PHASE`` lines; the serving process then loads what it wrote. Stopping a build terminates the worker: the shards it
finished stay on disk and the next build resumes from them."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from dataclasses import asdict
from typing import Callable

from .attribution.timesteps import TimestepStrategy
from .store import BuildOrder, BuildStopped, FeatureStore, Progress
from .tasks import open_task

NICE = 10  # added to the worker's niceness: the page's answers come first


def run_in_worker(order: BuildOrder, report: Progress, should_stop: Callable[[], bool]) -> None:
    """Runs the build in a worker process; relays its progress to ``report``; terminates it and raises
    ``BuildStopped`` once ``should_stop()``; raises RuntimeError with the worker's message if it failed."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))}
    proc = subprocess.Popen([sys.executable, "-m", "explorer.build_worker", json.dumps(asdict(order))], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    err: list[str] = []
    threading.Thread(target=lambda: err.extend(proc.stderr), daemon=True).start()
    stop = threading.Event()

    def watch():  # stdout is read on this thread; the stop request is checked here
        while not stop.wait(0.2):
            if should_stop() and proc.poll() is None:
                proc.terminate()
                return
    threading.Thread(target=watch, daemon=True).start()
    try:
        for line in proc.stdout:
            parts = line.split()
            if parts[:1] == ["progress"]:
                report(int(parts[1]), int(parts[2]), " ".join(parts[3:]))
        proc.wait()
    finally:
        stop.set()
        if proc.poll() is None:
            proc.terminate()
            proc.wait(10)
    if should_stop():
        raise BuildStopped("nobody is waiting for this build any more; it resumes on the next request")
    if proc.returncode != 0:
        message = [line for line in err if line.startswith("error: ")]
        raise RuntimeError(message[-1][7:].strip() if message else
                           f"the feature build stopped unexpectedly (exit code {proc.returncode})")


def main(order_json: str) -> int:
    os.nice(NICE)
    import torch
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    o = json.loads(order_json)
    o["strategy"] = TimestepStrategy(**{**o["strategy"], "ts": tuple(o["strategy"]["ts"])})
    order = BuildOrder(**o)
    try:
        store = FeatureStore(open_task(order.dataset, order.root, order.device), order.projector, order.k, order.seed,
                             order.cache_dir, order.device)
        store.build_here(order.model_dir, order.output_fn, order.strategy,
                         lambda done, total, phase: print(f"progress {done} {total} {phase}", flush=True))
    except Exception as e:  # the serving process raises it for every waiting caller
        print(f"error: {type(e).__name__}: {e}", file=sys.stderr, flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
