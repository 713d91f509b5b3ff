"""What the text-to-image setting's dependencies add to a fresh install: a new venv gets ``requirements.txt``
without ``transformers`` and ``peft`` (the app's baseline), then those two on top (what the Space's build and
a newcomer's ``pip install -r requirements.txt`` pay for the emoji model), then ``resvg-py`` (the emoji data
build and its test only; not in the Space). Reported per install: wall time, CPU time (user + system of pip and
its children: steadier than wall time on a loaded machine), the venv's growth and the packages it added.

    PYTHONPATH=. python benchmarks/dependency_cost.py --out benchmarks/results/dependency_cost.json

Downloads come from the registries this machine is configured with, ``--no-cache-dir``; the numbers are this
machine's (network and 2 cores) and vary run to run."""
import argparse
import os
import re
import resource
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import report  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ADDED = ("transformers", "peft")


def pinned(path: str, name: str) -> str:
    """The requirement line of ``name`` in ``path`` (with its pin)."""
    for line in open(path):
        spec = line.split("#")[0].strip()
        if re.split(r"[=<>~ ]", spec)[0].lower() == name:
            return spec
    raise KeyError(f"{name} is not in {path}")


def du(path: str) -> int:
    return int(subprocess.run(["du", "-sb", path], capture_output=True, text=True, check=True).stdout.split()[0])


def cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def packages(py: str) -> set[str]:
    out = subprocess.run([py, "-m", "pip", "list", "--format=freeze"], capture_output=True, text=True, check=True)
    return {line.split("==")[0].lower() for line in out.stdout.split()}


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--out", default=None)
    a = p.parse_args()
    req = os.path.join(ROOT, "requirements.txt")
    with tempfile.TemporaryDirectory() as tmp:
        venv, base_req = os.path.join(tmp, "venv"), os.path.join(tmp, "base.txt")
        with open(base_req, "w") as f:
            f.writelines(line for line in open(req) if re.split(r"[=<>~ \n]", line.strip())[0].lower() not in ADDED)
        subprocess.run([sys.executable, "-m", "venv", venv], check=True)
        py = os.path.join(venv, "bin", "python")

        def install(*args) -> dict:
            before, have = du(venv), packages(py)
            t0, c0 = time.perf_counter(), cpu()
            subprocess.run([py, "-m", "pip", "install", "-q", "--no-cache-dir", *args], check=True)
            return {"seconds": round(time.perf_counter() - t0, 1), "cpu_seconds": round(cpu() - c0, 1),
                    "added_mb": round((du(venv) - before) / 2**20, 1),
                    "new_packages": sorted(packages(py) - have)}

        result = {"python": sys.version.split()[0], "baseline": install("-r", base_req)}
        result["baseline"]["venv_mb"] = round(du(venv) / 2**20, 1)
        result["transformers_peft"] = install(*(pinned(req, n) for n in ADDED))
        result["resvg_py"] = install(pinned(os.path.join(ROOT, "requirements-test.txt"), "resvg-py"))
    report(result, a.out)


if __name__ == "__main__":
    main()
