"""The request a user makes, validated at the edge before any GPU work."""

from __future__ import annotations

import secrets
import unicodedata
from dataclasses import asdict, dataclass, field, replace
from enum import StrEnum
from typing import Any

from PIL import Image

from generation.errors import InvalidRequest
from generation.loras import check_weight

MAX_PROMPT_CHARS = 2000
MAX_STEPS = 150
MAX_COUNT = 4
MAX_GUIDANCE = 30.0
MIN_SIDE = 64
MAX_SIDE = 2048
SIZE_MULTIPLE = 8
MAX_SEED = 2**32 - 1


class Mode(StrEnum):
    """What kind of generation a request asks for; the value is stored in SQLite."""

    TXT2IMG = "txt2img"
    IMG2IMG = "img2img"
    INPAINT = "inpaint"


# Bidi embeddings, overrides and isolates: shown back to others, they reorder the text around them.
_BIDI_CONTROLS = frozenset("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


def without_control_chars(text: str) -> str:
    """Text without control characters (whitespace stays) and bidi controls; emoji joiners stay."""
    return "".join(c for c in text if c not in _BIDI_CONTROLS and (c.isspace() or unicodedata.category(c) != "Cc"))


@dataclass(frozen=True)
class Upscale:
    """What makes a request an upscale (generation.families.upscaling): how many times larger, and the picture.

    The request's size is the picture's own grown to the size rules (sides multiples of 8, at least 64): the init
    image holds the picture at its top left, the family upscales just the `width` x `height` of it, so the result
    is exactly `scale` times the picture. `parameters` are the picture's own A1111 text, kept in the result's.
    """

    scale: int
    width: int
    height: int
    parameters: str = ""


MAX_UPSCALE = 16
MAX_UPSCALE_PARAMETERS = 20_000


def random_seed() -> int:
    """A fresh seed in the range users can type back in."""
    return secrets.randbelow(MAX_SEED + 1)


@dataclass(frozen=True)
class GenerationRequest:
    """One user's request: everything the engine needs, and nothing Discord-specific.

    Images are already decoded and fitted (see generation.images); they do not take part in equality.
    """

    prompt: str
    model: str
    width: int
    height: int
    steps: int
    guidance: float
    seed: int
    mode: Mode = Mode.TXT2IMG
    negative_prompt: str = ""
    count: int = 1
    strength: float = 0.75
    sampler: str | None = None
    # (name, weight) sorted by name: the adapters of the whole call (see generation.loras for prompt tags).
    loras: tuple[tuple[str, float], ...] = ()
    # Inpainting only: the picture's own pixels back where the mask is black (Zoom Out, Pan), as A1111 overlays.
    keep_unmasked: bool = False
    upscale: Upscale | None = None  # an upscale of the init image, on an upscaler (see Upscale)
    init_image: Image.Image | None = field(default=None, compare=False, repr=False)
    mask: Image.Image | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "mode", Mode(self.mode))
        object.__setattr__(self, "prompt", without_control_chars(self.prompt).strip())
        object.__setattr__(self, "negative_prompt", without_control_chars(self.negative_prompt or "").strip())
        # Stored as JSON lists; sorted so the same LoRAs in any order batch together and compare equal.
        object.__setattr__(self, "loras", tuple(sorted((str(n).strip(), float(w)) for n, w in self.loras or ())))
        if isinstance(self.upscale, dict):  # from params() stored as JSON
            object.__setattr__(self, "upscale", Upscale(**self.upscale))
        self._validate()

    def _validate(self) -> None:
        if not self.prompt:
            raise InvalidRequest("The prompt is empty: describe the picture you want.")
        for name, text in (("prompt", self.prompt), ("negative prompt", self.negative_prompt)):
            if len(text) > MAX_PROMPT_CHARS:
                raise InvalidRequest(f"The {name} is {len(text)} characters long; the limit is {MAX_PROMPT_CHARS}.")
        for name, side in (("width", self.width), ("height", self.height)):
            if not MIN_SIDE <= side <= MAX_SIDE:
                raise InvalidRequest(f"The {name} must be between {MIN_SIDE} and {MAX_SIDE} pixels, not {side}.")
            if side % SIZE_MULTIPLE:
                raise InvalidRequest(f"The {name} must be a multiple of {SIZE_MULTIPLE}, not {side}.")
        if not 1 <= self.steps <= MAX_STEPS:
            raise InvalidRequest(f"Steps must be between 1 and {MAX_STEPS}, not {self.steps}.")
        if not 0.0 <= self.guidance <= MAX_GUIDANCE:
            raise InvalidRequest(f"Guidance must be between 0 and {MAX_GUIDANCE:g}, not {self.guidance:g}.")
        if not 1 <= self.count <= MAX_COUNT:
            raise InvalidRequest(f"You can ask for 1 to {MAX_COUNT} images at once, not {self.count}.")
        if not 0 <= self.seed <= MAX_SEED:
            raise InvalidRequest(f"The seed must be between 0 and {MAX_SEED}, not {self.seed}.")
        if not 0.0 < self.strength <= 1.0:
            raise InvalidRequest(f"Strength must be above 0 and at most 1, not {self.strength:g}.")
        self._validate_loras()
        self._validate_images()
        self._validate_upscale()

    def _validate_upscale(self) -> None:
        upscale = self.upscale
        if upscale is None:
            return
        if self.mode is not Mode.IMG2IMG or self.count != 1:
            raise InvalidRequest("An upscale takes one picture to start from (img2img) and makes one.")
        if not 1 <= upscale.scale <= MAX_UPSCALE:
            raise InvalidRequest(f"An upscale enlarges 1 to {MAX_UPSCALE} times, not {upscale.scale}.")
        if not (0 < upscale.width <= self.width and 0 < upscale.height <= self.height):
            raise InvalidRequest(
                f"The picture to upscale is {upscale.width}x{upscale.height}, which does not fit the request's "
                f"{self.width}x{self.height}."
            )
        if len(upscale.parameters) > MAX_UPSCALE_PARAMETERS:
            raise InvalidRequest(
                f"The picture's parameters are {len(upscale.parameters)} characters long; "
                f"the limit is {MAX_UPSCALE_PARAMETERS}."
            )

    def _validate_loras(self) -> None:
        names = [name for name, _ in self.loras]
        if len(set(names)) != len(names):
            twice = next(name for name in names if names.count(name) > 1)
            raise InvalidRequest(f"The LoRA '{twice}' is given twice: give it once, with one weight.")
        for name, weight in self.loras:
            if not name:
                raise InvalidRequest("A LoRA needs a name.")
            check_weight(name, weight)

    def _validate_images(self) -> None:
        if self.mode is Mode.TXT2IMG:
            if self.init_image is not None or self.mask is not None:
                raise InvalidRequest("A text-to-image request takes no image or mask.")
            return
        if self.init_image is None:
            raise InvalidRequest(f"{self.mode.value} needs an image to start from.")
        if self.init_image.size != (self.width, self.height):
            raise InvalidRequest(
                f"The image is {self.init_image.width}x{self.init_image.height} "
                f"but the request is {self.width}x{self.height}."
            )
        if self.mode is Mode.IMG2IMG and self.mask is not None:
            raise InvalidRequest("A mask only applies to inpainting.")
        if self.mode is Mode.INPAINT:
            if self.mask is None:
                raise InvalidRequest("Inpainting needs a mask: white where the picture should change.")
            if self.mask.size != self.init_image.size:
                raise InvalidRequest(
                    f"The mask is {self.mask.width}x{self.mask.height} "
                    f"but the image is {self.init_image.width}x{self.init_image.height}."
                )

    @property
    def seeds(self) -> list[int]:
        """One seed per image: seed, seed+1, … as A1111 and Midjourney users expect."""
        return [(self.seed + i) % (MAX_SEED + 1) for i in range(self.count)]

    @property
    def cost(self) -> int:
        """GPU work this request asks for, in pixel-steps; the queue's fairness unit."""
        steps = self.steps if self.mode is Mode.TXT2IMG else max(1, int(self.steps * self.strength))
        return self.width * self.height * steps * self.count

    @property
    def batch_key(self) -> tuple[Any, ...]:
        """Requests with equal keys can share one pipeline call."""
        strength = None if self.mode is Mode.TXT2IMG else self.strength
        return (
            self.model,
            self.mode,
            self.width,
            self.height,
            self.steps,
            self.guidance,
            self.sampler,
            strength,
            self.loras,  # adapters apply to the whole call: one set (and weights) per batch
        )

    def params(self) -> dict[str, Any]:
        """Every parameter except the images, as plain JSON-able values."""
        return {
            "prompt": self.prompt,
            "negative_prompt": self.negative_prompt,
            "model": self.model,
            "mode": self.mode.value,
            "width": self.width,
            "height": self.height,
            "steps": self.steps,
            "guidance": self.guidance,
            "seed": self.seed,
            "count": self.count,
            "strength": self.strength,
            "sampler": self.sampler,
            "loras": [[name, weight] for name, weight in self.loras],
            **({"keep_unmasked": True} if self.keep_unmasked else {}),  # old jobs' params stay as they were
            **({"upscale": asdict(self.upscale)} if self.upscale else {}),
        }

    @classmethod
    def from_params(
        cls, params: dict[str, Any], init_image: Image.Image | None = None, mask: Image.Image | None = None
    ) -> GenerationRequest:
        """Rebuild a request from `params()` output and its images."""
        return cls(**params, init_image=init_image, mask=mask)

    def with_changes(self, **changes: Any) -> GenerationRequest:
        """A validated copy with some fields changed."""
        return replace(self, **changes)
