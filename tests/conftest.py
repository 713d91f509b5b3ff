import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import pytest
import torch

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture(scope="session")
def digits_engine():
    from explorer.engine import Engine
    return Engine("digits")


@pytest.fixture(scope="session")
def tiny_unet():
    from explorer.models import UNetConfig, make_unet
    return make_unet(UNetConfig(block_out_channels=(8, 16), norm_num_groups=4, attention_head_dim=8), seed=0)
