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
    masks, truth, outputs, rng = _datamodel()
    tune, report = np.arange(32), np.arange(32, 64)

    def score_fn(lam):
        return truth + lam * rng.normal(size=truth.shape) if lam else truth

    rng = np.random.default_rng(5)
    a = evaluate(lambda l: truth + l * np.random.default_rng(0).normal(size=truth.shape), masks, outputs,
                 [0.1, 100.0], tune, report, n_boot=10)
    scrambled = outputs.copy()
    scrambled[report] = np.random.default_rng(1).normal(size=scrambled[report].shape)  # only reporting rows change
    b = evaluate(lambda l: truth + l * np.random.default_rng(0).normal(size=truth.shape), masks, scrambled,
                 [0.1, 100.0], tune, report, n_boot=10)
    assert a.lam == b.lam == 0.1 and a.mean > 0.9 and b.mean < 0.3
    with pytest.raises(ValueError, match="overlap"):
        evaluate(score_fn, masks, outputs, [1.0], np.arange(40), np.arange(30, 64))


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
    ev = os.path.join("assets", dataset, "eval")
    res = json.load(open(os.path.join(ev, "counterfactual.json")))
    assert res["train_seed"] == json.load(open(os.path.join("assets", dataset, "train.json")))["train"]["seed"]
    removed = np.load(os.path.join(ev, "counterfactual_removed.npz"), allow_pickle=False)
    assert removed["seeds"].tolist() == res["seeds"] and res["k"] == round(0.2 * res["n"])
    for m in ("random", "trak", "dtrak"):
        assert removed[m].shape == (8, res["k"]) and all(len(set(row)) == res["k"] for row in removed[m])
        assert len(res["methods"][m]["l2"]) == 8
    assert not np.array_equal(removed["trak"], removed["dtrak"])


def test_retraining_is_deterministic_and_resumes(tmp_path):
    from explorer.models import ddim_sample, load_model
    from precompute.evaluate import train_job
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
    assert not torch.equal(ddim_sample(load_model(str(tmp_path / "b" / "model")), [7], steps=10), imgs[0])


def test_shipped_lds_results_are_consistent():
    path = os.path.join("assets", "digits", "eval", "lds.json")
    res = json.load(open(path))
    rows = {(r["method"], r["S"], r["split"]): r for r in res["rows"]}
    for (m, S, split), r in rows.items():
        assert r["ci"][0] <= r["lds"] <= r["ci"][1], (m, S, split)
        assert abs(np.mean(r["per_query"]) - r["lds"]) < 1e-3
    assert set(res["config"]["tune_subsets"]).isdisjoint(res["config"]["report_subsets"])
    assert ("dtrak", 10, "validation") in rows and ("trak", 100, "generated") in rows


def test_ray_and_local_engines_give_identical_models(tmp_path):
    """The same two retraining jobs on a local Ray instance (2 CPUs) and in process: same weights."""
    import ray  # optional for users, installed by requirements-test.txt

    from explorer.models import load_model
    from precompute.evaluate import train_job
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


def test_stored_benchmark_attribution_matches_a_live_one(digits_engine):
    """The UI's fast path for benchmark queries reads the LDS stage's scores: they equal a fresh computation."""
    from explorer.attribution.timesteps import TimestepStrategy
    from explorer.engine import Query
    eng = digits_engine
    stored = eng.benchmark_attribution(3, "dtrak", 10)
    q = np.load(os.path.join("assets", "digits", "eval", "queries.npz"), allow_pickle=False)
    live = eng.scores([Query("val", torch.from_numpy(q["x"][3]), int(q["uid"][3]))], "dtrak",
                      TimestepStrategy("uniform", 10), stored.lam)[0]
    assert np.abs(stored.scores - live).max() < 2e-3 * np.abs(live).max()
    assert stored.top.proponents[0][0] == np.argmax(live)
    assert eng.benchmark_attribution(3, "dtrak", 10, lam=stored.lam * 10) is None  # another λ: computed live
    assert eng.benchmark_attribution(3, "tracin", 100) is None  # not evaluated
