"""Tiny random-weight LoRAs for the tiny SD, SDXL and FLUX models: real diffusers LoRA files, a few KB each.

Built as Dreambooth LoRA training builds them (PEFT `LoraConfig` on the attention projections, saved with the
pipeline's `save_lora_weights`), except that the B matrices are random instead of zero, so that a LoRA visibly
changes the picture from the first step.
"""

from __future__ import annotations

from pathlib import Path

import torch
from diffusers import FluxPipeline, StableDiffusionPipeline, StableDiffusionXLPipeline
from diffusers.utils import convert_state_dict_to_diffusers
from peft import LoraConfig
from peft.utils import get_peft_model_state_dict

from generation.tiny.flux import build_tiny_flux
from generation.tiny.stable_diffusion import build_tiny_sd, build_tiny_sdxl

TARGET_MODULES = ["to_k", "to_q", "to_v", "to_out.0"]
RANK = 4
LORA_FILE = "pytorch_lora_weights.safetensors"  # diffusers' default name inside a directory


def _random_adapter(model: torch.nn.Module, seed: int) -> dict[str, torch.Tensor]:
    model.add_adapter(LoraConfig(r=RANK, lora_alpha=RANK, init_lora_weights="gaussian", target_modules=TARGET_MODULES))
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "lora_" in name:  # B starts at zero in training; random here so the LoRA changes the output
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.3)
    return get_peft_model_state_dict(model)


def write_tiny_lora(path: Path, kind: str = "sd", seed: int = 1) -> Path:
    """Write a tiny LoRA for the tiny model of `kind` (sd, sdxl, flux): to `path` when it ends in .safetensors,
    else into the directory `path`; returns the file written."""
    path = Path(path)
    directory, weight_name = (path.parent, path.name) if path.suffix == ".safetensors" else (path, LORA_FILE)
    directory.mkdir(parents=True, exist_ok=True)
    if kind == "sd":
        layers = convert_state_dict_to_diffusers(_random_adapter(build_tiny_sd().unet, seed))
        StableDiffusionPipeline.save_lora_weights(directory, unet_lora_layers=layers, weight_name=weight_name)
    elif kind == "sdxl":
        layers = convert_state_dict_to_diffusers(_random_adapter(build_tiny_sdxl().unet, seed))
        StableDiffusionXLPipeline.save_lora_weights(directory, unet_lora_layers=layers, weight_name=weight_name)
    elif kind == "flux":
        layers = _random_adapter(build_tiny_flux().transformer, seed)
        FluxPipeline.save_lora_weights(directory, transformer_lora_layers=layers, weight_name=weight_name)
    else:
        raise ValueError(f"no tiny LoRA for kind {kind!r}; choose one of sd, sdxl, flux")
    return directory / weight_name
