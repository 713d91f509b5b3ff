"""The factorized (LoGra-style) projection against the explicit Kronecker product applied to explicitly
computed per-sample gradients."""
import pytest
import torch

from explorer.attribution.factorized import FactorizedProjector
from explorer.attribution.features import FeatureComputer, FeatureSpec
from explorer.attribution.gradients import loop_gradients
from explorer.attribution.projectors import CountSketchProjector
from explorer.attribution.timesteps import TimestepStrategy


def _perturbed(model):
    """Random weights everywhere (a fresh UNet zero-initialises some layers, which hides mistakes)."""
    import copy
    m = copy.deepcopy(model)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in m.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=g))
    return m


def explicit_projection(model, proj: FactorizedProjector, g: torch.Tensor) -> torch.Tensor:
    """vec(P_out ⊗ P_in) · vec([∇W, ∇b]) per layer with the Kronecker matrix built by torch.kron, then
    the GroupNorm gradients CountSketched, from the flat (N, p) gradient in parameter order."""
    offsets, start = {}, 0
    for name, p in model.named_parameters():
        offsets[name] = (start, p.shape)
        start += p.numel()

    def block(name):
        s, shape = offsets[name]
        return g[:, s:s + torch.Size(shape).numel()]
    out = []
    for L in proj.layers:
        n_out = L.p_out.shape[1]
        W = block(L.weight).reshape(g.shape[0], n_out, -1)
        b = block(L.bias) if L.bias else torch.zeros(g.shape[0], n_out)
        G = torch.cat([W, b[:, :, None]], dim=2)  # (N, out, in + 1), row-major vec
        K = torch.kron(L.p_out, L.p_in)  # (k_out·k_in, out·(in + 1))
        out.append(G.reshape(g.shape[0], -1) @ K.T)
    norms = torch.cat([block(n) for n in proj.rest_names], dim=1)
    sketch = CountSketchProjector(norms.shape[1], proj.rest.k, proj.seed)
    return torch.cat(out + [sketch(norms)], dim=1)


@pytest.mark.parametrize("output_fn", ["square", "simple"])
def test_factorized_features_equal_the_explicit_kronecker_projection_of_per_sample_gradients(tiny_unet, output_fn):
    model = _perturbed(tiny_unet)
    fc = FeatureComputer(model, FeatureSpec(output_fn, TimestepStrategy("uniform", 3), "factorized", 300, seed=4))
    x = torch.randn(4, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    uids = [5, 6, 7, 8]
    fast = torch.from_numpy(fc(x, uids))
    assert fast.shape == (4, 300)
    eps = fc.noise(uids, (1, 8, 8))
    g = loop_gradients(model, output_fn, x, eps, fc.ts)  # one backward per sample
    ref = explicit_projection(model, fc.projector, g)
    assert torch.allclose(fast, ref, rtol=1e-4, atol=1e-5 * ref.abs().max())
    # the explicit route of the projector itself (used on stored gradients) agrees too
    assert torch.allclose(fc.projector(g), ref, rtol=1e-4, atol=1e-5 * ref.abs().max())
    # every layer is really projected (not the identity) and the budget is the whole k
    assert sum(L.k for L in fc.projector.layers) + fc.projector.rest.k == 300
    assert any(L.p_in.shape[0] < L.p_in.shape[1] for L in fc.projector.layers)


def test_factorized_projection_is_seeded_and_refuses_what_it_cannot_do(tiny_unet):
    a, b = (FactorizedProjector(tiny_unet, 512, seed=s) for s in (0, 1))
    assert not torch.equal(a.layers[5].p_in, b.layers[5].p_in)
    assert torch.equal(a.layers[5].p_in, FactorizedProjector(tiny_unet, 512, seed=0).layers[5].p_in)
    with pytest.raises(ValueError, match="too small"):
        FactorizedProjector(tiny_unet, 40)
    with pytest.raises(ValueError, match="not a subset"):
        FeatureComputer(tiny_unet, FeatureSpec("square", TimestepStrategy(), "factorized", 512),
                        param_names=["conv_in.weight"])
    odd = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.LayerNorm(4))
    with pytest.raises(ValueError, match="1.weight belongs to a LayerNorm"):
        FactorizedProjector(odd, 64)


def test_factorized_projection_is_a_projection_name():
    from explorer.attribution.projection import Projection
    p = Projection.parse("factorized4096")
    assert (p.kind, p.k) == ("factorized", 4096) and p.label == "factorized (LoGra-style) k = 4096"
    assert FeatureSpec(projector="factorized", k=2048).projection == "factorized2048"
    for name in ("exact", "countsketch4096", "gaussian512"):
        assert Projection.parse(name).name == name
    with pytest.raises(ValueError, match="factorized<k>"):
        Projection.parse("logra4096")
