import os
import tempfile

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("EXPLORER_CACHE", tempfile.mkdtemp(prefix="explorer-cache-"))  # never write into the repo

import pytest
import torch

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture(scope="session")
def digits_engine():
    from explorer.engine import Engine
    return Engine("digits")


def tiny_unet_config():
    from explorer.models import UNetConfig
    return UNetConfig(block_out_channels=(8, 16), norm_num_groups=4, attention_head_dim=8)


@pytest.fixture(scope="session")
def tiny_unet():
    from explorer.models import make_unet
    return make_unet(tiny_unet_config(), seed=0)
