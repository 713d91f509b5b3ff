"""The Hugging Face Space: the upload bundle passes the Hub's rules, and the bundle boots as a Space
(``SPACE_ID`` set) and answers a client."""
import os
import subprocess
import sys

import numpy as np
from PIL import Image

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tools"))
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
import deploy_space  # noqa: E402
from screenshots import served  # noqa: E402


def test_the_shipped_bundle_passes_the_hubs_rules():
    rows, problems = deploy_space.check()
    assert problems == []
    paths = {p for p, _, _ in rows}
    assert {"app.py", "README.md", "requirements.txt", ".gitattributes"} <= paths
    assert not any(p.startswith(("tests/", "benchmarks/", "precompute/")) for p in paths)
    binary = [p for p, _, b in rows if b]
    assert any(p.endswith(".safetensors") for p in binary) and any(p.endswith(".npy") for p in binary)


def _repo(tmp_path, files: dict[str, bytes]) -> str:
    for name, data in files.items():
        os.makedirs(os.path.dirname(tmp_path / name), exist_ok=True)
        (tmp_path / name).write_bytes(data)
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    subprocess.run(["git", "add", "-A"], cwd=tmp_path, check=True)
    return str(tmp_path)


def test_a_binary_without_an_lfs_rule_an_oversized_file_and_a_version_drift_are_refused(tmp_path):
    """Catches a .gitattributes that misses a binary type, files over 10 MiB and an unpinned sdk_version."""
    root = _repo(tmp_path, {
        ".gitattributes": b"*.npy filter=lfs diff=lfs merge=lfs -text\n",
        "README.md": b"---\nsdk: gradio\nsdk_version: 6.0.0\n---\n",
        "requirements.txt": b"gradio==6.31.0\n",
        "app.py": b"print('hi')\n",
        "assets/ok1.npy": b"\0\1\2",
        "assets/weights.ckpt": b"\0binary",
        "assets/big1.npy": b"\0" * (10 * 2**20 + 1),
    })
    _, problems = deploy_space.check(root)
    text = "\n".join(problems)
    assert "assets/weights.ckpt is binary but matches no LFS rule" in text
    assert "ok1.npy" not in text and "assets/big1.npy is 10.0 MiB" in text
    assert "sdk_version 6.0.0 differs from requirements.txt gradio==6.31.0" in text


def test_the_bundle_boots_as_a_space_and_answers_a_client(tmp_path):
    """Copies the bundle alone (no tests, no precompute) to a temporary folder, starts it with SPACE_ID
    set, and asks it for the first view (stored scores) and, once its start-up build is done, for one upload.
    The feature cache is the test session's: features another test built are reused."""
    from gradio_client import Client, handle_file
    bundle = deploy_space.copy_bundle(str(tmp_path / "space"))
    assert not os.path.exists(os.path.join(bundle, "tests"))
    with served(str(tmp_path / "space.log"), env={"SPACE_ID": "test/explorer"}, cwd=bundle) as (url, _):
        c = Client(url, verbose=False)
        first = c.predict("digits", "benchmark", 0, 50, 100, None, False, "dtrak", "uniform", 10, "exact", None, 8,
                          api_name="/attribute")
        assert "generated image 0" in first[2] and len(first[3]["value"]) == 8
        c.predict("digits", "dtrak", "uniform", 10, "exact", api_name="/build")  # joins the start-up build, if any
        img = tmp_path / "three.png"
        Image.fromarray((np.eye(8)[::-1] * 255).astype(np.uint8)).resize((64, 64)).save(img)
        up = c.predict("digits", "upload", 0, 50, 100, handle_file(str(img)), False, "dtrak", "uniform", 10, "exact",
                       None, 8, api_name="/attribute")
        assert isinstance(up[2], str), up[0]
        assert up[2].startswith("Your upload") and len(up[3]["value"]) == 8
        assert str(tmp_path) not in up[2] and "/tmp" not in up[2]
    assert "http://0.0.0.0:" in (tmp_path / "space.log").read_text()  # inside a Space it listens on all interfaces
