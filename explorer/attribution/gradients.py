"""Per-sample gradients with ``torch.func`` (functional_call + grad + vmap), chunked.

For a sample x with timesteps t_1..t_S and noises ε_1..ε_S:
    g(x) = (1/S) Σ_s ∇_θ f(x, t_s, ε_s, c; θ),   x_{t_s} = √ᾱ_{t_s} x0_s + √(1−ᾱ_{t_s}) ε_s
where x0_s = x for ordinary features, or the DDIM trajectory's x̂₀ at step s (Journey-TRAK), and c the
sample's own encoded caption for a text-to-image UNet (``context``; none for an unconditional one).
"""
from __future__ import annotations

from typing import Iterator

import torch
from torch.func import functional_call, grad, vmap

from ..models import model_lock
from ..schedule import DDPM, NoiseSchedule

from .outputs import OUTPUT_FUNCTIONS, elbo_weights


class GradientComputer:
    """Computes flattened per-sample gradients of an output function for a diffusers UNet.

    ``param_names`` restricts the gradient to a subset of parameters (e.g. LoRA weights); the
    rest are held fixed. The gradient vector's layout is the concatenation of those parameters
    in ``param_names`` order (``self.dim`` entries).

    One vmap call holds at most ``max_inputs`` model inputs (samples × timesteps), about
    ``max_activation_bytes`` of activations and ``max_grad_bytes`` of per-sample gradients (samples ×
    dim × 4 bytes), so a 36 M-parameter UNet gets chunks of ~30 samples where the 177 k-parameter digits
    model gets 204 (S = 10) and the 32×32 icons model 9.

    ``schedule`` is the model's noise schedule (default the project's DDPM schedule): an adopted Stable
    Diffusion pipeline noises on its own scaled-linear one."""

    def __init__(self, model: torch.nn.Module, output_fn: str = "simple", param_names: list[str] | None = None,
                 device: str = "cpu", max_inputs: int = 2048, max_grad_bytes: int = 4 << 30,
                 max_activation_bytes: int = 2 << 30, schedule: NoiseSchedule = DDPM):
        from ..models import on_device

        if output_fn not in OUTPUT_FUNCTIONS:
            raise ValueError(f"unknown output function {output_fn!r}; use one of {sorted(OUTPUT_FUNCTIONS)}")
        self.model = on_device(model, device)
        self.device = device
        self.f = OUTPUT_FUNCTIONS[output_fn].fn
        all_params = dict(model.named_parameters())
        names = list(all_params) if param_names is None else list(param_names)
        missing = [n for n in names if n not in all_params]
        if missing:
            raise ValueError(f"unknown parameter names: {missing[:3]}")
        self.names = names
        self.params = {n: all_params[n].detach() for n in names}
        self.fixed = {n: p.detach() for n, p in all_params.items() if n not in self.params}
        self.fixed.update({n: b for n, b in model.named_buffers()})
        self.dim = sum(p.numel() for p in self.params.values())
        self.max_inputs, self.max_grad_bytes = max_inputs, max_grad_bytes
        self.max_activation_bytes, self._input_bytes = max_activation_bytes, {}
        self.schedule = schedule
        self.w = elbo_weights(schedule.betas).to(device)
        self._vg = vmap(grad(self._sample_output), in_dims=(None, 0, 0, None))
        self._vgc = vmap(grad(self._sample_output), in_dims=(None, 0, 0, None, 0))
        self.context_shape = None  # (L, hidden) of the last context seen: sizes the activation measurement

    def _sample_output(self, params, x0s, eps, ts, context=None):
        """Mean over the S timesteps of f for one sample; x0s, eps: (S, C, H, W), ts: (S,), context: (L, hidden)."""
        xt = self.schedule.add_noise(x0s, eps, ts)
        kwargs = {} if context is None else {"encoder_hidden_states": context.expand(len(ts), *context.shape)}
        pred = functional_call(self.model, {**params, **self.fixed}, (xt, ts), kwargs).sample
        return self.f(pred, eps, ts, self.w).mean()

    def parts(self, x0s: torch.Tensor, eps: torch.Tensor, ts: torch.Tensor, context: torch.Tensor | None = None
              ) -> list[torch.Tensor]:
        """x0s: (N, C, H, W) or (N, S, C, H, W); eps: (N, S, C, H, W); ts: (S,); context: (N, L, hidden) or
        None → the gradient as (N, numel) blocks, one per parameter in ``names`` order (views, no copy)."""
        if x0s.dim() == 4:
            x0s = x0s.unsqueeze(1).expand_as(eps)
        args = (self.params, x0s.to(self.device), eps.to(self.device), ts.to(self.device))
        with model_lock(self.model):  # functional_call swaps the shared module's parameters while it runs
            if context is None:
                g = self._vg(*args)
            else:
                self.context_shape = tuple(context.shape[1:])
                g = self._vgc(*args, context.to(self.device))
        return [g[n].reshape(x0s.shape[0], -1) for n in self.names]

    def __call__(self, x0s: torch.Tensor, eps: torch.Tensor, ts: torch.Tensor,
                 context: torch.Tensor | None = None) -> torch.Tensor:
        """The (N, dim) gradients: ``parts`` concatenated."""
        return torch.cat(self.parts(x0s, eps, ts, context), dim=1)

    def input_bytes(self, sample_shape: tuple) -> int:
        """Bytes the backward keeps per model input: 3 × every leaf module's output, measured once on one input."""
        key = tuple(sample_shape)
        if key not in self._input_bytes:
            sizes = []
            leaves = [m for m in self.model.modules() if not list(m.children())]
            hooks = [m.register_forward_hook(lambda _, i, o: sizes.append(o.numel() if torch.is_tensor(o) else 0))
                     for m in leaves]
            try:
                kwargs = {} if self.context_shape is None else {
                    "encoder_hidden_states": torch.zeros(1, *self.context_shape, device=self.device)}
                with torch.no_grad(), model_lock(self.model):
                    self.model(torch.zeros(1, *key, device=self.device), torch.zeros(1, dtype=torch.long,
                                                                                    device=self.device), **kwargs)
            finally:
                for h in hooks:
                    h.remove()
            self._input_bytes[key] = 3 * 4 * sum(sizes)
        return self._input_bytes[key]

    def chunk_size(self, S: int, sample_shape: tuple | None = None, activation_bytes: int | None = None,
                   per_sample_gradients: bool = True) -> int:
        """Samples per call: the most that fit ``max_inputs`` model inputs, ``max_grad_bytes`` of per-sample
        gradients (unless there are none: the factorized route) and, given the images' shape, about
        ``activation_bytes`` (default ``max_activation_bytes``) of activations kept for the backward."""
        inputs = self.max_inputs
        if sample_shape is not None:
            budget = self.max_activation_bytes if activation_bytes is None else activation_bytes
            inputs = min(inputs, max(1, budget // self.input_bytes(sample_shape)))
        grads = self.max_grad_bytes // (4 * self.dim) if per_sample_gradients else inputs
        return max(1, min(inputs // S, grads))

    def chunks(self, x0s: torch.Tensor, eps: torch.Tensor, ts: torch.Tensor, chunk: int | None = None,
               context: torch.Tensor | None = None) -> Iterator[tuple[slice, list[torch.Tensor]]]:
        """Yields (rows, gradient blocks) for chunks of ``chunk`` samples (default ``chunk_size``)."""
        if context is not None:
            self.context_shape = tuple(context.shape[1:])
        chunk = chunk or self.chunk_size(len(ts), tuple(x0s.shape[-3:]))
        for i in range(0, x0s.shape[0], chunk):
            yield slice(i, min(i + chunk, x0s.shape[0])), self.parts(
                x0s[i:i + chunk], eps[i:i + chunk], ts, None if context is None else context[i:i + chunk])


def loop_gradients(model: torch.nn.Module, output_fn: str, x0s: torch.Tensor, eps: torch.Tensor, ts: torch.Tensor,
                   context: torch.Tensor | None = None, param_names: list[str] | None = None,
                   schedule: NoiseSchedule = DDPM) -> torch.Tensor:
    """The slow obvious reference: one ``backward`` per sample (tests compare against it), with respect to
    ``param_names`` (default: every parameter)."""
    gc = GradientComputer(model, output_fn, schedule=schedule)
    if x0s.dim() == 4:
        x0s = x0s.unsqueeze(1).expand_as(eps)
    params = dict(model.named_parameters())
    names = list(params) if param_names is None else param_names
    rows = []
    for i in range(x0s.shape[0]):
        model.zero_grad(set_to_none=True)
        a = schedule.abar[ts].view(-1, 1, 1, 1)  # written out: the reference does not share the fast path's code
        xt = a.sqrt() * x0s[i] + (1 - a).sqrt() * eps[i]
        kwargs = {} if context is None else {"encoder_hidden_states": context[i].expand(len(ts), *context.shape[1:])}
        gc.f(model(xt, ts, **kwargs).sample, eps[i], ts, gc.w).mean().backward()
        rows.append(torch.cat([params[n].grad.reshape(-1) for n in names]))
    return torch.stack(rows)
