"""What the engine hands back and reports while it works."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from PIL import Image

if TYPE_CHECKING:
    from generation.translation import Translation


@dataclass(frozen=True)
class GeneratedImage:
    """One output image with the facts needed to store, label and reproduce it."""

    image: Image.Image = field(repr=False)
    seed: int
    index: int
    parameters: str
    nsfw: bool | None = None  # None: no safety checker ran
    translation: Translation | None = None  # what the encoders read instead of the typed prompt, if translated

    def png(self) -> bytes:
        """The image as PNG bytes carrying its `parameters` text chunk."""
        from generation.metadata import png_bytes

        return png_bytes(self.image, self.parameters)


@dataclass(frozen=True)
class StepProgress:
    """Progress of one pipeline call; previews are per image in request order, when made."""

    step: int
    total: int
    previews: tuple[Image.Image, ...] | None = field(default=None, repr=False)
