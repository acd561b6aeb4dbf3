"""`imagine-bot upscale`: a picture enlarged on this machine by the upscaler the bot would use.

Subtle (the default): the upscaler alone. `--creative`: then a low-strength img2img pass of a model at the new
size (what the Upscale buttons did before there were upscalers), through the same engine as `generate`.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bot.config import Config
from bot.local import free_path
from generation.atomic import write_atomic
from generation.errors import InvalidRequest, ModelUnavailable, UserFacingError
from generation.images import decode_image, to_rgb
from generation.metadata import own_prompt, png_bytes, read_parameters, upscale_parameters
from generation.request import MAX_SEED, MAX_SIDE
from generation.specs import SPANDREL_SUFFIXES, ModelSpec, UpscalerSpec

if TYPE_CHECKING:
    from PIL import Image


def add_upscale_parser(commands: Any) -> None:
    """The `upscale` subcommand's arguments."""
    up = commands.add_parser("upscale", help="enlarge a picture with an upscaler (and optionally repaint details)")
    up.add_argument("image", type=Path, help="the picture: PNG, JPEG, WebP, GIF or AVIF")
    up.add_argument(
        "--upscaler",
        help="a configured upscaler's name, a network file (.pth/.safetensors: Real-ESRGAN, SwinIR, HAT, …), "
        "or an SD x4 upscaler directory (default: [generation] default_upscaler)",
    )
    up.add_argument("--scale", type=int, help="enlarge this many times, at most the upscaler's (default: its own)")
    up.add_argument(
        "--creative", action="store_true", help="then a low-strength img2img pass at the new size adds detail"
    )
    up.add_argument("--model", help="the creative pass's model: a configured name or a local diffusers directory")
    up.add_argument(
        "--prompt",
        help="what the picture shows, for the creative pass and the SD x4 upscaler "
        "(default: the prompt in the picture's own PNG parameters, if any)",
    )
    up.add_argument("--seed", type=int, default=0, help="noise seed of the SD x4 upscaler and the creative pass")
    up.add_argument("--steps", type=int, help="the SD x4 upscaler's denoising steps (default: its own, e.g. 75)")
    up.add_argument("--out", type=Path, default=Path("out"))
    up.add_argument("--config", type=Path)


def _refuse(message: str, code: int = 2) -> int:
    print(f"imagine-bot: {message}", file=sys.stderr)
    return code


def upscaler_for_cli(config: Config, name: str | None) -> UpscalerSpec:
    """A configured upscaler by name (the default when None), or an ad-hoc one for a network file or directory."""
    if name is None:
        if config.default_upscaler is None:
            raise ModelUnavailable(
                "No upscaler is configured: pass --upscaler FILE (a super-resolution network's .pth or "
                ".safetensors, such as Real-ESRGAN's) or add [[upscalers]] to the config."
            )
        return config.default_upscaler
    if name in config.upscaler_map:
        return config.upscaler_map[name]
    path = Path(name).expanduser()
    if path.is_file() and path.suffix.lower() in SPANDREL_SUFFIXES:
        return UpscalerSpec(name=path.stem, source=str(path.resolve()))
    if path.is_dir() and (path / "model_index.json").is_file():
        return UpscalerSpec(name=path.name, source=str(path.resolve()), kind="sd-x4")
    configured = ", ".join(config.upscaler_map) or "none configured"
    raise ModelUnavailable(
        f"Upscaler '{name}' is neither a configured upscaler ({configured}) nor a network file "
        f"({', '.join(SPANDREL_SUFFIXES)}) nor an SD x4 upscaler directory (with model_index.json)."
    )


def upscale(args: argparse.Namespace, config: Config, quiet_libraries: Callable[[], None]) -> int:
    """Refuse what is cheap to refuse, then upscale, check the size, and write one PNG; print its path."""
    try:
        data = args.image.read_bytes()
        picture = to_rgb(decode_image(data, "image"))  # before torch loads: a wrong file is refused at once
        spec = upscaler_for_cli(config, args.upscaler)
        if args.scale is not None and args.scale < 1:
            raise InvalidRequest(f"--scale must be at least 1, not {args.scale}.")
        if not 0 <= args.seed <= MAX_SEED:
            raise InvalidRequest(f"--seed must be between 0 and {MAX_SEED}, not {args.seed}.")
        if args.steps is not None:
            if spec.kind != "sd-x4":
                raise InvalidRequest(f"--steps is for the SD x4 upscaler; '{spec.name}' is a network that takes none.")
            if not 1 <= args.steps <= 1000:
                raise InvalidRequest(f"--steps must be from 1 to 1000, not {args.steps}.")
            spec = replace(spec, steps=args.steps)
        parameters = read_parameters(data) if data.startswith(b"\x89PNG") else None
        prompt, negative = (args.prompt, "") if args.prompt is not None else own_prompt(parameters)
        quiet_libraries()
        model = _creative_model(config, args.model) if args.creative else None
    except OSError as exc:
        return _refuse(f"cannot read {exc.filename}: {exc.strerror}")
    except ModelUnavailable as exc:
        return _refuse(exc.user_message, 1)
    except UserFacingError as exc:
        return _refuse(exc.user_message)
    try:
        return _upscale(args, config, picture, spec, model, parameters, prompt, negative)
    except ModelUnavailable as exc:
        return _refuse(exc.user_message, 1)
    except InvalidRequest as exc:  # a scale the network cannot reach, a result over the limit
        return _refuse(exc.user_message)
    except UserFacingError as exc:
        return _refuse(exc.user_message, 1)


def _creative_model(config: Config, name: str | None) -> ModelSpec:
    from bot.local import model_for_cli
    from generation.catalog import Catalog

    return model_for_cli(Catalog(config.models, config.generation.default_model), name)


def _upscale(
    args: argparse.Namespace,
    config: Config,
    picture: Image.Image,
    spec: UpscalerSpec,
    model: ModelSpec | None,
    parameters: str | None,
    prompt: str,
    negative: str,
) -> int:
    from tqdm import tqdm

    from generation.device import resolve_device, resolve_dtype
    from generation.upscalers import load_upscaler
    from jobs.limits import check_upscale

    device = resolve_device(config.generation.device)
    upscaler = load_upscaler(spec, device, resolve_dtype(config.generation.dtype, device))
    scale = upscaler.output_scale(args.scale)
    check_upscale(picture.width, picture.height, scale, config.limits)  # before the GPU work
    width, height = upscaler.output_size(picture.width, picture.height, scale)
    if model is not None and max(width, height) > MAX_SIDE:
        raise InvalidRequest(
            f"The creative pass paints up to {MAX_SIDE} pixels a side, and {width}x{height} is larger: "
            "pick a smaller --scale or leave out --creative."
        )
    with tqdm(desc=f"upscaling with {spec.name}", unit="tile" if spec.kind == "spandrel" else "step") as bar:

        def show(done: int, total: int) -> None:
            bar.total, bar.n = total, done
            bar.refresh()

        result = upscaler.upscale(picture, show, scale=scale, prompt=prompt, negative_prompt=negative, seed=args.seed)
    text = upscale_parameters(parameters, spec.name, scale, result.size)
    if model is not None:
        del upscaler  # its memory goes back before the model loads
        result, text = _creative(config, model, result, prompt, negative, args.seed, spec.name, scale)
    path = free_path(args.out, f"{args.image.stem}-x{scale}")
    write_atomic(path, png_bytes(result, text))
    print(path)
    return 0


def _creative(
    config: Config,
    model: ModelSpec,
    image: Image.Image,
    prompt: str,
    negative: str,
    seed: int,
    upscaler: str,
    scale: int,
) -> tuple[Image.Image, str]:
    """The img2img pass at the upscaled size (rounded to the model's size rule, then resized back exactly)."""
    from PIL import Image
    from tqdm import tqdm

    from generation.catalog import family_for
    from generation.engine import Engine
    from generation.images import size_for_image
    from generation.options import UserOptions, make_request
    from generation.upscalers import CREATIVE_STRENGTH

    multiple = family_for(model.kind).size_multiple
    width, height = size_for_image(image.width, image.height, image.width * image.height, multiple)
    options = UserOptions(
        prompt=prompt,
        negative=negative,
        size=f"{width}x{height}",
        seed=seed,
        strength=CREATIVE_STRENGTH,
        image=png_bytes(image),
    )
    request = make_request(model, options, loras=config.lora_map)
    engine = Engine(
        {model.name: model},
        device=config.generation.device,
        dtype=config.generation.dtype,
        preview_every=0,
        loras=config.lora_map,
    )
    engine.load(model.name)  # before the progress bar, so loading does not look like a stalled step
    with tqdm(desc=f"repainting with {model.name}", unit="step") as bar:

        def show(progress: Any) -> None:
            bar.total, bar.n = progress.total, progress.step
            bar.refresh()

        (made,) = engine.generate([request], show)[0]
    result = made.image
    if result.size != image.size:
        result = result.resize(image.size, Image.Resampling.LANCZOS)
    return result, upscale_parameters(made.parameters, upscaler, scale, result.size, creative=True)
