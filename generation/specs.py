"""What the config says about a model; cheap to import (no torch, no diffusers)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

ModelKind = Literal["sd", "sdxl", "if", "flux", "sd3", "dalle-mini", "dalle-mega", "kandinsky", "karlo"]
MODEL_KINDS: tuple[str, ...] = ("sd", "sdxl", "if", "flux", "sd3", "dalle-mini", "dalle-mega", "kandinsky", "karlo")
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
    # Whether prompts in other languages are translated to English first (see generation.translation): true for
    # every kind here, whose encoders were trained on English text (CLIP on English captions, T5 v1.1 on English C4).
    translate: bool = True


# Here rather than in the families so reading the config imports no torch; each family names its own entry.
KIND_DEFAULTS: dict[str, Defaults] = {
    "sd": Defaults(),
    "sdxl": Defaults(steps=30, guidance=6.0, width=1024, height=1024),
    "if": Defaults(steps=50, guidance=7.0, width=64, height=64),  # stage I size; stage II makes it 4x
    "flux": Defaults(steps=4, guidance=0.0, width=1024, height=1024),  # FLUX.1-schnell
    "sd3": Defaults(steps=28, guidance=7.0, width=1024, height=1024),
    # min-dalle: 16 rows of 16 tokens (one progress step each), guidance = its supercondition_factor (16).
    "dalle-mini": Defaults(steps=16, guidance=16.0, width=256, height=256),
    "dalle-mega": Defaults(steps=16, guidance=16.0, width=256, height=256),
    # Kandinsky 2.2: decoder steps and size as diffusers' KandinskyV22PriorPipeline example, guidance the decoder's
    # default (the prior runs its own default 25 steps at guidance 4: generation.families.unclip).
    "kandinsky": Defaults(steps=50, guidance=4.0, width=768, height=768),
    # Karlo: UnCLIPPipeline's decoder defaults; its super-resolution stage always makes 256x256.
    "karlo": Defaults(steps=25, guidance=8.0, width=256, height=256),
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
    # Kandinsky 2.2: the prior and the inpainting decoder (hub id or directory; None: `prior`/`inpaint_decoder`
    # inside a local `source`, as `imagine-bot tiny-model --kind kandinsky` writes them, else the hub's).
    prior: str | None = None
    inpaint_decoder: str | None = None
    translate: bool | None = None  # translate other languages to English first; None: the kind's default

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


# Super-resolution networks loaded through spandrel (.pth/.safetensors), and diffusers' SD x4 upscaler.
UpscalerKind = Literal["spandrel", "sd-x4"]
UPSCALER_KINDS: tuple[str, ...] = ("spandrel", "sd-x4")
SPANDREL_SUFFIXES = (".pth", ".pt", ".ckpt", ".safetensors")  # weights files spandrel reads
# Input pixels per tile side when the config gives none: a 4x network then makes 2048 px tiles; the SD x4
# upscaler was trained on 128 px inputs, and its VAE decoding a larger tile is what runs out of memory.
DEFAULT_TILE = {"spandrel": 512, "sd-x4": 128}


@dataclass(frozen=True)
class UpscalerSpec:
    """An upscaler users can pick: where its weights are, how it is tiled, and (sd-x4) how it samples."""

    name: str
    source: str  # spandrel: a .pth/.safetensors file; sd-x4: a hub id or a diffusers directory
    kind: UpscalerKind = "spandrel"
    scale: int | None = None  # the factor results are made at; None: the network's own (sd-x4: 4)
    tile: int | None = None  # input pixels per tile side; None: DEFAULT_TILE of the kind
    overlap: int = 32  # input pixels shared by neighbouring tiles, blended so no seam shows
    # sd-x4 only, diffusers' defaults: denoising steps, guidance, noise added to the input (0-350).
    steps: int = 75
    guidance: float = 9.0
    noise_level: int = 20
    description: str = ""

    @property
    def tile_size(self) -> int:
        """Input pixels per tile side."""
        return self.tile or DEFAULT_TILE[self.kind]

    def as_model(self) -> UpscalerModel:
        """The upscaler as the engine and the queue run it: a model of its kind (generation.families.upscaling)."""
        return UpscalerModel(
            name=self.name,
            source=self.source,
            kind=self.kind,  # type: ignore[arg-type]  # an upscaler kind, served by the upscaling family
            steps=1,  # its own sampling settings are in `upscaler`; a request counts one pass
            guidance=self.guidance,
            description=self.description,
            translate=False,  # the prompt steers sd-x4 a little; pictures' prompts were translated when made
            upscaler=self,
        )


@dataclass(frozen=True)
class UpscalerModel(ModelSpec):
    """An upscaler as a model (kind "spandrel" or "sd-x4"), its own settings in `upscaler`; never a [[models]] entry."""

    upscaler: UpscalerSpec | None = None
