"""LoRA trainings as work of the fair queue: one chunk of steps at a time, with /imagine batches between.

A training is queued as one chunk (a QueuedJob whose id is minus the training's id), costed like the GPU
work it is; after each chunk its checkpoint is written, the chunk is queued again at the back of its
member's flow, and fair queuing serves everyone else's jobs in between. So nobody waits behind a whole
training: at most behind the chunk running and the batch after it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from generation.catalog import Catalog, trained_name
from generation.errors import OutOfMemory
from generation.metadata import png_bytes
from generation.request import GenerationRequest
from generation.specs import LoraSpec
from generation.training_inputs import TrainingSettings, generate_class_images
from jobs.fair_queue import QueuedJob
from storage.records import LoraRecord, TrainingRecord
from storage.store import Store

if TYPE_CHECKING:
    from PIL import Image

    from generation.engine import Engine
    from generation.training import ChunkResult, LoraTrainer, StepCallback

DEFAULT_CHUNK = 25  # training steps between checkpoints (and between other members' batches)
SAMPLE_COUNT = 2
# One training step (forward and backward of one sample) costs about as much as 1.5 sampling steps with
# classifier-free guidance (two forwards): the queue's unit is sampling pixel-steps.
TRAIN_STEP_COST = 1.5

PhotoLoader = Callable[[], tuple[list["Image.Image"], list["Image.Image"]]]


def chunk_cost(training: TrainingRecord, steps: int) -> float:
    """GPU work of `steps` training steps, in the fair queue's unit (pixel-steps of sampling)."""
    side = int(training.settings["resolution"])
    batch = int(training.settings.get("batch_size", 1)) * (2 if training.class_photos else 1)
    return side * side * max(1, steps) * batch * TRAIN_STEP_COST


def training_job(training: TrainingRecord, chunk: int) -> QueuedJob:
    """The scheduler's view of a training's next chunk."""
    steps = min(chunk, training.total_steps - training.steps_done)
    return QueuedJob(
        job_id=-training.id,
        user_id=training.user_id,
        guild_id=training.guild_id,
        cost=chunk_cost(training, steps),
        batch_key=("training", training.id),  # never shares a call
        weight=float((training.origin or {}).get("weight", 1.0)),
        model=training.base_model,
    )


def trained_spec(record: LoraRecord, path: Path) -> LoraSpec:
    """A trained LoRA as requests use it: under its unique name, from its file in the store."""
    return LoraSpec(
        name=trained_name(record.name, record.id),
        source=str(path),
        kind=record.kind,  # type: ignore[arg-type]  # trainings are of sd or sdxl models
        triggers=(record.trigger_token,),
        description=f"trained on {record.base_model}",
    )


async def register_trained(catalog: Catalog, store: Store) -> int:
    """Make every live trained LoRA usable in requests (at start-up); returns how many."""
    records = await store.live_loras()
    for record in records:
        catalog.add_trained(trained_spec(record, store.lora_path(record)))
    return len(records)


class TrainingRunner:
    """Runs chunks of trainings on the GPU thread, keeping the trainer of the last one between chunks."""

    def __init__(self, engine: Engine, store: Store, *, samples: int = SAMPLE_COUNT) -> None:
        self.engine = engine
        self.store = store
        self.samples = samples
        self._trainer: tuple[int, str, LoraTrainer] | None = None  # training id, model, trainer

    def forget(self, unless_model: str | None = None) -> None:
        """Drop the kept trainer (it holds the model's weights), unless it trains `unless_model`."""
        if self._trainer is not None and self._trainer[1] != unless_model:
            self._trainer = None

    def run_chunk(
        self,
        training: TrainingRecord,
        steps: int,
        load_photos: PhotoLoader,
        on_step: StepCallback,
        should_cancel: Callable[[], bool],
    ) -> ChunkResult:
        """Up to `steps` steps, then a checkpoint (and the LoRA file once every step has run). GPU thread."""
        try:
            trainer = self._trainer_for(training, load_photos)
            result = trainer.run_chunk(steps, on_step, should_cancel)
            trainer.checkpoint(self.store.checkpoint_file(training.id))
            if result.done:
                trainer.save_lora(self.store.lora_file(training.id))
        except torch.OutOfMemoryError as exc:
            self._trainer = None
            side = training.settings["resolution"]
            raise OutOfMemory(
                f"The GPU ran out of memory training at {side}x{side}; the bot's operator can train on a smaller "
                "model or size. Nothing was kept."
            ) from exc
        except BaseException:
            self._trainer = None  # rebuilt from the last checkpoint next time
            raise
        if result.done or result.cancelled:
            self._trainer = None
        return result

    def _trainer_for(self, training: TrainingRecord, load_photos: PhotoLoader) -> LoraTrainer:
        from generation.training import LoraTrainer  # peft only when a training runs

        pipe = self.engine.training_pipeline(training.base_model)
        kept = self._trainer
        if kept is not None and kept[0] == training.id and kept[2].pipe is pipe:
            return kept[2]
        self._trainer = None
        photos, class_photos = load_photos()
        trainer = LoraTrainer(pipe, photos, TrainingSettings(**training.settings), class_photos)
        checkpoint = self.store.checkpoint_file(training.id)
        # The file, not the row: a crash between writing a checkpoint and recording it must not cost the chunk.
        if checkpoint.is_file():
            trainer.resume(checkpoint)
        self._trainer = (training.id, training.base_model, trainer)
        return trainer

    def make_class_images(self, training: TrainingRecord, count: int) -> list[Image.Image]:
        """Class images for prior preservation, made by the model being trained. GPU thread."""
        settings = TrainingSettings(**training.settings)
        pipe = self.engine.training_pipeline(training.base_model)
        return generate_class_images(pipe, settings.class_prompt, count, settings.resolution, seed=settings.seed + 1)

    def make_samples(self, training: TrainingRecord, lora: LoraRecord) -> list[bytes]:
        """Sample pictures of the trigger word with the finished LoRA, as PNGs; flagged ones left out. GPU thread."""
        name = trained_name(lora.name, lora.id)
        spec = self.engine.spec(training.base_model)
        side = int(training.settings["resolution"])
        request = GenerationRequest(
            prompt=f"a photo of {training.trigger_token} {training.class_word} <lora:{name}:1>",
            model=spec.name,
            width=side,
            height=side,
            steps=spec.steps,
            guidance=spec.guidance,
            seed=int(training.settings.get("seed", 0)),
            count=self.samples,
            loras=((name, 1.0),),
        )
        images = self.engine.generate([request])[0]
        return [png_bytes(image.image, image.parameters) for image in images if not image.nsfw]


def photo_loader(store: Store, training: TrainingRecord, loop: asyncio.AbstractEventLoop) -> PhotoLoader:
    """A loader the GPU thread calls to read a training's photos through the store on the event loop."""

    def load() -> tuple[list[Image.Image], list[Image.Image]]:
        return asyncio.run_coroutine_threadsafe(store.load_training_photos(training), loop).result()

    return load
