"""Local commands that use the engine without Discord: `generate` and `history`."""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

from bot.config import Config
from generation.errors import ModelUnavailable, UserFacingError
from generation.specs import SINGLE_FILE_SUFFIXES, ModelSpec


def model_for_cli(config: Config, name: str | None) -> ModelSpec:
    """A configured model by name, or an ad-hoc one for a local directory or .safetensors file."""
    name = name or config.generation.default_model
    if name in config.model_map:
        return config.model_map[name]
    path = Path(name).expanduser()
    if path.is_dir() or (path.is_file() and path.suffix in SINGLE_FILE_SUFFIXES):
        return ModelSpec(name=path.name, source=str(path.resolve()), kind=_detect_kind(path))
    raise ModelUnavailable(
        f"Model '{name}' is neither a configured model ({', '.join(config.model_map)}) nor a local "
        "diffusers directory. Pass --model DIR with a directory written by `save_pretrained` "
        "(or `imagine-bot tiny-model DIR`), or add it under [[models]] in the config."
    )


def _detect_kind(path: Path) -> str:
    index = path / "model_index.json"
    if index.is_file() and "XL" in json.loads(index.read_text()).get("_class_name", ""):
        return "sdxl"
    return "sd"


def write_atomic(path: Path, data: bytes) -> None:
    """Write a file under a temporary name and rename it, so no reader sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _free_path(directory: Path, stem: str) -> Path:
    candidate, n = directory / f"{stem}.png", 1
    while candidate.exists():
        n += 1
        candidate = directory / f"{stem}-{n}.png"
    return candidate


def generate(args: argparse.Namespace, config: Config) -> int:
    """Generate images for one prompt and print the paths written."""
    from tqdm import tqdm

    from generation.engine import Engine
    from generation.options import UserOptions, make_request

    try:
        spec = model_for_cli(config, args.model)
        options = UserOptions(
            prompt=args.prompt,
            negative=args.negative,
            size=args.size,
            steps=args.steps,
            guidance=args.guidance,
            seed=args.seed,
            count=args.count,
            strength=args.strength,
            sampler=args.sampler,
            image=args.image.read_bytes() if args.image else None,
            mask=args.mask.read_bytes() if args.mask else None,
        )
        request = make_request(spec, options)
        engine = Engine({spec.name: spec}, device=config.generation.device, dtype=config.generation.dtype,
                        preview_every=0)  # fmt: skip
        engine.load(spec.name)
        with tqdm(total=request.steps, desc="generating", unit="step", file=sys.stderr) as bar:

            def on_progress(progress) -> None:
                bar.total = progress.total
                bar.n = progress.step
                bar.refresh()

            (images,) = engine.generate([request], on_progress=on_progress)
    except OSError as exc:
        print(f"imagine-bot: cannot read {exc.filename}: {exc.strerror}", file=sys.stderr)
        return 2
    except UserFacingError as exc:
        print(f"imagine-bot: {exc.user_message}", file=sys.stderr)
        return 1
    for image in images:
        path = _free_path(args.out, f"{request.seed}-{image.index}")
        write_atomic(path, image.png())
        print(path)
    return 0


def history(args: argparse.Namespace, config: Config) -> int:
    """List recent jobs from the store."""
    print("imagine-bot: history needs the job store, which is not built yet.", file=sys.stderr)
    return 3
