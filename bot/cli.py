"""The `imagine-bot` command line: the composition root for the bot and the local tools."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import warnings
from pathlib import Path

from bot.config import Config, ConfigError, load_config
from generation.specs import LORA_KINDS, MODEL_KINDS

# `tiny-model FILE --kind lora-sd` writes a tiny LoRA for the tiny model of that kind (not a model kind).
TINY_LORA_KINDS = tuple(f"lora-{kind}" for kind in LORA_KINDS)
TINY_CAPTIONER_KIND = "captioner"  # `tiny-model DIR --kind captioner`: a tiny BLIP for /describe
# `tiny-model FILE --kind upscaler`: a tiny Real-ESRGAN Compact network; `--kind sd-x4`: an SD x4 upscaler.
TINY_UPSCALER_KINDS = ("upscaler", "sd-x4")
TINY_TRANSLATION_KIND = "translation"  # `tiny-model DIR --kind translation`: a tiny MarianMT for [translation]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="imagine-bot", description="Serve open image models to Discord.")
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser("run", help="run the Discord bot")
    run.add_argument("--config", type=Path, help="TOML config (see config.example.toml)")

    gen = commands.add_parser("generate", help="generate images locally through the same engine")
    gen.add_argument("prompt")
    gen.add_argument("--model", help="a configured model name, or a local diffusers directory")
    gen.add_argument("--negative", default="", help="negative prompt")
    gen.add_argument("--image", type=Path, help="start from this picture (img2img)")
    gen.add_argument("--mask", type=Path, help="repaint where this mask is white (inpainting)")
    gen.add_argument("--strength", type=float, help="how much to change the start picture, 0-1")
    gen.add_argument("--seed", type=int)
    gen.add_argument("--steps", type=int)
    gen.add_argument("--guidance", type=float)
    gen.add_argument("--size", help="WxH such as 512x768, or an aspect ratio such as 3:2")
    gen.add_argument("--count", type=int, default=1)
    gen.add_argument("--sampler", help="A1111 sampler name, e.g. 'Euler a', 'DPM++ 2M Karras'")
    gen.add_argument(
        "--lora",
        action="append",
        default=[],
        metavar="NAME[:WEIGHT]",
        help="a configured LoRA or a LoRA file/directory, weight optional; repeatable (or <lora:NAME:W> in the prompt)",
    )
    gen.add_argument("--out", type=Path, default=Path("out"))
    gen.add_argument("--config", type=Path)

    tiny = commands.add_parser("tiny-model", help="write a tiny random-weight pipeline (or LoRA) for tests")
    tiny.add_argument("dir", type=Path, help="a directory; for a LoRA, a directory or a .safetensors file")
    tiny.add_argument(
        "--kind",
        choices=(*MODEL_KINDS, *TINY_LORA_KINDS, TINY_CAPTIONER_KIND, *TINY_UPSCALER_KINDS, TINY_TRANSLATION_KIND),
        default="sd",
    )

    history = commands.add_parser("history", help="list recent jobs from the store")
    history.add_argument("--user", type=int)
    history.add_argument("--search")
    history.add_argument("--limit", type=int, default=20)
    history.add_argument("--config", type=Path)

    from bot.local_train import add_train_parser  # the train command's many options live beside it

    add_train_parser(commands)
    from bot.local_upscale import add_upscale_parser

    add_upscale_parser(commands)
    return parser


def _quiet_libraries() -> None:
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    diffusers_logging.disable_progress_bar()
    diffusers_logging.set_verbosity_error()
    transformers_logging.disable_progress_bar()
    transformers_logging.set_verbosity_error()


def _tiny_model(args: argparse.Namespace) -> int:
    _quiet_libraries()
    if args.kind in TINY_LORA_KINDS:
        from generation.tiny.lora import write_tiny_lora

        print(write_tiny_lora(args.dir, args.kind.removeprefix("lora-")))
        return 0
    if args.kind in TINY_UPSCALER_KINDS:
        from generation.tiny.upscaler import write_tiny_upscaler

        print(write_tiny_upscaler(args.dir, args.kind))
        return 0
    if args.kind == TINY_CAPTIONER_KIND:
        from generation.tiny.captioner import write_tiny_captioner

        print(write_tiny_captioner(args.dir))
        return 0
    from generation.tiny import write_tiny_model

    print(write_tiny_model(args.dir, args.kind))
    return 0


def _database_in_use(config: Config) -> bool:
    """Say so when another process has the database: at once, not after the slow imports (bot_parts locks it)."""
    from storage.lock import DatabaseInUse, check_free

    try:
        check_free(config.storage.path)
    except DatabaseInUse as exc:
        print(f"imagine-bot: {exc.message('[storage] path')}", file=sys.stderr)
        return True
    except OSError:
        pass  # e.g. no permission: bot_parts says what is wrong
    return False


def _run(config: Config) -> int:
    token = os.environ.get(config.discord.token_env, "").strip()
    if not token:
        print(
            f"No Discord bot token: set the environment variable {config.discord.token_env} "
            "(Discord developer portal → your application → Bot → Reset Token), then run again.",
            file=sys.stderr,
        )
        return 2
    import asyncio

    import discord

    from bot.runner import StartupError, run_bot

    logging.getLogger().setLevel(logging.INFO)
    try:
        asyncio.run(run_bot(config, token))
    except StartupError as exc:
        print(f"imagine-bot: {exc}", file=sys.stderr)
        return 1
    except discord.LoginFailure:
        print(f"Discord refused the token in {config.discord.token_env}: check it and try again.", file=sys.stderr)
        return 2
    except discord.PrivilegedIntentsRequired:
        print(
            "Discord refused the Message Content intent. Enable it in the developer portal: your application → "
            "Bot → Privileged Gateway Intents → Message Content Intent.",
            file=sys.stderr,
        )
        return 2
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `imagine-bot` console script."""
    args = _parser().parse_args(argv)
    # transformers warns about optional image backends on import; users cannot act on it.
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    # Nor on this: importing diffusers loads Kolors' text encoder, whose torch.jit.script torch 2.14 deprecates.
    warnings.filterwarnings("ignore", message=r"`torch\.jit\.script` is deprecated", category=FutureWarning)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.command == "tiny-model":
        return _tiny_model(args)
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(f"imagine-bot: {exc}", file=sys.stderr)
        return 2
    if args.command == "run":
        if _database_in_use(config):
            return 1
        _quiet_libraries()
        return _run(config)
    if args.command == "generate":
        from bot.local import generate

        _quiet_libraries()
        return generate(args, config)
    if args.command == "history":
        from bot.local import history

        return history(args, config)
    if args.command == "train":
        from bot.local_train import train

        return train(args, config, _quiet_libraries)  # quietened after the cheap checks
    if args.command == "upscale":
        from bot.local_upscale import upscale

        return upscale(args, config, _quiet_libraries)  # quietened after the cheap checks
    return 2


if __name__ == "__main__":
    sys.exit(main())
