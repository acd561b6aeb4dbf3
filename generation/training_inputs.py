"""What a Dreambooth LoRA training is given: its settings and its photos, checked and fitted.

Cheap to import for checks at the edge (no diffusers); the trainer itself is generation.training.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from PIL import Image, ImageOps

from generation.errors import InvalidRequest
from generation.images import DEFAULT_LIMITS, ImageLimits, decode_image, to_rgb
from generation.loras import NAME_FORBIDDEN

if TYPE_CHECKING:
    from diffusers import DiffusionPipeline

TRAINABLE_KINDS = ("sd", "sdxl")  # the kinds LoraTrainer knows (a UNet to add the LoRA to)
MIN_PHOTOS = 3
MAX_PHOTOS = 20
MAX_STEPS = 5000


@dataclass(frozen=True)
class TrainingSettings:
    """What to train and how; the defaults are the diffusers Dreambooth LoRA recipe (512 px, rank 4, lr 1e-4)."""

    token: str
    class_word: str = "person"
    steps: int = 500
    rank: int = 4
    learning_rate: float = 1e-4
    resolution: int = 512
    seed: int = 0
    batch_size: int = 1
    prior_loss_weight: float = 1.0
    max_grad_norm: float = 1.0
    weight_decay: float = 1e-2

    def __post_init__(self) -> None:
        if not self.token or any(c.isspace() for c in self.token) or len(self.token) > 32:
            raise InvalidRequest(f"The trigger token must be one word of 1-32 characters, not {self.token!r}.")
        if not self.class_word.strip():
            raise InvalidRequest("The class word must not be empty (e.g. 'person', 'dog', 'mug').")
        for name, value, low, high in (
            ("steps", self.steps, 1, MAX_STEPS),
            ("rank", self.rank, 1, 128),
            ("batch size", self.batch_size, 1, 16),
        ):
            if not low <= value <= high:
                raise InvalidRequest(f"Training {name} must be between {low} and {high}, not {value}.")
        if self.resolution % 8 or not 64 <= self.resolution <= 2048:
            raise InvalidRequest(f"Training resolution must be a multiple of 8 in 64-2048, not {self.resolution}.")
        if not 0 < self.learning_rate <= 1:
            raise InvalidRequest(f"The learning rate must be in (0, 1], not {self.learning_rate}.")

    @property
    def instance_prompt(self) -> str:
        """The prompt the photos are trained under."""
        return f"a photo of {self.token} {self.class_word}"

    @property
    def class_prompt(self) -> str:
        """The prompt of the class images that preserve the prior."""
        return f"a photo of {self.class_word}"


MAX_NAME = 40


def check_lora_name(name: str) -> str:
    """A LoRA name users can type (also as `<lora:NAME:0.8>`), stripped; refuses empty or odd names."""
    name = name.strip()
    if not name or len(name) > MAX_NAME:
        raise InvalidRequest(f"A LoRA name must have 1 to {MAX_NAME} characters, not {len(name)}.")
    if NAME_FORBIDDEN & set(name) or name != " ".join(name.split()):
        raise InvalidRequest(f'The LoRA name {name!r} cannot hold any of : < > , " ` # or repeated spaces.')
    return name


def check_photo_count(count: int) -> None:
    """Refuse too few or too many photos, naming the limits."""
    if not MIN_PHOTOS <= count <= MAX_PHOTOS:
        raise InvalidRequest(f"Training needs {MIN_PHOTOS} to {MAX_PHOTOS} photos of the subject; got {count}.")


def fit_photo(image: Image.Image, resolution: int) -> Image.Image:
    """An RGB square of `resolution` pixels: centre-cropped, then resized (diffusers' --center_crop)."""
    image = to_rgb(image)
    if image.size == (resolution, resolution):
        return image
    return ImageOps.fit(image, (resolution, resolution), Image.Resampling.LANCZOS)


def decode_photos(
    photos: Sequence[bytes], names: Sequence[str] | None = None, limits: ImageLimits = DEFAULT_LIMITS
) -> list[Image.Image]:
    """Decode uploaded photos safely (RGB); refuses a bad count or a file that is not a picture, by name."""
    check_photo_count(len(photos))
    labels = names or [str(i + 1) for i in range(len(photos))]
    if len(labels) != len(photos):
        raise ValueError(f"{len(labels)} names for {len(photos)} photos")
    return [to_rgb(decode_image(data, f"photo {label}", limits)) for data, label in zip(photos, labels, strict=True)]


def prepare_photos(
    photos: Sequence[bytes],
    resolution: int,
    names: Sequence[str] | None = None,
    limits: ImageLimits = DEFAULT_LIMITS,
) -> list[Image.Image]:
    """Decode uploaded photos safely and fit them to the training resolution."""
    return [fit_photo(photo, resolution) for photo in decode_photos(photos, names, limits)]


def generate_class_images(
    pipe: DiffusionPipeline, prompt: str, count: int, resolution: int, seed: int, steps: int = 25
) -> list[Image.Image]:
    """Class images for prior preservation, made by the pipeline being trained (one seeded call each)."""
    import torch  # here, so validating inputs at the edge imports no torch

    return [
        pipe(
            prompt,
            height=resolution,
            width=resolution,
            num_inference_steps=steps,
            generator=torch.Generator("cpu").manual_seed(seed + i),
        ).images[0]
        for i in range(count)
    ]


def photo_digest(images: Sequence[Image.Image]) -> str:
    """A hash of the pixels of the photos, in order: checkpoints refuse to resume a different training."""
    digest = hashlib.sha256()
    for image in images:
        digest.update(f"{image.mode}{image.size}".encode())
        digest.update(image.tobytes())
    return digest.hexdigest()
