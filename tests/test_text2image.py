"""The text-to-image model of the emoji setting on a tiny config: tokenizer, resumable training, guided
DDIM sampling and the pipeline folder round trip."""
import os

import torch

from explorer import text2image as t2i

CAPTIONS = ["red apple", "green apple, twemoji", "hot dog", "t-rex, openmoji", "dog face"]
TINY = t2i.TextToImageConfig(sample_size=8, block_out_channels=(8, 16, 16), norm_num_groups=4, attention_head_dim=2,
                             text_hidden=16, text_layers=1, text_heads=2, max_length=8, addition_embed_type="text")


def _setup(seed=0):
    tok = t2i.build_tokenizer(CAPTIONS, TINY.max_length)
    unet, te = t2i.make_text_to_image(TINY, tok, seed=seed)
    x = torch.rand(len(CAPTIONS), 3, 8, 8, generator=torch.Generator().manual_seed(1)) * 2 - 1
    return tok, unet, te, x, t2i.tokenize(tok, CAPTIONS), t2i.tokenize(tok, [""])[0]


def test_tokenizer_is_the_captions_vocabulary_and_names_unknown_words():
    tok = t2i.build_tokenizer(CAPTIONS, 8)
    assert len(tok) == 4 + len({"red", "apple", "green", "twemoji", "hot", "dog", "t-rex", "openmoji", "face"})
    ids = t2i.tokenize(tok, ["Red APPLE!", "a purple t-rex"])
    assert ids.shape == (2, 8) and ids[0, 0] == tok.bos_token_id and ids[0, 3] == tok.eos_token_id
    assert ids[1, 1] == ids[1, 2] == tok.unk_token_id and ids[1, 3] == tok.convert_tokens_to_ids("t-rex")
    assert t2i.unknown_words(tok, "A purple T-Rex, openmoji") == ["a", "purple"]


def test_a_style_choice_rewrites_the_prompt_in_the_captions_form():
    styles = ["openmoji", "twemoji"]
    assert t2i.with_style("red apple", "twemoji", styles) == "red apple, twemoji"
    assert t2i.with_style("red apple, twemoji", "openmoji", styles) == "red apple, openmoji"
    assert t2i.with_style(" red apple ,Twemoji, ", "", styles) == "red apple"
    assert t2i.with_style("apple, red, openmoji", "twemoji", styles) == "apple, red, twemoji"


def test_training_resumes_to_the_same_weights_and_touches_only_its_parameters(tmp_path):
    cfg = t2i.T2ITrainConfig(epochs=4, batch_size=2, lr=1e-3, ema_decay=0.9)
    tok, unet, te, x, ids, empty = _setup()
    text_before = {k: v.clone() for k, v in te.state_dict().items()}
    whole = t2i.train_text_to_image(unet, te, x, ids, empty, cfg, list(unet.parameters()), check_every=2,
                                    check=lambda e: {"mean": unet.conv_in.weight.mean().item(), "train": unet.training})
    assert [c["epoch"] for c in whole.checks] == [2, 4] and not any(c["train"] for c in whole.checks)
    assert whole.checks[-1]["mean"] == unet.conv_in.weight.mean().item()  # the averaged weights are returned
    assert all(torch.equal(v, te.state_dict()[k]) for k, v in text_before.items())  # only the given params move
    _, unet2, te2, *_ = _setup()
    state = str(tmp_path / "state.pt")
    # interrupt after epoch 3 (the state holds epoch 2), then resume in fresh objects
    try:
        t2i.train_text_to_image(unet2, te2, x, ids, empty, cfg, list(unet2.parameters()), state_file=state,
                                state_every=2, check=_stop_at(3), check_every=1)
    except KeyboardInterrupt:
        pass
    _, unet3, te3, *_ = _setup()
    resumed = t2i.train_text_to_image(unet3, te3, x, ids, empty, cfg, list(unet3.parameters()), state_file=state,
                                      state_every=2)
    assert resumed.losses == whole.losses and resumed.seconds > 0 and len(resumed.checks) == 2
    for (k, a), b in zip(unet.state_dict().items(), unet3.state_dict().values()):
        assert torch.equal(a, b), k


def _stop_at(epoch):
    def f(e):
        if e == epoch:
            raise KeyboardInterrupt
        return {}
    return f


def test_sampling_is_seeded_guided_and_survives_the_pipeline_folder(tmp_path):
    tok, unet, te, *_ = _setup()
    a = t2i.sample(unet, te, tok, ["red apple", "hot dog"], [0, 1], steps=5)
    assert a.shape == (2, 3, 8, 8) and a.abs().max() <= 1
    assert torch.equal(a, t2i.sample(unet, te, tok, ["red apple", "hot dog"], [0, 1], steps=5))
    unguided = t2i.sample(unet, te, tok, ["red apple", "hot dog"], [0, 1], steps=5, guidance=1.0)
    assert not torch.allclose(a, unguided)
    t2i.save_pipeline(unet, te, tok, str(tmp_path / "pipe"))
    unet2, te2, tok2 = t2i.load_pipeline(str(tmp_path / "pipe"))
    assert tok2.get_vocab() == tok.get_vocab()
    torch.testing.assert_close(t2i.sample(unet2, te2, tok2, ["red apple", "hot dog"], [0, 1], steps=5), a)
    # stored at half size (the shipped base): the model in memory is rounded alike and reads back in float32
    t2i.save_pipeline(unet, te, tok, str(tmp_path / "half"), unet_dtype=torch.float16)
    assert os.path.getsize(tmp_path / "half" / "unet" / "diffusion_pytorch_model.safetensors") < 0.6 * os.path.getsize(
        tmp_path / "pipe" / "unet" / "diffusion_pytorch_model.safetensors")
    unet3, _, _ = t2i.load_pipeline(str(tmp_path / "half"))
    assert next(unet.parameters()).dtype == next(unet3.parameters()).dtype == torch.float32
    for (k, p), q in zip(unet.state_dict().items(), unet3.state_dict().values()):
        assert torch.equal(p, q), k
    assert not all(torch.equal(p, q) for p, q in zip(unet.state_dict().values(), unet2.state_dict().values()))


def test_a_missing_pipeline_names_the_command(tmp_path):
    import pytest
    from explorer.models import CheckpointError
    with pytest.raises(CheckpointError, match="precompute base --dataset emoji"):
        t2i.load_pipeline(str(tmp_path))


def test_lora_starts_as_the_base_trains_alone_and_round_trips_in_the_diffusers_format(tmp_path):
    import pytest

    from explorer import lora
    from explorer.models import CheckpointError
    tok, unet, te, x, ids, empty = _setup()
    before = t2i.sample(unet, te, tok, ["red apple"], [0], steps=4)
    base = {k: v.clone() for k, v in unet.state_dict().items()}
    params = lora.add_lora(unet, lora.LoRAConfig(rank=2, alpha=2))
    assert len(params) == 4 * 2 * 2 * 4  # 4 projections × (A, B) × (self, cross) × 4 transformer blocks
    torch.testing.assert_close(t2i.sample(unet, te, tok, ["red apple"], [0], steps=4), before)  # B = 0
    t2i.train_text_to_image(unet, te, x, ids, empty, t2i.T2ITrainConfig(epochs=2, batch_size=2, lr=1e-2), params)
    after = unet.state_dict()
    assert all(torch.equal(v, after[k]) for k, v in base.items() if k in after)  # base weights untouched
    assert not torch.allclose(t2i.sample(unet, te, tok, ["red apple"], [0], steps=4), before)
    lora.save_lora(unet, str(tmp_path / "lora"))
    _, fresh, *_ = _setup()
    lora.load_lora(fresh, str(tmp_path / "lora"), lora.LoRAConfig(rank=2, alpha=2))
    torch.testing.assert_close(t2i.sample(fresh, te, tok, ["red apple"], [0], steps=4),
                               t2i.sample(unet, te, tok, ["red apple"], [0], steps=4))
    _, other, *_ = _setup()
    with pytest.raises(CheckpointError, match="do not fit this UNet with rank 4"):
        lora.load_lora(other, str(tmp_path / "lora"), lora.LoRAConfig(rank=4, alpha=4))
    with pytest.raises(CheckpointError, match="precompute lora"):
        lora.load_lora(other, str(tmp_path), lora.LoRAConfig())


def test_per_sample_lora_gradients_equal_a_loop_of_single_backward_passes():
    """Attribution of the LoRA setting: gradients with respect to the adapters only, each sample under its own
    caption, batched by vmap — against one backward pass per sample; and CountSketch features of them."""
    from explorer import lora
    from explorer.attribution.features import FeatureComputer, FeatureSpec
    from explorer.attribution.gradients import GradientComputer, loop_gradients
    from explorer.attribution.timesteps import TimestepStrategy, seeded_noise
    tok, unet, te, x, ids, empty = _setup()
    lora.add_lora(unet, lora.LoRAConfig(rank=2, alpha=2))
    with torch.no_grad():  # B = 0 at the start: move it so every adapter has a gradient through it
        for n, p in unet.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.1, generator=torch.Generator().manual_seed(len(n)))
        ctx = t2i.encode(te, ids)
    names = lora.lora_names(unet)
    ts = torch.tensor([10, 500, 990])
    eps = seeded_noise(list(range(len(x))), ts.tolist(), (3, 8, 8), 0)
    for output_fn in ("square", "simple"):
        fast = GradientComputer(unet, output_fn, names)(x, eps, ts, ctx)
        slow = loop_gradients(unet, output_fn, x, eps, ts, ctx, names)
        assert fast.shape == (len(x), sum(p.numel() for n, p in unet.named_parameters() if n in names))
        torch.testing.assert_close(fast, slow, rtol=1e-4, atol=1e-6)
    # the caption matters: another context gives other gradients
    other = GradientComputer(unet, "square", names)(x, eps, ts, ctx.roll(1, 0))
    assert not torch.allclose(other, fast)
    spec = FeatureSpec("simple", TimestepStrategy("list", 3, 0, (10, 500, 990)), "exact", 0, 0)
    phi = FeatureComputer(unet, spec, param_names=names)(x, list(range(len(x))), ctx)
    np_slow = slow.numpy()
    assert abs(phi - np_slow).max() < 1e-4 * abs(np_slow).max()
