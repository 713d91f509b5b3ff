"""Train M tiny DDPMs at once as one batched ensemble (``torch.func.stack_module_state`` + ``vmap``).

Model j follows exactly the recipe of ``training.train``: its own generator seeded ``seeds[j]``
draws the same shuffles, timesteps and noise, its gradient is clipped by its own norm
(clip_coef = min(1, c / (‖g_j‖ + 1e-6))), and AdamW and the cosine schedule act element-wise, so
the batched models match one-at-a-time training up to floating-point summation order. Every
model needs the same number of training images (the LDS subsets and the counterfactual removal
sets do). Measured on the 2-core CPU it is 0.5 × as fast as one model at a time (vmap turns each
convolution into a per-model grouped one; benchmarks/batched_training.py), so precompute trains one
model per job there; fewer, larger kernel launches are what a GPU would gain (unmeasured).
"""
from __future__ import annotations

import copy
import math

import torch
from diffusers import UNet2DModel
from torch.func import functional_call, grad_and_value, stack_module_state, vmap

from .schedule import DDPM, T
from .training import TrainConfig, lr_lambda


def train_batched(models: list[UNet2DModel], xs: list[torch.Tensor], cfg: TrainConfig, seeds: list[int],
                  device: str = "cpu") -> list[list[float]]:
    """Trains ``models[j]`` on images ``xs[j]`` in place; returns per-model per-epoch mean losses."""
    n = xs[0].shape[0]
    if any(x.shape != xs[0].shape for x in xs) or len(xs) != len(models) or len(seeds) != len(models):
        raise ValueError("train_batched needs one seed and one equally sized image set per model")
    for m in models:
        m.to(device).eval()  # dropout is 0 in every shipped config; vmap needs no randomness
    params, buffers = stack_module_state(models)
    base = copy.deepcopy(models[0]).to("meta")
    gens = [torch.Generator().manual_seed(s) for s in seeds]
    steps_per_epoch = math.ceil(n / cfg.batch_size)
    opt = torch.optim.AdamW(params.values(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(cfg.epochs * steps_per_epoch, cfg.warmup_fraction))

    def loss_fn(p, b, xt, t, eps):
        pred = functional_call(base, (p, b), (xt, t)).sample
        return torch.nn.functional.mse_loss(pred, eps)

    batched_grad = vmap(grad_and_value(loss_fn))  # per-model gradients and losses
    losses = [[] for _ in models]
    for _ in range(cfg.epochs):
        perms = [torch.randperm(n, generator=g) for g in gens]
        totals = torch.zeros(len(models))
        for s in range(steps_per_epoch):
            x0, t, eps = [], [], []
            for x, perm, g in zip(xs, perms, gens):
                idx = perm[s * cfg.batch_size:(s + 1) * cfg.batch_size]
                x0.append(x[idx])
                t.append(torch.randint(0, T, (len(idx),), generator=g))
                eps.append(torch.randn(x0[-1].shape, generator=g))
            x0, t, eps = (torch.stack(v).to(device) for v in (x0, t, eps))
            xt = DDPM.add_noise(x0.flatten(0, 1), eps.flatten(0, 1), t.flatten()).view_as(x0)
            grads, loss = batched_grad(params, buffers, xt, t, eps)
            for name, p in params.items():
                p.grad = grads[name]
            _clip_per_model(list(params.values()), cfg.grad_clip)
            opt.step()
            sched.step()
            totals += loss.detach().cpu() * x0.shape[1]
        for j in range(len(models)):
            losses[j].append(float(totals[j]) / n)
    with torch.no_grad():
        for j, m in enumerate(models):
            for name, p in m.named_parameters():
                p.copy_(params[name][j])
            m.eval()
    return losses


def _clip_per_model(stacked: list[torch.Tensor], max_norm: float) -> None:
    """``clip_grad_norm_`` applied to each model's slice (dim 0) of the stacked gradients."""
    norms = torch.stack([p.grad.flatten(1).pow(2).sum(1) for p in stacked]).sum(0).sqrt()
    coef = (max_norm / (norms + 1e-6)).clamp(max=1.0)
    for p in stacked:
        p.grad.mul_(coef.view(-1, *([1] * (p.dim() - 1))))
