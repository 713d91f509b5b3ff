import json
import os

import numpy as np
import pytest
import torch
from scipy.stats import spearmanr

from explorer.evaluation import counterfactual as cf
from explorer.evaluation.lds import bootstrap_interval, evaluate, lds, make_subsets, masks_from_subsets


def _datamodel(n=200, m=64, q=20, seed=0):
    """outputs = masks @ w + small noise, with true attributions −w (score = −effect)."""
    rng = np.random.default_rng(seed)
    masks = masks_from_subsets(make_subsets(n, m, seed=seed), n)
    w = rng.normal(size=(q, n))
    outputs = masks @ w.T + 0.1 * rng.normal(size=(m, q))
    return masks, -w, outputs, rng


def test_lds_is_one_for_the_truth_and_zero_for_noise():
    masks, truth, outputs, rng = _datamodel()
    assert lds(truth, masks, outputs).mean() > 0.95
    assert abs(lds(rng.normal(size=truth.shape), masks, outputs).mean()) < 0.1


def test_lds_equals_direct_spearman():
    masks, truth, outputs, rng = _datamodel()
    noisy = truth + 3 * rng.normal(size=truth.shape)
    pred = masks @ (-noisy).T
    direct = [spearmanr(pred[:, j], outputs[:, j]).statistic for j in range(outputs.shape[1])]
    assert np.allclose(lds(noisy, masks, outputs), direct)


def test_bootstrap_contains_estimate_and_narrows_with_more_subsets():
    masks, truth, outputs, rng = _datamodel(m=256)
    noisy = truth + 4 * rng.normal(size=truth.shape)
    widths = []
    for m in (32, 256):
        lo, hi = bootstrap_interval(noisy, masks[:m], outputs[:m], n_boot=200)
        assert lo <= lds(noisy, masks[:m], outputs[:m]).mean() <= hi
        widths.append(hi - lo)
    assert widths[1] < widths[0]


def test_lambda_tuning_never_uses_reporting_subsets():
    """Catches λ tuned on all subsets or on the reporting half: the tuning subsets follow datamodel w1
    and the reporting subsets w2; λ = 0.1 scores with w1 and λ = 100 with w2. Only tuning on the
    tuning half picks 0.1 (on all subsets, or on the reporting half, 100 wins: checked below)."""
    rng = np.random.default_rng(0)
    n, q = 200, 20
    masks = masks_from_subsets(make_subsets(n, 64, seed=0), n)
    w1, w2 = rng.normal(size=(q, n)), rng.normal(size=(q, n))
    tune, report = np.arange(32), np.arange(32, 64)
    outputs = np.empty((64, q))
    outputs[tune] = masks[tune] @ w1.T + 3.0 * rng.normal(size=(32, q))  # weak signal on the tuning half
    outputs[report] = masks[report] @ w2.T  # strong signal on the reporting half
    score_fn = {0.1: -w1, 100.0: -w2}.get
    res = evaluate(score_fn, masks, outputs, [0.1, 100.0], tune, report, n_boot=10)
    assert res.lam == 0.1
    everywhere = {lam: lds(score_fn(lam), masks, outputs).mean() for lam in (0.1, 100.0)}
    assert everywhere[100.0] > everywhere[0.1]  # tuning on all subsets would have picked 100
    assert res.paper_style == pytest.approx(everywhere[100.0])
    with pytest.raises(ValueError, match="overlap"):
        evaluate(score_fn, masks, outputs, [0.1], np.arange(40), np.arange(30, 64))


def test_removal_excludes_exactly_the_chosen_indices():
    s = np.random.default_rng(0).normal(size=(3, 50))
    removed = cf.top_proponents(s, 10)
    assert np.array_equal(removed[0], np.argsort(-s[0])[:10])
    keep = cf.keep_indices(50, removed[1])
    assert set(keep) | set(removed[1]) == set(range(50)) and not set(keep) & set(removed[1])
    r = cf.random_removal(50, 10, 3, seed=4)
    assert np.array_equal(r, cf.random_removal(50, 10, 3, seed=4)) and len(set(r[0])) == 10


@pytest.mark.parametrize("dataset", ["digits", "shapes"])
def test_shipped_counterfactual_differs_from_the_full_model_only_by_the_removed_data(dataset):
    from explorer.evaluation.results import EvalResults
    res_ = EvalResults(os.path.join("assets", dataset, "eval"))
    res, _ = res_.counterfactual()
    assert res["train_seed"] == json.load(open(os.path.join("assets", dataset, "train.json")))["train"]["seed"]
    removed = res_.removed()
    assert removed["seeds"].tolist() == res["seeds"] and res["k"] == round(0.2 * res["n"])
    for m in ("random", "trak", "dtrak"):
        assert removed[m].shape == (len(res["seeds"]), res["k"]) and all(len(set(r)) == res["k"] for r in removed[m])
    assert not np.array_equal(removed["trak"], removed["dtrak"])


def test_shipped_emoji_counterfactual_retrained_the_lora_without_each_removal_set():
    """The emoji counterfactual: 8 benchmark prompts, each method's top 20 % (and as many random drawings)
    removed, the LoRA retrained with the shipped recipe's seed; the stored images are the benchmark's
    generated images and their regenerations, and every stored change recomputes from them."""
    from explorer.evaluation.results import EvalResults
    res_ = EvalResults(os.path.join("assets", "emoji", "eval"))
    res, images = res_.counterfactual()
    assert res["train_seed"] == json.load(open(os.path.join("assets", "emoji", "train.json")))["lora"]["train"]["seed"]
    removed, q = res_.removed(), res_.queries
    cols = removed["queries"]
    assert all(res_.split_of(int(i))[0] == "generated" for i in cols) and len(cols) == 8
    assert res["prompts"] == [str(c) for c in q["caption"][cols]]
    assert res["seeds"] == [int(q["gen_seed"][res_.split_of(int(i))[1]]) for i in cols]
    assert res["k"] == round(0.2 * res["n"]) and res["n"] == 492
    assert set(res["methods"]) == {"random", "trak", "dtrak", "nda"}
    np.testing.assert_allclose(images["original"], q["image"][cols], atol=1e-3)
    for m, row in res["methods"].items():
        assert removed[m].shape == (8, res["k"]) and all(len(set(r)) == res["k"] for r in removed[m])
        assert 0 <= removed[m].min() and removed[m].max() < res["n"]
        a, b = (torch.from_numpy(images[key].astype(np.float32)) for key in ("original", m))
        np.testing.assert_allclose(cf.pixel_l2(a, b), row["l2"], rtol=1e-2, atol=1e-2)
        assert min(row["l2"]) > 0  # every retrained LoRA redrew its prompt differently
    assert not np.array_equal(removed["trak"], removed["dtrak"])
    # measured: D-TRAK's removal moves 7 of 8 redrawn prompts more than random's and 7 of 8 more than TRAK's, and
    # holds the prompted drawing itself for 8 of 8 prompts (NDA's 7, random's 3 by chance, TRAK's 2)
    l2 = {m: np.array(row["l2"]) for m, row in res["methods"].items()}
    assert (l2["dtrak"] > l2["random"]).sum() == 7 and (l2["dtrak"] > l2["trak"]).sum() == 7
    cos = {m: row["cosine_median"] for m, row in res["methods"].items()}
    assert cos["dtrak"] < cos["nda"] < min(cos["random"], cos["trak"])
    from explorer.datasets import load_dataset
    data = load_dataset("emoji")
    captions = np.array(data.meta["caption"])[data.train_idx]
    holds = {m: sum(int(np.flatnonzero(captions == p)[0]) in removed[m][j] for j, p in enumerate(res["prompts"]))
             for m in res["methods"]}
    assert holds == {"random": 3, "trak": 2, "dtrak": 8, "nda": 7}


def test_a_retrain_records_exactly_what_it_was_trained_on(tmp_path):
    """Catches a counterfactual retrain that keeps a removed image or uses another seed: done.json
    records the hash of the exact training indices (the complement of the removal set) and the seed."""
    import hashlib
    from precompute.retrain import train_job
    removed = np.random.default_rng(0).choice(1528, 300, replace=False)
    keep = cf.keep_indices(1528, removed)
    train_job("digits", keep.tolist(), str(tmp_path / "cf"), seed=0, device="cpu", epochs=1)
    done = json.load(open(tmp_path / "cf" / "done.json"))
    assert done["indices_sha"] == hashlib.sha256(np.asarray(keep, np.int64).tobytes()).hexdigest()[:16]
    assert done["seed"] == 0 and done["epochs"] == 1 and not set(removed) & set(keep) and len(keep) == 1228


def test_retraining_is_deterministic_and_resumes(tmp_path):
    from explorer.models import ddim_sample, load_model
    from precompute.retrain import train_job
    from precompute.jobs import run_jobs
    idx = list(range(0, 1528, 3))
    jobs = [dict(dataset="digits", indices=idx, out_dir=str(tmp_path / name), seed=42, device="cpu", epochs=1)
            for name in ("a", "b")]
    run_jobs(train_job, jobs[:1])
    stamp = os.path.getmtime(tmp_path / "a" / "done.json")
    run_jobs(train_job, jobs)  # "a" is skipped (resume), "b" is trained
    assert os.path.getmtime(tmp_path / "a" / "done.json") == stamp
    queries = os.path.join("assets", "digits", "eval", "queries.npz")
    train_job(**jobs[0], queries=queries, gt=(250, 1))  # trained earlier without ground truth: only measures it
    assert os.path.getmtime(tmp_path / "a" / "done.json") == stamp
    assert np.load(tmp_path / "a" / "outputs.npy").shape == (200,)
    imgs = [ddim_sample(load_model(str(tmp_path / n / "model")), [7], steps=10) for n in ("a", "b")]
    assert torch.equal(imgs[0], imgs[1])  # same data + seed → same regenerated image
    train_job(**{**jobs[1], "seed": 7})  # a folder another seed left behind is retrained, not reused
    assert json.load(open(tmp_path / "b" / "done.json"))["seed"] == 7
    stamp = os.path.getmtime(tmp_path / "b" / "done.json")
    train_job(**{**jobs[1], "seed": 7, "indices": idx[:-1] + [1]})  # same size, other images: retrained
    assert os.path.getmtime(tmp_path / "b" / "done.json") != stamp
    assert not torch.equal(ddim_sample(load_model(str(tmp_path / "b" / "model")), [7], steps=10), imgs[0])


@pytest.mark.parametrize("dataset", ["digits", "emoji"])
def test_shipped_lds_recomputes_from_the_stored_scores(dataset):
    """Catches stale or wrong LDS numbers: every row of lds.json is recomputed from the stored scores,
    subsets and measured outputs (λ tuned on subsets 0–31, reported on 32–63)."""
    from explorer.evaluation.results import EvalResults
    from explorer.paths import AssetPaths
    from explorer.task import open_dataset
    res = EvalResults(os.path.join("assets", dataset, "eval"))
    table = res.lds()
    report = np.array(table["config"]["report_subsets"])
    assert set(table["config"]["tune_subsets"]).isdisjoint(report) and len(report) == 32
    n = len(open_dataset(AssetPaths(dataset)).train_idx)
    masks, outputs = masks_from_subsets(res.subsets(), n), res.outputs()
    for r in table["rows"]:
        scores = np.asarray(res.stored_scores(r["method"], r["S"], r["split"]), np.float64)
        per_query = lds(scores, masks[report], outputs[report][:, res.columns(r["split"])])
        assert abs(per_query.mean() - r["lds"]) < 0.005, r["method"]
        assert r["ci"][0] <= r["lds"] <= r["ci"][1]
    rows = {(r["method"], r["S"], r["split"]) for r in table["rows"]}
    assert ("dtrak", 10, "validation") in rows and ("trak", 10, "generated") in rows


def test_shipped_emoji_lds_holds_its_measured_ordering_and_its_concept_diagnostics():
    """The emoji LoRA's LDS (64 LoRAs retrained, reported on 32): floors just under the measured values, the
    ordering on generated images (DAS > D-TRAK > NDA > raw pixels, TRAK, EK-FAC), and the ground truth's
    concept diagnostics recomputed from the stored outputs and scores."""
    from explorer.evaluation.results import EvalResults
    from explorer.paths import AssetPaths
    from explorer.task import open_dataset
    from precompute.emoji_eval import concept_effect
    res = EvalResults(os.path.join("assets", "emoji", "eval"))
    table = res.lds()
    lds_ = {(r["method"], r["split"]): r["lds"] for r in table["rows"]}
    gen = {m: lds_[m, "generated"] for m in ("das", "dtrak", "nda", "pixel-cos", "trak", "ekfac")}
    assert gen["das"] > 0.70 and gen["dtrak"] > 0.63 and gen["nda"] > 0.54
    assert gen["das"] > gen["dtrak"] > gen["nda"] > max(gen["pixel-cos"], gen["trak"], gen["ekfac"])
    assert max(gen["pixel-cos"], gen["trak"], gen["ekfac"]) < 0.12
    assert all(-0.05 < v < 0.12 for (m, s), v in lds_.items() if s == "validation")  # near zero for every method
    ds = open_dataset(AssetPaths("emoji"))
    masks, outputs = masks_from_subsets(res.subsets(), len(ds.train_idx)), res.outputs()
    query_concept = np.array([str(c).rsplit(",", 1)[0] for c in res.queries["caption"]])
    train_concept = np.array([ds.meta["name"][int(i)] for i in ds.train_idx])
    for r in table["rows"]:
        cols = res.columns(r["split"])
        got = concept_effect(masks, outputs[:, cols], query_concept[cols], train_concept,
                             np.asarray(res.stored_scores(r["method"], r["S"], r["split"]), np.float64))
        assert got["top1_is_concept"] == pytest.approx(r["top1_is_concept"])
        assert {k: v for k, v in got.items() if k != "top1_is_concept"} == pytest.approx(table["concept"][r["split"]])
    assert table["concept"]["generated"]["lowers_loss"] > 0.95 and table["concept"]["validation"]["lowers_loss"] < 0.3
    assert [r["top1_is_concept"] for r in table["rows"] if r["method"] == "dtrak" and r["split"] == "validation"] \
        [0] > 0.6  # D-TRAK credits first the drawing that, in truth, raises a held-out drawing's loss


def test_ray_and_local_engines_give_identical_models(tmp_path):
    """The same two retraining jobs on a local Ray instance (2 CPUs) and in process: same weights."""
    import ray  # optional for users, installed by requirements-test.txt

    from explorer.models import load_model
    from precompute.retrain import train_job
    from precompute.jobs import run_jobs
    jobs = {engine: [dict(dataset="digits", indices=list(range(s, 1528, 5)), out_dir=str(tmp_path / engine / str(s)),
                          seed=s, device="cpu", epochs=1) for s in (0, 1)] for engine in ("local", "ray")}
    run_jobs(train_job, jobs["local"])
    try:
        out = run_jobs(train_job, jobs["ray"], engine="ray", workers=2)
    finally:
        ray.shutdown()
    assert out == [j["out_dir"] for j in jobs["ray"]]
    for a, b in zip(jobs["local"], jobs["ray"]):
        wa, wb = (load_model(os.path.join(j["out_dir"], "model")).state_dict() for j in (a, b))
        assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_feature_shards_built_on_ray_merge_into_the_same_cache_as_a_local_build(tmp_path, monkeypatch):
    """``precompute features --engine ray``: one Ray job per shard of training images (a local 2-CPU
    instance), merged into one manifest-checked cache with the same bytes as the in-process build."""
    import json

    import ray

    from explorer.attribution.timesteps import TimestepStrategy
    from explorer.engine import Engine
    from precompute import features
    monkeypatch.setenv("PRECOMPUTE_WORKERS", "2")
    calls, run_jobs = [], features.run_jobs
    monkeypatch.setattr(features, "run_jobs", lambda fn, jobs, *a, **k: calls.append(len(jobs)) or run_jobs(fn, jobs, *a, **k))
    features.run("digits", methods=["dtrak"], S=[1], cache_dir=str(tmp_path / "local"))
    assert calls == []  # in process
    try:
        features.run("digits", methods=["dtrak"], S=[1], engine="ray", cache_dir=str(tmp_path / "ray"))
    finally:
        ray.shutdown()
    assert calls == [6]  # 1528 training images: 6 shards of 256, each one Ray job
    manifests = [json.load(open(next((tmp_path / c).rglob("manifest.json")))) for c in ("local", "ray")]
    assert manifests[0]["complete"] and manifests[0]["sha256"] == manifests[1]["sha256"]
    assert manifests[0]["scale_sha256"] == manifests[1]["scale_sha256"]
    assert not list((tmp_path / "ray").rglob("shard_*.npy"))  # merged, then removed
    eng = Engine("digits", cache_dir=str(tmp_path / "ray"))
    assert eng.ready("dtrak", TimestepStrategy("uniform", 1))


def test_stored_benchmark_attribution_matches_a_live_one(digits_engine):
    """The UI's fast path for benchmark queries reads the LDS stage's scores: they equal a fresh computation."""
    from explorer.attribution.timesteps import TimestepStrategy
    eng = digits_engine
    stored = eng.benchmark_attribution(3, "dtrak", 10)
    live = eng.scores([eng.benchmark_query(3)], "dtrak", TimestepStrategy("uniform", 10), stored.lam)[0]
    assert np.abs(stored.scores - live).max() < 2e-3 * np.abs(live).max()
    assert stored.top.proponents[0][0] == np.argmax(live)
    assert eng.benchmark_attribution(3, "dtrak", 10, lam=stored.lam * 10) is None  # another λ: computed live
    assert eng.benchmark_attribution(3, "tracin", 100) is None  # not evaluated
