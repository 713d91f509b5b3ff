"""``digits``: scikit-learn's 1797 real 8×8 handwritten digits, 10 classes, grayscale (ships with the package)."""
from __future__ import annotations

import torch

from .core import Dataset, with_split


def load_digits() -> Dataset:
    """scikit-learn digits: 8×8 values 0..16 mapped to [-1, 1]."""
    from sklearn.datasets import load_digits as sk_digits

    d = sk_digits()
    x = torch.tensor(d.images, dtype=torch.float32).unsqueeze(1) / 8.0 - 1.0
    return with_split("digits", x, torch.tensor(d.target, dtype=torch.int64), [str(i) for i in range(10)])
