"""The ``emoji`` dataset: the same concepts drawn by three artist teams — our miniature of the paper's
ArtBench LoRA setting, with names to prompt by and authors to credit.

- Google's **Noto Color Emoji** (``emoji-datasource-google``, images Apache-2.0): the *base* model's
  pretraining drawings, every base emoji (no skin-tone variants).
- Twitter's **Twemoji** (``emoji-datasource-twitter``, images CC-BY-4.0) and **OpenMoji**
  (``openmoji``, CC-BY-SA-4.0, one named designer per drawing): the *LoRA* set, the drawings of the
  ``LORA_CATEGORIES`` concepts in both styles. This is what is attributed.

Every drawing becomes 32×32 RGB over white: the 64×64 PNGs are area-downscaled; OpenMoji's SVGs are
rendered at 128×128 by resvg (``resvg-py``: a self-contained wheel, no system Cairo to install, and
resvg is the most complete SVG renderer of the PyPI choices) and area-downscaled. Captions are the
lower-cased CLDR names; a LoRA drawing's caption adds its style ("red apple, twemoji").

The arrays ship in ``assets/emoji/data/`` (``emoji.npz`` uint8, ``emoji.json`` names, authors, package
versions and sha256), built by ``python -m precompute data --dataset emoji`` from the npm tarballs
(``npm pack NAME@VERSION``: a download only, no package code runs). Loading needs numpy alone.
"""
from __future__ import annotations

import io
import json
import os
import subprocess
import tarfile
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from .. import ASSETS
from ..files import atomic_write, file_sha256
from .core import Dataset, stratified_split

PACKAGES = {  # artist key -> (npm package, version, licence of the images)
    "noto": ("emoji-datasource-google", "16.0.0", "Apache-2.0"),
    "twemoji": ("emoji-datasource-twitter", "16.0.0", "CC-BY-4.0"),
    "openmoji": ("openmoji", "17.0.0", "CC-BY-SA-4.0"),
}
ARTISTS = {"noto": "Google (Noto Color Emoji)", "twemoji": "Twitter (Twemoji)", "openmoji": "OpenMoji"}
LORA_STYLES = ("twemoji", "openmoji")
LORA_CATEGORIES = ("Food & Drink", "Animals & Nature")
# the base model pretrains on the Noto drawings of the LoRA's concepts (290). All 1,911 in a 1.4 M-parameter UNet
# gave unrecognisable samples after 90 of 150 epochs (a 2-core budget of ~2 h); 459 (with faces) after 300 epochs
BASE_CATEGORIES = LORA_CATEGORIES
SIZE = 32
RENDER = 128  # SVGs are rendered at this size, then area-downscaled to SIZE
DATA_DIR = os.path.join(ASSETS, "emoji", "data")
BUILD = "python -m precompute data --dataset emoji"


def _key(hexcode: str) -> str:
    """Code points as one key across the packages (upper case, no variation selector FE0F)."""
    return "-".join(p for p in hexcode.upper().split("-") if p != "FE0F")


def over_white(img: Image.Image, size: int = SIZE) -> np.ndarray:
    """Any image → (size, size, 3) uint8: alpha composited over white, area-downscaled."""
    rgba = img.convert("RGBA")
    canvas = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    rgb = Image.alpha_composite(canvas, rgba).convert("RGB")
    if rgb.size != (size, size):
        rgb = rgb.resize((size, size), Image.Resampling.BOX)
    return np.asarray(rgb, np.uint8)


def render_svg(svg: bytes, size: int = SIZE) -> np.ndarray:
    try:
        import resvg_py  # only the build needs it
    except ImportError as e:
        raise RuntimeError("rendering OpenMoji's SVGs needs resvg: pip install resvg-py==0.5.0") from e
    png = resvg_py.svg_to_bytes(svg_string=svg.decode("utf-8"), width=RENDER, height=RENDER)
    return over_white(Image.open(io.BytesIO(bytes(png))), size)


def fetch_packages(folder: str) -> dict[str, str]:
    """``npm pack`` each package into ``folder`` (kept if already there) → artist key -> tarball path."""
    os.makedirs(folder, exist_ok=True)
    out = {}
    for key, (name, version, _) in PACKAGES.items():
        path = os.path.join(folder, f"{name}-{version}.tgz")
        if not os.path.exists(path):
            try:
                subprocess.run(["npm", "pack", f"{name}@{version}", "--silent"], cwd=folder, check=True,
                               stdout=subprocess.DEVNULL)
            except (OSError, subprocess.CalledProcessError) as e:
                raise RuntimeError(f"could not fetch {name}@{version} with npm ({e}); install Node.js's npm, or put "
                                   f"the tarball {os.path.basename(path)} in {folder}") from e
        out[key] = path
    return out


def build_arrays(tarballs: dict[str, str], only: set[str] | None = None) -> tuple[dict[str, np.ndarray], dict]:
    """The three tarballs → ({"noto": (N, 32, 32, 3), "lora": (M, 32, 32, 3)} uint8, metadata).

    Noto: every base emoji with a Google image, in ``sort_order``. LoRA: for each concept of
    ``LORA_CATEGORIES`` that all three packages draw, its Twemoji then its OpenMoji drawing.
    ``only``: keep just these code-point keys (a quick partial build, for tests)."""
    tars = {k: tarfile.open(p, "r:gz") for k, p in tarballs.items()}
    read = lambda k, member: tars[k].extractfile(member).read()
    emoji = sorted(json.loads(read("noto", "package/emoji.json")), key=lambda e: e["sort_order"])
    om = {_key(o["hexcode"]): o for o in json.loads(read("openmoji", "package/data/openmoji.json"))}
    names = set(tars["twemoji"].getnames()) | set(tars["noto"].getnames())
    noto, noto_meta, lora, lora_meta = [], [], [], []
    for e in emoji:
        png = f"package/img/google/64/{e['image']}"
        if not e.get("has_img_google") or png not in names or (only is not None and _key(e["unified"]) not in only):
            continue
        name = (e.get("name") or e["short_name"]).lower()
        key = _key(e["unified"])
        noto.append(over_white(Image.open(io.BytesIO(read("noto", png)))))
        noto_meta.append({"name": name, "key": key, "category": e["category"], "subcategory": e["subcategory"]})
        tw = f"package/img/twitter/64/{e['image']}"
        if e["category"] not in LORA_CATEGORIES or key not in om or not e.get("has_img_twitter") or tw not in names:
            continue
        o = om[key]
        drawings = {"twemoji": (over_white(Image.open(io.BytesIO(read("twemoji", tw)))), ARTISTS["twemoji"]),
                    "openmoji": (render_svg(read("openmoji", f"package/color/svg/{o['hexcode']}.svg")),
                                 o.get("openmoji_author") or ARTISTS["openmoji"])}
        for style in LORA_STYLES:
            img, author = drawings[style]
            lora.append(img)
            lora_meta.append({"name": name, "key": key, "style": style, "author": author,
                              "category": e["category"], "subcategory": e["subcategory"]})
    meta = {"packages": {k: {"npm": f"{PACKAGES[k][0]}@{PACKAGES[k][1]}", "licence": PACKAGES[k][2],
                             "sha256": file_sha256(tarballs[k])} for k in PACKAGES},
            "renderer": "resvg-py (OpenMoji SVGs at 128 px, area-downscaled)", "size": SIZE,
            "noto": noto_meta, "lora": lora_meta}
    return {"noto": np.stack(noto), "lora": np.stack(lora)}, meta


def write_arrays(arrays: dict[str, np.ndarray], meta: dict, folder: str = DATA_DIR) -> None:
    """Both files written to temporaries and renamed, so a stopped build leaves the old pair intact."""
    def npz(tmp):
        with open(tmp, "wb") as f:
            np.savez_compressed(f, **arrays)

    def names(tmp):
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(meta, f, indent=0, ensure_ascii=False)
    atomic_write(os.path.join(folder, "emoji.npz"), npz)
    atomic_write(os.path.join(folder, "emoji.json"), names)


def missing_arrays(folder: str | None = None) -> str | None:
    folder = folder or DATA_DIR
    if all(os.path.exists(os.path.join(folder, f)) for f in ("emoji.npz", "emoji.json")):
        return None
    return f"the emoji drawings are not built: {BUILD}"


@dataclass(frozen=True)
class EmojiArrays:
    noto: np.ndarray  # (N, 32, 32, 3) uint8
    lora: np.ndarray
    meta: dict


def read_arrays(folder: str | None = None) -> EmojiArrays:
    folder = folder or DATA_DIR
    if why := missing_arrays(folder):
        raise FileNotFoundError(why)
    with np.load(os.path.join(folder, "emoji.npz"), allow_pickle=False) as z:
        noto, lora = z["noto"], z["lora"]
    with open(os.path.join(folder, "emoji.json"), encoding="utf-8") as f:
        meta = json.load(f)
    if len(noto) != len(meta["noto"]) or len(lora) != len(meta["lora"]):
        raise FileNotFoundError(f"the emoji arrays and their names disagree (a half-written build?): {BUILD}")
    return EmojiArrays(noto, lora, meta)


def to_tensor(images: np.ndarray) -> torch.Tensor:
    """(N, H, W, 3) uint8 → (N, 3, H, W) float32 in [-1, 1]."""
    return torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1.0


def caption(name: str, style: str | None) -> str:
    """The text a drawing is trained with: its name, plus its style for the LoRA styles."""
    return f"{name}, {style}" if style else name


def load_emoji(folder: str | None = None, val_fraction: float = 0.15, seed: int = 0) -> Dataset:
    """The LoRA set as a ``Dataset``: Twemoji and OpenMoji drawings, labelled by subcategory, split by
    (subcategory, style). ``meta``: ``style`` (artist key), ``author``, ``name``, ``caption`` per image."""
    a = read_arrays(folder)
    rows = a.meta["lora"]
    classes = sorted({r["subcategory"] for r in rows})
    labels = np.array([classes.index(r["subcategory"]) for r in rows])
    strata = labels * len(LORA_STYLES) + np.array([LORA_STYLES.index(r["style"]) for r in rows])
    train_idx, val_idx = stratified_split(strata, val_fraction, seed)
    meta = {"style": [r["style"] for r in rows], "author": [r["author"] for r in rows],
            "name": [r["name"] for r in rows], "caption": [caption(r["name"], r["style"]) for r in rows],
            "artists": ARTISTS}
    return Dataset("emoji", to_tensor(a.lora), torch.as_tensor(labels), classes, train_idx, val_idx, meta)


def base_captions(folder: str | None = None) -> tuple[torch.Tensor, list[str]]:
    """The base model's pretraining data: the Noto drawings of ``BASE_CATEGORIES`` and their captions (the
    name alone)."""
    a = read_arrays(folder)
    keep = [i for i, r in enumerate(a.meta["noto"]) if r["category"] in BASE_CATEGORIES]
    return to_tensor(a.noto[keep]), [caption(a.meta["noto"][i]["name"], None) for i in keep]
