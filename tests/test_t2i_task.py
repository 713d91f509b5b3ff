"""The text-to-image LoRA task end to end on a tiny pipeline trained here on the shipped emoji drawings: the
engine attributes with gradients of the LoRA parameters only, each training image under its own caption."""
import os

import numpy as np
import pytest

from explorer.attribution.timesteps import TimestepStrategy

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
    renamed = task._captioned(task.train_query(7), "red apple, openmoji")
    a, b = engine.attribute(q, "dtrak", ST, lam).scores, engine.attribute(renamed, "dtrak", ST, lam).scores
    assert not np.allclose(a, b)  # the caption is part of the query


def test_a_prompt_is_generated_and_attributed_and_unknown_words_are_named(engine):
    task = engine.task
    q = task.prompt("red apple, twemoji", seed=3, steps=5)
    assert q.x.shape == (3, 32, 32) and q.caption == "red apple, twemoji"
    res = engine.attribute(q, "trak", ST)
    assert res.scores.shape == (len(task.data.train_idx),) and np.isfinite(res.scores).all()
    assert task.unknown_words("a purple red apple") == ["a", "purple"]
    for refused in ("das", "ekfac", "journey-trak"):  # their fits / query paths run the UNet without a caption
        with pytest.raises(ValueError, match="does not attribute text-to-image models yet"):
            engine.attribute(q, refused, ST)
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
    assert os.path.exists(os.path.join(root, "emoji", "eval", "known.json"))
