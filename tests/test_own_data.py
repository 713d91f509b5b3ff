"""Your own images end to end: a folder becomes a model the app lists after a restart, bad folders get
one clear message, and the command-line attribution agrees with the page."""
import json
import os
import sys

import numpy as np
import pytest
import torch
from PIL import Image

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
from screenshots import served  # noqa: E402
from conftest import run_cli  # noqa: E402


def _folder(root, classes=("dots", "bars"), n=14, extra=True):
    rng = np.random.default_rng(0)
    for c in classes:
        d = root / c if c else root
        d.mkdir(parents=True, exist_ok=True)
        for i in range(n):
            a = np.zeros((16, 16, 3), np.uint8)
            if c == "bars":
                a[:, rng.integers(0, 16, 3)] = 200
            else:
                a[rng.integers(0, 16, 12), rng.integers(0, 16, 12)] = 255
            Image.fromarray(a).save(d / f"{i}.png")
        if extra:
            (d / "notes.txt").write_text("not an image")
    return root


def _precompute(env, *args):
    return run_cli("precompute", env, *args)


@pytest.fixture(scope="module")
def own_env(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("own")
    return {**os.environ, "EXPLORER_ASSETS": str(tmp / "assets"), "EXPLORER_CACHE": str(tmp / "cache"),
            "HF_HUB_OFFLINE": "1"}, tmp


def test_a_folder_becomes_a_model_the_app_lists_after_a_restart(own_env):
    """Labelled (class sub-folders) and unlabelled (flat) folders: trained, features built, then a fresh
    app lists both and attributes in them; the unlabelled one says it has no classifier."""
    from gradio_client import Client
    env, tmp = own_env
    r = _precompute(env, "all", "--dataset", "mine", "--data", str(_folder(tmp / "mine_imgs")), "--epochs", "2",
                    "--resolution", "8")
    assert r.returncode == 0, r.stderr[-2000:]
    assert "2 files in" in r.stdout and "are not images and were skipped" in r.stdout
    assert "restart the app" in r.stdout
    r = _precompute(env, "all", "--dataset", "flat", "--data", str(_folder(tmp / "flat_imgs", classes=("",))),
                    "--epochs", "2", "--resolution", "8")
    assert r.returncode == 0 and "no classifier is trained" in r.stdout, r.stderr[-2000:]
    info = json.load(open(tmp / "assets" / "mine" / "train.json"))
    assert info["data_source"] == str(tmp / "mine_imgs") and info["data_options"] == {"resolution": 8}

    with served(str(tmp / "app.log"), env=env) as (url, _):
        c = Client(url, verbose=False)
        for name, reading in (("mine", "the classifier reads it as"), ("flat", "no classifier")):
            out = c.predict(name, "generate", 0, 20, 0, None, False, "dtrak", "uniform", 10, "exact", None, 8,
                            api_name="/attribute")
            assert isinstance(out[2], str), out[0]
            assert reading in out[2] and len(out[3]["value"]) == 8
        out = c.predict("flat", "generate", 0, 20, 0, None, False, "embedding-cos", "uniform", 10, "exact", None, 8,
                        api_name="/attribute")  # the one method that needs a classifier says so
        assert "needs a classifier" in out[0]["value"], out[0]


def _snapshot(folder):
    return {os.path.relpath(os.path.join(d, f), folder): (open(os.path.join(d, f), "rb").read(),
                                                          os.stat(os.path.join(d, f)).st_mtime_ns)
            for d, _, files in os.walk(folder) for f in files}


def test_a_rerun_with_unchanged_inputs_rewrites_no_file(own_env):
    """Deterministic stages: training the same folder with the same recipe again is skipped and no file
    under the model's folder changes (bytes or modification time), so a re-run adds nothing to history."""
    env, tmp = own_env
    before = _snapshot(tmp / "assets" / "mine")
    assert before, "the first test trains 'mine'"
    r = _precompute(env, "all", "--dataset", "mine", "--data", str(tmp / "mine_imgs"), "--epochs", "2",
                    "--resolution", "8")
    assert r.returncode == 0 and "already trained on these images with this recipe" in r.stdout, r.stderr[-2000:]
    assert _snapshot(tmp / "assets" / "mine") == before
    r = _precompute(env, "train", "--dataset", "mine", "--data", str(tmp / "mine_imgs"), "--epochs", "3",
                    "--resolution", "8")  # another recipe: retrained
    assert r.returncode == 0 and "already trained" not in r.stdout
    assert json.load(open(tmp / "assets" / "mine" / "train.json"))["train"]["epochs"] == 3


def test_bad_folders_get_one_clear_message(own_env, tmp_path):
    env, _ = own_env
    (tmp_path / "empty").mkdir()
    r = _precompute(env, "train", "--dataset", "e", "--data", str(tmp_path / "empty"))
    assert r.returncode == 2 and "found 0 images" in r.stderr and "at least 10" in r.stderr
    assert "Traceback" not in r.stderr
    _folder(tmp_path / "few", classes=("a",), n=3, extra=False)
    r = _precompute(env, "train", "--dataset", "e", "--data", str(tmp_path / "few"))
    assert r.returncode == 2 and "found 3 images" in r.stderr
    (tmp_path / "broken").mkdir()
    _folder(tmp_path / "broken", classes=("a",), n=12, extra=False)
    (tmp_path / "broken" / "a" / "bad.png").write_bytes(b"not really a png")
    r = _precompute(env, "train", "--dataset", "e", "--data", str(tmp_path / "broken"))
    assert r.returncode == 2 and "bad.png" in r.stderr and "Traceback" not in r.stderr
    r = _precompute(env, "train", "--dataset", "e", "--data", str(tmp_path / "missing"))
    assert r.returncode == 2 and "no dataset or image folder" in r.stderr


def test_the_command_line_agrees_with_the_page(tmp_path):
    """The same upload through `python -m explorer attribute` and the page's callback: same proponents,
    same scores, same λ."""
    from explorer import ui
    from explorer.__main__ import main
    eng = ui.engine("digits")
    digit = ((eng.data.val_x[7, 0].numpy() + 1) * 127.5).astype(np.uint8)
    Image.fromarray(digit).resize((32, 32), Image.NEAREST).save(tmp_path / "seven.png")
    Image.fromarray(digit[::-1]).resize((32, 32), Image.NEAREST).save(tmp_path / "flipped.png")
    assert main(["attribute", "--dataset", "digits", "--images", str(tmp_path), "--top", "8",
                 "--out", str(tmp_path / "out.json")]) == 0
    out = json.load(open(tmp_path / "out.json"))
    assert [os.path.basename(r["image"]) for r in out["results"]] == ["flipped.png", "seven.png"]
    assert out["timesteps"] == [0, 100, 200, 300, 400, 500, 600, 700, 800, 900]
    page = ui.attribute("digits", "upload", 0, 50, 0, str(tmp_path / "seven.png"), False, "dtrak", "uniform", 10,
                        "default", None, 8)
    shown = page[7]
    cli = out["results"][1]["proponents"]
    assert [e["train_index"] for e in cli] == shown["pro"]
    np.testing.assert_allclose([e["score"] for e in cli], shown["pro_scores"], rtol=1e-3)  # batch of 2 vs 1: float32 sums
    assert f"λ = {out['lambda']:g}" in page[2]
    assert main(["attribute", "--dataset", "digits", "--images", str(tmp_path / "seven.png"), "--top", "3",
                 "--out", str(tmp_path / "out.csv")]) == 0
    rows = (tmp_path / "out.csv").read_text().splitlines()
    assert rows[0].startswith("image,kind,rank,train_index") and len(rows) == 1 + 6
    assert main(["attribute", "--dataset", "digits", "--images", str(tmp_path / "none"), "--out",
                 str(tmp_path / "x.json")]) == 2


def test_a_diffusers_checkpoint_trained_elsewhere_is_adopted_as_it_is(tmp_path, tiny_unet):
    """`train --model DIR`: the UNet is used with its own weights (no retraining), its scheduler must be
    the one the math assumes, and the evaluation says LDS is not available for it."""
    from diffusers import DDPMScheduler

    from explorer.attribution.timesteps import TimestepStrategy
    from explorer.engine import Engine
    from explorer.models import CheckpointError
    from precompute import adopt
    pipe = tmp_path / "pipe"
    tiny_unet.save_pretrained(pipe / "unet")
    DDPMScheduler(num_train_timesteps=1000, beta_schedule="linear", beta_start=1e-4,
                  beta_end=0.02).save_pretrained(pipe / "scheduler")
    root = str(tmp_path / "assets")
    adopt.run("ext", str(pipe), str(_folder(tmp_path / "imgs")), root=root)
    eng = Engine("ext", root=root, cache_dir=str(tmp_path / "cache"))
    for (name, a), b in zip(eng.task.model.named_parameters(), tiny_unet.parameters()):
        assert torch.equal(a, b), name
    res = eng.attribute(eng.task.generated(0, steps=5), "dtrak", TimestepStrategy("uniform", 2))
    assert res.scores.shape == (len(eng.data.train_idx),) and np.isfinite(res.scores).all()
    assert eng.task.info["imported_from"] == str(pipe) and not eng.results.has_lds
    DDPMScheduler(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2").save_pretrained(pipe / "scheduler")
    with pytest.raises(CheckpointError, match="beta_schedule"):
        adopt.run("ext2", str(pipe), str(tmp_path / "imgs"), root=root)
