"""Diffusion Attribution Explorer — entry point (local, or as a Hugging Face Space).
Binds to 127.0.0.1 unless GRADIO_SERVER_NAME / GRADIO_SERVER_PORT say otherwise."""
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

from explorer.ui import MAX_UPLOAD_MB, build  # noqa: E402

demo = build()

if __name__ == "__main__":
    demo.launch(server_name=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"), max_file_size=f"{MAX_UPLOAD_MB}mb")
