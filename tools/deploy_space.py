"""Deploys the explorer to a Hugging Face Space, or (``--dry-run``) lists and checks what would go.

    python tools/deploy_space.py --dry-run                 # the bundle, its checks, nothing uploaded
    python tools/deploy_space.py --repo USER/SPACE_NAME    # uploads (needs `hf auth login` or HF_TOKEN)

The bundle is what the Space runs: the app, the library, the shipped assets, the README (whose front
matter configures the Space) and the requirements. It is uploaded with ``huggingface_hub``'s
``upload_folder``, which stores binaries through LFS/Xet by itself; for those who push with git, every
binary in the bundle must match an LFS rule of ``.gitattributes`` (checked here with ``git check-attr``).
"""
from __future__ import annotations

import argparse
import fnmatch
import os
import re
import shutil
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
INCLUDE = ["app.py", "README.md", "requirements.txt", "packages.txt", ".gitattributes", "explorer/*", "assets/*",
           "docs/*.png"]
MAX_FILE = 10 * 1024 * 1024
MAX_TOTAL = 150 * 1024 * 1024


def tracked_files(root: str = ROOT) -> list[str]:
    out = subprocess.run(["git", "ls-files", "-z"], cwd=root, capture_output=True, check=True).stdout
    return [p for p in out.decode().split("\0") if p]


def bundle_files(root: str = ROOT) -> list[str]:
    """Tracked files the Space needs (tests, benchmarks and the precompute pipeline stay behind)."""
    return sorted(p for p in tracked_files(root) if any(fnmatch.fnmatch(p, pat) for pat in INCLUDE))


def is_binary(path: str) -> bool:
    with open(path, "rb") as f:
        return b"\0" in f.read(8192)


def lfs_tracked(paths: list[str], root: str = ROOT) -> set[str]:
    out = subprocess.run(["git", "check-attr", "-z", "filter", "--", *paths], cwd=root, capture_output=True,
                         check=True).stdout.decode().split("\0")
    return {out[i] for i in range(0, len(out) - 2, 3) if out[i + 2] == "lfs"}


def check(root: str = ROOT) -> tuple[list[tuple[str, int, bool]], list[str]]:
    """(path, bytes, binary) for each file in the bundle, and the problems that would make a push fail."""
    files = bundle_files(root)
    rows = [(p, os.path.getsize(os.path.join(root, p)), is_binary(os.path.join(root, p))) for p in files]
    lfs = lfs_tracked([p for p, _, b in rows if b], root) if any(b for _, _, b in rows) else set()
    problems = [f"{p} is binary but matches no LFS rule in .gitattributes" for p, _, b in rows if b and p not in lfs]
    problems += [f"{p} is {n / 2**20:.1f} MiB (limit 10 MiB)" for p, n, _ in rows if n > MAX_FILE]
    total = sum(n for _, n, _ in rows)
    if total > MAX_TOTAL:
        problems.append(f"the bundle is {total / 2**20:.0f} MiB (limit {MAX_TOTAL / 2**20:.0f} MiB)")
    problems += front_matter_problems(root)
    return rows, problems


def front_matter_problems(root: str = ROOT) -> list[str]:
    """The Space's Gradio version (README front matter) must be the one requirements.txt pins."""
    readme = open(os.path.join(root, "README.md")).read()
    sdk = re.search(r"^sdk_version:\s*\"?([\w.]+)", readme, re.M)
    pin = re.search(r"^gradio==([\w.]+)", open(os.path.join(root, "requirements.txt")).read(), re.M)
    if not sdk or not pin:
        return ["README front matter needs sdk_version and requirements.txt needs gradio==<version>"]
    return [] if sdk.group(1) == pin.group(1) else [
        f"README sdk_version {sdk.group(1)} differs from requirements.txt gradio=={pin.group(1)}"]


def copy_bundle(dest: str, root: str = ROOT) -> str:
    """Copies the bundle to ``dest`` (what the Space will hold) and returns it."""
    for p in bundle_files(root):
        os.makedirs(os.path.dirname(os.path.join(dest, p)), exist_ok=True)
        shutil.copy2(os.path.join(root, p), os.path.join(dest, p))
    return dest


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False)
    ap.add_argument("--repo", help="the Space, as USER/NAME")
    ap.add_argument("--dry-run", action="store_true", help="list and check the bundle, upload nothing")
    args = ap.parse_args(argv)
    rows, problems = check()
    for p, n, b in rows:
        print(f"{n:>12,}  {'binary (LFS)' if b else 'text':<12}  {p}")
    total = sum(n for _, n, _ in rows)
    print(f"{len(rows)} files, {sum(b for *_, b in rows)} binary, {total / 2**20:.1f} MiB in all")
    for msg in problems:
        print(f"problem: {msg}", file=sys.stderr)
    if problems:
        return 1
    if args.dry_run:
        print("dry run: nothing uploaded")
        return 0
    if not args.repo:
        ap.error("give --repo USER/NAME (or --dry-run)")
    from huggingface_hub import HfApi
    api = HfApi()
    api.create_repo(args.repo, repo_type="space", space_sdk="gradio", exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        api.upload_folder(folder_path=copy_bundle(tmp), repo_id=args.repo, repo_type="space",
                          commit_message="Deploy Diffusion Attribution Explorer")
    print(f"uploaded: https://huggingface.co/spaces/{args.repo}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
