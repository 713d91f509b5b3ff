import numpy as np
import pytest
import torch

from explorer.attribution.features import FeatureComputer, FeatureSpec
from explorer.attribution.gradients import GradientComputer, loop_gradients
from explorer.attribution.kernel import Features, Kernel, blockwise_topk, direct_scores
from explorer.attribution.registry import METHODS
from explorer.attribution.outputs import OUTPUT_FUNCTIONS
from explorer.attribution.projectors import CountSketchProjector, GaussianProjector
from explorer.attribution.timesteps import TimestepStrategy, seeded_noise


def test_timestep_strategies():
    assert TimestepStrategy("uniform", 10).timesteps() == list(range(0, 1000, 100))
    for S in (1, 3, 300, 600, 999, 1000):  # t_s = floor(s·T/S): distinct and spread over [0, T) for every S
        ts = TimestepStrategy("uniform", S).timesteps()
        assert len(set(ts)) == S and ts[0] == 0 and ts[-1] >= 1000 - 1000 // S - 1, S
    assert TimestepStrategy("uniform", 600).timesteps()[-1] == 998
    assert TimestepStrategy("cumulative", 3).timesteps() == [0, 1, 2]
    r = TimestepStrategy("random", 5, seed=1).timesteps()
    assert r == TimestepStrategy("random", 5, seed=1).timesteps() and len(set(r)) == 5
    with pytest.raises(ValueError, match="S must be"):
        TimestepStrategy("uniform", 0)


def test_noise_depends_only_on_sample_and_timestep():
    a = seeded_noise([5, 9], [0, 100, 200], (1, 4, 4))
    b = seeded_noise([9], [200, 100], (1, 4, 4))
    assert torch.equal(a[1, 2], b[0, 0]) and torch.equal(a[1, 1], b[0, 1])
    assert not torch.equal(a[0, 0], a[1, 0])


@pytest.mark.parametrize("fn", sorted(OUTPUT_FUNCTIONS))
def test_vmap_gradients_match_loop(tiny_unet, fn):
    x = torch.rand(3, 1, 8, 8) * 2 - 1
    ts = torch.tensor([0, 300, 900])
    eps = seeded_noise([0, 1, 2], ts.tolist(), (1, 8, 8))
    g = GradientComputer(tiny_unet, fn)(x, eps, ts)
    assert torch.allclose(g, loop_gradients(tiny_unet, fn, x, eps, ts), atol=1e-5, rtol=1e-4)


def test_chunks_respect_input_and_gradient_memory_bounds(tiny_unet):
    gc = GradientComputer(tiny_unet, "square", max_inputs=12, max_grad_bytes=4 * 1000 * 1000)
    assert gc.chunk_size(3) == 4 and gc.chunk_size(100) == 1  # bounded by model inputs
    gc.max_grad_bytes = 4 * gc.dim * 3
    assert gc.chunk_size(1) == 3  # bounded by per-sample gradient memory
    x, ts = torch.rand(7, 1, 8, 8), torch.tensor([5])
    eps = seeded_noise(list(range(7)), [5], (1, 8, 8))
    got = list(gc.chunks(x, eps, ts))
    assert [r for r, _ in got] == [slice(0, 3), slice(3, 6), slice(6, 7)]
    assert torch.allclose(torch.cat([torch.cat(b, 1) for _, b in got]), gc(x, eps, ts), atol=1e-6)
    # activations: a 32×32 input keeps 16 × what an 8×8 one does (within the size-independent parts)
    per_input = gc.input_bytes((1, 8, 8))
    assert 12 < gc.input_bytes((1, 32, 32)) / per_input <= 16
    gc.max_grad_bytes, gc.max_inputs = 1 << 40, 1 << 20
    gc.max_activation_bytes = 6 * per_input
    assert gc.chunk_size(3, (1, 8, 8)) == 2 and gc.chunk_size(3) == (1 << 20) // 3  # bounded by activations


def test_gradient_subset_of_parameters(tiny_unet):
    names = [n for n, _ in tiny_unet.named_parameters()][-2:]
    gc = GradientComputer(tiny_unet, "square", names)
    assert gc.dim == sum(dict(tiny_unet.named_parameters())[n].numel() for n in names)
    ts = torch.tensor([10])
    full = GradientComputer(tiny_unet, "square")(torch.zeros(1, 1, 8, 8), torch.ones(1, 1, 1, 8, 8), ts)
    assert torch.allclose(gc(torch.zeros(1, 1, 8, 8), torch.ones(1, 1, 1, 8, 8), ts), full[:, -gc.dim:])


@pytest.mark.parametrize("cls", [GaussianProjector, CountSketchProjector])
def test_projectors_preserve_inner_products_within_jl_bounds(cls):
    torch.manual_seed(0)
    p = 5000
    a = torch.randn(20, p)
    exact = a @ a.T
    norms = a.norm(dim=1)
    errs = {}
    for k in (256, 2048):
        proj = cls(p, k, seed=3)
        pa = proj(a)
        assert torch.equal(pa, cls(p, k, seed=3)(a))  # same seed → same projection
        rel = ((pa @ pa.T - exact) / (norms[:, None] * norms[None, :])).abs()
        errs[k] = rel.max().item()
        assert errs[k] < 6 / k ** 0.5  # JL: error ~ O(1/√k)
    assert errs[2048] < errs[256]


def test_countsketch_equals_its_dense_matrix_and_takes_gradient_blocks():
    """φ = Sᵀ g with S[j, h(j)] = s(j), the obvious dense CountSketch, whether g comes whole
    or as per-parameter blocks."""
    p, k = 700, 32
    g = torch.randn(4, p)
    proj = CountSketchProjector(p, k, seed=1)
    slot = proj.slot.long()
    dense = torch.zeros(p, k)
    dense[torch.arange(p), slot % k] = torch.where(slot < k, 1.0, -1.0)
    assert set((slot < k).tolist()) == {True, False}  # both signs occur
    assert torch.allclose(proj(g), g @ dense, atol=1e-5)
    assert torch.allclose(proj([g[:, :100], g[:, 100:650], g[:, 650:]]), proj(g), atol=1e-6)
    with pytest.raises(ValueError, match="699 entries"):
        proj(g[:, 1:])
    for cls in (GaussianProjector, CountSketchProjector):  # every projector accepts blocks
        assert torch.allclose(cls(p, k, seed=2)([g[:, :300], g[:, 300:]]), cls(p, k, seed=2)(g), atol=1e-5)


def test_kernel_matches_dense_solve_on_unprojected_gradients(tiny_unet):
    """Exact check on a tiny model with raw gradients (k = p > n: the dual branch)."""
    spec = FeatureSpec("square", TimestepStrategy("uniform", 2), "exact", 0)
    names = [n for n, _ in tiny_unet.named_parameters()][-6:]  # a few hundred raw gradient entries
    fc = FeatureComputer(tiny_unet, spec, param_names=names)
    x = torch.rand(6, 1, 8, 8) * 2 - 1
    phi = fc(x[:5], list(range(5))).astype(np.float64)
    q = fc(x[5:], [99]).astype(np.float64)
    kern = Kernel(phi)
    assert kern.dual
    for lam in (1e-3, 1e-1, 10.0):  # one eigendecomposition, every λ
        assert np.allclose(kern.scores(q, lam), direct_scores(phi, q, lam), rtol=1e-6, atol=1e-9)


def test_primal_kernel_and_relative_influence_match_direct():
    rng = np.random.default_rng(0)
    phi, q = rng.normal(size=(40, 8)), rng.normal(size=(3, 8))
    kern = Kernel(phi)
    assert not kern.dual
    for lam in (0.1, 1.0, 100.0):
        assert np.allclose(kern.scores(q, lam), direct_scores(phi, q, lam))
        inv = np.linalg.solve(phi.T @ phi + lam * np.eye(8), phi.T).T
        assert np.allclose(kern.inverse_norms(lam), np.linalg.norm(inv, axis=1))
        rel = METHODS["relative-if"].score([Features(phi)], [q], lam, [kern])
        assert np.allclose(rel, direct_scores(phi, q, lam) / np.linalg.norm(inv, axis=1))
    # dual branch norms
    wide = rng.normal(size=(5, 30))
    inv = np.linalg.solve(wide.T @ wide + 0.5 * np.eye(30), wide.T).T
    assert np.allclose(Kernel(wide).inverse_norms(0.5), np.linalg.norm(inv, axis=1))


def test_blockwise_topk_equals_full_sort():
    rng = np.random.default_rng(1)
    s = rng.normal(size=(37, 500))
    top = blockwise_topk(lambda rows: s[rows], 37, 7, block=5)
    order = np.argsort(-s, axis=1)
    assert np.array_equal(top.proponents, order[:, :7])
    assert np.array_equal(top.opponents, np.argsort(s, axis=1)[:, :7])
    assert np.allclose(top.proponent_scores, np.take_along_axis(s, order[:, :7], 1))


def test_features_are_deterministic_and_batch_independent(tiny_unet):
    spec = FeatureSpec("simple", TimestepStrategy("uniform", 3), "countsketch", 64, seed=5)
    x = torch.rand(4, 1, 8, 8) * 2 - 1
    a = FeatureComputer(tiny_unet, spec)(x, [10, 11, 12, 13])
    b = FeatureComputer(tiny_unet, spec)(x[2:], [12, 13])
    assert np.array_equal(a, FeatureComputer(tiny_unet, spec)(x, [10, 11, 12, 13]))
    assert np.allclose(a[2:], b, atol=1e-6)


SELF_TOP5 = {"dtrak": 14, "trak": 18, "nda": 19}  # measured (exact default): 15, 19 and 20 of 20 in the top 5
DUPLICATES = {"dtrak": (7, 7), "trak": (3, 4), "nda": (7, 7)}  # of 8 pairs, partner in the top 5; measured
# 8, 8 (D-TRAK), 4, 5 (TRAK), 8, 8 (NDA: the partner at rank 2, after the query's own training copy)


def _fresh(eng, i):
    return eng.task.train_query(i, fresh=True)


def test_training_images_rank_themselves_high_with_fresh_noise(digits_engine):
    """Catches a broken kernel, feature or noise pipeline: a training image queried with *fresh* noise
    (not its cached features) must still find itself. Thresholds from the measured exact default
    (20 images, one below the measured counts)."""
    eng = digits_engine
    idx = np.random.default_rng(0).choice(len(eng.data.train_idx), 20, replace=False)
    for method, need in SELF_TOP5.items():
        s = eng.scores([_fresh(eng, int(i)) for i in idx], method, TimestepStrategy("uniform", 10))
        rank = (s > s[np.arange(20), idx][:, None]).sum(1)
        assert (rank < 5).sum() >= need, (method, rank)


def test_every_method_runs_end_to_end(tmp_path):
    from explorer.engine import Engine
    eng = Engine("digits", projector="countsketch", k=256, cache_dir=str(tmp_path))  # S = 1 sets, temporary
    q = eng.task.generated(1, steps=10)
    for name, m in METHODS.items():
        res = eng.attribute(q, name, TimestepStrategy("uniform", 1), topk=5)
        assert res.scores.shape == (len(eng.data.train_idx),) and np.isfinite(res.scores).all(), name
        assert np.all(np.diff(res.top.proponent_scores[0]) <= 0), name
        assert res.top.proponent_scores[0][0] == res.scores.max()


def test_planted_near_duplicates_find_each_other_both_ways():
    """Catches attribution that ignores image content: each planted pair's partner ranks in the top 5
    when either member is the query (fresh noise), for D-TRAK and TRAK; thresholds are the measured
    counts of the 8 pairs per direction."""
    from explorer.engine import Engine
    eng = Engine("shapes")
    pos = {int(d): i for i, d in enumerate(eng.data.train_idx)}
    pairs = eng.data.meta["duplicates"]
    shipped = eng.results.lesson()["duplicates"]["methods"]
    for method, need in DUPLICATES.items():
        for direction in (0, 1):
            s = eng.scores([_fresh(eng, pos[p[direction]]) for p in pairs], method, TimestepStrategy("uniform", 10))
            partner = np.array([pos[p[1 - direction]] for p in pairs])
            rank = (s > s[np.arange(len(pairs)), partner][:, None]).sum(1)
            assert (rank < 5).sum() >= need[direction], (method, direction, rank)
            if direction == 1:  # the lesson's shipped duplicate search is this one (copy queried, original ranked)
                assert (rank == np.array(shipped[method]["rank"])).sum() >= 7, (method, rank, shipped[method])


def test_nda_weights_match_a_direct_softmax_loop(digits_engine):
    """Catches a wrong posterior (sign, √ᾱ, the 2(1−ᾱ) scale, the softmax axis) or noise that is not the
    engine's: NDA's scores against a loop over training images with the formula written out."""
    from explorer.schedule import DDPM
    eng = digits_engine
    st = TimestepStrategy("uniform", 3)
    queries = [eng.task.val_query(0), eng.task.val_query(5)]
    s = eng.scores(queries, "nda", st)
    y = eng.data.train_x.reshape(len(eng.data.train_x), -1).double()
    for qi, q in enumerate(queries):
        ref = torch.zeros(len(y), dtype=torch.float64)
        for t in st.timesteps():
            abar = DDPM.abar[int(t)].double()
            eps = seeded_noise([q.uid], [int(t)], tuple(q.x.shape), eng.store.seed)[0, 0].double()
            xt = (abar.sqrt() * q.x.double() + (1 - abar).sqrt() * eps).reshape(-1)
            logits = torch.stack([-((xt - abar.sqrt() * y[i]) ** 2).sum() / (2 * (1 - abar)) for i in range(len(y))])
            ref += torch.softmax(logits, 0) / len(st.timesteps())
        np.testing.assert_allclose(s[qi], ref.numpy(), rtol=1e-6, atol=1e-12)
    np.testing.assert_allclose(s.sum(1), 1.0, rtol=1e-9)


def test_a_method_registered_from_outside_reaches_the_page_the_api_and_the_evaluation_stage():
    """Adding a method is one object and one register call: a toy method (negative pixel distance)
    registered here is offered by the page, answers through the engine, and is in the LDS plan."""
    from dataclasses import dataclass

    from explorer.attribution.registry import register
    from explorer.attribution.methods.similarity import SimilarityMethod
    from explorer.engine import Engine
    from explorer.ui import build_app
    from precompute.eval_config import EvalConfig

    @dataclass(frozen=True)
    class Toy(SimilarityMethod):
        def score(self, train, query, lam, kernels):
            y, q = train[0].dense(), np.asarray(query[0], np.float64)
            return -((q[:, None] - y[None]) ** 2).sum(-1)
    try:
        register(Toy("toy-l2", "Toy pixel distance", "Tests", "Negative squared pixel distance.", r"-\lVert x_q-x_i\rVert^2"))
        demo = build_app("digits", warm=False)
        dropdowns = [c for c in demo.config["components"] if c.get("props", {}).get("elem_id") == "method"]
        assert ("Toy pixel distance", "toy-l2") in [tuple(x) for x in dropdowns[0]["props"]["choices"]]
        eng = Engine("digits")
        res = eng.attribute(eng.task.train_query(3), "toy-l2")
        assert res.top.proponents[0][0] == 3 and res.top.proponent_scores[0][0] == 0
        assert ("toy-l2", 10) in EvalConfig().plan
    finally:
        METHODS.pop("toy-l2", None)


def test_one_model_shared_by_threads_gives_the_same_gradients(tiny_unet):
    """Catches an unguarded shared model: functional_call swaps the module's parameters while it runs, so a
    build, a query and a sampler on one model in three threads raised errors (seen under load) without the
    per-model lock. Every thread must get exactly the serial gradients."""
    import threading

    from explorer.models import ddim_sample
    gc = GradientComputer(tiny_unet, "square")
    x = torch.randn(4, 1, 8, 8)
    eps, ts = torch.randn(4, 2, 1, 8, 8), torch.tensor([10, 500])
    ref = gc(x, eps, ts)
    outs, errors = [], []

    def work():
        try:
            for _ in range(15):
                outs.append(gc(x, eps, ts))
                ddim_sample(tiny_unet, [0], steps=2)
        except Exception as e:  # noqa: BLE001 - collected and asserted below
            errors.append(repr(e))
    threads = [threading.Thread(target=work) for _ in range(3)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert errors == [] and len(outs) == 45
    assert all(torch.equal(o, ref) for o in outs)


def test_das_matches_a_loop_with_the_kernel_solved_directly(tiny_unet):
    """Catches a wrong residual (noise, timesteps, √d, mean over t), a residual applied to the query
    instead of the training image, or a kernel that is not (ΦᵀΦ + λI)⁻¹: DAS against one forward pass
    and one backward per image and t, and the dual solve written out."""
    from explorer.attribution.methods.das import DAS, residual_sizes
    from explorer.schedule import DDPM
    torch.manual_seed(0)
    x, uids, st, lam = torch.rand(6, 1, 8, 8) * 2 - 1, [3, 7, 11, 19, 23, 42], TimestepStrategy("uniform", 3), 0.5
    ts = torch.tensor(st.timesteps())
    eps = seeded_noise(uids, ts.tolist(), (1, 8, 8))
    phi = loop_gradients(tiny_unet, "avg", x, eps, ts).double().numpy()
    q_eps = seeded_noise([99], ts.tolist(), (1, 8, 8))
    q = loop_gradients(tiny_unet, "avg", x[:1] * 0.5, q_eps, ts).double().numpy()
    abar, r = DDPM.abar, np.zeros(6)
    with torch.no_grad():
        for i in range(6):
            for s, t in enumerate(ts.tolist()):
                xt = abar[t].sqrt() * x[i] + (1 - abar[t]).sqrt() * eps[i, s]
                pred = tiny_unet(xt[None], torch.tensor([t])).sample[0]
                r[i] += float((eps[i, s] - pred).norm()) / 8 / len(ts)  # √d = 8
    ref = np.linalg.solve(phi @ phi.T + lam * np.eye(6), phi @ q[0]) * r  # (ΦΦᵀ+λI)⁻¹Φφ(q) = Φ(ΦᵀΦ+λI)⁻¹φ(q)
    got_r = residual_sizes(tiny_unet, x, uids, st)
    np.testing.assert_allclose(got_r, r, rtol=1e-5)
    feats = GradientComputer(tiny_unet, "avg")(x, eps, ts).numpy()
    train = Features(feats)
    got = DAS.score([train], [(q, got_r)], lam, [Kernel(train)])
    np.testing.assert_allclose(got[0], ref, rtol=1e-3, atol=1e-8 * np.abs(ref).max())


def test_ekfac_eigenvalues_are_the_exact_gauss_newton_diagonal_and_its_inverse_is_exact(tiny_unet):
    """Catches wrong activations (unfold order, bias column), output gradients, targets or a wrong inverse:
    (1) in each layer's Kronecker eigenbasis, EK-FAC's corrected eigenvalues equal the diagonal of the exact
    Gauss-Newton block Σ_e vec(DW_e)vec(DW_e)ᵀ/N, with DW_e from one autograd call per (image, timestep);
    (2) the damped preconditioner equals a dense solve with (Q_S⊗Q_A) diag(Λ) (Q_S⊗Q_A)ᵀ + λ̄I."""
    from explorer.attribution.methods.ekfac import fit_ekfac
    from explorer.schedule import DDPM
    torch.manual_seed(0)
    x, uids, st = torch.rand(3, 1, 8, 8) * 2 - 1, [4, 9, 13], TimestepStrategy("uniform", 2)
    factors = fit_ekfac(tiny_unet, x, uids, st, seed=5)
    ts = st.timesteps()
    eps = seeded_noise(uids, ts, (1, 8, 8), 5).reshape(-1, 1, 8, 8)
    t = torch.tensor(ts).repeat(3)
    xt = DDPM.add_noise(x[:, None].expand(3, 2, 1, 8, 8).reshape(-1, 1, 8, 8), eps, t)
    with torch.no_grad():
        pred = tiny_unet(xt, t).sample
    target = pred + torch.randn(pred.shape, generator=torch.Generator().manual_seed(7919 * 6 + 1))  # pass 2's draw
    params = dict(tiny_unet.named_parameters())
    per_example = []
    for e in range(len(xt)):
        out = tiny_unet(xt[e:e + 1], t[e:e + 1]).sample
        grads = torch.autograd.grad(0.5 * (out - target[e:e + 1]).pow(2).sum(), list(params.values()))
        per_example.append(dict(zip(params, grads)))
    for f in factors:
        dw = torch.stack([torch.cat([g[f.weight].reshape(f.qs.shape[0], -1)]
                                    + ([g[f.bias][:, None]] if f.bias else []), 1) for g in per_example]).double()
        diag = (f.qs.double().T @ dw @ f.qa.double()).pow(2).mean(0)
        np.testing.assert_allclose(f.lam.double().numpy(), diag.numpy(), rtol=2e-3, atol=1e-7 * diag.max().item())
    f = min(factors, key=lambda f: f.lam.numel())  # (2) on the smallest layer
    o, i = f.lam.shape
    K = torch.kron(f.qs.double(), f.qa.double())
    dense = K @ torch.diag(f.lam.double().reshape(-1) + 0.3 * f.lam.double().mean()) @ K.T
    v = torch.randn(2, o, i, dtype=torch.float64)
    ref = torch.linalg.solve(dense, v.reshape(2, -1).T).T.reshape(2, o, i)
    np.testing.assert_allclose(f.precondition(v.float(), 0.3).double().numpy(), ref.numpy(), rtol=1e-3, atol=1e-6)
