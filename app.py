"""Diffusion Attribution Explorer — entry point (local, or as a Hugging Face Space).
Listens on 0.0.0.0 inside a Space (``SPACE_ID`` set), on 127.0.0.1 otherwise, unless
GRADIO_SERVER_NAME says otherwise; GRADIO_SERVER_PORT picks the port."""
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

from explorer.ui import CSS, MAX_UPLOAD_MB, build_app  # noqa: E402

demo = build_app()

if __name__ == "__main__":
    host = os.environ.get("GRADIO_SERVER_NAME", "0.0.0.0" if os.environ.get("SPACE_ID") else "127.0.0.1")
    demo.launch(server_name=host, max_file_size=f"{MAX_UPLOAD_MB}mb", css=CSS)
