"""Samplers by their A1111 names, mapped to diffusers schedulers built fresh for every call."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from diffusers import (
    DDIMScheduler,
    DPMSolverMultistepScheduler,
    DPMSolverSinglestepScheduler,
    EulerAncestralDiscreteScheduler,
    EulerDiscreteScheduler,
    HeunDiscreteScheduler,
    KDPM2AncestralDiscreteScheduler,
    KDPM2DiscreteScheduler,
    LCMScheduler,
    PNDMScheduler,
    UniPCMultistepScheduler,
)
from diffusers.schedulers.scheduling_utils import SchedulerMixin

from generation.errors import InvalidRequest


@dataclass(frozen=True)
class Sampler:
    """A diffusers scheduler class and the config overrides that make it the named A1111 sampler."""

    scheduler: type[SchedulerMixin]
    overrides: dict[str, Any] = field(default_factory=dict)


_KARRAS = {"use_karras_sigmas": True}
SAMPLERS: dict[str, Sampler] = {
    "Euler a": Sampler(EulerAncestralDiscreteScheduler),
    "Euler": Sampler(EulerDiscreteScheduler),
    "Heun": Sampler(HeunDiscreteScheduler),
    "DPM2": Sampler(KDPM2DiscreteScheduler),
    "DPM2 a": Sampler(KDPM2AncestralDiscreteScheduler),
    "DPM++ 2M": Sampler(DPMSolverMultistepScheduler),
    "DPM++ 2M Karras": Sampler(DPMSolverMultistepScheduler, _KARRAS),
    "DPM++ 2M SDE": Sampler(DPMSolverMultistepScheduler, {"algorithm_type": "sde-dpmsolver++"}),
    "DPM++ 2M SDE Karras": Sampler(DPMSolverMultistepScheduler, {"algorithm_type": "sde-dpmsolver++", **_KARRAS}),
    "DPM++ 2S": Sampler(DPMSolverSinglestepScheduler),
    "DDIM": Sampler(DDIMScheduler),
    "PLMS": Sampler(PNDMScheduler, {"skip_prk_steps": True}),
    "UniPC": Sampler(UniPCMultistepScheduler),
    "LCM": Sampler(LCMScheduler),
}


def sampler_names() -> list[str]:
    """The sampler names users may pick, in menu order."""
    return list(SAMPLERS)


def resolve_sampler(name: str) -> str:
    """The canonical spelling of a sampler name typed in any case, or a clear refusal."""
    folded = {n.casefold(): n for n in SAMPLERS}
    canonical = folded.get(name.strip().casefold())
    if canonical is None:
        raise InvalidRequest(f"Unknown sampler '{name}'. Choose one of: {', '.join(SAMPLERS)}.")
    return canonical


def make_scheduler(name: str | None, model_scheduler: SchedulerMixin) -> SchedulerMixin:
    """A new scheduler for one call: the named sampler, or a copy of the model's own when name is None.

    Schedulers keep per-call state (timesteps, step index), so sharing one between calls is unsafe.
    """
    if name is None:
        return type(model_scheduler).from_config(model_scheduler.config)
    sampler = SAMPLERS[resolve_sampler(name)]
    return sampler.scheduler.from_config(model_scheduler.config, **sampler.overrides)


def describe_scheduler(scheduler: SchedulerMixin) -> str:
    """The A1111 name of a scheduler instance, or its class name when it has none."""
    for name, sampler in SAMPLERS.items():
        if type(scheduler) is sampler.scheduler and all(
            scheduler.config.get(k) == v for k, v in sampler.overrides.items()
        ):
            if not sampler.overrides and scheduler.config.get("use_karras_sigmas"):
                continue  # a Karras variant is listed separately
            return name
    return type(scheduler).__name__
