"""Diffusion Attribution Explorer: which training images does a diffusion model's output come from?

Data flows one way: ``data`` → ``models`` → ``attribution`` → ``evaluation`` → ``ui``.
"""
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ASSETS = os.environ.get("EXPLORER_ASSETS", os.path.join(_ROOT, "assets"))  # shipped, read-only at run time
CACHE = os.environ.get("EXPLORER_CACHE", os.path.join(_ROOT, ".cache"))  # features the app builds on demand
