"""EK-FAC influence functions for diffusion models (Mlodozeniec, Eschenhagen, Bae, Immer, Krueger &
Turner, "Influence Functions for Scalable Data Attribution in Diffusion Models", ICLR 2025; reference code
BrunoKM/diffusion-influence, curvature in the style of the ``kronfluence`` library).

    τ(q, i) = ∇_θ m(q)ᵀ (G + λ I)⁻¹ ∇_θ ℓ(x_i)                                    (the paper's Eq. 3)

with m and ℓ the diffusion loss L_Simple averaged over the method's timesteps (the same seeded noise as
every gradient method here) and G the generalised Gauss-Newton matrix of the training loss, approximated
per layer (block-diagonal over the UNet's ``nn.Linear`` and ``nn.Conv2d`` layers) by EK-FAC:

    G_l ≈ (Q_S ⊗ Q_A) diag(Λ_l) (Q_S ⊗ Q_A)ᵀ,     A_l = E[a aᵀ] = Q_A D_A Q_Aᵀ,   S_l = E[δ δᵀ] = Q_S D_S Q_Sᵀ
    Λ_l[o, j] = E_n[(Q_Sᵀ DW_n Q_A)[o, j]²]       (the eigenvalue correction, George et al., 2018)

a: a layer's inputs (unfolded patches for a convolution, with a 1 for the bias), δ: the gradient at its
outputs of the loss with *sampled* targets (y ~ N(ε_θ(x_t), I), so E[δδᵀ] is the GGN's), DW_n = Σ_p δ_p a_pᵀ
the weight gradient of one (image, timestep) example. The inverse applied to a gradient matrix V is
Q_S [(Q_Sᵀ V Q_A) / (Λ + λ_l)] Q_Aᵀ, with λ_l = λ · mean(Λ_l) (damping relative to each layer's scale,
so one λ grid fits every layer). Parameters outside Linear / Conv2d layers (group-norm scales and
shifts: 0.7 % of the digits model) are left out of the score, as in kronfluence. A text-to-image LoRA is
factored over its adapters alone (each A and B is a Linear or Conv2d layer; the frozen base is not attributed),
every training image under its own caption, as the LoRA's gradient features are.

Because the preconditioner is symmetric, only the query's gradient is preconditioned; the training
side is TRAK's stored L_Simple features (exact, or projected: then the preconditioned query gradient is
projected with the same sketch).
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ..method import Fit, Method, Needs
from ..timesteps import TimestepStrategy, caption_kwargs, noised_pairs

# the first convolution's input (the noised image) needs no gradient; its output gradient is all we use
warnings.filterwarnings("ignore", "Full backward hook is firing when gradients are computed with respect to module")


@dataclass
class LayerFactors:
    """One layer's EK-FAC: eigenvectors of A (in+1) and S (out), corrected eigenvalues (out, in+1)."""
    weight: str  # parameter names in the model
    bias: str | None
    qa: torch.Tensor
    qs: torch.Tensor
    lam: torch.Tensor

    def precondition(self, v: torch.Tensor, damping: float) -> torch.Tensor:
        """(G_l + λ_l I)⁻¹ v for gradient matrices v (m, out, in+1), λ_l = damping · mean(Λ_l)."""
        r = self.qs.T @ v @ self.qa
        r = r / (self.lam + damping * self.lam.mean())
        return self.qs @ r @ self.qa.T


torch.serialization.add_safe_globals([LayerFactors])  # a stored fit loads with weights_only (``FeatureStore.fitted``)


def _layers(model: torch.nn.Module, param_names: list[str] | None = None) -> dict[str, torch.nn.Module]:
    """The Linear and Conv2d layers whose weight is attributed (``param_names``; None: every layer). With a
    LoRA these are the adapters' A and B layers: the curvature is the LoRA parameters' own."""
    keep = None if param_names is None else set(param_names)
    return {n: m for n, m in model.named_modules() if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d))
            and (keep is None or (f"{n}.weight" in keep and (m.bias is None or f"{n}.bias" in keep)))}


def _activations(m: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """A layer's inputs per example and position, with a 1 appended for the bias: (N, P, in[+1])."""
    if isinstance(m, torch.nn.Conv2d):
        if m.groups != 1 or m.padding_mode != "zeros":
            raise ValueError("EK-FAC here supports ungrouped, zero-padded convolutions")
        a = F.unfold(x, m.kernel_size, m.dilation, m.padding, m.stride).transpose(1, 2)
    else:
        a = x.reshape(x.shape[0], -1, x.shape[-1])
    if m.bias is not None:
        a = torch.cat([a, torch.ones_like(a[..., :1])], -1)
    return a


def _output_grads(m: torch.nn.Module, g: torch.Tensor) -> torch.Tensor:
    """The gradient at a layer's outputs per example and position: (N, P, out)."""
    if isinstance(m, torch.nn.Conv2d):
        return g.flatten(2).transpose(1, 2)
    return g.reshape(g.shape[0], -1, g.shape[-1])


def _sampled_passes(model, x, uids, strategy: TimestepStrategy, seed: int, draw: int, batch: int, on_batch,
                    layers: dict, context: torch.Tensor | None = None, schedule=None) -> None:
    """Forward + backward of the loss with sampled targets for every (image, timestep), noised with the
    features' seeded ε (``seed``) under ``schedule``, each image under its encoded caption ``context``
    (text-to-image); the targets' draw ``draw`` is seeded on its own. ``on_batch(acts, grads)`` receives
    each of ``layers``' (N, P, in+1) inputs and (N, P, out) output gradients."""
    from ...models import model_lock
    acts, grads = {}, {}
    hooks = []
    for name, m in layers.items():
        hooks.append(m.register_forward_hook(lambda mod, inp, out, n=name: acts.__setitem__(n, inp[0].detach())))
        hooks.append(m.register_full_backward_hook(lambda mod, gi, go, n=name: grads.__setitem__(n, go[0].detach())))
    ts = [int(t) for t in strategy.timesteps()]
    per = max(1, batch // len(ts))
    gen = torch.Generator().manual_seed(7919 * (seed + 1) + draw)  # the sampled targets' own seed
    try:
        with model_lock(model):
            for a in range(0, len(x), per):
                xt, _, t = noised_pairs(x[a:a + per], uids[a:a + per], ts, seed, schedule)
                model.zero_grad(set_to_none=True)
                pred = model(xt, t, **caption_kwargs(context, a, per, len(ts))).sample
                target = pred.detach() + torch.randn(pred.shape, generator=gen)
                (0.5 * (pred - target).pow(2).sum()).backward()
                on_batch({n: _activations(layers[n], acts[n]) for n in layers},
                         {n: _output_grads(layers[n], grads[n]) for n in layers})
    finally:
        for h in hooks:
            h.remove()
        model.zero_grad(set_to_none=True)


def fit_ekfac(model: torch.nn.Module, x: torch.Tensor, uids: list[int], strategy: TimestepStrategy, seed: int = 0,
              batch: int = 512, context: torch.Tensor | None = None, param_names: list[str] | None = None,
              schedule=None) -> list[LayerFactors]:
    """EK-FAC factors of the model's training loss over inputs x (N, C, H, W) at the strategy's timesteps,
    over the layers of the attributed parameters ``param_names`` (None: all), each input under its caption
    ``context`` (text-to-image): pass 1 accumulates A and S and eigendecomposes them, pass 2 the corrected
    eigenvalues."""
    layers = _layers(model, param_names)
    passes = dict(layers=layers, context=context, schedule=schedule)
    A = {n: 0.0 for n in layers}
    S = {n: 0.0 for n in layers}

    def covariances(acts, grads):
        for n in layers:
            A[n] = A[n] + torch.einsum("npi,npj->ij", acts[n].double(), acts[n].double())
            S[n] = S[n] + torch.einsum("npo,npq->oq", grads[n].double(), grads[n].double())
    _sampled_passes(model, x, uids, strategy, seed, 0, batch, covariances, **passes)
    Q = {n: (torch.linalg.eigh(A[n])[1], torch.linalg.eigh(S[n])[1]) for n in layers}
    lam = {n: 0.0 for n in layers}
    count = [0]

    def corrected(acts, grads):
        for n in layers:
            qa, qs = Q[n]
            dw = torch.einsum("npo,npi->noi", grads[n].double(), acts[n].double())
            lam[n] = lam[n] + (qs.T @ dw @ qa).pow(2).sum(0)
        count[0] += next(iter(acts.values())).shape[0]
    _sampled_passes(model, x, uids, strategy, seed, 1, batch, corrected, **passes)  # fresh targets for the correction
    return [LayerFactors(f"{n}.weight", f"{n}.bias" if layers[n].bias is not None else None, Q[n][0].float(),
                         Q[n][1].float(), (lam[n] / count[0]).float()) for n in layers]


def precondition(parts: list[torch.Tensor], names: list[str], factors: list[LayerFactors], damping: float
                 ) -> list[torch.Tensor]:
    """EK-FAC-preconditioned gradients, as blocks in ``names`` order (parameters outside the factored layers
    are zero); ``parts`` are the (m, numel) gradient blocks of the parameters ``names``."""
    pos = {n: i for i, n in enumerate(names)}
    out = [torch.zeros_like(p) for p in parts]
    for f in factors:
        w = parts[pos[f.weight]]
        v = w.reshape(w.shape[0], f.qs.shape[0], -1)
        if f.bias is not None:
            v = torch.cat([v, parts[pos[f.bias]][..., None]], -1)
        r = f.precondition(v, damping)
        if f.bias is not None:
            out[pos[f.bias]] = r[..., -1]
            r = r[..., :-1]
        out[pos[f.weight]] = r.reshape(w.shape)
    return out


@dataclass(frozen=True)
class EKFACMethod(Method):
    """Influence with an EK-FAC curvature: λ is the damping relative to each layer's mean eigenvalue."""

    @property
    def needs(self) -> Needs:
        """λ (the damping) but no kernel: the EK-FAC curvature preconditions each query gradient."""
        return Needs(kernel=False)

    def query_features(self, store, queries, strategy, noise_seed=None) -> list:
        """Per model: the queries' raw gradient blocks, the projector and the model's EK-FAC factors (the
        preconditioning depends on λ, so it happens in ``score``)."""
        return [store.raw_query_gradients(m, self.output_fn, strategy, queries, noise_seed)
                + (store.fitted(self.fit, m, strategy),) for m in store.model_dirs(self.models)]

    @property
    def fit(self) -> Fit:
        # two backward passes per input plus the eigendecompositions: 5.5 (digits) and 3.7 (emoji) gradients,
        # timed at S = 4 on 2 cores
        return Fit("ekfac", fit_ekfac, "EK-FAC's fit of the loss curvature", 4.5)

    def score(self, train, query, lam, kernels) -> np.ndarray:
        return np.mean([t.cross(fc.projector(precondition(parts, fc.grads.names, factors, lam)).numpy())
                        for t, (fc, parts, factors) in zip(train, query)], axis=0)


EKFAC = EKFACMethod(
    "ekfac", "EK-FAC influence", "Influence functions (EK-FAC)",
    "The classic influence function with the loss curvature approximated layer by layer (EK-FAC): the query's "
    "loss gradient, corrected for how the model already fits every direction, against each training image's "
    "loss gradient (Mlodozeniec et al., ICLR 2025).",
    r"\tau(q,i)=\nabla_\theta L(q)^\top(G_\text{EK-FAC}+\lambda\bar\Lambda I)^{-1}\nabla_\theta L(x_i)")
