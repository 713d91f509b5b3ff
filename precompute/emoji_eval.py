"""LDS and the counterfactual for the emoji LoRA: the paper's ArtBench protocol in miniature
(``python -m precompute lds --dataset emoji``, ``… counterfactual --dataset emoji``).

- subsets: ``n_subsets`` random halves of the LoRA's training drawings (``make_subsets``, seed 42), the base
  model fixed;
- one LoRA retrained on each half with the shipped LoRA's recipe and seed (``lora_job``: resumable, a folder
  whose ``done.json`` records another fingerprint is retrained);
- queries: *validation* = the held-out drawings of the same concepts, each under its own caption;
  *generated* = the shipped LoRA's images for prompts (training captions spread over the set, seed j);
- ground truth y_m(q) = L_Simple of LoRA m on q under q's caption, averaged over every ``gt_t_every``-th
  timestep with ``gt_draws`` seeded noise draws each (``measured_outputs``);
- scoring, λ tuned on the first half of the subsets and reported on the second: ``precompute.lds.score_lds``,
  the code every other model's LDS runs, for the methods in ``EMOJI_EVAL.plan``;
- while the LoRAs retrain (the two halves interleaved), ``interim_lds`` (``lds --interim``) scores the finished
  ones by the same split into ``runs/emoji/lds_interim.json``.
"""
from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import asdict, replace

import numpy as np
import torch

from explorer import lora as lora_lib
from explorer import text2image as t2i
from explorer.attribution.features import generated_uid
from explorer.attribution.methods.das import DAS
from explorer.attribution.methods.ekfac import EKFAC
from explorer.attribution.registry import BASELINE_METHOD, DEFAULT_METHOD, GRADIENT_FREE_METHOD, PIXEL_METHOD
from explorer.attribution.timesteps import TimestepStrategy, seeded_noise
from explorer.evaluation.lds import measured_outputs
from explorer.evaluation.results import EvalResults
from explorer.files import read_json, save_npy, write_json
from explorer.models import weights_fingerprint
from explorer.paths import AssetPaths
from explorer.schedule import T

from .eval_config import EvalConfig, runs_dir
from .jobs import run_jobs

# the unconditional models' ground truth reads 250 timesteps × 2 draws; a LoRA retrain's budget on 2 cores allows 50
# the counterfactual: 8 prompts × (3 methods + random) = 32 LoRAs retrained without the top 20 % proponents
EMOJI_EVAL = EvalConfig(n_val=100, n_gen=100, gt_t_every=20, gt_draws=1, cf_queries=8, cf_S=10,
                        cf_methods=(BASELINE_METHOD, DEFAULT_METHOD, GRADIENT_FREE_METHOD),
                        plan=[(m, 10) for m in (DEFAULT_METHOD, BASELINE_METHOD, DAS.name, EKFAC.name, PIXEL_METHOD,
                                                GRADIENT_FREE_METHOD)])
PROMPT_STEPS = 50


def _paths(root: str | None) -> AssetPaths:
    return AssetPaths("emoji", **({"root": root} if root else {}))


def _runs(root: str | None, stage: str) -> str:
    """Where a stage's retrained LoRAs are kept (``runs/emoji/<stage>``; under ``root`` for a test's assets)."""
    return os.path.join(runs_dir("emoji"), stage) if root is None else os.path.join(root, "emoji", "runs", stage)


def base_fingerprint(paths: AssetPaths) -> str:
    """The fingerprint of the base model's weights, which every retrained LoRA sits on."""
    return weights_fingerprint(t2i.load_pipeline(os.path.join(paths.base, "base"))[0])


def lora_fingerprint(base: str, indices: list[int], lora: lora_lib.LoRAConfig, train) -> str:
    """Everything that makes a retrained LoRA what it is: its training positions, the LoRA and training
    recipe (seed included) and the base model's weights (``base_fingerprint``)."""
    record = {"indices": [int(i) for i in indices], "lora": asdict(lora), "train": asdict(train), "base": base}
    return hashlib.sha256(json.dumps(record, sort_keys=True, default=list).encode()).hexdigest()[:16]


def recipe(lora: dict | None = None, train: dict | None = None):
    """(LoRA config, training config) of the retrained LoRAs: the shipped LoRA's, with ``lora`` / ``train``
    overrides (tests use a tiny one)."""
    from .emoji import LORA, LORA_TRAIN
    return replace(LORA, **{**(lora or {}), "targets": tuple((lora or {}).get("targets", LORA.targets))}), \
        replace(LORA_TRAIN, **(train or {}))


def lora_job(indices: list[int], out_dir: str, queries: str | None = None, gt: tuple = (), root: str | None = None,
             lora: dict | None = None, train: dict | None = None, threads: int = 1) -> str:
    """Trains the LoRA recipe on training positions ``indices`` (base fixed), saves the adapters and (with
    ``queries``) the ground-truth outputs of every benchmark query; resumes an interrupted training from its
    state file."""
    from .emoji import _train_lora
    torch.set_num_threads(threads)
    paths = _paths(root)
    lcfg, tcfg = recipe(lora, train)
    done, outputs = os.path.join(out_dir, "done.json"), os.path.join(out_dir, "outputs.npy")
    fingerprint = lora_fingerprint(base_fingerprint(paths), indices, lcfg, tcfg)
    if os.path.exists(done) and read_json(done).get("fingerprint") == fingerprint and (
            not queries or os.path.exists(outputs)):
        return out_dir
    os.makedirs(out_dir, exist_ok=True)
    t0 = time.time()
    unet, text_encoder, tokenizer, log = _train_lora(indices, tcfg,
                                                    os.path.abspath(os.path.join(out_dir, f"state_{fingerprint}.pt")),
                                                    progress=False, paths=paths, lora=lcfg)
    lora_lib.save_lora(unet, os.path.join(out_dir, "lora"))
    if queries:
        save_npy(outputs, _ground_truth(unet, text_encoder, tokenizer, queries, gt))
    write_json(done, {"n": len(indices), "fingerprint": fingerprint, "train_seconds": log.seconds,
                      "seconds": time.time() - t0})
    return out_dir


def _ground_truth(unet, text_encoder, tokenizer, queries: str, gt: tuple) -> np.ndarray:
    """y(q): L_Simple of the model on each benchmark query under its caption (``measured_outputs``)."""
    q = np.load(queries, allow_pickle=False)
    x = torch.from_numpy(q["x"].astype(np.float32))
    every, draws = gt
    ts = list(range(0, T, every))
    eps = torch.cat([seeded_noise(q["uid"].tolist(), ts, tuple(x.shape[1:]), seed=100 + d) for d in range(draws)], 1)
    with torch.no_grad():
        context = t2i.encode(text_encoder, t2i.tokenize(tokenizer, [str(c) for c in q["caption"]]))
    return measured_outputs(unet, x, eps, torch.tensor(ts * draws), batch=512, context=context).astype(np.float32)


def write_queries(task, res: EvalResults, cfg: EvalConfig) -> None:
    """Validation: up to ``n_val`` held-out drawings (seeded choice) under their captions; generated: the LoRA's
    images for ``n_gen`` training captions spread over the set, prompt j drawn from seed j. ``x`` is the model's
    input (a latent model: the latents, with the images beside them as ``image``)."""
    ds = task.data
    val = np.sort(np.random.default_rng(0).choice(len(ds.val_idx), min(cfg.n_val, len(ds.val_idx)), replace=False))
    train_caps = [ds.meta["caption"][int(i)] for i in ds.train_idx]
    pick = np.linspace(0, len(train_caps) - 1, cfg.n_gen).round().astype(int)
    prompts = [train_caps[i] for i in pick]
    qs = [task.val_query(int(v)) for v in val] + [task.prompt(p, seed=j, steps=PROMPT_STEPS)
                                                   for j, p in enumerate(prompts)]
    uid = np.concatenate([ds.val_idx[val], [generated_uid(j) for j in range(cfg.n_gen)]]).astype(np.int64)
    images = {"image": torch.stack([q.shown for q in qs]).numpy().astype(np.float32)} if task.vae is not None else {}
    res.save_queries(x=torch.stack([q.x for q in qs]).numpy().astype(np.float32), uid=uid,
                     split=np.array([0] * len(val) + [1] * cfg.n_gen, dtype=np.int8), val_pos=val.astype(np.int64),
                     gen_seed=np.arange(cfg.n_gen), caption=np.array([q.caption for q in qs]), **images)


def run_lds(cfg: EvalConfig = EMOJI_EVAL, root: str | None = None, cache_dir: str | None = None,
            workers: int | None = None, lora: dict | None = None, train: dict | None = None,
            until: str | None = None) -> dict:
    """Subsets, queries, the retrained LoRAs (resumable) and their ground truth, then LDS per (method, split)
    into ``eval/lds.json``. ``lora`` / ``train``: recipe overrides (tests use a tiny one)."""
    from explorer.engine import Engine
    from explorer.evaluation.lds import masks_from_subsets

    from .lds import protocol_subsets, score_lds
    engine = Engine("emoji", root=root, cache_dir=cache_dir)
    res = engine.results
    subsets = protocol_subsets(res, len(engine.data.train_idx), cfg)
    if not res.has_queries:
        write_queries(engine.task, res, cfg)
    runs = _runs(root, "lds")
    jobs = [dict(indices=s.tolist(), out_dir=os.path.join(runs, f"subset_{j:03d}"), queries=res.path("queries.npz"),
                 gt=(cfg.gt_t_every, cfg.gt_draws), root=root, lora=lora, train=train) for j, s in enumerate(subsets)]
    t0 = time.time()
    half = len(jobs) // 2  # the halves interleaved (0, 32, 1, 33, …): an interim LDS can be scored at any point
    order = [j for pair in zip(jobs[:half], jobs[half:]) for j in pair] + jobs[2 * half:]
    run_jobs(lora_job, order, workers=workers, desc="LoRA retrains")
    res.save_outputs(np.stack([np.load(os.path.join(j["out_dir"], "outputs.npy")) for j in jobs]))
    retrain_s = sum(read_json(os.path.join(j["out_dir"], "done.json"))["seconds"] for j in jobs)
    if until == "retrain":
        return {"retrain_seconds": retrain_s, "wall_seconds": time.time() - t0}
    results = score_lds("emoji", cfg, retrain_s=retrain_s, engine=engine)
    masks = masks_from_subsets(subsets, len(engine.data.train_idx))
    results["rows"], results["concept"] = with_concept(engine, masks, res.outputs(), (
        (r, res.stored_scores(r["method"], r["S"], r["split"])) for r in results["rows"]))
    res.save_lds(results)
    return results


def concept_effect(masks: np.ndarray, outputs: np.ndarray, query_concept: np.ndarray, train_concept: np.ndarray,
                   scores: np.ndarray) -> dict:
    """What the concept of each query does to its ground truth, and whether a method's first proponent is of it.
    Over the queries whose concept has training drawings, present in some subsets (``masks`` (M, n)) and absent
    in others: the effect Δ = mean y over subsets without the concept's drawings − mean y over those with them
    (> 0: they lower the query's loss), as the share of queries with Δ > 0 and the mean Δ in units of y's spread
    across subsets; and the share of those queries whose top-scored drawing (``scores`` (Q, n)) is of the
    concept. ``outputs`` (M, Q), ``query_concept`` (Q,), ``train_concept`` (n,)."""
    effects, spreads, firsts = [], [], []
    for q, name in enumerate(query_concept):
        has = masks[:, train_concept == name].any(1)
        if has.all() or not has.any():
            continue
        effects.append(outputs[~has, q].mean() - outputs[has, q].mean())
        spreads.append(outputs[:, q].std())
        firsts.append(train_concept[int(np.argmax(scores[q]))] == name)
    effects = np.array(effects)
    return {"queries": len(effects), "lowers_loss": float(np.mean(effects > 0)),
            "effect_in_spreads": float(np.mean(effects / np.maximum(spreads, 1e-12))),
            "top1_is_concept": float(np.mean(firsts))}


def with_concept(engine, masks: np.ndarray, outputs: np.ndarray, scored) -> tuple[list[dict], dict]:
    """The LDS rows of ``scored`` ((row, scores) pairs) with each method's ``top1_is_concept``, and per split the
    ground truth's ``concept_effect`` (the same for every method): the diagnostics stored beside an emoji LDS."""
    res, ds = engine.results, engine.data
    query_concept = np.array([str(c).rsplit(",", 1)[0] for c in res.queries["caption"]])
    train_concept = np.array([ds.meta["name"][int(i)] for i in ds.train_idx])
    rows, concept = [], {}
    for row, scores in scored:
        cols = res.columns(row["split"])
        effect = concept_effect(masks, outputs[:, cols], query_concept[cols], train_concept, scores)
        concept[row["split"]] = {k: v for k, v in effect.items() if k != "top1_is_concept"}
        rows.append({**row, "top1_is_concept": effect["top1_is_concept"]})
    return rows, concept


def interim_lds(cfg: EvalConfig = EMOJI_EVAL, root: str | None = None, cache_dir: str | None = None,
                lora: dict | None = None, train: dict | None = None) -> dict:
    """LDS on the half-set LoRAs finished so far, while the rest retrain (``--interim``): λ tuned on the finished
    subsets of the first half (0–31), reported on the finished subsets of the second (32–63) — the protocol's
    split, on fewer subsets, so wider intervals. A LoRA counts as finished when its ground truth is on disk and
    its ``done.json`` records this recipe. With each row, ``concept_effect``: whether the queries' concepts
    lower their loss in truth, and how often the method ranks a drawing of the concept first. Written to
    ``runs/emoji/lds_interim.json``; ``assets/`` is untouched (the final ``lds`` run scores all 64 into ``eval/``)."""
    from explorer.engine import Engine
    from explorer.evaluation.lds import masks_from_subsets

    from .lds import protocol_subsets, score_rows
    engine = Engine("emoji", root=root, cache_dir=cache_dir)
    n = len(engine.data.train_idx)
    subsets = protocol_subsets(engine.results, n, cfg)
    runs, base, (lcfg, tcfg) = _runs(root, "lds"), base_fingerprint(_paths(root)), recipe(lora, train)

    def is_finished(j: int) -> bool:
        folder = os.path.join(runs, f"subset_{j:03d}")
        done = os.path.join(folder, "done.json")
        return os.path.exists(os.path.join(folder, "outputs.npy")) and os.path.exists(done) and \
            read_json(done).get("fingerprint") == lora_fingerprint(base, subsets[j].tolist(), lcfg, tcfg)
    finished = [j for j in range(len(subsets)) if is_finished(j)]
    half = len(subsets) // 2
    tune = np.array([p for p, j in enumerate(finished) if j < half])
    report = np.array([p for p, j in enumerate(finished) if j >= half])
    if not len(tune) or not len(report):
        raise SystemExit(f"an interim LDS needs finished LoRAs in both halves of the {len(subsets)} subsets; "
                         f"finished: {finished}. Let `python -m precompute lds --dataset emoji` run on.")
    outputs = np.stack([np.load(os.path.join(runs, f"subset_{j:03d}", "outputs.npy")) for j in finished])
    outputs = outputs.astype(np.float64)  # as the final scoring reads them (``EvalResults.outputs``)
    masks = masks_from_subsets(subsets[finished], n)
    rows, concept = with_concept(engine, masks, outputs, score_rows(engine, cfg, masks, outputs, tune, report))
    out = {"finished": finished, "tune_subsets": [finished[p] for p in tune],
           "report_subsets": [finished[p] for p in report], "rows": rows, "concept": concept}
    write_json(os.path.join(os.path.dirname(runs), "lds_interim.json"), out)
    return out


def run_counterfactual(cfg: EvalConfig = EMOJI_EVAL, root: str | None = None, cache_dir: str | None = None,
                       workers: int | None = None, lora: dict | None = None, train: dict | None = None) -> dict:
    """For ``cf_queries`` generated benchmark prompts: each method's top ``cf_fraction`` proponents (and as many
    random drawings) removed, the LoRA retrained with the same recipe and seed, the prompt regenerated from the
    same noise; the change in pixel L2 and pixel cosine against the shipped LoRA's image (no classifier here).
    Incremental like the other models' counterfactual: removals already measured are kept."""
    from explorer.engine import Engine
    from explorer.evaluation import counterfactual as cf
    from explorer.t2i_task import GUIDANCE
    engine = Engine("emoji", root=root, cache_dir=cache_dir)
    res = engine.results
    if not res.has_queries:
        write_queries(engine.task, res, cfg)
    n = len(engine.data.train_idx)
    k = int(round(cfg.cf_fraction * n))
    removed = res.removed()
    have = removed.get("queries", np.zeros(0, np.int64))
    if len(have) < cfg.cf_queries:  # more prompts than a stored run: its prompts and removals kept, new ones added
        rest = np.setdiff1d(res.columns("generated"), have)
        new = np.random.default_rng(cfg.cf_seed + len(have)).choice(rest, cfg.cf_queries - len(have), replace=False)
        removed["queries"] = np.concatenate([have, np.sort(new)])
    qs = [engine.benchmark_query(int(i)) for i in removed["queries"]]
    for name in ("random", *cfg.cf_methods):
        rows = removed.get(name, np.zeros((0, k), np.int64))
        if len(rows) < len(qs):
            more = cf.random_removal(n, k, len(qs) - len(rows), cfg.cf_seed + len(rows)) if name == "random" else \
                cf.top_proponents(engine.scores(qs[len(rows):], name, TimestepStrategy("uniform", cfg.cf_S)), k)
            removed[name] = np.concatenate([rows, more])
    res.save_removed(removed)
    methods = ("random", *cfg.cf_methods)
    runs = _runs(root, "counterfactual")
    jobs = {(m, j): dict(indices=cf.keep_indices(n, removed[m][j]).tolist(), out_dir=os.path.join(runs, f"{m}_{j}"),
                         root=root, lora=lora, train=train) for m in methods for j in range(len(qs))}
    run_jobs(lora_job, list(jobs.values()), workers=workers, desc="counterfactual LoRA retrains")
    original = torch.stack([q.shown for q in qs])
    seeds = [int(res.queries["gen_seed"][res.split_of(int(i))[1]]) for i in removed["queries"]]
    lcfg, tcfg = recipe(lora, train)
    images, out = {"original": original.numpy().astype(np.float16)}, {
        "k": k, "n": n, "seeds": seeds, "prompts": [q.caption for q in qs], "cosine_space": "pixels",
        "train_seed": tcfg.seed, "retrain_seconds": sum(  # training time summed over resumed sessions
            read_json(os.path.join(j["out_dir"], "done.json"))["train_seconds"] for j in jobs.values()),
        "methods": {}}
    base, vae = os.path.join(_paths(root).base, "base"), engine.task.vae  # base and VAE fixed
    for m in methods:
        regen = []
        for j, q in enumerate(qs):
            unet, te, tok = t2i.load_pipeline(base)  # a fresh base for each retrained LoRA's adapters
            lora_lib.load_lora(unet, os.path.join(jobs[m, j]["out_dir"], "lora"), lcfg)
            regen.append(t2i.to_images(vae, t2i.sample(unet, te, tok, [q.caption], [seeds[j]], PROMPT_STEPS,
                                                       GUIDANCE, latent=vae is not None))[0])
        regen = torch.stack(regen)
        images[m] = regen.numpy().astype(np.float16)
        l2 = cf.pixel_l2(original, regen)
        cos = torch.nn.functional.cosine_similarity(original.flatten(1), regen.flatten(1), dim=1).numpy()
        out["methods"][m] = cf.change_summary(l2, cos)
        print(f"counterfactual {m:7s} median L2 {np.median(l2):.3f}  median cosine {np.median(cos):.3f}")
    res.save_counterfactual(out, images)
    return out
