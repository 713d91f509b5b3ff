import pytest
import torch
from torch.func import functional_call, grad, vmap

from conftest import tiny_unet_config as _cfg
from explorer.models import CheckpointError, UNET_CONFIGS, ddim_sample, load_model, make_unet, save_model
from explorer.training import TrainConfig, train


def test_forward_shapes_for_shipped_configs():
    for name, res, ch in (("digits", 8, 1), ("shapes", 16, 3)):
        m = make_unet(UNET_CONFIGS[name])
        out = m(torch.zeros(2, ch, res, res), torch.tensor([0, 999])).sample
        assert out.shape == (2, ch, res, res)


def test_attention_is_vmappable_and_matches_a_loop():
    """Per-sample gradients with vmap on the real digits UNet equal a Python loop to 1e-5."""
    from diffusers.models.attention_processor import Attention, AttnProcessor
    m = make_unet(UNET_CONFIGS["digits"])
    attns = [mod for mod in m.modules() if isinstance(mod, Attention)]
    assert attns and all(type(a.processor) is AttnProcessor for a in attns)
    params = {k: v.detach() for k, v in m.named_parameters()}
    x, t = torch.randn(3, 1, 8, 8), torch.tensor([5, 500, 900])

    def loss(p, xi, ti):
        return functional_call(m, p, (xi[None], ti[None])).sample.pow(2).mean()
    g = vmap(grad(loss), in_dims=(None, 0, 0))(params, x, t)
    for i in range(3):
        m.zero_grad()
        m(x[i:i + 1], t[i:i + 1]).sample.pow(2).mean().backward()
        for k, p in m.named_parameters():
            assert torch.allclose(g[k][i], p.grad, atol=1e-5), k


def test_short_training_lowers_loss_and_is_deterministic():
    from explorer.datasets import load_digits
    x = load_digits().train_x[:256]
    cfg = TrainConfig(epochs=6, batch_size=64, n_checkpoints=2)
    seen = []
    m1 = make_unet(_cfg(), seed=0)
    losses = train(m1, x, cfg, on_checkpoint=lambda e, m: seen.append(e))
    assert losses[-1] < losses[0] * 0.8
    assert seen == [3, 6]
    m2 = make_unet(_cfg(), seed=0)
    train(m2, x, cfg)
    for (k, a), (_, b) in zip(m1.state_dict().items(), m2.state_dict().items()):
        assert torch.equal(a, b), k


def test_an_interrupted_training_run_resumes_to_the_same_weights(tmp_path):
    """Stop after the state written at epoch 2 of 4 (the interruption), resume from the state file:
    same weights and losses as one uninterrupted run."""
    from explorer.datasets import load_digits
    x = load_digits().train_x[:128]
    cfg, state = TrainConfig(epochs=4, batch_size=64, n_checkpoints=0), str(tmp_path / "state.pt")
    whole = make_unet(_cfg(), seed=0)
    ref = train(whole, x, cfg)

    class Interrupt(Exception):
        pass

    def stop_at_3(epoch, m):
        if epoch == 3:
            raise Interrupt
    with pytest.raises(Interrupt):  # killed during epoch 3, after epoch 2's state was written
        train(make_unet(_cfg(), seed=0), x, TrainConfig(**{**cfg.__dict__, "n_checkpoints": 4}), state_file=state,
              state_every=2, on_checkpoint=stop_at_3)
    assert torch.load(state, weights_only=False)["losses"] == pytest.approx(ref[:2], rel=1e-6)
    resumed = make_unet(_cfg(), seed=1)  # other initial weights: all of them must come from the state
    losses = train(resumed, x, cfg, state_file=state, state_every=2)
    assert losses == pytest.approx(ref, rel=1e-6)
    for (k, a), b in zip(whole.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), k


def test_batched_ensemble_training_matches_one_at_a_time():
    """Two models trained as one vmapped ensemble equal the same two trained separately."""
    from explorer.batched_train import train_batched
    from explorer.datasets import load_digits
    x = load_digits().train_x
    xs, cfg = [x[:96], x[96:192]], TrainConfig(epochs=2, batch_size=32, n_checkpoints=0)
    alone = [make_unet(_cfg(), seed=0) for _ in xs]
    ref = [train(m, xi, TrainConfig(**{**cfg.__dict__, "seed": s})) for s, (m, xi) in enumerate(zip(alone, xs))]
    together = [make_unet(_cfg(), seed=0) for _ in xs]
    losses = train_batched(together, xs, cfg, seeds=[0, 1])
    assert abs(losses[1][-1] - ref[1][-1]) < 1e-4 and abs(losses[0][-1] - losses[1][-1]) > 1e-3
    for a, b in zip(alone, together):
        for (k, p), q in zip(a.named_parameters(), b.parameters()):
            assert torch.allclose(p, q, atol=1e-4), k
    with pytest.raises(ValueError, match="equally sized"):
        train_batched(together, [x[:96], x[:64]], cfg, seeds=[0, 1])


def test_ddim_same_seed_same_image_and_save_load_roundtrip(tmp_path, tiny_unet):
    a = ddim_sample(tiny_unet, [3, 4], steps=5)
    b = ddim_sample(tiny_unet, [3], steps=5)
    assert torch.equal(ddim_sample(tiny_unet, [3], steps=5), b)  # same seed → identical bytes
    assert torch.allclose(a[:1], b, atol=1e-5) and not torch.allclose(a[0], a[1])  # batch-independent
    save_model(tiny_unet, str(tmp_path / "m"))
    loaded = load_model(str(tmp_path / "m"))
    assert all(torch.equal(v, loaded.state_dict()[k]) for k, v in tiny_unet.state_dict().items())  # same bytes
    # same weights, but freshly allocated tensors may take other SIMD paths: equal to float32 rounding
    assert torch.allclose(ddim_sample(loaded, [3], steps=5), b, atol=1e-5)


def test_bad_checkpoint_gives_clear_error(tmp_path):
    with pytest.raises(CheckpointError, match="precompute train"):
        load_model(str(tmp_path / "missing"))
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="could not be loaded"):
        load_model(str(tmp_path / "bad"))


def test_the_noise_schedule_is_saved_with_the_weights_and_checked_on_load(tmp_path, tiny_unet):
    import json
    save_model(tiny_unet, str(tmp_path / "m"))
    cfg_path = tmp_path / "m" / "scheduler_config.json"
    cfg = json.loads(cfg_path.read_text())
    assert (cfg["num_train_timesteps"], cfg["beta_schedule"], cfg["beta_end"]) == (1000, "linear", 0.02)
    cfg["beta_end"] = 0.012
    cfg_path.write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match=r"noise scheduler .* differs.*'beta_end': 0.012"):
        load_model(str(tmp_path / "m"))
