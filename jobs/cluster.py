"""GPU slots on Ray (`[cluster] backend = "ray"`): a proxy with the Engine surface the Worker uses.

The bot keeps the durable fair queue and runs one Worker per slot, as for the local GPU; a slot's engine is a
`RemoteEngine`, whose blocking calls (made on that Worker's GPU thread) go to a threaded Ray actor owning an Engine
(jobs.cluster_actor). Ray is imported only here, lazily: `backend = "local"` never imports it.

While a batch runs, the proxy long-polls the actor for progress (steps and previews), passes each on to the
worker's callback, and sends a cancel when the worker asks for one; the images come back as PNG bytes and are
stored as they are. An actor (or its node) lost mid-batch surfaces as `WorkerLost`: the worker puts the batch
back in the queue and `reconnect` waits for Ray's restart of the actor, or starts a new one.
"""

from __future__ import annotations

import io
import itertools
import logging
import os
import socket
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from PIL import Image

from generation.errors import GenerationError
from generation.request import GenerationRequest
from generation.results import GeneratedImage, StepProgress
from generation.specs import LoraSpec
from jobs.cluster_actor import ActorSettings, ActorState, EncodedResult, GpuActor, Outcome

log = logging.getLogger(__name__)

INSTALL_HINT = "pip install 'imagine-bot[cluster]'"
# How long one progress poll waits on the actor (steps arrive in bunches this far apart, the finished batch at
# once); also how often the worker's cancel flag is looked at.
POLL_SECONDS = 0.2
# Ray restarts a crashed actor (or one whose node died) this often before the proxy starts a new one.
ACTOR_RESTARTS = 3
# generate, progress and cancel run at once on the actor's threads; one spare for `ready`.
ACTOR_THREADS = 4
# While Ray restarts an actor, how often the proxy asks whether it is back.
RETRY_SECONDS = 0.5
# Ray itself retries an address where nothing listens for minutes: a plain connection is tried first, this long.
REACH_SECONDS = 5.0


class ClusterUnavailable(Exception):
    """Ray is not installed or its cluster cannot be reached; the message says which and what to do."""


class WorkerLost(Exception):
    """The Ray actor running a batch died (or its node did); the batch did not finish there."""


@dataclass(frozen=True)
class EncodedImage(GeneratedImage):
    """A result that arrived as PNG bytes: `png()` returns them as they are (the image is only opened lazily)."""

    encoded: bytes = field(default=b"", repr=False)

    @classmethod
    def of(cls, result: EncodedResult) -> EncodedImage:
        """The stored form of an actor's result; PIL reads only the PNG header until pixels are asked for."""
        return cls(
            image=Image.open(io.BytesIO(result.png)),
            seed=result.seed,
            index=result.index,
            parameters=result.parameters,
            nsfw=result.nsfw,
            translation=result.translation,
            encoded=result.png,
        )

    def png(self) -> bytes:
        """The actor's PNG bytes, `parameters` chunk included."""
        return self.encoded


def _ray() -> Any:
    try:
        import ray
    except ImportError:
        message = f'[cluster] backend = "ray" needs Ray, which is not installed: {INSTALL_HINT}'
        raise ClusterUnavailable(message) from None
    return ray


def connect(address: str = "", *, num_cpus: int | None = None, num_gpus: int | None = None) -> bool:
    """Join the Ray cluster at `address` ("auto", "ray://host:10001"), or start one here when it is empty.

    True when this call started or joined Ray (the caller then calls `disconnect`); False when this process was
    connected already (tests share one Ray). `num_cpus`/`num_gpus` size a Ray started here (None: what it detects).
    """
    ray = _ray()
    if ray.is_initialized():
        return False
    where = f"at {address!r}" if address else "on this machine"
    _check_reachable(address, where)
    try:
        if address:
            ray.init(address=address, include_dashboard=False)
        else:
            # "local": a new Ray even where `ray start` left one running (plain ray.init() would join that one).
            ray.init(address="local", num_cpus=num_cpus, num_gpus=num_gpus, include_dashboard=False)
    except Exception as exc:
        text = " ".join(str(exc).split()) or type(exc).__name__
        if address.startswith("ray://") and not os.environ.get("RAY_AUTH_MODE"):
            text += (
                " (a Ray 2.60 cluster asks Ray Client for its token: copy the head's ~/.ray/auth_token to this "
                "machine's ~/.ray/ and set RAY_AUTH_MODE=token)"
            )
        raise ClusterUnavailable(f"cannot reach the Ray cluster {where} ([cluster] address): {text}") from None
    return True


def capacity_problem(workers: int, num_gpus: float, num_cpus: float) -> tuple[str | None, str | None]:
    """(fatal, warning) about the joined cluster's size: no room for even one worker is fatal (its start would
    wait forever); room for fewer than all is a warning (the rest start when machines join)."""
    resources = _ray().cluster_resources()
    fatal = warning = None
    for key, name, each in (("GPU", "num_gpus", num_gpus), ("CPU", "num_cpus", num_cpus)):
        have = float(resources.get(key, 0.0))
        if each and have < each:
            fatal = (
                f"the Ray cluster has {have:g} {key}(s) in all, and each GPU worker asks for {each:g} "
                f"([cluster] {name}); add machines with {key}s (`ray status` lists them), or lower {name}"
            )
        elif each and have < each * workers:
            warning = (
                f"the Ray cluster has {have:g} {key}(s), fewer than {workers} workers x {each:g} ([cluster] {name}): "
                "the workers that do not fit start when machines join"
            )
    return fatal, warning


def _check_reachable(address: str, where: str) -> None:
    """For a "host:port" or "ray://host:port" address, refuse at once when nothing listens there."""
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if address == "auto" or not host or not port.isdigit():
        return  # "auto" finds a local cluster itself, quickly; other forms are Ray's to judge
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=REACH_SECONDS).close()
    except OSError as exc:
        raise ClusterUnavailable(
            f"cannot reach the Ray cluster {where} ([cluster] address): nothing answers at {host}:{port} "
            f"({exc.strerror or type(exc).__name__}). Start its head there (`ray start --head`), or fix the address."
        ) from None


def disconnect() -> None:
    """Leave Ray (and stop it when this process started it)."""
    _ray().shutdown()


def _lost_errors(ray: Any) -> tuple[type[BaseException], ...]:
    errors = ray.exceptions
    return (
        errors.RayActorError,  # ActorDiedError, ActorUnavailableError
        errors.ObjectLostError,
        errors.NodeDiedError,
        errors.WorkerCrashedError,
        errors.LocalRayletDiedError,
    )


class RemoteEngine:
    """An Engine in a Ray actor, for one Worker. Not thread-safe: call it from that worker's GPU thread only."""

    def __init__(
        self,
        settings: ActorSettings,
        *,
        name: str = "gpu",
        num_gpus: float = 1.0,
        num_cpus: float = 1.0,
        loras: Mapping[str, LoraSpec] | None = None,
        poll_seconds: float = POLL_SECONDS,
    ) -> None:
        self.name = name
        self.models = dict(settings.models)
        # LoRAs by name, as the local Engine's: kept as given (the bot's catalog adds trained ones while it runs);
        # each call sends the specs its requests use, so the actor always knows them.
        self.loras: Mapping[str, LoraSpec] = loras if loras is not None else dict(settings.loras)
        self.poll_seconds = poll_seconds
        self._settings = settings
        self._options = {
            "num_gpus": num_gpus,
            "num_cpus": num_cpus,
            "max_concurrency": ACTOR_THREADS,
            "max_restarts": ACTOR_RESTARTS,
            "max_task_retries": 0,  # a batch lost with its actor goes back to the fair queue, not to the same actor
        }
        self._ray = _ray()
        self._lost = _lost_errors(self._ray)
        self._calls = itertools.count(1)
        self._state = ActorState()
        self._earlier_loads = 0  # loads of this slot's earlier actors (a new one counts from 0)
        self.actor = self._spawn()

    def _spawn(self) -> Any:
        return self._ray.remote(GpuActor).options(**self._options).remote(self._settings)

    @property
    def resident(self) -> str | None:
        """The model resident on the actor's device, as of its last answer."""
        return self._state.resident

    @property
    def resident_loras(self) -> frozenset[str]:
        """The LoRAs loaded into that model."""
        return self._state.resident_loras

    @property
    def load_seconds(self) -> float | None:
        """How long the actor's last model load took."""
        return self._state.load_seconds

    @property
    def loads(self) -> int:
        """Model loads this slot has done, across its actor's restarts."""
        return self._earlier_loads + self._state.loads

    def has_safety_checker(self, name: str) -> bool:
        """Whether images of this model are checked for NSFW content (from its spec: the actor builds the same)."""
        spec = self.models.get(name)
        return bool(spec and spec.safety_checker)

    def load(self, model: str) -> None:
        """Make `model` resident on the actor (waits for the actor to start)."""
        self._raise(self._answer(self.actor.load.remote(model)))

    def generate(
        self,
        requests: Sequence[GenerationRequest],
        on_progress: Callable[[StepProgress], None] | None = None,
        should_cancel: Callable[[], bool] | None = None,
    ) -> list[list[GeneratedImage]]:
        """Run compatible requests as one batch on the actor; returns each request's images in order."""
        if not requests:
            return []
        call = next(self._calls)
        loras = {name: self.loras[name] for name, _ in requests[0].loras if name in self.loras}
        ray = self._ray
        try:
            result = self.actor.generate.remote(call, list(requests), loras)
            cancelling = finished = False
            while not finished:
                if not cancelling and should_cancel is not None and should_cancel():
                    self.actor.cancel.remote(call)  # the engine raises Cancelled at its next step
                    cancelling = True
                events, finished = ray.get(self.actor.progress.remote(call, self.poll_seconds))
                if on_progress is not None:
                    for event in events:
                        on_progress(event)
                # A call the actor never started (its arguments would not load) has no progress to wait for.
                finished = finished or bool(ray.wait([result], timeout=0)[0] and not events)
        except self._lost as exc:
            raise WorkerLost(f"GPU worker {self.name} was lost mid-batch ({type(exc).__name__})") from exc
        outcome = self._answer(result)
        self._raise(outcome)
        assert outcome.images is not None
        return [[EncodedImage.of(image) for image in own] for own in outcome.images]

    def reconnect(self, should_stop: Callable[[], bool]) -> bool:
        """After a loss: wait until Ray has restarted the actor, or start a new one; False if told to stop first."""
        ray = self._ray
        self._earlier_loads = self.loads
        self._state = ActorState()  # a restarted actor holds no model
        ready = self.actor.ready.remote()
        while not should_stop():
            try:
                done, _ = ray.wait([ready], timeout=1.0)
                if done:
                    self._state = ray.get(ready)
                    log.info("GPU worker %s is back", self.name)
                    return True
            except ray.exceptions.ActorUnavailableError:  # Ray is restarting it: ask again in a moment
                time.sleep(RETRY_SECONDS)
                ready = self.actor.ready.remote()
            except self._lost:
                log.warning("GPU worker %s could not be restarted; starting a new one", self.name)
                self._kill()
                self.actor = self._spawn()
                ready = self.actor.ready.remote()
        return False

    def close(self) -> None:
        """Stop the actor (the bot is shutting down)."""
        self._kill()

    def _kill(self) -> None:
        try:
            self._ray.kill(self.actor, no_restart=True)
        except Exception:  # already gone, or Ray itself is
            log.debug("could not kill GPU worker %s", self.name, exc_info=True)

    def _answer(self, ref: Any) -> Outcome:
        try:
            outcome: Outcome = self._ray.get(ref)
        except self._lost as exc:
            raise WorkerLost(f"GPU worker {self.name} was lost ({type(exc).__name__})") from exc
        except self._ray.exceptions.RayTaskError as exc:  # the actor could not even run the call
            log.error("GPU worker %s failed a call: %s", self.name, exc)
            raise GenerationError(
                f"Generation failed on GPU worker {self.name} ({type(exc.cause).__name__}); it has been logged."
            ) from None
        self._state = outcome.state
        return outcome

    @staticmethod
    def _raise(outcome: Outcome) -> None:
        if outcome.error is not None:
            raise outcome.error
