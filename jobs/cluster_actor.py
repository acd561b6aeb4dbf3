"""The GPU side of a Ray worker: an Engine and its resident model inside a threaded Ray actor.

Nothing here imports Ray: jobs.cluster wraps `GpuActor` with `ray.remote` when `[cluster] backend = "ray"`. The
actor never opens the database; it gets requests, runs them on its own one GPU thread, and hands back PNG bytes
(encoded with the same function the local path uses, so the stored files are the same bytes) and their metadata.
Progress waits in an actor-side list that the bot long-polls (Ray Client has no streaming generators), and a
cancel arrives on another of the actor's threads while the batch runs (the engine stops at its next step).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from generation.request import GenerationRequest
from generation.results import GeneratedImage, StepProgress
from generation.specs import LoraSpec, ModelSpec

if TYPE_CHECKING:
    from generation.engine import Engine
    from generation.translation import Translation, Translator


@dataclass(frozen=True)
class ActorSettings:
    """What an actor builds its Engine from; picklable, so Ray can start (and restart) it anywhere."""

    models: Mapping[str, ModelSpec]
    device: str = "auto"
    dtype: str = "auto"
    preview_every: int = 5
    loras: Mapping[str, LoraSpec] = field(default_factory=dict)  # the configured ones; others come per call
    translator: Translator | None = None  # unloaded; it loads on the actor's GPU thread when a prompt needs it


@dataclass(frozen=True)
class ActorState:
    """What the worker's affinity needs to know about an actor's engine, sent back with every answer."""

    resident: str | None = None
    resident_loras: frozenset[str] = frozenset()
    load_seconds: float | None = None
    loads: int = 0  # model loads since this actor (re)started


@dataclass(frozen=True)
class EncodedResult:
    """One finished image as PNG bytes (with its `parameters` chunk) and what the store records beside it."""

    png: bytes
    seed: int
    index: int
    parameters: str
    nsfw: bool | None
    translation: Translation | None

    @classmethod
    def of(cls, image: GeneratedImage) -> EncodedResult:
        """Encode an engine result exactly as the local path's store would."""
        return cls(image.png(), image.seed, image.index, image.parameters, image.nsfw, image.translation)


@dataclass(frozen=True)
class Outcome:
    """The answer to a load or a generate: the engine's state, then the images or the error it raised."""

    state: ActorState
    images: list[list[EncodedResult]] | None = None
    error: Exception | None = None


@dataclass
class _Call:
    events: list[StepProgress] = field(default_factory=list)
    finished: bool = False


class GpuActor:
    """Owns one Engine; `generate`, `progress` and `cancel` run on different actor threads (max_concurrency ≥ 3)."""

    def __init__(self, settings: ActorSettings) -> None:
        from generation.engine import Engine

        self._loras: dict[str, LoraSpec] = dict(settings.loras)
        self.engine: Engine = Engine(
            dict(settings.models),
            device=settings.device,
            dtype=settings.dtype,
            preview_every=settings.preview_every,
            loras=self._loras,
            translator=settings.translator,
        )
        self._gpu = ThreadPoolExecutor(max_workers=1, thread_name_prefix="gpu")  # the engine is not thread-safe
        self._lock = threading.Condition()
        self._calls: dict[int, _Call] = {}
        self._cancelled: set[int] = set()

    def ready(self) -> ActorState:
        """Answers once the actor runs (after a start or a restart), with its engine's state."""
        return self._state()

    def load(self, model: str) -> Outcome:
        """Make `model` resident (the default model before any job runs)."""
        try:
            self._gpu.submit(self.engine.load, model).result()
        except Exception as exc:
            return Outcome(self._state(), error=exc)
        return Outcome(self._state())

    def generate(self, call: int, requests: Sequence[GenerationRequest], loras: Mapping[str, LoraSpec]) -> Outcome:
        """Run one batch as call number `call`; its progress waits for `progress(call)`."""
        with self._lock:
            entry = self._calls.setdefault(call, _Call())

        def on_progress(progress: StepProgress) -> None:
            with self._lock:
                entry.events.append(progress)  # the poll waiting on it wakes at its timeout, or at the end

        def should_cancel() -> bool:
            return call in self._cancelled

        def run() -> list[list[GeneratedImage]]:
            self._loras.update(loras)  # LoRAs members trained since the start come with the requests using them
            return self.engine.generate(requests, on_progress=on_progress, should_cancel=should_cancel)

        try:
            images = self._gpu.submit(run).result()
            # Encoded here, off the GPU thread and off the bot's machine: the bot stores the bytes as they come.
            return Outcome(self._state(), images=[[EncodedResult.of(image) for image in own] for own in images])
        except Exception as exc:
            return Outcome(self._state(), error=exc)
        finally:
            with self._lock:
                entry.finished = True
                self._cancelled.discard(call)
                self._lock.notify_all()

    def progress(self, call: int, timeout: float) -> tuple[list[StepProgress], bool]:
        """Progress of `call` since the last poll, after `timeout` s or as soon as it finished; True once it has.

        Steps come in bunches, not one call each: a poll per step would take CPU (and the GIL) from the
        pipeline on every step, and Discord shows progress every 1.5 s anyway."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while True:
                entry = self._calls.get(call)
                if entry is not None and entry.finished:
                    break
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._lock.wait(left)
            if entry is None:
                return [], False  # not started yet (actor threads take calls in any order)
            events, entry.events = entry.events, []
            if entry.finished:
                del self._calls[call]
            return events, entry.finished

    def cancel(self, call: int) -> None:
        """Stop `call` at its next step (it may not have started yet: actor threads take calls in any order)."""
        with self._lock:
            self._cancelled.add(call)

    def _state(self) -> ActorState:
        engine = self.engine
        return ActorState(engine.resident, engine.resident_loras, engine.load_seconds, engine.loads)
