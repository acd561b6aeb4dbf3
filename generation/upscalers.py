"""Upscalers: super-resolution networks loaded through spandrel, and diffusers' SD x4 upscaler, tile by tile.

`load_upscaler(spec, device, dtype)` gives an object with `.scale` (the network's factor) and `upscale(image,
on_progress, should_cancel)`: the picture is cut into overlapping tiles (generation/tiling.py), each tile is
upscaled on its own, and the tiles are blended back with feathered weights, so a 2048² result needs one tile's
memory and shows no seam. Progress counts tiles (sd-x4: denoising steps of every tile); a cancel is honoured
between tiles (sd-x4: between steps) by raising Cancelled. A picture smaller than one tile is upscaled in one
piece, exactly as the library called directly would (the tests prove it).

sd-x4: every tile is one StableDiffusionUpscalePipeline call with the spec's steps, guidance and noise_level
(diffusers' defaults 75, 9.0, 20) and an optional prompt. The starting latents are drawn once for the whole
picture from the seed, as one untiled call would draw them, and each tile takes its part, so neighbouring tiles
start from the same noise; the small noise the pipeline adds to each tile's input comes from seed + tile index.

Cost, in the queue's unit (SD 1.5 pixel-steps: an SD 1.5 step at WxH costs W*H, ≈ 6.4 MFLOP per pixel with CFG).
Estimated from parameters, not measured; the network's output pixels of every tile are counted, overlaps
included. spandrel: Real-ESRGAN x4plus (RRDB, 16.7M parameters at the input resolution) is ≈ 36 MFLOP per input
pixel, ≈ 2.3 MFLOP per output pixel, ≈ 0.35 SD pixel-steps; SwinIR and HAT are 2-3 times that and run less
efficiently, so SPANDREL_COST = 1 per output pixel covers them. sd-x4: its 473M UNet runs at the input resolution,
≈ 15 TFLOP per step on 256² latents with CFG, ≈ 35 SD pixel-steps per input pixel and step, so SD_X4_COST = 2.2 per
output pixel and step (the VAE decode, ≈ 0.5 per output pixel, is left out). A 2048² result is ≈ 4.2M units with
Real-ESRGAN (about 0.6 of one SD 1.5 512² image at 25 steps) and ≈ 1.1G units with sd-x4 at 75 steps in 25 tiles
of 128 px (about 165 such images). Recalibrate from a GPU benchmark when one is run.
"""

from __future__ import annotations

import json
import math
from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from generation.errors import Cancelled, InvalidRequest, ModelUnavailable, OutOfMemory
from generation.families.loading import is_local_path
from generation.specs import UpscalerSpec
from generation.tiling import Canvas, Tile, plan

ProgressCallback = Callable[[int, int], None]  # (units done, units in all)
CancelCheck = Callable[[], bool]

SPANDREL_COST = 1.0  # per output pixel (see the module docstring)
SD_X4_COST = 2.2  # per output pixel and denoising step
SD_X4_SCALE = 4
# "Upscale (Creative)": after the upscaler, an img2img pass of the model at the new size at this strength, to
# sharpen and add detail without repainting (what the Upscale buttons did alone before).
CREATIVE_STRENGTH = 0.3


class _Progress:
    """Counts work units toward a fixed total and stops the call when cancelled."""

    def __init__(self, total: int, on_progress: ProgressCallback | None, should_cancel: CancelCheck | None) -> None:
        self.total, self.done = total, 0
        self._on_progress, self._should_cancel = on_progress, should_cancel

    def check(self) -> None:
        """Raise Cancelled when the requester (or a stopping worker) asked to stop."""
        if self._should_cancel is not None and self._should_cancel():
            raise Cancelled("Cancelled.")

    def advance(self, units: int = 1) -> None:
        """Count finished units and report them."""
        self.done += units
        if self._on_progress is not None:
            self._on_progress(self.done, self.total)


class Upscaler(ABC):
    """A loaded upscaler. Not thread-safe: call it from the single GPU thread."""

    scale: int  # the network's own factor
    multiple: int = 1  # tile sides must be multiples of this (pictures are padded to it, the padding cut off)

    def __init__(self, spec: UpscalerSpec, device: torch.device, dtype: torch.dtype) -> None:
        self.spec, self.device, self.dtype = spec, device, dtype

    @property
    def tile(self) -> int:
        """Input pixels per tile side, a multiple of `multiple`."""
        return max(self.multiple, self.spec.tile_size // self.multiple * self.multiple)

    def output_scale(self, scale: int | None = None) -> int:
        """The factor a result is made at: `scale` if given, else the spec's, else the network's."""
        chosen = scale if scale is not None else (self.spec.scale or self.scale)
        if not 1 <= chosen <= self.scale:
            raise InvalidRequest(
                f"The upscaler '{self.spec.name}' enlarges up to {self.scale}x, so a scale of {chosen} is not "
                f"possible: pick 1 to {self.scale}."
            )
        return chosen

    def output_size(self, width: int, height: int, scale: int | None = None) -> tuple[int, int]:
        """The size of the result for a width x height picture."""
        chosen = self.output_scale(scale)
        return width * chosen, height * chosen

    def upscale(
        self,
        image: Image.Image,
        on_progress: ProgressCallback | None = None,
        should_cancel: CancelCheck | None = None,
        *,
        scale: int | None = None,
        prompt: str = "",
        negative_prompt: str = "",
        seed: int = 0,
    ) -> Image.Image:
        """The picture enlarged `scale` times (see `output_scale`), RGB. `prompt`, `negative_prompt` and `seed`
        steer the diffusion upscaler; networks ignore them. A scale below the network's is the network's result
        resized down (LANCZOS)."""
        target = self.output_scale(scale)
        rgb = image.convert("RGB")
        padded = _padded(rgb, self.multiple)
        tiles = plan(padded.width, padded.height, self.tile, self.spec.overlap)
        progress = _Progress(self.units(rgb.width, rgb.height), on_progress, should_cancel)
        canvas = Canvas(padded.width, padded.height, self.scale, self.spec.overlap)
        try:
            state = self._begin(padded, prompt=prompt, negative_prompt=negative_prompt, seed=seed)
            for index, tile in enumerate(tiles):
                progress.check()
                canvas.add(tile, self._upscale_tile(state, tile, index, progress))
        except torch.OutOfMemoryError as exc:
            raise OutOfMemory(
                f"The GPU ran out of memory upscaling {rgb.width}x{rgb.height} with '{self.spec.name}' in tiles of "
                f"{self.tile} px. Try a smaller picture; the bot's operator can set a smaller `tile` for it."
            ) from exc
        result = Image.fromarray(canvas.image_array(), "RGB")
        if result.size != (rgb.width * self.scale, rgb.height * self.scale):
            result = result.crop((0, 0, rgb.width * self.scale, rgb.height * self.scale))
        if target != self.scale:
            result = result.resize((rgb.width * target, rgb.height * target), Image.Resampling.LANCZOS)
        return result

    def units(self, width: int, height: int) -> int:
        """Progress units of upscaling a width x height picture: its tiles (sd-x4: tiles x denoising steps)."""
        padded_width, padded_height = (-(-side // self.multiple) * self.multiple for side in (width, height))
        return len(plan(padded_width, padded_height, self.tile, self.spec.overlap)) * self._units_per_tile()

    def _units_per_tile(self) -> int:
        return 1

    def _begin(self, image: Image.Image, *, prompt: str, negative_prompt: str, seed: int) -> Any:
        """Per-call state shared by the tiles (the picture, noise drawn once)."""
        return image

    @abstractmethod
    def _upscale_tile(self, state: Any, tile: Tile, index: int, progress: _Progress) -> np.ndarray:
        """One tile upscaled: float RGB in [0, 1], (height x scale, width x scale, 3); advances `progress`."""


def _padded(image: Image.Image, multiple: int) -> Image.Image:
    """The picture grown to sides that are multiples of `multiple` by repeating its last row and column."""
    width, height = (-(-side // multiple) * multiple for side in image.size)
    if (width, height) == image.size:
        return image
    array = np.asarray(image)
    grown = np.pad(array, ((0, height - image.height), (0, width - image.width), (0, 0)), mode="edge")
    return Image.fromarray(grown, "RGB")


def image_tensor(image: Image.Image) -> torch.Tensor:
    """An RGB picture as spandrel takes it: (1, 3, H, W) float in [0, 1]."""
    array = np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0
    return torch.from_numpy(array).permute(2, 0, 1)[None]


def _unavailable(spec: UpscalerSpec, reason: str, fix: str) -> ModelUnavailable:
    return ModelUnavailable(f"Upscaler '{spec.name}' could not be loaded from '{spec.source}': {reason}. {fix}")


_SPANDREL_FIX = (
    "Point `source` at a super-resolution network's .pth or .safetensors file (Real-ESRGAN, 4x-UltraSharp, "
    "SwinIR, HAT, …), or write a small test one with `imagine-bot tiny-model FILE.safetensors --kind upscaler`."
)


def spandrel_model(spec: UpscalerSpec) -> Any:
    """The network of a spandrel upscaler on the CPU (an ImageModelDescriptor), with refusals users can act on."""
    import spandrel

    path = Path(spec.source).expanduser()
    if not path.is_file():
        raise _unavailable(spec, "no such file", _SPANDREL_FIX)
    try:
        model = spandrel.ModelLoader("cpu").load_from_file(path)
    except spandrel.UnsupportedModelError:
        raise _unavailable(spec, "spandrel does not recognise the network in it", _SPANDREL_FIX) from None
    except Exception as exc:  # a damaged or foreign file fails in the unpickler, safetensors or the architecture
        text = str(exc).strip().splitlines()
        reason = f"it could not be read ({text[0] if text else type(exc).__name__})"
        raise _unavailable(spec, reason, _SPANDREL_FIX) from exc
    if not isinstance(model, spandrel.ImageModelDescriptor):
        raise _unavailable(spec, f"it is a {model.purpose} network, not an upscaler", _SPANDREL_FIX)
    if (model.input_channels, model.output_channels) != (3, 3):
        raise _unavailable(
            spec, f"it works on {model.input_channels}-channel pictures; only RGB networks are served", _SPANDREL_FIX
        )
    return model


def _spandrel_dtype(model: Any, dtype: torch.dtype) -> torch.dtype:
    # Some architectures overflow in half precision: spandrel says which; fall back to what they take.
    if dtype == torch.float16 and not model.supports_half:
        return torch.bfloat16 if model.supports_bfloat16 else torch.float32
    if dtype == torch.bfloat16 and not model.supports_bfloat16:
        return torch.float16 if model.supports_half else torch.float32
    return dtype


class SpandrelUpscaler(Upscaler):
    """A super-resolution network whose architecture spandrel detects from its weights."""

    def __init__(self, spec: UpscalerSpec, device: torch.device, dtype: torch.dtype) -> None:
        import spandrel

        model = spandrel_model(spec)
        super().__init__(spec, device, _spandrel_dtype(model, dtype))
        self._model = model.to(device, self.dtype).eval()
        self.scale = model.scale
        self._whole = model.tiling is spandrel.ModelTiling.INTERNAL  # it tiles itself: give it the whole picture

    @property
    def tile(self) -> int:
        """Input pixels per tile side (no tiling for networks that tile internally)."""
        return 1 << 30 if self._whole else super().tile

    def _begin(self, image: Image.Image, *, prompt: str, negative_prompt: str, seed: int) -> torch.Tensor:
        return image_tensor(image)

    def _upscale_tile(self, state: torch.Tensor, tile: Tile, index: int, progress: _Progress) -> np.ndarray:
        piece = state[:, :, tile.top : tile.bottom, tile.left : tile.right].to(self.device, self.dtype)
        output = self._model(piece)  # clamped to [0, 1] by spandrel
        progress.advance()
        return output[0].float().permute(1, 2, 0).cpu().numpy()


def _load_sd_x4(spec: UpscalerSpec, dtype: torch.dtype) -> Any:
    from diffusers import StableDiffusionUpscalePipeline

    fix = (
        "Download it on a machine with internet access (`hf download stabilityai/stable-diffusion-x4-upscaler "
        '--local-dir DIR`) and set `source = "DIR"`, or write a small test one with '
        "`imagine-bot tiny-model DIR --kind sd-x4`."
    )
    local = is_local_path(spec.source)
    source = str(Path(spec.source).expanduser()) if local else spec.source
    if local and not (Path(source) / "model_index.json").is_file():
        raise _unavailable(spec, "it is not a diffusers directory (no model_index.json)", fix)
    try:
        return StableDiffusionUpscalePipeline.from_pretrained(source, dtype=dtype)
    except (OSError, ValueError) as exc:  # offline, a hub id that is not cached ends here
        text = str(exc).strip().splitlines()
        raise _unavailable(spec, f"it could not be loaded ({text[0] if text else type(exc).__name__})", fix) from exc


class DiffusionUpscaler(Upscaler):
    """diffusers' StableDiffusionUpscalePipeline (`stabilityai/stable-diffusion-x4-upscaler`), tile by tile."""

    def __init__(self, spec: UpscalerSpec, device: torch.device, dtype: torch.dtype) -> None:
        super().__init__(spec, device, dtype)
        pipe = _load_sd_x4(spec, dtype)
        pipe.set_progress_bar_config(disable=True)
        self._pipe = pipe.to(device)
        self.scale = pipe.vae_scale_factor  # latents are at the input's size; the VAE decodes them 4x larger
        # Latent-compatible tiles: the image processor rounds sides down to the VAE's factor, and the UNet
        # halves them at each down block.
        self.multiple = math.lcm(pipe.vae_scale_factor, 2 ** (len(pipe.unet.config.block_out_channels) - 1))

    def _units_per_tile(self) -> int:
        return self.spec.steps

    def _begin(self, image: Image.Image, *, prompt: str, negative_prompt: str, seed: int) -> dict[str, Any]:
        from diffusers.utils.torch_utils import randn_tensor

        pipe = self._pipe
        device, dtype = pipe._execution_device, pipe.text_encoder.dtype
        generator = torch.Generator("cpu").manual_seed(seed)
        # The pipeline's own draws for the whole picture, in its order: the input's noise, then the latents.
        randn_tensor((1, 3, image.height, image.width), generator=generator, device=device, dtype=dtype)
        shape = (1, pipe.vae.config.latent_channels, image.height, image.width)
        latents = randn_tensor(shape, generator=generator, device=device, dtype=dtype)
        return {"image": image, "latents": latents, "prompt": prompt, "negative": negative_prompt, "seed": seed}

    def _upscale_tile(self, state: dict[str, Any], tile: Tile, index: int, progress: _Progress) -> np.ndarray:
        def on_step(step: int, timestep: Any, latents: torch.Tensor) -> None:
            progress.advance()
            progress.check()  # the legacy callback has no interrupt flag: raising is the way out of its loop

        spec = self.spec
        output = self._pipe(
            prompt=state["prompt"],
            negative_prompt=state["negative"] or None,
            image=state["image"].crop(tile.box),
            num_inference_steps=spec.steps,
            guidance_scale=spec.guidance,
            noise_level=spec.noise_level,
            generator=torch.Generator("cpu").manual_seed(state["seed"] + index),
            latents=state["latents"][:, :, tile.top : tile.bottom, tile.left : tile.right],
            output_type="np",
            callback=on_step,
            callback_steps=1,
        )
        return output.images[0]


def load_upscaler(spec: UpscalerSpec, device: torch.device | str, dtype: torch.dtype) -> Upscaler:
    """The upscaler of a spec, on `device`; refuses a configured scale the network cannot reach."""
    device = torch.device(device)
    loaded: Upscaler = (SpandrelUpscaler if spec.kind == "spandrel" else DiffusionUpscaler)(spec, device, dtype)
    if spec.scale is not None and spec.scale > loaded.scale:
        raise _unavailable(
            spec,
            f"it enlarges {loaded.scale}x but is configured with scale = {spec.scale}",
            f"Set scale to at most {loaded.scale} under [[upscalers]], or leave it out.",
        )
    return loaded


def network_scale(spec: UpscalerSpec) -> int:
    """The network's own factor without a GPU (spandrel: reads the file on the CPU), for costing before loading."""
    if spec.kind == "spandrel":
        return int(spandrel_model(spec).scale)
    vae_config = Path(spec.source).expanduser() / "vae" / "config.json"
    if is_local_path(spec.source) and vae_config.is_file():
        return 2 ** (len(json.loads(vae_config.read_text())["block_out_channels"]) - 1)
    return SD_X4_SCALE


def upscale_cost(spec: UpscalerSpec, width: int, height: int, scale: int) -> int:
    """GPU work of upscaling a width x height picture, in the queue's unit (see the module docstring).

    `scale` is the network's factor: a smaller one asked for is the network's full result resized down.
    """
    output_pixels = sum(t.width * t.height for t in plan(width, height, spec.tile_size, spec.overlap)) * scale**2
    per_pixel = SD_X4_COST * spec.steps if spec.kind == "sd-x4" else SPANDREL_COST
    return math.ceil(output_pixels * per_pixel)
