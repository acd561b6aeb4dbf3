"""The configured models and the family behind each: one lookup for the bot, the queue and the engine."""

from __future__ import annotations

from collections import ChainMap
from collections.abc import Iterable, Mapping
from typing import Any

from generation.errors import InvalidRequest
from generation.families.base import Family
from generation.families.dalle_mini import DalleMini
from generation.families.deepfloyd_if import DeepFloydIF
from generation.families.flux import Flux
from generation.families.kandinsky import Kandinsky
from generation.families.karlo import Karlo
from generation.families.sd3 import StableDiffusion3
from generation.families.stable_diffusion import StableDiffusion
from generation.families.upscaling import DiffusionUpscaling, NetworkUpscaling
from generation.loras import closest, shown
from generation.request import GenerationRequest
from generation.specs import LoraSpec, ModelSpec, UpscalerSpec

DEFAULT_MAX_LORAS = 3

FAMILIES: dict[str, type[Family]] = {
    kind: family
    for family in (
        StableDiffusion,
        DeepFloydIF,
        Flux,
        StableDiffusion3,
        DalleMini,
        Kandinsky,
        Karlo,
        NetworkUpscaling,  # [[upscalers]]: jobs on an upscaler's name (the Upscale buttons, /upscale)
        DiffusionUpscaling,
    )
    for kind in family.kinds
}


def trained_name(name: str, lora_id: int) -> str:
    """The unique name a trained LoRA goes by in requests and PNG parameters: members' names repeat."""
    return f"{name}#{lora_id}"


def family_for(kind: str) -> type[Family]:
    """The family that serves a kind of model."""
    try:
        return FAMILIES[kind]
    except KeyError:
        raise InvalidRequest(f"Unknown kind of model '{kind}'. Known kinds: {', '.join(FAMILIES)}.") from None


class Catalog:
    """Models and LoRAs users can pick, by name; models that failed their start-up check are kept out."""

    def __init__(
        self,
        models: Iterable[ModelSpec] | Mapping[str, ModelSpec],
        default: str | None = None,
        *,
        loras: Iterable[LoraSpec] | Mapping[str, LoraSpec] = (),
        max_loras: int = DEFAULT_MAX_LORAS,
        upscalers: Iterable[UpscalerSpec] = (),
        default_upscaler: str | None = None,
    ) -> None:
        specs = models.values() if isinstance(models, Mapping) else models
        self.models: dict[str, ModelSpec] = {spec.name: spec for spec in specs}
        self.default = default or next(iter(self.models), None)
        self.broken: dict[str, str] = {}  # name → why it cannot be loaded
        lora_specs = loras.values() if isinstance(loras, Mapping) else loras
        self.loras: dict[str, LoraSpec] = {spec.name: spec for spec in lora_specs}
        # LoRAs members trained, by their unique name (see `trained_name`): accepted in requests, never
        # listed here (each belongs to its owner, and to a server if shared; the bot decides who sees which).
        self.trained: dict[str, LoraSpec] = {}
        self.max_loras = max_loras
        # Upscalers run as models of their own kind (generation.families.upscaling) but are never picked to draw.
        self.upscalers: dict[str, UpscalerSpec] = {spec.name: spec for spec in upscalers}
        clash = sorted(self.upscalers.keys() & self.models.keys())
        if clash:
            raise ValueError(f"[[upscalers]] and [[models]] both use the name(s) {', '.join(clash)}: rename one")
        self.default_upscaler = default_upscaler or next(iter(self.upscalers), None)

    @property
    def all_loras(self) -> Mapping[str, LoraSpec]:
        """Configured and trained LoRAs by request name, live (the engine looks sources up here)."""
        return ChainMap(self.loras, self.trained)

    def add_trained(self, spec: LoraSpec) -> None:
        """Accept a trained LoRA in requests from now on."""
        self.trained[spec.name] = spec

    def remove_trained(self, name: str) -> None:
        """Stop accepting a trained LoRA (it was deleted); jobs already queued with it fail by name."""
        self.trained.pop(name, None)

    def mark_broken(self, name: str, reason: str) -> None:
        """Hide a model that cannot be loaded; its requests are refused with the reason."""
        self.broken[name] = reason

    @property
    def names(self) -> list[str]:
        """Models that can be picked now (for autocomplete)."""
        return [name for name in self.models if name not in self.broken]

    def spec(self, name: str | None) -> ModelSpec:
        """A model by name (the default when None), or a refusal listing the choices."""
        name = name or self.default
        if name in self.upscalers:
            raise InvalidRequest(
                f"'{name}' is an upscaler, not a model that draws: use it with /upscale or a picture's Upscale "
                f"buttons. Choose a model: {', '.join(self.names)}."
            )
        if name in self.broken:
            raise InvalidRequest(f"The model '{name}' is not available right now: {self.broken[name]}")
        if name not in self.models:
            raise InvalidRequest(f"There is no model called '{name}'. Choose one of: {', '.join(self.names)}.")
        return self.models[name]

    def family(self, name: str) -> type[Family]:
        """The family of a configured model or upscaler."""
        return family_for(self._runnable(name).kind)

    def _runnable(self, name: str) -> ModelSpec:
        """What a job's model name runs: a model, or an upscaler as a model."""
        if name in self.upscalers:
            return self.upscalers[name].as_model()
        return self.spec(name)

    @property
    def upscaler_models(self) -> dict[str, ModelSpec]:
        """The upscalers as the engine runs them, by name."""
        return {name: spec.as_model() for name, spec in self.upscalers.items()}

    def upscaler(self, name: str | None = None) -> UpscalerSpec:
        """An upscaler by name (the default when None), or a refusal naming the choices."""
        if not self.upscalers:
            raise InvalidRequest("No upscaler is set up on this bot: its operator has not configured [[upscalers]].")
        name = name or self.default_upscaler
        if name not in self.upscalers:
            raise InvalidRequest(f"There is no upscaler called '{name}'. Choose one of: {', '.join(self.upscalers)}.")
        return self.upscalers[name]

    def loras_for(self, name: str | None) -> list[LoraSpec]:
        """The LoRAs that fit a model (the default when None), for autocomplete; none for an unknown model."""
        spec = self.models.get(name or self.default or "")
        if spec is None or not family_for(spec.kind).loras:
            return []
        return [lora for lora in self.loras.values() if lora.kind == spec.kind]

    def check(self, request: GenerationRequest) -> None:
        """Refuse what the request's model cannot do, naming the model and what it can do."""
        spec = self._runnable(request.model)
        family_for(spec.kind).check(spec, request)
        self._check_loras(spec, request)

    def _check_loras(self, spec: ModelSpec, request: GenerationRequest) -> None:
        if not request.loras:
            return
        if len(request.loras) > self.max_loras:
            raise InvalidRequest(
                f"This request uses {len(request.loras)} LoRAs; the limit is {self.max_loras} at once."
            )
        if not family_for(spec.kind).loras:
            raise InvalidRequest(f"The model '{spec.name}' ({spec.kind}) cannot use LoRAs; leave them out.")
        for name, _ in request.loras:
            lora = self.all_loras.get(name)
            if lora is None:
                near = closest(name, self.loras)
                hint = f" Did you mean: {', '.join(near)}?" if near else ""
                fitting = ", ".join(lora.name for lora in self.loras_for(spec.name)) or "none"
                raise InvalidRequest(
                    f"There is no LoRA called '{shown(name)}'.{hint} LoRAs for '{spec.name}': {fitting}."[:1800]
                )
            if lora.kind != spec.kind:
                raise InvalidRequest(
                    f"The LoRA '{name}' is made for {lora.kind} models, and the model '{spec.name}' is of kind "
                    f"{spec.kind}: pick a {lora.kind} model or another LoRA."
                )

    def batch_key(self, request: GenerationRequest) -> tuple[Any, ...]:
        """Which requests may share one call, for the request's model's family."""
        spec = self._known(request.model)
        return family_for(spec.kind).batch_key(request) if spec else request.batch_key

    def cost(self, request: GenerationRequest) -> int:
        """GPU work of a request for its model's family (the fair queue's unit)."""
        spec = self._known(request.model)
        return family_for(spec.kind).cost(spec, request) if spec else request.cost

    def _known(self, name: str) -> ModelSpec | None:
        upscaler = self.upscalers.get(name)
        return upscaler.as_model() if upscaler else self.models.get(name)
