"""Stages of the ``emoji`` text-to-image setting (``explorer.datasets.emoji``, ``explorer.text2image``):

- ``data``: the 32×32 arrays from the three npm packages (``npm pack``), into ``assets/emoji/data/``;
- ``vae``: the autoencoder of the latent space (``explorer.autoencoder``), into ``assets/emoji/base/vae/``;
- ``base``: the base text-to-image model pretrained on the Noto drawings' latents, into ``assets/emoji/base/``;
- ``lora``: the LoRA fine-tuned on the Twemoji and OpenMoji training drawings (captions carry the style),
  base frozen, into ``assets/emoji/lora/``.

All three are resumable (the state is saved every few epochs under ``$EXPLORER_STATE``, default
``~/.cache/explorer/state``) and a finished, unchanged recipe is not retrained.

    python -m precompute data --dataset emoji
    python -m precompute vae --dataset emoji
    python -m precompute base --dataset emoji
    python -m precompute lora --dataset emoji
    python -m precompute known --dataset emoji   # eval/known.json: name match, style credit, cross-artist
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from dataclasses import asdict

import numpy as np
import torch

from explorer.attribution import damping
from explorer.attribution.features import UPLOAD_UID
from explorer.attribution.registry import BASELINE_METHOD, DEFAULT_METHOD, PIXEL_METHOD, get_method
from explorer.attribution.timesteps import TimestepStrategy
from explorer.files import read_json, write_json
from explorer.datasets import emoji
from explorer.images import grid
from explorer.paths import AssetPaths
from explorer import autoencoder as ae
from explorer import lora as lora_lib
from explorer import text2image as t2i
from explorer.models import CheckpointError, weights_fingerprint
from explorer.task import Query

STATE = os.environ.get("EXPLORER_STATE", os.path.expanduser("~/.cache/explorer/state"))
# Pixel-space recipes (1.4 M / 3.9 M parameters at 32×32, up to 15,500 steps on 2 cores) never drew a
# recognisable emoji (legibility ≤ 9 %, README). Stable Diffusion's own design does: a small VAE (32×32 → 4×8×8)
# and a UNet that works at 8×8, ~8× cheaper per image at more parameters.
VAE = ae.VAEConfig()
VAE_TRAIN = ae.VAETrainConfig()
BASE = t2i.TextToImageConfig(sample_size=8, channels=4, block_out_channels=(64, 128, 128),
                             down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
                             up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
                             norm_num_groups=16, addition_embed_type="text")
BASE_TRAIN = t2i.T2ITrainConfig(epochs=1000, batch_size=32, lr=1e-3, warmup_fraction=0.02, ema_decay=0.999)
CHECK_EVERY = 100  # epochs between legibility probes of the base (32 prompts, DDIM 50)
CHECK_PROMPTS = 32
# rank 8 on the attention projections alone (86 k parameters, 50 epochs) drew blobs (legibility 0 of 64): the
# LoRA has 492 new drawings to learn. Rank 32 on the attention and the transformer blocks' projections and
# feed-forward layers (750 k parameters), 200 epochs: 50 % (36 % at 125 epochs)
LORA = lora_lib.LoRAConfig(rank=32, alpha=32.0, targets=lora_lib.TARGETS + lora_lib.TRANSFORMER_TARGETS)
LORA_TRAIN = t2i.T2ITrainConfig(epochs=200, batch_size=32, lr=2e-3)
SHOW = ["red apple", "hot dog", "pizza", "banana", "dog face", "cat face", "frog", "octopus",
        "sunflower", "turtle", "birthday cake", "watermelon", "penguin", "lion face", "strawberry", "hamburger"]


def run_data(packages: str | None = None) -> dict:
    """Fetches the packages (kept in ``packages``, default ``~/.cache/explorer-npm``) and writes the arrays."""
    folder = packages or os.environ.get("EXPLORER_NPM_CACHE", os.path.expanduser("~/.cache/explorer-npm"))
    arrays, meta = emoji.build_arrays(emoji.fetch_packages(folder))
    if emoji.missing_arrays() is None:
        old = emoji.read_arrays()
        if old.meta == meta and all(np.array_equal(getattr(old, k), v) for k, v in arrays.items()):
            print(f"emoji: the shipped arrays are these; nothing rewritten ({emoji.DATA_DIR})")
            return meta
    emoji.write_arrays(arrays, meta)
    print(f"emoji: {len(arrays['noto'])} Noto drawings (base), {len(arrays['lora'])} Twemoji + OpenMoji drawings "
          f"(LoRA) in {emoji.DATA_DIR}")
    return meta


def tokenizer_for():
    """One vocabulary for base and LoRA: every word of every caption they train on (names and style words);
    any other word of a prompt is unknown to the model, and the page names it."""
    _, base_caps = emoji.base_captions()
    return t2i.build_tokenizer(base_caps + emoji.load_emoji().meta["caption"], BASE.max_length)


def _recipe(x: torch.Tensor, captions: list[str], *cfgs) -> str:
    h = hashlib.sha256(x.numpy().tobytes())
    h.update(json.dumps([captions] + [asdict(c) for c in cfgs], sort_keys=True).encode())
    return h.hexdigest()[:16]


def vae_images() -> torch.Tensor:
    """What the autoencoder learns to reconstruct: every Noto drawing and the LoRA's training drawings (its
    held-out drawings stay unseen by every part of the pipeline, as the LDS validation queries must)."""
    a, ds = emoji.read_arrays(), emoji.load_emoji()
    return torch.cat([emoji.to_tensor(a.noto), ds.train_x])


def run_vae() -> dict:
    """Trains the VAE into ``assets/emoji/base/vae/``; ``train.json``'s ``vae`` entry records the recipe, the
    losses, the reconstruction error of the LoRA's training and held-out drawings and the wall time."""
    paths = AssetPaths("emoji")
    folder = os.path.join(paths.base, "base", "vae")
    x = vae_images()
    recipe = _recipe(x, [], VAE, VAE_TRAIN)
    info = read_json(paths.info) if os.path.exists(paths.info) else {}
    if info.get("vae", {}).get("recipe_sha") == recipe and os.path.isdir(folder):
        print(f"emoji VAE: already trained with this recipe ({folder}); nothing rewritten")
        return info["vae"]
    vae = ae.make_vae(VAE, emoji.SIZE, seed=VAE_TRAIN.seed)
    os.makedirs(STATE, exist_ok=True)
    state = os.path.join(STATE, f"emoji_vae_{recipe}.pt")
    losses, seconds = ae.train_vae(vae, x, VAE_TRAIN, state_file=state, progress=True)
    tmp = folder + ".tmp"
    vae.save_pretrained(tmp, safe_serialization=True)
    shutil.rmtree(folder, ignore_errors=True)
    os.replace(tmp, folder)
    ds = emoji.load_emoji()
    entry = {"recipe_sha": recipe, "model": asdict(VAE), "train": asdict(VAE_TRAIN), "n_images": len(x),
             "n_parameters": sum(p.numel() for p in vae.parameters()), "losses": losses, "train_seconds": seconds,
             "scaling_factor": vae.config.scaling_factor, "threads": torch.get_num_threads(),
             "reconstruction_mse": {"noto": ae.reconstruction_error(vae, emoji.to_tensor(emoji.read_arrays().noto)),
                                    "lora_train": ae.reconstruction_error(vae, ds.train_x),
                                    "lora_held_out": ae.reconstruction_error(vae, ds.val_x)}}
    write_json(paths.info, {**info, "dataset": "emoji", "vae": entry})
    if os.path.exists(state):
        os.remove(state)
    print(f"emoji VAE: reconstruction MSE {entry['reconstruction_mse']} after {seconds / 60:.0f} min")
    return entry


def load_vae(paths: AssetPaths):
    vae = t2i.load_vae(os.path.join(paths.base, "base"))
    if vae is None:
        raise CheckpointError("the emoji autoencoder is not trained: python -m precompute vae --dataset emoji")
    return vae


def run_base(threads: int | None = None) -> dict:
    """Pretrains the base model on the latents of the Noto drawings of the LoRA's concepts; ``train.json``'s ``base`` entry records the recipe,
    the losses and the wall time, and a 16-prompt sample grid is saved beside it."""
    if threads:
        torch.set_num_threads(threads)
    paths = AssetPaths("emoji")
    folder = os.path.join(paths.base, "base")
    images, captions = emoji.base_captions()
    vae = load_vae(paths)
    x = t2i.to_model_space(vae, images)
    recipe = _recipe(x, captions, BASE, BASE_TRAIN)
    info = read_json(paths.info) if os.path.exists(paths.info) else {}
    if info.get("base", {}).get("recipe_sha") == recipe and os.path.isdir(folder):
        print(f"emoji base: already trained with this recipe ({folder}); nothing rewritten")
        return info["base"]
    tokenizer = tokenizer_for()
    unet, text_encoder = t2i.make_text_to_image(BASE, tokenizer, seed=BASE_TRAIN.seed)
    ids, empty = t2i.tokenize(tokenizer, captions), t2i.tokenize(tokenizer, [""])[0]
    os.makedirs(STATE, exist_ok=True)
    state = os.path.join(STATE, f"emoji_base_{recipe}.pt")
    if os.path.exists(state):
        print(f"emoji base: resuming the interrupted run ({state})")
    params = list(unet.parameters()) + list(text_encoder.parameters())
    log = t2i.train_text_to_image(unet, text_encoder, x, ids, empty, BASE_TRAIN, params, state_file=state,
                                  progress=True, check_every=CHECK_EVERY,
                                  check=legibility_probe(unet, text_encoder, tokenizer, vae, images, captions,
                                                         state.replace(".pt", "")))
    losses, seconds = log.losses, log.seconds
    t2i.save_pipeline(unet, text_encoder, tokenizer, folder, unet_dtype=torch.float16, vae=vae)
    t1 = time.time()
    samples = t2i.to_images(vae, t2i.sample(unet, text_encoder, tokenizer, SHOW, list(range(len(SHOW))), latent=True))
    sample_s = (time.time() - t1) / len(SHOW)
    grid(samples, ncol=8, scale=2).save(os.path.join(paths.base, "base_samples.png"))
    base = {"recipe_sha": recipe, "model": asdict(BASE), "train": asdict(BASE_TRAIN), "n_images": len(x),
            "n_unet_parameters": sum(p.numel() for p in unet.parameters()),
            "n_text_parameters": sum(p.numel() for p in text_encoder.parameters()), "vocabulary": len(tokenizer),
            "losses": losses, "final_loss": losses[-1], "train_seconds": seconds,
            "train_images_per_second": BASE_TRAIN.epochs * len(x) / seconds, "threads": torch.get_num_threads(),
            "ddim50_guided_seconds_per_image": sample_s, "sample_prompts": SHOW, "legibility": log.checks}
    write_json(paths.info, {**info, "dataset": "emoji", "base": base})
    if os.path.exists(state):
        os.remove(state)
    print(f"emoji base: loss {losses[-1]:.4f} after {BASE_TRAIN.epochs} epochs, {seconds / 60:.0f} min")
    return base


def legibility_probe(unet, text_encoder, tokenizer, vae, x: torch.Tensor, captions: list[str],
                     prefix: str | None = None, n: int = CHECK_PROMPTS):
    """A ``check`` for training: ``n`` training captions spread over the set, one seed each, DDIM 50 with
    guidance, decoded by ``vae``; returns the legibility (the share whose nearest training drawing ``x`` in
    pixels is the prompted one) and the mean nearest distance, and saves the sample grid as
    ``prefix_e{epoch}.png``."""
    from explorer.compare import legibility, nearest
    pick = np.linspace(0, len(captions) - 1, n).round().astype(int)

    def check(epoch: int) -> dict:
        out = t2i.to_images(vae, t2i.sample(unet, text_encoder, tokenizer, [captions[i] for i in pick],
                                            pick.tolist(), latent=vae is not None))
        if prefix:
            grid(out, ncol=8, scale=2).save(f"{prefix}_e{epoch}.png")
        row = {"legibility": legibility(out.numpy(), x.numpy(), pick),
               "nearest_distance": float(nearest(out.numpy(), x.numpy())[1].mean())}
        print(f"epoch {epoch}: legibility {row['legibility']:.0%}, nearest distance {row['nearest_distance']:.3f}",
              flush=True)
        return row
    return check


def _train_lora(train_positions, cfg: t2i.T2ITrainConfig, state_name: str | None, progress: bool = True,
                paths: AssetPaths | None = None, lora: lora_lib.LoRAConfig = LORA):
    """A LoRA on the base model (under ``paths``, default the shipped ``emoji``), trained on the emoji training
    images at ``train_positions`` (positions in the training split); ``state_name``: a file under ``STATE`` (or a
    path) that makes the run resumable. Returns (unet with the adapters, text encoder, tokenizer, training log); a
    latent pipeline trains on the drawings' latents (its VAE fixed)."""
    paths = paths or AssetPaths("emoji")
    unet, text_encoder, tokenizer = t2i.load_pipeline(os.path.join(paths.base, "base"))
    vae = t2i.load_vae(os.path.join(paths.base, "base"))
    text_encoder.requires_grad_(False)
    params = lora_lib.add_lora(unet, lora, seed=cfg.seed)
    ds = emoji.load_emoji()
    pos = torch.as_tensor(train_positions)
    captions = [ds.meta["caption"][int(ds.train_idx[int(p)])] for p in pos]
    ids, empty = t2i.tokenize(tokenizer, captions), t2i.tokenize(tokenizer, [""])[0]
    state = os.path.join(STATE, state_name) if state_name else None
    if state:
        os.makedirs(STATE, exist_ok=True)
    x = t2i.to_model_space(vae, ds.train_x[pos])
    log = t2i.train_text_to_image(unet, text_encoder, x, ids, empty, cfg, params, state_file=state,
                                  progress=progress)
    if state and os.path.exists(state):
        os.remove(state)
    return unet, text_encoder, tokenizer, log


LORA_CHECK_PROMPTS = 64  # training captions ("red apple, twemoji") whose image should be nearest that drawing
LORA_SHOW = [f"{n}, {s}" for n in ("red apple", "dog face", "pizza", "frog", "octopus", "sunflower", "hamburger",
                                   "penguin") for s in emoji.LORA_STYLES]


def run_lora() -> dict:
    """The LoRA on the whole training split; ``train.json``'s ``lora`` entry and a sample grid beside it."""
    paths = AssetPaths("emoji")
    folder = os.path.join(paths.base, "lora")
    ds = emoji.load_emoji()
    base_unet, _, _ = t2i.load_pipeline(os.path.join(paths.base, "base"))
    recipe = _recipe(ds.train_x, [ds.meta["caption"][int(i)] for i in ds.train_idx], LORA, LORA_TRAIN)
    recipe = hashlib.sha256((recipe + weights_fingerprint(base_unet)).encode()).hexdigest()[:16]
    info = read_json(paths.info)
    if info.get("lora", {}).get("recipe_sha") == recipe and os.path.isdir(folder):
        print(f"emoji LoRA: already trained with this recipe ({folder}); nothing rewritten")
        return info["lora"]
    unet, text_encoder, tokenizer, log = _train_lora(range(len(ds.train_idx)), LORA_TRAIN, f"emoji_lora_{recipe}.pt")
    lora_lib.save_lora(unet, folder)
    vae = t2i.load_vae(os.path.join(paths.base, "base"))
    samples = t2i.to_images(vae, t2i.sample(unet, text_encoder, tokenizer, LORA_SHOW, list(range(len(LORA_SHOW))),
                                            latent=vae is not None))
    grid(samples, ncol=8, scale=2).save(os.path.join(paths.base, "lora_samples.png"))
    captions = [ds.meta["caption"][int(i)] for i in ds.train_idx]
    legible = legibility_probe(unet, text_encoder, tokenizer, vae, ds.train_x, captions, n=LORA_CHECK_PROMPTS)(
        LORA_TRAIN.epochs)
    entry = {"recipe_sha": recipe, "legibility": legible, "legibility_prompts": LORA_CHECK_PROMPTS, "lora": asdict(LORA), "train": asdict(LORA_TRAIN), "n_images": len(ds.train_idx),
             "n_lora_parameters": sum(p.numel() for n, p in unet.named_parameters() if "lora_" in n),
             "losses": log.losses, "final_loss": log.losses[-1], "train_seconds": log.seconds,
             "train_images_per_second": LORA_TRAIN.epochs * len(ds.train_idx) / log.seconds,
             "threads": torch.get_num_threads(), "sample_prompts": LORA_SHOW}
    write_json(paths.info, {**read_json(paths.info), "lora": entry})
    print(f"emoji LoRA: loss {log.losses[-1]:.4f} after {LORA_TRAIN.epochs} epochs, {log.seconds / 60:.1f} min")
    return entry


KNOWN_METHODS = (DEFAULT_METHOD, BASELINE_METHOD, PIXEL_METHOD)  # what the LoRA task answers today
KNOWN_S = 10


def known_lambda(engine, method: str, strategy) -> float:
    """Before LDS tunes it: λ scaled to the LoRA gradients' own size (``explorer.attribution.damping``)."""
    return damping.scaled(engine.store.gradients(engine.task.paths.model, get_method(method).output_fn,
                                                 strategy).norms())


def run_known(n_prompts: int | None = None, steps: int = 50, dataset: str = "emoji", root: str | None = None,
              cache_dir: str | None = None, n_uploads: int | None = None, S: int = KNOWN_S) -> dict:
    """Known answers nobody planted, for the LoRA (``eval/known.json``):

    (a) name match — each training drawing's own caption ("red apple, twemoji") as a prompt; the answer is
        that drawing: the share of prompts whose answer is ranked first / in the top 5;
    (b) style credit — for prompts in style A, the share of positive attribution (and of the top 10) that
        goes to A's drawings, against A's share of the training set;
    (c) cross-artist — each LoRA concept's Noto drawing (which the LoRA never saw) as an upload, under the
        concept's name and under no caption, finds the concept (either style) first / in the top 5
        (``cross_artist``);
    (d) unseen pairing — prompts that are not training captions: a concept in the style whose drawing was held
        out, answered by the concept's one training drawing, in the other style (``unseen_pairing``).
    Baselines: raw-pixel cosine of the generated image, and caption word overlap with the prompt."""
    from explorer.compare import caption_match, credit, group_shares, target_ranks
    from explorer.engine import Engine
    engine = Engine(dataset, root=root, cache_dir=cache_dir)
    task, ds = engine.task, engine.task.data
    st = TimestepStrategy("uniform", S)
    train_caps = [ds.meta["caption"][int(i)] for i in ds.train_idx]
    pick = np.linspace(0, len(train_caps) - 1, n_prompts or len(train_caps)).round().astype(int)
    prompts = [train_caps[i] for i in pick]
    styles = np.array([emoji.LORA_STYLES.index(ds.meta["style"][int(i)]) for i in ds.train_idx])
    queries = [task.prompt(p, seed=int(j), steps=steps) for j, p in zip(pick, prompts)]
    scores = {}
    for m in KNOWN_METHODS:
        lam = known_lambda(engine, m, st) if get_method(m).needs.lam else None
        scores[m] = engine.scores(queries, m, st, lam)
    scores["caption match"] = caption_match(prompts, train_caps, t2i.words)
    out = {"prompts": len(prompts), "prompt_list": prompts, "prompt_positions": pick.tolist(), "steps": steps, "S": S, "lambda_scale": damping.SCALED_LAMBDA,
           "style_share_of_training": dict(zip(emoji.LORA_STYLES, group_shares(styles, 2).tolist())), "methods": {}}
    for m, s in scores.items():
        ranks = target_ranks(s, pick)
        style_credit = {st_name: float(np.mean([credit(s[q], styles, 2)[si] for q in range(len(pick))
                                                 if styles[pick[q]] == si]))
                        for si, st_name in enumerate(emoji.LORA_STYLES)}
        style_top10 = {st_name: float(np.mean([credit(s[q], styles, 2, k=10)[si] for q in range(len(pick))
                                                if styles[pick[q]] == si]))
                       for si, st_name in enumerate(emoji.LORA_STYLES)}
        row = {"name_top1": float(np.mean(ranks == 0)), "name_top5": float(np.mean(ranks < 5)),
               "name_rank": ranks.tolist(), "style_credit": style_credit, "style_top10": style_top10}
        out["methods"][m] = row
        print(f"{m}: name match top-1 {row['name_top1']:.1%} top-5 {row['name_top5']:.1%}; style credit {style_credit}")
    for m, row in cross_artist(engine, st, n_uploads).items():
        out["methods"][m].update(row)
    out["unseen_pairing"] = unseen_pairing(engine, st, steps, n_prompts)
    out["lesson"] = credit_example(engine, st)
    engine.results.save_known(out)
    return out


LESSON_PROMPT = ("hamburger, twemoji", 0)  # the lesson's credit step: this prompt, from this seed


def credit_example(engine, st: TimestepStrategy, prompt: tuple[str, int] = LESSON_PROMPT, k: int = 8) -> dict:
    """One prompt's answer stored for the lesson (which reads shipped results only): the generated image (uint8),
    D-TRAK's top ``k`` proponents and the positive attribution's split by artist team and by designer."""
    from explorer.compare import credit, group_shares
    text, seed = prompt
    q = engine.task.prompt(text, seed=seed)
    s = engine.scores([q], DEFAULT_METHOD, st, known_lambda(engine, DEFAULT_METHOD, st))[0]
    ds = engine.data
    ids, names = ds.train_styles
    authors = np.array(ds.meta["author"])[ds.train_idx]
    people = sorted(set(authors))
    by_person = credit(s, np.array([people.index(a) for a in authors]), len(people))
    top = np.argsort(-s, kind="stable")[:k]
    image = ((q.shown.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return {"prompt": text, "seed": seed, "method": DEFAULT_METHOD, "S": st.S, "image": image.tolist(),
            "top": top.tolist(), "top_scores": s[top].tolist(), "styles": names,
            "credit": credit(s, ids, len(names)).tolist(), "share": group_shares(ids, len(names)).tolist(),
            "designers": [[str(people[b]), float(by_person[b])] for b in np.argsort(-by_person, kind="stable")[:3]]}


def unseen_prompts(ds, n: int | None = None) -> tuple[list[int], list[str]]:
    """(held-out positions, their captions) of the held-out drawings whose concept the LoRA learned in the other
    style only: prompts no training caption says."""
    names = {ds.meta["name"][int(i)] for i in ds.train_idx}  # a held-out drawing's own (name, style) is untaught
    pos = [v for v, i in enumerate(ds.val_idx) if ds.meta["name"][int(i)] in names][:n]
    return pos, [ds.meta["caption"][int(ds.val_idx[v])] for v in pos]


def unseen_pairing(engine, st: TimestepStrategy, steps: int = 50, n: int | None = None) -> dict:
    """(d) of ``run_known``: each held-out drawing's caption ("pizza, twemoji") whose concept the LoRA learned
    only in the other style, as a prompt (seed = its held-out position). No training caption says it, so the
    caption cannot give the answer away word for word: is the concept's one training drawing first / in the top
    5, and what share of the positive attribution goes to the prompted style?"""
    from explorer.compare import caption_match, credit
    task, ds = engine.task, engine.task.data
    names = [ds.meta["name"][int(i)] for i in ds.train_idx]
    styles = np.array([emoji.LORA_STYLES.index(ds.meta["style"][int(i)]) for i in ds.train_idx])
    pos, prompts = unseen_prompts(ds, n)
    asked = np.array([emoji.LORA_STYLES.index(ds.meta["style"][int(ds.val_idx[v])]) for v in pos])
    target = np.array([[nm == ds.meta["name"][int(ds.val_idx[v])] for nm in names] for v in pos])
    queries = [task.prompt(p, seed=int(v), steps=steps) for v, p in zip(pos, prompts)]
    train_caps = [ds.meta["caption"][int(i)] for i in ds.train_idx]
    out = {"prompts": len(prompts), "prompt_list": prompts, "seeds": pos, "methods": {}}
    for m in (*KNOWN_METHODS, "caption match"):
        if m == "caption match":
            s = caption_match(prompts, train_caps, t2i.words)
        else:
            s = engine.scores(queries, m, st, known_lambda(engine, m, st) if get_method(m).needs.lam else None)
        top = np.argsort(-s, axis=1, kind="stable")[:, :5]
        hit = np.take_along_axis(target, top, 1)
        row = {"top1": float(hit[:, 0].mean()), "top5": float(hit.any(1).mean()),
               "style_credit": float(np.mean([credit(s[q], styles, 2)[asked[q]] for q in range(len(pos))]))}
        out["methods"][m] = row
        print(f"{m}: unseen pairing top-1 {row['top1']:.1%} top-5 {row['top5']:.1%}; "
              f"prompted style's credit {row['style_credit']:.0%}")
    return out


def cross_artist(engine, st: TimestepStrategy, n_uploads: int | None = None) -> dict:
    """(c) of ``run_known``: each LoRA concept's Noto drawing as an upload, read under the concept's name and
    under the empty caption (the image alone, so the caption cannot give the answer away); the share whose top-1
    / top-5 proponents include the concept (either style). Caption match, the text baseline, reads the name."""
    from explorer.compare import caption_match
    task, ds = engine.task, engine.task.data
    concept = {r: k for k, r in enumerate(sorted({ds.meta["name"][int(i)] for i in ds.train_idx}))}
    train_concept = np.array([concept[ds.meta["name"][int(i)]] for i in ds.train_idx])
    a = emoji.read_arrays()
    noto = [(k, r) for k, r in enumerate(a.meta["noto"]) if r["name"] in concept][:n_uploads]
    truth = np.array([concept[r["name"]] for _, r in noto])[:, None]
    images = emoji.to_tensor(a.noto[[k for k, _ in noto]])
    hits = lambda s: train_concept[np.argsort(-s, axis=1, kind="stable")[:, :5]] == truth
    out = {}
    for m in KNOWN_METHODS:
        lam = known_lambda(engine, m, st) if get_method(m).needs.lam else None
        row = {"cross_artist_queries": len(noto)}
        for key, caption in (("", lambda r: r["name"]), ("_uncaptioned", lambda r: "")):
            uploads = [task.from_image(Query("upload", x, UPLOAD_UID + k), x, caption(r))
                       for (k, r), x in zip(noto, images)]
            hit = hits(engine.scores(uploads, m, st, lam))
            row.update({f"cross_artist{key}_top1": float(hit[:, 0].mean()),
                        f"cross_artist{key}_top5": float(hit.any(1).mean())})
        out[m] = row
        print(f"{m}: cross-artist top-1 {row['cross_artist_top1']:.1%} under the name, "
              f"{row['cross_artist_uncaptioned_top1']:.1%} without a caption")
    train_caps = [ds.meta["caption"][int(i)] for i in ds.train_idx]
    hit = hits(caption_match([r["name"] for _, r in noto], train_caps, t2i.words))
    out["caption match"] = {"cross_artist_queries": len(noto), "cross_artist_top1": float(hit[:, 0].mean()),
                            "cross_artist_top5": float(hit.any(1).mean())}
    return out
