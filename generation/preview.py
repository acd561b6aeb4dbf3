"""Cheap previews of latents while a pipeline runs."""

from __future__ import annotations

from typing import Protocol

import numpy as np
import torch
from PIL import Image

# Least-squares fits from latent channels to RGB, the "cheap approximation" A1111 popularised.
_SD_FACTORS = ((0.298, 0.207, 0.208), (0.187, 0.286, 0.173), (-0.158, 0.189, 0.264), (-0.184, -0.271, -0.473))
_SDXL_FACTORS = (
    (0.3448, 0.4168, 0.4395),
    (-0.1953, -0.0290, 0.0250),
    (0.1074, 0.0886, -0.0163),
    (-0.3730, -0.2499, -0.2088),
)


class Previewer(Protocol):
    """Turns a batch of latents into one small picture per image."""

    def __call__(self, latents: torch.Tensor) -> list[Image.Image]: ...


def _to_pictures(rgb: torch.Tensor) -> list[Image.Image]:
    # rgb: (batch, 3, h, w) in [-1, 1]
    array = ((rgb.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return [Image.fromarray(np.ascontiguousarray(a.permute(1, 2, 0).cpu().numpy()), "RGB") for a in array]


class LinearPreviewer:
    """Latent-to-RGB by a fixed 4x3 matrix: almost free, blurry, good enough to watch progress."""

    def __init__(self, kind: str = "sd", upscale: int = 4) -> None:
        self._factors = torch.tensor(_SDXL_FACTORS if kind == "sdxl" else _SD_FACTORS)
        self._upscale = upscale

    def __call__(self, latents: torch.Tensor) -> list[Image.Image]:
        """One preview per image, `upscale` times the latent size."""
        factors = self._factors.to(latents.device, torch.float32)
        rgb = torch.einsum("bchw,cr->brhw", latents[:, :4].float(), factors)
        pictures = _to_pictures(rgb)
        return [p.resize((p.width * self._upscale, p.height * self._upscale)) for p in pictures]


class TinyVaePreviewer:
    """Decodes latents with a TAESD-style AutoencoderTiny: sharp previews for a few ms each."""

    def __init__(self, vae: torch.nn.Module) -> None:
        self._vae = vae

    @torch.inference_mode()
    def __call__(self, latents: torch.Tensor) -> list[Image.Image]:
        """One full-resolution preview per image."""
        vae = self._vae
        decoded = vae.decode(latents.to(vae.device, vae.dtype) / vae.config.scaling_factor).sample
        return _to_pictures(decoded)
