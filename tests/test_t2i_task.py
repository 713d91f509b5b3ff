"""The text-to-image LoRA task end to end on a tiny pipeline trained here on the shipped emoji drawings: the
engine attributes with gradients of the LoRA parameters only, each training image under its own caption."""
import os

import numpy as np
import pytest
import torch
from PIL import Image

from explorer.attribution.damping import FALLBACK_LAMBDA
from explorer.attribution.timesteps import TimestepStrategy, seeded_noise

ST = TimestepStrategy("uniform", 2)


@pytest.fixture(scope="module")
def engine(tiny_emoji_root):
    from explorer.engine import Engine
    root = tiny_emoji_root
    return Engine("emoji", root=str(root), cache_dir=str(root / "cache"))


def test_the_task_attributes_the_lora_parameters_under_each_caption(engine):
    task = engine.task
    assert engine.store.projection == "exact"  # a LoRA this small fits the exact kernel
    assert task.n_attributed_parameters == sum(p.numel() for n, p in task.model.named_parameters() if "lora_" in n)
    assert task.train_context.shape[0] == len(task.data.train_idx)
    # each training row is the gradient of that drawing under its own caption and noise
    rows = engine.store.gradients(task.paths.model, "square", ST).dense()
    own = engine.store.query_gradients(task.paths.model, "square", ST, [task.train_query(i) for i in (0, 7, 101)])
    np.testing.assert_allclose(rows[[0, 7, 101]], own, rtol=0, atol=1e-3 * np.abs(own).max())  # float16 rows
    # the cache is keyed by the captions too: the same drawings under other captions are another feature set
    spec = engine.store.spec("square", ST)
    before = engine.store._expected(task.paths.model, spec)["captions_sha"]
    task.train_context = task.train_context.roll(1, 0)
    try:
        assert engine.store._expected(task.paths.model, spec)["captions_sha"] != before
    finally:
        task.train_context = task.train_context.roll(-1, 0)
    lam = 1e-9  # LoRA gradients here are ~1e-3: the unit-scale fallback λ = 1 would swamp the kernel
    firsts = [int(engine.attribute(task.train_query(i), "dtrak", ST, lam).top.proponents[0][0]) for i in (0, 7, 101)]
    assert firsts == [0, 7, 101]  # a training image under its own caption and noise finds itself first
    q = task.train_query(7)
    renamed = task.captioned(task.train_query(7), "red apple, openmoji")
    a, b = engine.attribute(q, "dtrak", ST, lam).scores, engine.attribute(renamed, "dtrak", ST, lam).scores
    assert not np.allclose(a, b)  # the caption is part of the query


def test_a_prompt_is_generated_and_attributed_and_unknown_words_are_named(engine):
    task = engine.task
    q = task.prompt("red apple, twemoji", seed=3, steps=5)
    assert q.x.shape == (4, 8, 8) and q.image.shape == (3, 32, 32) and q.caption == "red apple, twemoji"
    assert q.x.abs().max() > 0 and q.image.abs().max() <= 1  # the latent, and its decoded image
    up = task.upload(Image.new("RGB", (32, 32), "white"), "red apple")  # an upload enters as its latent
    assert up.x.shape == (4, 8, 8) and torch.equal(up.shown, torch.ones(3, 32, 32))
    res = engine.attribute(q, "trak", ST)
    assert res.scores.shape == (len(task.data.train_idx),) and np.isfinite(res.scores).all()
    assert task.unknown_words("a purple red apple") == ["a", "purple"]
    assert task.styles == ["openmoji", "twemoji"]  # the style words the LoRA's captions end with
    nda = engine.attribute(q, "nda", ST)  # pixel space: no model call, no caption needed
    assert nda.scores.shape == res.scores.shape
    with pytest.raises(ValueError, match="prompt"):
        task.generated(3)


def test_the_known_answer_stage_reports_every_method_and_the_baselines(engine, tmp_path):
    from precompute.emoji import run_known
    root = os.path.dirname(engine.task.paths.base)
    out = run_known(n_prompts=4, steps=3, root=root, cache_dir=str(tmp_path), n_uploads=6, S=2)
    assert out["prompts"] == 4 and set(out["methods"]) == {"dtrak", "trak", "pixel-cos", "caption match"}
    assert out["methods"]["caption match"]["name_top1"] == 1.0  # each prompt is a training caption, word for word
    for m, row in out["methods"].items():
        assert 0 <= row["name_top1"] <= row["name_top5"] <= 1
        assert all(0 <= v <= 1 for v in [*row["style_credit"].values(), *row["style_top10"].values()])
    assert out["methods"]["dtrak"]["cross_artist_queries"] == 6  # LoRA concepts' Noto drawings, as uploads
    un = out["unseen_pairing"]  # held-out captions whose concept the LoRA learned in the other style only
    ds = engine.data
    taught = {ds.meta["caption"][int(i)] for i in ds.train_idx}
    assert 0 < un["prompts"] <= 4 and not taught & set(un["prompt_list"])
    assert set(un["methods"]) == {"dtrak", "trak", "pixel-cos", "caption match"}
    assert all(0 <= r["top1"] <= r["top5"] <= 1 and 0 <= r["style_credit"] <= 1 for r in un["methods"].values())
    assert os.path.exists(os.path.join(root, "emoji", "eval", "known.json"))


def test_the_lora_lds_stage_retrains_halves_measures_the_truth_and_resumes(tiny_emoji_root, tmp_path):
    """LDS for the LoRA: retrained LoRAs on halves (base fixed), ground truth = each LoRA's L_Simple of each
    query under its caption, checked against a loop written out here; a second run retrains nothing."""

    from explorer import lora, text2image as t2i
    from explorer.attribution.timesteps import seeded_noise
    from explorer.schedule import DDPM
    from precompute.emoji_eval import EMOJI_EVAL, run_lds
    import shutil
    from dataclasses import replace

    from explorer.engine import Engine
    root = str(tmp_path / "assets")  # a copy: the eval files written here must not reach the other tests' model
    shutil.copytree(tiny_emoji_root / "emoji", tmp_path / "assets" / "emoji", ignore=shutil.ignore_patterns("cache", "eval"))
    cfg = replace(EMOJI_EVAL, n_subsets=4, n_val=3, n_gen=2, gt_t_every=250, n_boot=10,
                  plan=[("dtrak", 2), ("pixel-cos", 2)])
    kw = dict(root=root, cache_dir=str(tmp_path), lora={"rank": 2, "alpha": 2},
              train={"epochs": 1, "batch_size": 64, "lr": 1e-2})
    out = run_lds(cfg, **kw)
    engine = Engine("emoji", root=root, cache_dir=str(tmp_path))
    res = engine.results
    n = len(engine.data.train_idx)
    assert res.subsets().shape == (4, round(n / 2))
    y = res.outputs()
    assert y.shape == (4, 5) and np.isfinite(y).all()
    assert len({tuple(r.round(6)) for r in y}) == 4  # each half trains another LoRA
    rows = {(r["method"], r["split"]): r for r in out["rows"]}
    assert set(rows) == {(m, s) for m in ("dtrak", "pixel-cos") for s in ("validation", "generated")}
    assert all(-1 <= r["lds"] <= 1 for r in rows.values())
    assert rows["dtrak", "validation"]["lambda"] in cfg.lambdas and rows["pixel-cos", "validation"]["lambda"] is None
    # the truth of subset 1, query 4 (a prompt), written out: mean over t of (1/d)‖ε − ε_θ(x_t, t, c)‖²
    job = os.path.join(root, "emoji", "runs", "lds", "subset_001")
    unet, te, tok = t2i.load_pipeline(os.path.join(root, "emoji", "base"))
    from precompute.emoji import LORA, LORA_TRAIN
    lora.load_lora(unet, os.path.join(job, "lora"), replace(LORA, rank=2, alpha=2))  # the recipe, shrunk
    q = res.queries
    assert str(q["caption"][4]) == engine.benchmark_query(4).caption
    assert q["x"].shape[1:] == (4, 8, 8) and q["image"].shape[1:] == (3, 32, 32)  # latents, with their images
    x = torch.from_numpy(q["x"][4:5].astype(np.float32))
    ctx = t2i.encode(te, t2i.tokenize(tok, [str(q["caption"][4])]))
    losses = []
    with torch.no_grad():
        for t in range(0, 1000, 250):
            eps = seeded_noise([int(q["uid"][4])], [t], (4, 8, 8), seed=100)[:, 0]
            tt = torch.tensor([t])
            losses.append(((unet(DDPM.add_noise(x, eps, tt), tt, ctx).sample - eps) ** 2).mean().item())
    assert abs(np.mean(losses) - y[1, 4]) < 1e-5 * max(1.0, abs(y[1, 4]))
    # an interim LDS while LoRAs retrain: over all four it is the final LDS; with subset 3 unfinished it reports on
    # subset 2 alone; with no finished LoRA in the second half it says what to do
    from precompute.emoji_eval import interim_lds
    interim = interim_lds(cfg, **kw)
    assert interim["tune_subsets"] == [0, 1] and interim["report_subsets"] == [2, 3]
    assert set(interim["concept"]) == {"validation", "generated"}
    assert all(0 <= r["top1_is_concept"] <= 1 for r in interim["rows"])
    for r in interim["rows"]:
        assert r["lds"] == pytest.approx(rows[r["method"], r["split"]]["lds"], abs=1e-12)
        assert r["top1_is_concept"] == rows[r["method"], r["split"]]["top1_is_concept"]  # stored beside the final
    for split, effect in res.lds()["concept"].items():
        assert effect == pytest.approx(interim["concept"][split])
    os.rename(os.path.join(root, "emoji", "runs", "lds", "subset_003", "outputs.npy"), str(tmp_path / "out3.npy"))
    assert interim_lds(cfg, **kw)["report_subsets"] == [2]
    done2 = os.path.join(root, "emoji", "runs", "lds", "subset_002", "done.json")
    os.rename(done2, str(tmp_path / "done2.json"))
    with pytest.raises(SystemExit, match="both halves"):
        interim_lds(cfg, **kw)
    os.rename(str(tmp_path / "done2.json"), done2)
    os.rename(str(tmp_path / "out3.npy"), os.path.join(root, "emoji", "runs", "lds", "subset_003", "outputs.npy"))
    # resumable: a second run finds every LoRA done and retrains none
    stamp = os.path.getmtime(os.path.join(job, "done.json"))
    again = run_lds(cfg, until="retrain", **kw)
    assert os.path.getmtime(os.path.join(job, "done.json")) == stamp and again["wall_seconds"] < 30
    # the counterfactual: D-TRAK's top 20 % of one prompt removed, the LoRA retrained, the prompt redrawn
    from precompute.emoji_eval import run_counterfactual
    cf = run_counterfactual(replace(cfg, cf_queries=1, cf_methods=("dtrak",), cf_S=2), **kw)
    assert set(cf["methods"]) == {"random", "dtrak"} and cf["k"] == round(0.2 * n)
    assert cf["train_seed"] == LORA_TRAIN.seed and cf["retrain_seconds"] > 0  # summed from each LoRA's done.json
    removed = res.removed()
    q = engine.benchmark_query(int(removed["queries"][0]))
    assert q.kind == "generated" and q.caption == cf["prompts"][0]
    expect = np.argsort(-engine.scores([q], "dtrak", TimestepStrategy("uniform", 2))[0], kind="stable")[:cf["k"]]
    assert set(removed["dtrak"][0].tolist()) == set(expect.tolist())
    for m in ("random", "dtrak"):
        assert cf["methods"][m]["l2"][0] > 0 and -1 <= cf["methods"][m]["cosine"][0] < 1  # retrained: it moved
    stored, images = res.counterfactual()
    assert stored == cf and images["dtrak"].shape == images["original"].shape == (1, 3, 32, 32)
    # one prompt more: the first prompt's removals and LoRAs are kept, only the new prompt's are made
    runs = os.path.join(root, "emoji", "runs", "counterfactual")
    stamp = os.path.getmtime(os.path.join(runs, "dtrak_0", "done.json"))
    more = run_counterfactual(replace(cfg, cf_queries=2, cf_methods=("dtrak",), cf_S=2), **kw)
    grown = res.removed()
    assert more["prompts"][0] == cf["prompts"][0] and len(set(more["prompts"])) == 2
    assert all(np.array_equal(grown[m][:1], removed[m]) and grown[m].shape == (2, cf["k"]) for m in ("random", "dtrak"))
    assert os.path.getmtime(os.path.join(runs, "dtrak_0", "done.json")) == stamp
    assert more["methods"]["dtrak"]["l2"][0] == pytest.approx(cf["methods"]["dtrak"]["l2"][0])


def test_das_and_ekfac_attribute_the_lora_under_each_caption(engine):
    """DAS's residuals and EK-FAC's curvature over the LoRA: each training image read under its own caption
    (against one forward / one autograd call per image and timestep), EK-FAC factored over the adapters' A and
    B layers alone; both answer a prompt; Journey-TRAK (its sampling path has no caption) is still refused."""
    from explorer.attribution.method import Fit
    from explorer.attribution.methods.das import DAS, residual_sizes
    from explorer.attribution.methods.ekfac import EKFAC, fit_ekfac
    from explorer.schedule import DDPM
    task = engine.task
    model, x, ctx = task.model, task.train_inputs[:3], task.train_context[:3]
    uids = [int(u) for u in task.data.train_idx[:3]]
    ts = ST.timesteps()
    eps = seeded_noise(uids, ts, tuple(x.shape[1:])).reshape(-1, *x.shape[1:])
    t = torch.tensor(ts).repeat(3)
    xt = DDPM.add_noise(x.repeat_interleave(len(ts), 0), eps, t)
    with torch.no_grad():
        pred = torch.cat([model(xt[e:e + 1], t[e:e + 1], ctx[e // len(ts)][None]).sample for e in range(len(xt))])
    r = ((eps - pred).flatten(1).norm(dim=1) / x[0].numel() ** 0.5).reshape(3, -1).mean(1).double().numpy()
    np.testing.assert_allclose(residual_sizes(model, x, uids, ST, context=ctx), r, rtol=1e-4)
    assert not np.allclose(residual_sizes(model, x, uids, ST, context=ctx.roll(1, 0)), r, rtol=1e-3)

    factors = fit_ekfac(model, x, uids, ST, seed=0, context=ctx, param_names=task.param_names)
    assert sorted(f.weight for f in factors) == sorted(task.param_names) and all(f.bias is None for f in factors)
    target = pred + torch.randn(pred.shape, generator=torch.Generator().manual_seed(7919 * 1 + 1))  # pass 2's draw
    params = {n: p for n, p in model.named_parameters() if n in set(task.param_names)}
    f = min(factors, key=lambda f: f.lam.numel())
    dw = []
    for e in range(len(xt)):
        out = model(xt[e:e + 1], t[e:e + 1], ctx[e // len(ts)][None]).sample
        dw.append(torch.autograd.grad(0.5 * (out - target[e:e + 1]).pow(2).sum(), params[f.weight])[0]
                  .reshape(f.qs.shape[0], -1))
    diag = (f.qs.double().T @ torch.stack(dw).double() @ f.qa.double()).pow(2).mean(0)
    np.testing.assert_allclose(f.lam.double().numpy(), diag.numpy(), rtol=2e-3, atol=1e-6 * diag.max().item())

    q = task.prompt("red apple, twemoji", seed=3, steps=5)
    for m in (DAS, EKFAC):  # the fit is part of the method's build: counted, shared, reported with its phase
        engine.store.gradients(task.paths.model, m.output_fn, ST)
        assert not engine.ready(m, ST) and engine.estimate_seconds(m, ST) > 0  # features there, the fit not yet
        phases = []
        engine.build(m, ST, lambda done, total, phase: phases.append((done, total, phase)))
        assert engine.ready(m, ST) and phases[-1] == (1, 1, m.fit.label)
        assert engine.store.rates.rate(f"fit-{m.name}") > 0  # the next estimate uses this fit's measured time
    for name in ("das", "ekfac"):
        a = engine.attribute(q, name, ST)
        assert a.scores.shape == (len(task.data.train_idx),) and np.isfinite(a.scores).all() and a.scores.std() > 0
    # untuned, EK-FAC's damping stays relative to each layer's curvature (the kernel methods' λ scales to ‖φ‖²)
    assert engine.default_lambda("ekfac", ST.S) == FALLBACK_LAMBDA
    # both fits are kept in the cache: a restarted server reads them instead of fitting again; a file it cannot
    # read is fitted again and replaced; other timesteps are another fit
    from explorer.engine import Engine

    def refuse(*a, **kw):
        raise AssertionError("fitted again")
    fits = sorted(os.listdir(os.path.join(engine.store.cache_dir, "fits")))
    assert [f.split("-")[0] for f in fits] == ["das", "ekfac"]
    fresh = Engine("emoji", root=os.path.dirname(task.paths.base), cache_dir=engine.store.cache_dir).store
    for name in ("das", "ekfac"):
        never = Fit(name, refuse, "", 1.0)
        stored, kept = (store.fitted(never, task.paths.model, ST) for store in (fresh, engine.store))
        for a, b in zip(*(([v] if name == "das" else [f.lam for f in v]) for v in (stored, kept))):
            np.testing.assert_array_equal(a, b)
    with open(os.path.join(engine.store.cache_dir, "fits", fits[0]), "wb") as f:
        f.write(b"truncated")
    again = Engine("emoji", root=os.path.dirname(task.paths.base), cache_dir=engine.store.cache_dir).store
    np.testing.assert_array_equal(again.fitted(DAS.fit, task.paths.model, ST),
                                  fresh.fitted(Fit("das", refuse, "", 1.0), task.paths.model, ST))
    again.fitted(DAS.fit, task.paths.model, TimestepStrategy("uniform", 1))
    assert len(os.listdir(os.path.join(engine.store.cache_dir, "fits"))) == 3
    with pytest.raises(ValueError, match="does not attribute text-to-image models yet"):
        engine.attribute(q, "journey-trak", ST)


def test_the_interim_flag_is_refused_where_it_does_not_apply(capsys):
    """``--interim`` scores the emoji LoRAs retrained so far: for another model or another stage, one message."""
    from precompute.__main__ import main
    for argv, said in ((["lds", "--dataset", "digits", "--interim"], "scores the emoji LoRAs finished so far"),
                       (["features", "--dataset", "emoji", "--interim"], "used only by the lds stage")):
        with pytest.raises(SystemExit):
            main(argv)
        assert said in capsys.readouterr().err
