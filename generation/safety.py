"""Optional NSFW detection: flags are reported to the caller, who applies the server's policy."""

from __future__ import annotations

from typing import Protocol

import numpy as np
import torch
from PIL import Image


class SafetyChecker(Protocol):
    """Returns one flag per image: True where the image looks unsafe."""

    def __call__(self, images: list[Image.Image]) -> list[bool]: ...


class DiffusersSafetyChecker:
    """The Stable Diffusion safety checker, run on our side so images are flagged, not blacked out."""

    def __init__(self, source: str, device: torch.device, dtype: torch.dtype) -> None:
        from diffusers.pipelines.stable_diffusion.safety_checker import StableDiffusionSafetyChecker
        from transformers import CLIPImageProcessor

        self._checker = StableDiffusionSafetyChecker.from_pretrained(source, subfolder="safety_checker")
        self._checker.to(device, dtype)
        self._processor = CLIPImageProcessor.from_pretrained(source, subfolder="feature_extractor")

    @torch.inference_mode()
    def __call__(self, images: list[Image.Image]) -> list[bool]:
        """Per-image flags; the images themselves are left untouched."""
        checker = self._checker
        clip_input = self._processor(images, return_tensors="pt").pixel_values.to(checker.device, checker.dtype)
        scratch = np.stack([np.asarray(image, dtype=np.float32) / 255 for image in images])
        _, flags = checker(images=scratch, clip_input=clip_input)
        return [bool(flag) for flag in flags]
