"""Where each artefact of a dataset lives under ``assets/<dataset>/``."""
from __future__ import annotations

import os
from dataclasses import dataclass

from . import ASSETS, CACHE


@dataclass(frozen=True)
class AssetPaths:
    dataset: str
    root: str = ASSETS

    @property
    def base(self) -> str:
        return os.path.join(self.root, os.path.basename(os.path.normpath(self.dataset)))

    @property
    def model(self) -> str:
        return os.path.join(self.base, "model")

    @property
    def checkpoints(self) -> str:
        return os.path.join(self.base, "checkpoints")

    @property
    def classifier(self) -> str:
        return os.path.join(self.base, "classifier")

    @property
    def split(self) -> str:
        return os.path.join(self.base, "split")

    @property
    def features(self) -> str:
        return os.path.join(self.base, "features")

    @property
    def runtime_features(self) -> str:
        """Where features missing from the shipped assets are built on demand (``EXPLORER_CACHE``)."""
        return os.path.join(CACHE, os.path.basename(os.path.normpath(self.dataset)), "features")

    @property
    def eval(self) -> str:
        return os.path.join(self.base, "eval")

    @property
    def info(self) -> str:
        return os.path.join(self.base, "train.json")

    def checkpoint_dirs(self) -> list[str]:
        """Intermediate checkpoints in training order; the final model is the last entry."""
        names = sorted(os.listdir(self.checkpoints)) if os.path.isdir(self.checkpoints) else []
        return [os.path.join(self.checkpoints, n) for n in names] + [self.model]

    def ensemble_dirs(self) -> list[str]:
        """Models trained on 50 % subsets (the ensemble methods average over them)."""
        folder = os.path.join(self.base, "ensemble")
        return [os.path.join(folder, n) for n in sorted(os.listdir(folder))] if os.path.isdir(folder) else []
