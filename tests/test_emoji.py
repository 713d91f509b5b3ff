"""The emoji dataset: the shipped 32×32 arrays (what the app reads) and their build from the npm packages."""
import os

import numpy as np
import pytest

from explorer.datasets import emoji


def test_shipped_arrays_hold_three_artists_with_names_and_authors():
    a = emoji.read_arrays()
    assert a.noto.shape == (1911, 32, 32, 3) and a.lora.shape == (580, 32, 32, 3) and a.lora.dtype == np.uint8
    rows = a.meta["lora"]
    assert [r["style"] for r in rows[:4]] == ["twemoji", "openmoji"] * 2 and rows[0]["key"] == rows[1]["key"]
    assert {r["category"] for r in rows} == set(emoji.LORA_CATEGORIES)
    authors = {r["author"] for r in rows if r["style"] == "openmoji"}
    assert len(authors) > 30 and "Sofie Ascherl" in authors  # OpenMoji credits each designer
    assert {r["author"] for r in rows if r["style"] == "twemoji"} == {emoji.ARTISTS["twemoji"]}
    assert {p["sha256"] for p in a.meta["packages"].values()} and all(len(p["sha256"]) == 64 for p in a.meta["packages"].values())
    # white background, and the two styles of one concept differ more than noise
    assert (a.lora[:, 0, 0] == 255).all(axis=1).mean() > 0.95
    assert np.abs(a.lora[0].astype(int) - a.lora[1]).mean() > 10
    ds = emoji.load_emoji()
    assert len(ds.train_idx) + len(ds.val_idx) == 580 and ds.meta["caption"][0].endswith(", twemoji")
    styles, names = ds.train_styles
    assert names == ["openmoji", "twemoji"] and abs((styles == 0).mean() - 0.5) < 0.02


def test_missing_or_half_written_arrays_name_the_build_command(tmp_path):
    assert emoji.BUILD in emoji.missing_arrays(str(tmp_path))
    with pytest.raises(FileNotFoundError, match="precompute data --dataset emoji"):
        emoji.read_arrays(str(tmp_path))
    a = emoji.read_arrays()
    meta = {**a.meta, "lora": a.meta["lora"][:-1]}
    emoji.write_arrays({"noto": a.noto, "lora": a.lora}, meta, str(tmp_path))
    with pytest.raises(FileNotFoundError, match="disagree"):
        emoji.read_arrays(str(tmp_path))


def _tarballs():
    folder = os.environ.get("EXPLORER_NPM_CACHE", os.path.expanduser("~/.cache/explorer-npm"))
    try:
        return emoji.fetch_packages(folder)
    except RuntimeError as e:
        if os.environ.get("CI"):
            raise
        pytest.skip(str(e))


def test_build_from_the_npm_packages_reproduces_the_shipped_rows():
    """Rebuilds ten LoRA concepts (both styles, SVG rendering included) and their Noto drawings from the
    tarballs, checksummed against the recorded sha256: the same bytes as the shipped rows."""
    shipped = emoji.read_arrays()
    tarballs = _tarballs()
    keys = {r["key"] for r in shipped.meta["lora"][::58]}
    arrays, meta = emoji.build_arrays(tarballs, only=keys)
    for k, p in meta["packages"].items():
        assert p["sha256"] == shipped.meta["packages"][k]["sha256"], k
    for part in ("noto", "lora"):
        rows = [i for i, r in enumerate(shipped.meta[part]) if r["key"] in keys]
        assert meta[part] == [shipped.meta[part][i] for i in rows]
        np.testing.assert_array_equal(arrays[part], getattr(shipped, part)[rows])


def test_credit_shares_by_contributor_against_a_hand_count():
    from explorer.compare import credit, group_shares
    s = np.array([3.0, -1.0, 1.0, 0.5, -2.0, 0.5])
    g = np.array([0, 0, 1, 2, 2, 1])
    np.testing.assert_allclose(credit(s, g, 3), [3 / 5, 1.5 / 5, 0.5 / 5])  # positive attribution only
    np.testing.assert_allclose(credit(s, g, 3, k=2), [0.5, 0.5, 0.0])  # top 2: images 0 and 2
    np.testing.assert_allclose(credit(-np.ones(6), g, 3), [0, 0, 0])  # nothing positive: no credit
    np.testing.assert_allclose(group_shares(g, 3), [1 / 3, 1 / 3, 1 / 3])


def test_target_ranks_and_the_caption_baseline():
    from explorer.compare import caption_match, target_ranks
    from explorer.text2image import words
    s = np.array([[0.1, 0.9, 0.5], [0.2, 0.2, 0.1]])
    np.testing.assert_array_equal(target_ranks(s, [1, 0]), [0, 1])  # a tie counts against the answer
    m = caption_match(["red apple, twemoji"], ["red apple, twemoji", "red apple, openmoji", "dog"], words)
    np.testing.assert_allclose(m[0], [1.0, 2 / 4, 0.0])


def test_legibility_is_the_share_of_samples_nearest_their_prompted_drawing():
    """Against the obvious loop: each sample's nearest training image by pixel distance."""
    from explorer.compare import legibility, nearest
    rng = np.random.default_rng(0)
    train = rng.uniform(-1, 1, (20, 3, 4, 4))
    samples = train[[3, 7, 11, 0]] + rng.normal(0, 0.05, (4, 3, 4, 4))
    samples[3] = train[5] + 0.01  # asked for drawing 0, drew drawing 5
    best, dist = nearest(samples, train)
    loop = [int(np.argmin([np.linalg.norm(s - t) for t in train])) for s in samples]
    assert best.tolist() == loop == [3, 7, 11, 5]
    np.testing.assert_allclose(dist, [np.linalg.norm(s - train[b]) / np.sqrt(48) for s, b in zip(samples, loop)])
    assert legibility(samples, train, [3, 7, 11, 0]) == 0.75


def test_concept_effect_on_a_hand_made_ground_truth():
    """The interim LDS's diagnostic: does a query's concept lower its loss across subsets, and is the method's
    first proponent of that concept — against numbers worked out by hand."""
    from precompute.emoji_eval import concept_effect
    masks = np.array([[1, 0, 1], [0, 0, 1], [1, 1, 0], [0, 0, 0]], bool)
    train_concept = np.array(["a", "a", "b"])
    outputs = np.array([[1, 2, 9], [3, 2, 9], [1, 1, 9], [5, 1, 9]], float)  # (subsets, queries)
    scores = np.array([[0, 1, 0], [1, 0, 0], [0, 0, 1]], float)
    got = concept_effect(masks, outputs, np.array(["a", "b", "c"]), train_concept, scores)
    # query "a": present in subsets 0, 2 (loss 1, 1), absent in 1, 3 (3, 5): Δ = 3; query "b": Δ = 1 − 2 = −1,
    # spread 0.5; query "c" has no training drawing
    assert got["queries"] == 2 and got["lowers_loss"] == 0.5
    assert got["effect_in_spreads"] == pytest.approx((3 / np.std([1, 3, 1, 5]) - 1 / 0.5) / 2)
    assert got["top1_is_concept"] == 0.5  # query "a" ranks an "a" drawing first, query "b" does not
