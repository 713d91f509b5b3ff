"""A small CNN classifier per dataset. Its penultimate layer is the offline stand-in for CLIP
(embedding-similarity method and the counterfactual cosine metric); its confidence on generated
samples is the sample-quality check."""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass

import torch
import torch.nn as nn
from safetensors.torch import load_file, save_file


@dataclass
class ClassifierConfig:
    in_channels: int = 1
    n_classes: int = 10
    width: int = 32
    embed_dim: int = 64


class Classifier(nn.Module):
    def __init__(self, cfg: ClassifierConfig):
        super().__init__()
        self.cfg = cfg
        w = cfg.width
        self.features = nn.Sequential(
            nn.Conv2d(cfg.in_channels, w, 3, padding=1), nn.GELU(),
            nn.Conv2d(w, 2 * w, 3, stride=2, padding=1), nn.GELU(),
            nn.Conv2d(2 * w, 2 * w, 3, stride=2, padding=1), nn.GELU(),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(2 * w, cfg.embed_dim), nn.GELU())
        self.head = nn.Linear(cfg.embed_dim, cfg.n_classes)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate-layer embedding (N, embed_dim)."""
        return self.features(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.embed(x))

    @torch.no_grad()
    def predict(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(label, confidence) per image."""
        p = self.eval()(x).softmax(-1)
        conf, label = p.max(-1)
        return label, conf


def train_classifier(x: torch.Tensor, y: torch.Tensor, cfg: ClassifierConfig, epochs: int = 30, seed: int = 0,
                     lr: float = 2e-3, batch_size: int = 128) -> Classifier:
    """Cross-entropy with AdamW; light augmentation (±1 pixel shifts) makes it robust on samples."""
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    model = Classifier(cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    for _ in range(epochs):
        model.train()
        perm = torch.randperm(len(x), generator=gen)
        for i in range(0, len(x), batch_size):
            idx = perm[i:i + batch_size]
            xb = x[idx]
            dx, dy = torch.randint(-1, 2, (2,), generator=gen).tolist()
            xb = torch.roll(xb, shifts=(dx, dy), dims=(2, 3))
            loss = nn.functional.cross_entropy(model(xb), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return model.eval()


def save_classifier(model: Classifier, folder: str) -> None:
    os.makedirs(folder, exist_ok=True)
    save_file(model.state_dict(), os.path.join(folder, "classifier.safetensors.tmp"))
    os.replace(os.path.join(folder, "classifier.safetensors.tmp"), os.path.join(folder, "classifier.safetensors"))
    with open(os.path.join(folder, "classifier.json"), "w") as f:
        json.dump(asdict(model.cfg), f)


def load_classifier(folder: str) -> Classifier:
    from .models import CheckpointError

    path = os.path.join(folder, "classifier.safetensors")
    if not os.path.exists(path):
        raise CheckpointError(f"no classifier at {path!r}. Train it with `python -m precompute train`.")
    model = Classifier(ClassifierConfig(**json.load(open(os.path.join(folder, "classifier.json")))))
    model.load_state_dict(load_file(path))
    return model.eval()
