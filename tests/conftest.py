import os
import subprocess
import sys
import tempfile

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("EXPLORER_CACHE", tempfile.mkdtemp(prefix="explorer-cache-"))  # never write into the repo

import pytest
import torch

# EXPLORER_THREADS=1 while a background job holds the other core (two 2-thread processes on 2 cores run 100× slower)
torch.set_num_threads(int(os.environ.get("EXPLORER_THREADS", max(1, min(2, os.cpu_count() or 1)))))


@pytest.fixture(scope="session")
def digits_engine():
    from explorer.engine import Engine
    return Engine("digits")


def tiny_unet_config():
    from explorer.models import UNetConfig
    return UNetConfig(block_out_channels=(8, 16), norm_num_groups=4, attention_head_dim=8)


@pytest.fixture(scope="session")
def tiny_unet():
    from explorer.models import make_unet
    return make_unet(tiny_unet_config(), seed=0)


sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "benchmarks"))


@pytest.fixture(scope="session")
def tiny_emoji_root(tmp_path_factory):
    """An assets folder holding a tiny latent text-to-image ``emoji`` model trained here, as the shipped one is
    built: a VAE (32×32 → 4×8×8) trained for 1 epoch, a base pipeline (random UNet weights) and a rank-2 LoRA
    trained for 2 epochs on the latents of 32 of the shipped emoji drawings."""
    import json
    from dataclasses import asdict

    from explorer import autoencoder as ae
    from explorer import lora
    from explorer import text2image as t2i
    from explorer.datasets import emoji
    root = tmp_path_factory.mktemp("assets")
    ds = emoji.load_emoji()
    captions = [ds.meta["caption"][int(i)] for i in ds.train_idx]
    tok = t2i.build_tokenizer(ds.meta["caption"], TINY_T2I.max_length)
    vae = ae.make_vae(TINY_VAE, 32)
    ae.train_vae(vae, ds.train_x[:64], ae.VAETrainConfig(epochs=1))
    unet, te = t2i.make_text_to_image(TINY_T2I, tok)
    t2i.save_pipeline(unet, te, tok, str(root / "emoji" / "base"), vae=vae)
    cfg = lora.LoRAConfig(rank=2, alpha=2)
    params = lora.add_lora(unet, cfg)
    few = torch.arange(32)
    t2i.train_text_to_image(unet, te, t2i.to_model_space(vae, ds.train_x[few]),
                            t2i.tokenize(tok, [captions[i] for i in few]),
                            t2i.tokenize(tok, [""])[0], t2i.T2ITrainConfig(epochs=2, batch_size=16, lr=1e-2), params)
    lora.save_lora(unet, str(root / "emoji" / "lora"))
    (root / "emoji" / "train.json").write_text(json.dumps({"dataset": "emoji", "lora": {"lora": asdict(cfg)}}))
    return root


def _tiny_t2i():
    from explorer import autoencoder as ae
    from explorer import text2image as t2i
    return (t2i.TextToImageConfig(sample_size=8, channels=4, block_out_channels=(8, 16, 16), norm_num_groups=4,
                                  attention_head_dim=2, text_hidden=16, text_layers=1, text_heads=2,
                                  addition_embed_type="text"),
            ae.VAEConfig(block_out_channels=(8, 16, 16), norm_num_groups=4))


TINY_T2I, TINY_VAE = _tiny_t2i()


@pytest.fixture(scope="session")
def server(tmp_path_factory):
    """``python app.py`` launched once for every browser / client test (shares the test feature cache)."""
    from screenshots import served
    with served(str(tmp_path_factory.mktemp("server") / "server.log")) as (url, _):
        yield url


def page_at(p, server, w=1280, h=720):
    """A Chromium page (Playwright ``p``) on the launched app."""
    from screenshots import browser
    page = browser(p).new_page(viewport={"width": w, "height": h})
    page.goto(server)
    return page


def run_cli(module: str, env: dict, *args) -> subprocess.CompletedProcess:
    """``python -m module args`` from the repository root under ``env`` (output captured, 10 min at most)."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    return subprocess.run([sys.executable, "-m", module, *args], cwd=root, env=env, capture_output=True, text=True,
                          timeout=600)

