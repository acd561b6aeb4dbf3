"""Tiny random-weight upscalers: a Real-ESRGAN Compact network (SRVGGNetCompact) and an SD x4 upscale pipeline.

The Compact network is built from spandrel's own architecture code, so the saved weights carry exactly the
keys spandrel's detection reads (`body.0.weight`, `body.1.weight`, …) and load as "RealESRGAN Compact", the
architecture of realesr-general-x4v3 and realesr-animevideov3. The SD x4 pipeline is DeepFloyd IF's stage III
builder (generation/tiny/deepfloyd_if.py): the same upscaler's shape.
"""

from __future__ import annotations

from pathlib import Path

import torch

from generation.tiny.deepfloyd_if import build_tiny_sd_upscaler

UPSCALER_FILE = "tiny-realesrgan-x4.safetensors"  # the file written into a directory


def tiny_compact_state_dict(
    scale: int = 4, features: int = 8, convs: int = 2, seed: int = 0
) -> dict[str, torch.Tensor]:
    """Random weights of an SRVGGNetCompact (`convs` 3x3 convolutions in its body, PReLU), as spandrel reads them."""
    from spandrel.architectures.Compact import Compact

    torch.manual_seed(seed)
    network = Compact(num_in_ch=3, num_out_ch=3, num_feat=features, num_conv=convs, upscale=scale)
    return {key: value.contiguous() for key, value in network.state_dict().items()}


def write_tiny_upscaler(path: Path, kind: str = "upscaler") -> Path:
    """Write a tiny upscaler: `upscaler` to a .pth or .safetensors file (into a directory: UPSCALER_FILE);
    `sd-x4` a diffusers directory. Returns what was written."""
    path = Path(path)
    if kind == "sd-x4":
        build_tiny_sd_upscaler().save_pretrained(path)
        return path
    if kind != "upscaler":
        raise ValueError(f"no tiny upscaler of kind {kind!r}; choose upscaler or sd-x4")
    if path.suffix not in (".pth", ".safetensors"):
        path = path / UPSCALER_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    weights = tiny_compact_state_dict()
    if path.suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file(weights, path)
    else:
        torch.save(weights, path)
    return path
