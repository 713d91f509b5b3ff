"""The latent space of the emoji setting: the VAE trains (resumably, to the same weights), its latents have
unit variance after scaling, and a latent pipeline samples, decodes and survives its folder."""
import torch

from explorer import autoencoder as ae
from explorer import text2image as t2i
from explorer.datasets import emoji

TINY = ae.VAEConfig(block_out_channels=(8, 16, 16), norm_num_groups=4)


def _images(n=48):
    return emoji.load_emoji().train_x[:n]


def test_the_vae_learns_resumes_to_the_same_weights_and_scales_its_latents(tmp_path):
    x = _images()
    cfg = ae.VAETrainConfig(epochs=4, batch_size=16, lr=2e-3)
    fresh = ae.make_vae(TINY, 32)
    before = ae.reconstruction_error(fresh, x)
    vae = ae.make_vae(TINY, 32)
    losses, seconds = ae.train_vae(vae, x, cfg)
    assert seconds > 0 and losses[-1] < losses[0] and ae.reconstruction_error(vae, x) < 0.5 * before
    z = t2i.to_model_space(vae, x)
    assert z.shape == (len(x), 4, 8, 8) and abs(float(z.std()) - 1) < 1e-3  # s = 1 / std of the latents
    # a run interrupted after epoch 2, resumed in a fresh model, ends with the uninterrupted run's weights
    part = str(tmp_path / "part.pt")
    _stopped(ae.make_vae(TINY, 32), x, cfg, part, stop_after=2)
    resumed = ae.make_vae(TINY, 32)
    again, _ = ae.train_vae(resumed, x, cfg, state_file=part)
    assert again == losses
    for (k, a), b in zip(vae.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), k


def _stopped(vae, x, cfg, state, stop_after):
    """Runs ``train_vae`` and interrupts it once ``stop_after`` epochs are in its state file."""
    import os
    real_replace = os.replace

    def replace(src, dst):
        real_replace(src, dst)
        if dst == state and len(torch.load(state, weights_only=False)["losses"]) == stop_after:
            raise KeyboardInterrupt
    os.replace = replace
    try:
        ae.train_vae(vae, x, cfg, state_file=state)
    except KeyboardInterrupt:
        pass
    finally:
        os.replace = real_replace


def test_a_latent_pipeline_samples_unclipped_latents_decodes_them_and_round_trips(tmp_path):
    cfg = t2i.TextToImageConfig(sample_size=8, channels=4, block_out_channels=(8, 16, 16), norm_num_groups=4,
                                attention_head_dim=2, text_hidden=16, text_layers=1, text_heads=2, max_length=8)
    tok = t2i.build_tokenizer(["red apple", "hot dog"], 8)
    unet, te = t2i.make_text_to_image(cfg, tok)
    vae = ae.make_vae(TINY, 32)
    ae.train_vae(vae, _images(16), ae.VAETrainConfig(epochs=1, batch_size=16))
    z = t2i.sample(unet, te, tok, ["red apple"], [0], steps=4, latent=True)
    assert z.shape == (1, 4, 8, 8) and z.abs().max() > 1  # latents are not clipped to [−1, 1]
    img = t2i.to_images(vae, z)
    assert img.shape == (1, 3, 32, 32) and img.abs().max() <= 1
    t2i.save_pipeline(unet, te, tok, str(tmp_path / "pipe"), vae=vae)
    vae2 = t2i.load_vae(str(tmp_path / "pipe"))
    assert vae2.config.scaling_factor == vae.config.scaling_factor
    torch.testing.assert_close(t2i.to_images(vae2, z), img)
    assert t2i.load_vae(str(tmp_path)) is None  # a pixel-space pipeline has none
