"""What the config says about a model; cheap to import (no torch, no diffusers)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

ModelKind = Literal["sd", "sdxl", "if", "flux", "sd3"]
MODEL_KINDS: tuple[str, ...] = ("sd", "sdxl", "if", "flux", "sd3")
SINGLE_FILE_SUFFIXES = (".safetensors", ".ckpt")
# The base kinds a LoRA can be made for; each needs its family's diffusers LoRA loader.
LoraKind = Literal["sd", "sdxl", "flux"]
LORA_KINDS: tuple[str, ...] = ("sd", "sdxl", "flux")


@dataclass(frozen=True)
class Defaults:
    """What a kind of model does well without being told: used where the config says nothing."""

    steps: int = 25
    guidance: float = 7.0
    width: int = 512
    height: int = 512


# Here rather than in the families so reading the config imports no torch; each family names its own entry.
KIND_DEFAULTS: dict[str, Defaults] = {
    "sd": Defaults(),
    "sdxl": Defaults(steps=30, guidance=6.0, width=1024, height=1024),
    "if": Defaults(steps=50, guidance=7.0, width=64, height=64),  # stage I size; stage II makes it 4x
    "flux": Defaults(steps=4, guidance=0.0, width=1024, height=1024),  # FLUX.1-schnell
    "sd3": Defaults(steps=28, guidance=7.0, width=1024, height=1024),
}


@dataclass(frozen=True)
class ModelSpec:
    """A model users can pick: where its weights are and the defaults that suit it."""

    name: str
    source: str  # hub id, local diffusers directory, or a single .safetensors file
    kind: ModelKind = "sd"
    steps: int = 25
    guidance: float = 7.0
    width: int = 512
    height: int = 512
    sampler: str | None = None  # None: the scheduler the model ships with
    config: str | None = None  # diffusers directory or hub id holding configs for a single file
    variant: str | None = None  # e.g. "fp16" weights on the hub
    preview_vae: str | None = None  # TAESD-style AutoencoderTiny for sharp previews
    safety_checker: str | None = None  # directory or hub id of a StableDiffusionSafetyChecker
    description: str = ""
    # DeepFloyd IF: the super-resolution stages (hub id or directory; None: `stage_2`/`stage_3` inside a
    # local `source`, as `imagine-bot tiny-model --kind if` writes them) and how many stages run.
    stage_2: str | None = None
    stage_3: str | None = None
    stages: int = 2
    max_tokens: int | None = None  # T5 prompt length (FLUX, SD3); None: the family's default

    @property
    def pixels(self) -> int:
        """The default image area, used to size img2img outputs."""
        return self.width * self.height


@dataclass(frozen=True)
class LoraSpec:
    """A LoRA users can add to a prompt: where its weights are and which kind of model it fits."""

    name: str  # what users type: `<lora:NAME:0.8>` or /imagine lora:NAME
    source: str  # a .safetensors file, a directory holding one, or a hub id
    kind: LoraKind = "sd"  # the base kind it was trained on; other kinds refuse it
    weight: float = 1.0  # used when the prompt gives none (`<lora:NAME>`)
    triggers: tuple[str, ...] = ()  # words it was trained to respond to, shown in the picker
    description: str = ""
    weight_name: str | None = None  # the file inside a directory or hub repo, when there are several
