"""Your own Stable Diffusion LoRA, without downloads: a tiny randomly initialised pipeline (UNet2DConditionModel,
AutoencoderKL, CLIPTextModel, a CLIP BPE tokenizer written here, an SD-style scaled-linear scheduler) saved
the way diffusers saves it, a LoRA trained on a dozen captioned drawings by two contributors, adopted
through the command line, then attributed in latent space — by the engine, the page's callbacks and the CLI."""
import json
import os
import shutil
import string

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import run_cli
from explorer.attribution.timesteps import TimestepStrategy

ST = TimestepStrategy("uniform", 2)
COLOURS = {"red": (220, 30, 30), "blue": (30, 60, 220), "green": (30, 180, 60)}
SHAPES = ("square", "circle")


def _drawing(colour, shape, left=0, size=16):
    """A shape on white, its centre ``left`` pixels left of the middle."""
    yy, xx = np.mgrid[:size, :size]
    yy, xx = yy - 8, xx - 8 + left
    mask = (np.abs(yy) < 5) & (np.abs(xx) < 5) if shape == "square" else yy ** 2 + xx ** 2 < 25
    img = np.full((size, size, 3), 255, np.uint8)
    img[mask] = COLOURS[colour]
    return Image.fromarray(img)


def _tokenizer(folder):
    from transformers import CLIPTokenizer
    chars = list(string.ascii_lowercase + string.digits + ",.'-")
    vocab = {c: i for i, c in enumerate(chars + [c + "</w>" for c in chars] + ["<|startoftext|>", "<|endoftext|>"])}
    os.makedirs(folder, exist_ok=True)
    json.dump(vocab, open(os.path.join(folder, "vocab.json"), "w"))
    open(os.path.join(folder, "merges.txt"), "w").write("#version: 0.2\n")
    return CLIPTokenizer(os.path.join(folder, "vocab.json"), os.path.join(folder, "merges.txt"), model_max_length=24)


def _pipeline(tmp, prediction_type="epsilon"):
    from diffusers import AutoencoderKL, DDPMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel
    torch.manual_seed(0)
    tok = _tokenizer(str(tmp / "vocab"))
    te = CLIPTextModel(CLIPTextConfig(vocab_size=len(tok), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                      num_attention_heads=2, max_position_embeddings=24,
                                      bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                                      pad_token_id=tok.pad_token_id))
    vae = AutoencoderKL(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 2,
                        up_block_types=("UpDecoderBlock2D",) * 2, block_out_channels=(8, 16), latent_channels=4,
                        norm_num_groups=4, sample_size=16)
    unet = UNet2DConditionModel(sample_size=8, in_channels=4, out_channels=4, block_out_channels=(16, 32),
                                down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                                up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), layers_per_block=1,
                                norm_num_groups=8, cross_attention_dim=16, attention_head_dim=2)
    sched = DDPMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012,
                          prediction_type=prediction_type)
    pipe = StableDiffusionPipeline(vae=vae, text_encoder=te, tokenizer=tok, unet=unet, scheduler=sched,
                                   safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    pipe.save_pretrained(str(tmp / f"pipe-{prediction_type}"))
    return str(tmp / f"pipe-{prediction_type}")


def _data(folder):
    """Twelve captioned drawings in two contributors' sub-folders, captions in metadata.jsonl."""
    rows = []
    for who, colours in (("alice", ("red", "green")), ("bob", ("blue",))):
        os.makedirs(folder / who, exist_ok=True)
        for colour in colours:
            for shape in SHAPES:
                for k in range(2):
                    name = f"{who}/{colour}_{shape}_{k}.png"
                    _drawing(colour, shape, left=3 * k).save(folder / name)  # twins: same caption, moved
                    rows.append({"file_name": name, "text": f"a {colour} {shape}, by {who}"})
    (folder / "metadata.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(folder)


def _train_lora(pipe_dir, data_dir, out):
    from explorer import lora, stable_diffusion as sd, text2image as t2i
    from explorer.datasets.captioned import load_captioned_folder
    unet, vae, te, tok, cfg = sd.load(pipe_dir)
    ds = load_captioned_folder(data_dir, sd.pixel_resolution(unet, vae))
    params = lora.add_lora(unet, lora.LoRAConfig(rank=4, alpha=4))
    from explorer.schedule import NoiseSchedule
    t2i.train_text_to_image(unet, te, sd.encode_images(vae, ds.train_x), sd.tokenize(tok, ds.meta["caption"]),
                            sd.tokenize(tok, [""])[0], t2i.T2ITrainConfig(epochs=3, batch_size=6, lr=1e-2), params,
                            schedule=NoiseSchedule(cfg))
    lora.save_lora(unet, out)
    return out


def _precompute(env, *args):
    return run_cli("precompute", env, *args)


@pytest.fixture(scope="module")
def adopted(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("sd")
    pipe, data = _pipeline(tmp), _data(tmp / "drawings")
    lora_dir = _train_lora(pipe, data, str(tmp / "lora"))
    env = {**os.environ, "EXPLORER_ASSETS": str(tmp / "assets"), "EXPLORER_CACHE": str(tmp / "cache")}
    r = _precompute(env, "adopt", "--dataset", "mysd", "--pipeline", pipe, "--lora", lora_dir, "--data", data)
    assert r.returncode == 0, r.stderr[-3000:]
    return tmp, env, r.stdout


@pytest.fixture(scope="module")
def engine(adopted):
    from explorer.engine import Engine
    tmp, _, _ = adopted
    return Engine("mysd", root=str(tmp / "assets"), cache_dir=str(tmp / "cache" / "features"))


def test_adopt_records_the_pipeline_and_reports_what_it_found(adopted):
    tmp, _, out = adopted
    info = json.load(open(tmp / "assets" / "mysd" / "train.json"))
    rec = info["stable_diffusion"]
    assert rec["lora_rank"] == 4 and rec["prediction_type"] == "epsilon" and rec["pixel_resolution"] == 16
    assert info["n_train"] == 12 and info["contributors"] == {"alice": 8, "bob": 4}
    assert "12 captioned images by 2 contributors" in out and "LoRA rank 4" in out
    assert info["feature_build_estimate_s"] > 0 and "training features (S = 10, exact) take about" in out


def test_latent_lora_gradients_equal_single_backward_passes_on_the_pipelines_schedule(engine):
    from explorer.attribution.gradients import GradientComputer, loop_gradients
    from explorer.schedule import DDPM
    task = engine.task
    z, ctx = task.train_inputs[:3], task.train_context[:3]
    assert z.shape == (3, 4, 8, 8)  # latents of the 16-px drawings
    abar = task.schedule.abar
    assert not torch.allclose(abar, DDPM.abar)  # the pipeline's scaled-linear schedule, not the project's
    assert task.schedule.config["beta_schedule"] == "scaled_linear"
    ts = torch.tensor([100, 700])
    eps = torch.randn(3, 2, *z.shape[1:], generator=torch.Generator().manual_seed(0))
    fast = GradientComputer(task.model, "square", task.param_names, schedule=task.schedule)(z, eps, ts, ctx)
    slow = loop_gradients(task.model, "square", z, eps, ts, ctx, task.param_names, schedule=task.schedule)
    assert fast.shape == (3, task.n_attributed_parameters) and task.n_attributed_parameters < 30_000
    torch.testing.assert_close(fast, slow, rtol=1e-4, atol=1e-6 * slow.abs().max().item())
    own = GradientComputer(task.model, "square", task.param_names)(z, eps, ts, ctx)  # the project's schedule
    assert (own - fast).norm() > 0.01 * fast.norm()
    store_abar = engine.store._computer(task.model, engine.store.spec("square", ST)).grads.schedule.abar
    torch.testing.assert_close(store_abar, abar)  # the engine's features are taken on the pipeline's schedule


def test_a_training_image_under_its_own_caption_finds_itself_first(engine):
    from explorer import stable_diffusion as sd
    """Its own latent and noise: itself first. Its drawing uploaded (re-encoded by the VAE, fresh noise) under
    its caption: itself or its twin (the same caption, the shape moved 3 px) first — measured 12 / 12; which of
    the two, this tiny random VAE cannot tell (6 / 12). The latents are the VAE's posterior modes of their own
    images, in order, and read back from the cache unchanged."""
    task = engine.task
    lam = 1e-9  # LoRA gradients are small: the unit-scale fallback λ = 1 would swamp the kernel
    firsts = [int(engine.attribute(task.train_query(i), "dtrak", ST, lam).top.proponents[0][0]) for i in range(12)]
    assert sum(f == i for i, f in enumerate(firsts)) >= 11, firsts
    found = []
    for i in range(12):
        x = ((engine.data.train_x[i].permute(1, 2, 0).numpy() + 1) * 127.5).round().astype(np.uint8)
        q = task.upload(Image.fromarray(x), engine.data.meta["caption"][i])
        found.append(int(engine.attribute(q, "dtrak", TimestepStrategy("uniform", 10), lam).top.proponents[0][0]))
    assert sum(f // 2 == i // 2 for i, f in enumerate(found)) >= 11, found
    for i in (0, 7):
        torch.testing.assert_close(task.train_inputs[i], sd.encode_images(task.vae, engine.data.train_x[i:i + 1])[0],
                                   rtol=1e-4, atol=1e-5)
    from explorer.sd_task import StableDiffusionTask
    again = StableDiffusionTask("mysd", root=os.path.dirname(task.paths.base))
    assert torch.equal(again.train_inputs, task.train_inputs)


def test_a_prompt_is_drawn_in_latent_space_decoded_and_credited(engine):
    from explorer.compare import credit
    task = engine.task
    q = task.prompt("a blue circle, by bob", seed=2, steps=4)
    assert q.x.shape == (4, 8, 8) and q.image.shape == (3, 16, 16) and q.image.abs().max() <= 1
    res = engine.attribute(q, "dtrak", ST)
    assert res.scores.shape == (12,) and np.isfinite(res.scores).all()
    ids, names = engine.data.train_styles
    assert names == ["alice", "bob"] and abs(credit(res.scores, ids, 2).sum() - 1) < 1e-6
    up = task.upload(_drawing("red", "square"), "a red square, by alice")
    assert up.x.shape == (4, 8, 8) and up.caption == "a red square, by alice"
    pix = engine.attribute(up, "pixel-cos", ST)  # pixel similarity compares the drawings themselves
    assert engine.data.meta["caption"][int(engine.data.train_idx[pix.top.proponents[0][0]])].startswith("a red square")


@pytest.mark.parametrize("broken, message", [
    ("v", "prediction_type='v_prediction'"),
    ("caption", "has no caption"),
    ("lora", "do not fit this UNet"),
    ("text-encoder lora", "also adapts text_encoder"),
])
def test_what_adopt_refuses_is_named(adopted, tmp_path, broken, message):
    tmp, env, _ = adopted
    pipe, data, lora_dir = str(tmp / "pipe-epsilon"), str(tmp / "drawings"), str(tmp / "lora")
    if broken == "v":
        pipe = _pipeline(tmp_path, "v_prediction")
    if broken == "caption":
        rows = open(os.path.join(data, "metadata.jsonl")).read().splitlines()
        bad = tmp_path / "drawings"
        shutil.copytree(data, bad)
        (bad / "metadata.jsonl").write_text("\n".join(rows[:-1] + [json.dumps({"file_name": "bob/blue_circle_1.png"})]))
        data = str(bad)
    if broken == "lora":  # adapters of another UNet (other widths)
        from diffusers import UNet2DConditionModel
        from explorer import lora
        other = UNet2DConditionModel(sample_size=8, in_channels=4, out_channels=4, block_out_channels=(8, 16),
                                     down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                                     up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), layers_per_block=1,
                                     norm_num_groups=4, cross_attention_dim=16, attention_head_dim=2)
        lora.add_lora(other, lora.LoRAConfig(rank=4, alpha=4))
        lora_dir = str(tmp_path / "other-lora")
        lora.save_lora(other, lora_dir)
    if broken == "text-encoder lora":  # the UNet adapters plus one text-encoder adapter
        from safetensors.torch import load_file, save_file
        state = load_file(os.path.join(lora_dir, "pytorch_lora_weights.safetensors"))
        state["text_encoder.text_model.encoder.layers.0.self_attn.q_proj.lora_A.weight"] = torch.zeros(4, 16)
        os.makedirs(tmp_path / "te-lora")
        save_file(state, str(tmp_path / "te-lora" / "pytorch_lora_weights.safetensors"))
        lora_dir = str(tmp_path / "te-lora")
    r = _precompute(env, "adopt", "--dataset", "bad", "--pipeline", pipe, "--lora", lora_dir, "--data", data)
    assert r.returncode == 2 and message in r.stderr and "Traceback" not in r.stderr, r.stderr[-2000:]
    assert not os.path.exists(tmp / "assets" / "bad")  # nothing half-written


def test_the_page_answers_a_prompt_with_captions_contributors_and_credit(adopted, monkeypatch):
    from explorer import ui
    from explorer.ui import session
    tmp, _, _ = adopted
    monkeypatch.setattr(session, "ROOT", str(tmp / "assets"))
    monkeypatch.setattr(session, "BUILD_IN_WORKER", False)
    assert "mysd" in ui.available_datasets() and session.first_source("mysd") == "prompt"
    ui.engine("mysd").build("dtrak", TimestepStrategy("uniform", 10))
    out = ui.friendly(ui.ATTR_OUTPUTS, cleared=ui.no_answer)(ui.attribute)(
        "mysd", "prompt", 4, 5, 0, None, False, "dtrak", "uniform", 10, "exact", None, 8, "a green square, by alice")
    assert out[0]["visible"] is False and "a green square, by alice" in out[2], out[0]
    meta, idx = ui.engine("mysd").data.meta, ui.engine("mysd").data.train_idx
    for (_, caption), i in zip(out[3]["value"], out[7]["pro"]):
        assert caption.split("\n")[2] == meta["author"][int(idx[i])]
    assert list(out[6].data[0].y) == ["alice", "bob"] and "most credited" in out[6].layout.title.text
    assert str(tmp) not in out[2]


def test_the_command_line_attributes_a_batch_of_prompts(adopted, tmp_path):
    tmp, env, _ = adopted
    (tmp_path / "prompts.txt").write_text("a red circle, by alice\n\na blue square, by bob\n")
    r = run_cli("explorer", env, "attribute", "--dataset", "mysd", "--prompts", str(tmp_path / "prompts.txt"), "--S",
                "2", "--steps", "4", "--top", "3", "--out", str(tmp_path / "out.json"))
    assert r.returncode == 0, r.stderr[-2000:]
    out = json.load(open(tmp_path / "out.json"))
    assert [x["prompt"] for x in out["results"]] == ["a red circle, by alice", "a blue square, by bob"]
    first = out["results"][0]
    assert len(first["proponents"]) == 3 and first["proponents"][0]["caption"].startswith("a ")
    assert first["proponents"][0]["contributor"] in ("alice", "bob")
    assert set(first["credit"]) == {"alice", "bob"} and abs(sum(first["credit"].values()) - 1) < 1e-6
