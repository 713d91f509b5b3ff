"""Factorized (LoGra-style) projection: projected per-sample gradients without per-sample gradients.

For a ``Linear`` or ``Conv2d`` layer with weight W (out × in) and bias b, one sample's gradient is
a sum over the layer's positions p (pixels or tokens, over all S timesteps of the sample)

    [∇W, ∇b] = Σ_p δ_p ā_pᵀ,   ā_p = [a_p; 1]   (a_p: the input, or the unfolded input patch of a
                                                    conv, C_in·k_h·k_w entries; δ_p: ∂f/∂output_p)

so with a Kronecker-structured projection P = P_out ⊗ P_in (Choe et al., 2024, "LoGra")

    φ_layer = P_out [∇W, ∇b] P_inᵀ = Σ_p (P_out δ_p)(P_in ā_p)ᵀ  ∈ R^{k_out × k_in}.

P_in ā_p is one convolution (or linear map) of the layer's input with P_in as its weight, taken
in a forward hook; P_out δ_p is taken in a hook on the output's gradient, so one ordinary batched
forward + backward over N·S inputs gives every sample's projected gradient and the p-dimensional
gradient never exists. P_out, P_in have N(0, 1/k) entries (the identity where k equals the
side), so E⟨φ(a), φ(b)⟩ = ⟨g(a), g(b)⟩ like every other sketch here.

Budget: the total k is split over layers in proportion to their parameter counts, each share
factored as k_out·k_in with k_out / k_in ≈ out / in. GroupNorm scales and shifts (under 1 % of the
parameters) get their exact per-sample gradients, Σ_p δ_p ⊙ x̂_p and Σ_p δ_p, CountSketched into
the rest of k. Any other parameter type is refused.

``FactorizedProjector.project`` applies the same P to explicit gradient blocks (the reference the
tests compare against, and the route for already-computed gradients such as EK-FAC's
preconditioned queries); ``FactorizedProjector.features`` is the fast route.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..models import model_lock
from .projectors import CountSketchProjector, Projector, flat


@dataclass
class Layer:
    """One factorized layer: its module name, weight / bias parameter names and projections."""
    module: str
    weight: str
    bias: str | None
    p_out: torch.Tensor  # (k_out, out)
    p_in: torch.Tensor  # (k_in, in + 1): the last column multiplies the bias's constant input

    @property
    def k(self) -> int:
        return self.p_out.shape[0] * self.p_in.shape[0]


def _gaussian(rows: int, cols: int, seed: int, device: str) -> torch.Tensor:
    """rows × cols with N(0, 1/rows) entries, or the identity when rows == cols."""
    if rows == cols:
        return torch.eye(rows, device=device)
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(rows, cols, generator=g) / rows ** 0.5).to(device)


def split_budget(k: int, shapes: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """(k_out, k_in) per layer of shape (out, in + 1): k ∝ parameters, k_out ≈ k_in ≈ √share (as LoGra;
    k_out capped at out, the rest of the share going to k_in)."""
    total = sum(o * i for o, i in shapes)
    out = []
    for o, i in shapes:
        share = max(1, int(k * o * i / total))
        k_out = min(o, max(1, round(math.sqrt(share))))
        out.append((k_out, min(i, max(1, share // k_out))))
    return out


class FactorizedProjector(Projector):
    name = "factorized"

    def __init__(self, model: torch.nn.Module, k: int, seed: int = 0, device: str = "cpu"):
        named = dict(model.named_parameters())
        super().__init__(sum(p.numel() for p in named.values()), k, seed, device)
        self.param_names = list(named)
        self.widths = [p.numel() for p in named.values()]
        modules = dict(model.named_modules())
        kinds = {m: mod for m, mod in modules.items() if isinstance(mod, (torch.nn.Linear, torch.nn.Conv2d))}
        norms = {m for m, mod in modules.items() if isinstance(mod, torch.nn.GroupNorm) and mod.affine}
        owner = {f"{m}.{p}": m for m in modules for p, _ in modules[m].named_parameters(recurse=False)}
        other = [n for n in named if owner[n] not in kinds and owner[n] not in norms]
        if other:
            raise ValueError(f"the factorized projection handles Linear, Conv2d and GroupNorm layers; "
                             f"{other[0]} belongs to a {type(modules[owner[other[0]]]).__name__}")
        for m, mod in kinds.items():
            if isinstance(mod, torch.nn.Conv2d) and (mod.groups != 1 or mod.padding_mode != "zeros"):
                raise ValueError(f"{m}: grouped or non-zero-padded convolutions are not supported")
        shapes = [(mod.weight.shape[0], mod.weight[0].numel() + 1) for mod in kinds.values()]
        budget = split_budget(k, shapes)
        used = sum(a * b for a, b in budget)
        if used >= k:
            raise ValueError(f"k = {k} is too small for {len(kinds)} layers; use k ≥ {2 * len(kinds)}")
        self.layers = [Layer(m, f"{m}.weight", f"{m}.bias" if mod.bias is not None else None,
                             _gaussian(ko, o, self.rng_seed * 1_000_003 + 2 * j, device),
                             _gaussian(ki, i, self.rng_seed * 1_000_003 + 2 * j + 1, device))
                       for j, ((m, mod), (o, i), (ko, ki)) in enumerate(zip(kinds.items(), shapes, budget))]
        self.norms = [m for m in modules if m in norms]
        self.rest_names = [n for n in named if owner[n] in norms]  # GroupNorm weight / bias, model order
        self.rest = CountSketchProjector(sum(named[n].numel() for n in self.rest_names), k - used, seed, device)

    # ---- explicit route: gradient blocks in, the same φ out ----
    def project(self, parts):
        if len(parts) != len(self.param_names):  # one flat (N, p) gradient: split it per parameter
            parts = torch.split(flat(parts), self.widths, dim=1)
        g = dict(zip(self.param_names, parts))
        n = parts[0].shape[0]
        out = []
        for L in self.layers:
            G = g[L.weight].reshape(n, L.p_out.shape[1], -1)
            bias = g[L.bias] if L.bias else torch.zeros(n, G.shape[1], device=G.device)
            G = torch.cat([G, bias[:, :, None]], dim=2)
            out.append((L.p_out @ G @ L.p_in.T).reshape(n, -1))
        return torch.cat(out + [self._rest([g[r] for r in self.rest_names], n)], dim=1)

    def _rest(self, parts: list[torch.Tensor], n: int) -> torch.Tensor:
        """The GroupNorm gradients CountSketched into what the layers left of k (zeros for a model without)."""
        return self.rest(parts) if parts else torch.zeros(n, self.rest.k, device=self.device)

    # ---- fast route: hooks on one batched forward / backward ----
    def features(self, grads, x0s: torch.Tensor, eps: torch.Tensor, ts: torch.Tensor) -> torch.Tensor:
        """φ of N samples from ``grads`` (a ``GradientComputer``: model, output function, schedule):
        x0s (N, C, H, W) or (N, S, C, H, W), eps (N, S, C, H, W), ts (S,) → (N, k)."""
        model, dev = grads.model, self.device
        n, S = eps.shape[:2]
        if x0s.dim() == 4:
            x0s = x0s.unsqueeze(1).expand_as(eps)
        x0s, eps, ts = x0s.to(dev).flatten(0, 1), eps.to(dev).flatten(0, 1), ts.to(dev).repeat(n)
        xt = grads.schedule.add_noise(x0s, eps, ts)
        phi: dict[str, torch.Tensor] = {}
        rest: dict[str, torch.Tensor] = {}
        roots: list[torch.Tensor] = []
        seen: set[str] = set()
        modules = dict(model.named_modules())

        def once(name: str) -> None:
            if name in seen:
                raise RuntimeError(f"{name} runs twice in one forward pass; the factorized projection needs "
                                   f"each layer to run once")
            seen.add(name)

        def positions(t: torch.Tensor) -> torch.Tensor:
            """(N·S, c, H, W) conv maps or (N·S, [L,] c) linear inputs → a (N·S, positions, c) view."""
            return t.flatten(2).transpose(1, 2) if t.dim() == 4 else (t if t.dim() == 3 else t.unsqueeze(1))

        def by_sample(t: torch.Tensor) -> torch.Tensor:  # (N·S, ...) summed over each sample's S inputs
            return t.reshape(n, S, -1).sum(1)

        def layer_hook(L: Layer):
            mod = modules[L.module]
            w_in, b_in = L.p_in[:, :-1], L.p_in[:, -1]
            conv = isinstance(mod, torch.nn.Conv2d)

            def forward(_, inputs, output):
                once(L.module)
                (inp,) = inputs
                if conv:
                    pa = F.conv2d(inp.detach(), w_in.reshape(-1, *mod.weight.shape[1:]), b_in, mod.stride,
                                  mod.padding, mod.dilation)
                else:
                    pa = F.linear(inp.detach(), w_in, b_in)
                pa = positions(pa)
                if not inp.requires_grad:
                    roots.append(output)

                def backward(delta):
                    pd = positions(delta) @ L.p_out.T  # (N·S, positions, k_out)
                    phi[L.module] = by_sample(torch.bmm(pd.transpose(1, 2), pa))
                output.register_hook(backward)
            return forward

        def norm_hook(name: str):
            mod = modules[name]

            def forward(_, inputs, output):
                once(name)
                xhat = F.group_norm(inputs[0].detach(), mod.num_groups, eps=mod.eps)

                def backward(delta):
                    d = delta.flatten(2)
                    rest[name] = by_sample(torch.cat([(d * xhat.flatten(2)).sum(-1), d.sum(-1)], dim=1))
                output.register_hook(backward)
            return forward

        with model_lock(model):
            handles = [modules[L.module].register_forward_hook(layer_hook(L)) for L in self.layers]
            handles += [modules[m].register_forward_hook(norm_hook(m)) for m in self.norms]
            try:
                with torch.enable_grad():
                    pred = model(xt, ts).sample
                    loss = grads.f(pred, eps, ts, grads.w).reshape(n, S).mean(1).sum()
                    torch.autograd.grad(loss, roots)
            finally:
                for h in handles:
                    h.remove()
        missing = [L.module for L in self.layers if L.module not in phi] + [m for m in self.norms if m not in rest]
        if missing:
            raise RuntimeError(f"no gradient reached {missing[0]}: the factorized projection needs every "
                               f"layer on the path from the inputs to the output")
        norm_parts = []
        for m in self.norms:  # GroupNorm weight then bias, each (N, C)
            C = modules[m].num_channels
            norm_parts += [rest[m][:, :C], rest[m][:, C:]]
        return torch.cat([phi[L.module] for L in self.layers] + [self._rest(norm_parts, n)], dim=1)
