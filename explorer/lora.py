"""LoRA adapters on a text-to-image UNet, as diffusers' ``train_text_to_image_lora`` adds them: peft's
``LoraConfig`` on every attention projection (``to_q``, ``to_k``, ``to_v``, ``to_out.0``, self- and
cross-attention), W' = W + (α/r) B A with A (r × d_in) Gaussian-initialised and B (d_out × r) zero, so a
fresh adapter leaves the base model unchanged. Only A and B train; attribution takes gradients with
respect to them alone. Saved in the diffusers format that ``load_lora_weights`` reads
(``pytorch_lora_weights.safetensors``, keys ``unet.….lora.down/up.weight``)."""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch

from .models import CheckpointError

TARGETS = ("to_q", "to_k", "to_v", "to_out.0")
TRANSFORMER_TARGETS = ("proj_in", "proj_out", "ff.net.0.proj", "ff.net.2")  # the rest of each transformer block
WEIGHTS = "pytorch_lora_weights.safetensors"


@dataclass(frozen=True)
class LoRAConfig:
    rank: int = 8
    alpha: float = 8.0
    targets: tuple = TARGETS


def add_lora(unet, cfg: LoRAConfig, seed: int = 0) -> list[torch.nn.Parameter]:
    """Adds the adapters (seeded) and freezes everything else; returns the adapter parameters, in order."""
    from peft import LoraConfig
    torch.manual_seed(seed)
    unet.add_adapter(LoraConfig(r=cfg.rank, lora_alpha=cfg.alpha, init_lora_weights="gaussian",
                                target_modules=list(cfg.targets)))
    params = []
    for name, p in unet.named_parameters():
        p.requires_grad_("lora_" in name)
        if "lora_" in name:
            params.append(p)
    return params


def lora_names(unet) -> list[str]:
    return [n for n, _ in unet.named_parameters() if "lora_" in n]


def save_lora(unet, folder: str) -> None:
    """The adapters alone, in diffusers' LoRA format, written to a temporary folder and renamed."""
    import shutil

    from diffusers import StableDiffusionPipeline
    from diffusers.utils import convert_state_dict_to_diffusers
    from peft.utils import get_peft_model_state_dict
    tmp = folder.rstrip("/") + ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    StableDiffusionPipeline.save_lora_weights(
        tmp, unet_lora_layers=convert_state_dict_to_diffusers(get_peft_model_state_dict(unet)), safe_serialization=True)
    shutil.rmtree(folder, ignore_errors=True)
    os.replace(tmp, folder)


def infer_config(unet_state: dict, alpha: float | None = None) -> LoRAConfig:
    """The adapters' shape from their weights (peft keys ``….lora_A.weight``): rank, targets; α given or = rank."""
    downs = {k: v for k, v in unet_state.items() if "lora_A" in k}
    if not downs:
        raise CheckpointError("the LoRA file holds no UNet adapters (lora_A / lora.down weights)")
    rank = max(v.shape[0] for v in downs.values())
    targets = tuple(t for t in TARGETS if any(f".{t}.lora_A" in k for k in downs))
    others = sorted({k.split(".lora_A")[0].rsplit(".", 1)[-1] for k in downs} - {t.split(".")[-1] for t in TARGETS})
    return LoRAConfig(rank=rank, alpha=float(alpha if alpha is not None else rank), targets=targets + tuple(others))


def load_lora(unet, path: str, cfg: LoRAConfig | None = None, alpha: float | None = None) -> list[torch.nn.Parameter]:
    """Adds adapters shaped by ``cfg`` (default: read from the weights, α = ``alpha`` or the rank) and loads
    their weights from ``path`` (a ``.safetensors`` file or the folder holding ``WEIGHTS``); weights whose
    keys or shapes do not fit this UNet are refused with the keys that differ."""
    from diffusers import StableDiffusionPipeline
    from diffusers.utils import convert_unet_state_dict_to_peft
    from peft.utils import set_peft_model_state_dict
    if not (os.path.isfile(path) or os.path.isfile(os.path.join(path, WEIGHTS))):
        raise CheckpointError(f"no LoRA weights at {path!r} ({WEIGHTS} missing). Train them with "
                              f"`python -m precompute lora --dataset emoji`, or point at your LoRA file.")
    try:
        state, _ = StableDiffusionPipeline.lora_state_dict(path)
    except (OSError, ValueError, KeyError) as e:
        raise CheckpointError(f"{path!r} is not a LoRA in the diffusers / peft format: {str(e).splitlines()[0]}") from e
    others = sorted({k.split(".")[0] for k in state if not k.startswith("unet.")})
    if others:
        raise CheckpointError(f"the LoRA at {path!r} also adapts {', '.join(others)}: attribution covers UNet "
                              f"adapters only (a text-encoder LoRA would change the captions' encoding unseen)")
    unet_state = convert_unet_state_dict_to_peft({k[len("unet."):]: v for k, v in state.items()
                                                  if k.startswith("unet.")})
    cfg = cfg or infer_config(unet_state, alpha)
    params = add_lora(unet, cfg)
    try:
        result = set_peft_model_state_dict(unet, unet_state)
    except RuntimeError as e:  # shapes differ: another rank, or adapters of another UNet
        raise CheckpointError(f"the LoRA weights in {path!r} do not fit this UNet with rank {cfg.rank}: "
                              f"{str(e).splitlines()[1].strip() if len(str(e).splitlines()) > 1 else e}") from e
    missing = [k for k in getattr(result, "missing_keys", []) if "lora_" in k]
    if result.unexpected_keys or missing:
        raise CheckpointError(f"the LoRA weights in {path!r} do not fit this UNet: "
                              f"{len(result.unexpected_keys)} unexpected keys (e.g. {result.unexpected_keys[:2]}), "
                              f"{len(missing)} missing (e.g. {missing[:2]})")
    return params
