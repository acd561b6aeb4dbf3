"""`imagine-bot train`: a Dreambooth LoRA trained locally through the same trainer and store the bot uses.

Each chunk of steps is followed by a checkpoint and a progress row, so running the same command again after
the process was killed resumes from the last chunk instead of starting over.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bot.config import Config
from bot.local import LOCAL_USER, model_for_cli
from generation.errors import InvalidRequest, ModelUnavailable, UserFacingError
from generation.specs import ModelSpec
from generation.training_inputs import (
    TRAINABLE_KINDS,
    TrainingSettings,
    check_lora_name,
    decode_photos,
    fit_photo,
    photo_digest,
)

if TYPE_CHECKING:
    from PIL import Image

    from storage.records import TrainingRecord
    from storage.store import Store

log = logging.getLogger(__name__)

DEFAULT_CHUNK = 25


def add_train_parser(commands: Any) -> None:
    """The `train` subcommand's arguments."""
    train = commands.add_parser("train", help="train a Dreambooth LoRA on 3-20 photos of one subject")
    train.add_argument("photos", nargs="+", type=Path, metavar="PHOTO")
    train.add_argument("--model", help="a configured model name, or a local diffusers directory")
    train.add_argument("--name", required=True, help="the LoRA's name, as users will pick it")
    train.add_argument("--token", required=True, help="the rare word that will stand for the subject, e.g. sks")
    train.add_argument("--class-word", default="person", help="what the subject is: person, dog, mug, …")
    train.add_argument("--steps", type=int, default=500)
    train.add_argument("--rank", type=int, default=4)
    train.add_argument("--learning-rate", type=float, default=1e-4)
    train.add_argument("--resolution", type=int, help="training size in pixels (default: the model's)")
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--class-images", type=int, default=0, help="prior preservation: class images to make")
    train.add_argument("--chunk", type=int, default=DEFAULT_CHUNK, help="steps between checkpoints")
    train.add_argument("--config", type=Path)


def _refuse(message: str) -> int:
    print(f"imagine-bot: {message}", file=sys.stderr)
    return 2


def train(args: argparse.Namespace, config: Config, quiet_libraries: Callable[[], None]) -> int:
    """Check everything cheap first (photos, name, settings), then train, checkpointing every chunk."""
    try:
        # Photos and name before anything imports torch, so refusals come back at once.
        decoded = decode_photos([path.read_bytes() for path in args.photos], [path.name for path in args.photos])
        name = check_lora_name(args.name)
        if args.chunk < 1:
            raise InvalidRequest(f"--chunk must be at least 1, not {args.chunk}.")
        if not 0 <= args.class_images <= 200:
            raise InvalidRequest(f"--class-images must be between 0 and 200, not {args.class_images}.")
        quiet_libraries()
        from generation.catalog import Catalog

        spec = model_for_cli(Catalog(config.models, config.generation.default_model), args.model)
        if spec.kind not in TRAINABLE_KINDS:
            raise InvalidRequest(
                f"LoRA training works on {' and '.join(TRAINABLE_KINDS)} models; '{spec.name}' is {spec.kind}."
            )
        settings = TrainingSettings(
            token=args.token,
            class_word=args.class_word,
            steps=args.steps,
            rank=args.rank,
            learning_rate=args.learning_rate,
            resolution=args.resolution or min(spec.width, spec.height),
            seed=args.seed,
        )
    except OSError as exc:
        return _refuse(f"cannot read {exc.filename}: {exc.strerror}")
    except ModelUnavailable as exc:
        print(f"imagine-bot: {exc.user_message}", file=sys.stderr)
        return 1
    except UserFacingError as exc:
        return _refuse(exc.user_message)
    photos = [fit_photo(photo, settings.resolution) for photo in decoded]
    return asyncio.run(_train(args, config, spec, name, settings, photos))


async def _train(
    args: argparse.Namespace,
    config: Config,
    spec: ModelSpec,
    name: str,
    settings: TrainingSettings,
    photos: list[Image.Image],
) -> int:
    from storage.records import LoraNameTaken
    from storage.store import Store

    async with await Store.open(config.storage.path, config.storage.images_dir) as store:
        if await store.lora_by_name(LOCAL_USER, name) is not None:
            return _refuse(f"a LoRA named '{name}' already exists: pick another --name.")
        training = await _unfinished(store, name, spec, settings, photos, config.generation.max_attempts)
        if isinstance(training, str):
            return _refuse(training)
        # One thread owns the pipeline, as in the bot: the event loop never waits on the GPU.
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="gpu") as gpu:
            loop = asyncio.get_running_loop()
            try:
                pipe = await loop.run_in_executor(gpu, _load_pipeline, spec, config)
            except UserFacingError as exc:  # e.g. a directory that is not a diffusers model after all
                print(f"imagine-bot: {exc.user_message}", file=sys.stderr)
                return 1
            if training is None:
                class_photos = await loop.run_in_executor(gpu, _class_images, pipe, settings, args.class_images)
                try:
                    training = await store.create_training(
                        user_id=LOCAL_USER,
                        guild_id=None,
                        name=name,
                        trigger_token=settings.token,
                        class_word=settings.class_word,
                        base_model=spec.name,
                        kind=spec.kind,
                        settings=asdict(settings),
                        total_steps=settings.steps,
                        photos=photos,
                        class_photos=class_photos,
                    )
                except LoraNameTaken as exc:
                    return _refuse(str(exc))
            try:
                return await _run(store, training, pipe, settings, args.chunk, gpu)
            except Exception as exc:
                # A kill or Ctrl-C (not an Exception) leaves it running, to resume; an error ends it.
                log.exception("training #%d failed", training.id)
                message = f"Training failed ({type(exc).__name__}: {exc})."
                await store.fail_training(training.id, message)
                print(f"imagine-bot: {message}", file=sys.stderr)
                return 1


async def _unfinished(
    store: Store,
    name: str,
    spec: ModelSpec,
    settings: TrainingSettings,
    photos: list[Image.Image],
    max_attempts: int,
) -> TrainingRecord | str | None:
    """The interrupted training to resume, None to start a new one, or why neither is possible."""
    found = await store.unfinished_training(LOCAL_USER, name)
    if found is None:
        return None
    # Nothing else runs the command line's trainings, so one left running was killed mid-way.
    _, given_up = await store.requeue_interrupted_trainings(max_attempts, training_id=found.id)
    if given_up:
        print(f"imagine-bot: training #{found.id} was interrupted too often; starting again.", file=sys.stderr)
        return None
    stored, _ = await store.load_training_photos(found)
    if (
        found.base_model != spec.name
        or found.settings != asdict(settings)
        or photo_digest(stored) != photo_digest(photos)
    ):
        return (
            f"an unfinished training named '{name}' (#{found.id}) has other photos, model or settings: "
            "rerun it exactly, or pick another --name."
        )
    return await store.get_training(found.id)


def _load_pipeline(spec: ModelSpec, config: Config) -> Any:
    from generation.device import resolve_device, resolve_dtype
    from generation.families.stable_diffusion import load_pipeline

    device = resolve_device(config.generation.device)
    return load_pipeline(spec, device, resolve_dtype(config.generation.dtype, device))


def _class_images(pipe: Any, settings: TrainingSettings, count: int) -> list[Image.Image]:
    from generation.training_inputs import generate_class_images

    return generate_class_images(pipe, settings.class_prompt, count, settings.resolution, seed=settings.seed + 1)


async def _run(
    store: Store, training: TrainingRecord, pipe: Any, settings: TrainingSettings, chunk: int, gpu: ThreadPoolExecutor
) -> int:
    from tqdm import tqdm

    from generation.training import LoraTrainer

    loop = asyncio.get_running_loop()
    photos, class_photos = await store.load_training_photos(training)
    # Trained from the stored photos, so a resumed run sees exactly the pixels the first one did.
    trainer = await loop.run_in_executor(gpu, LoraTrainer, pipe, photos, settings, class_photos)
    checkpoint = store.checkpoint_file(training.id)
    # The file, not the progress row: a kill between writing the checkpoint and recording it must not cost
    # the chunk (the checkpoint's fingerprint refuses one from another training).
    if checkpoint.is_file():
        step = await loop.run_in_executor(gpu, trainer.resume, checkpoint)
        print(f"imagine-bot: resuming training #{training.id} from step {step}", file=sys.stderr)
    if not await store.start_training(training.id):
        return _refuse(f"training #{training.id} is not waiting to run (another process may be running it).")
    with tqdm(
        total=trainer.total, initial=trainer.step, desc=f"training {training.name}", unit="step", file=sys.stderr
    ) as bar:

        def show(step: int, loss: float) -> None:
            bar.n = step
            bar.set_postfix(loss=f"{loss:.4f}")  # refreshes the bar too

        def on_step(step: int, total: int, loss: float) -> None:
            loop.call_soon_threadsafe(show, step, loss)  # from the GPU thread to the loop

        while trainer.step < trainer.total:
            result = await loop.run_in_executor(gpu, partial(trainer.run_chunk, chunk, on_step))
            await loop.run_in_executor(gpu, trainer.checkpoint, checkpoint)
            await store.record_training_progress(
                training.id, steps_done=result.step, last_loss=result.loss, checkpoint_written=True
            )
    await loop.run_in_executor(gpu, trainer.save_lora, store.lora_file(training.id))
    lora = await store.finish_training(training.id)
    print(store.lora_path(lora).resolve())
    return 0
