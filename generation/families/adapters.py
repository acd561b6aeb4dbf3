"""LoRA adapters on a resident pipeline: a few stay loaded (least recently used go), one set is active per call.

diffusers (PEFT backend) loads a LoRA into the pipeline's UNet/transformer and text encoders with
`load_lora_weights(source, adapter_name=)`; `set_adapters(names, adapter_weights=)` picks which apply and how
strongly; `disable_lora()` turns every adapter off, so a request without LoRAs gets the base model exactly
(`set_adapters` alone does not turn them back on: `enable_lora()` first). Img2img and inpainting pipelines
derived with `from_pipe` share the same modules, so one cache serves every mode.
"""

from __future__ import annotations

import contextlib
import logging
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from generation.errors import ModelUnavailable
from generation.families.loading import is_local_path
from generation.specs import LoraSpec

log = logging.getLogger(__name__)

RESIDENT_LORAS = 4  # adapters kept loaded; a rank-16 SDXL LoRA is ~100 MB, small beside the model


class AdapterCache:
    """The LoRAs loaded into one pipeline, by spec, and the set now active. Use from the GPU thread only."""

    def __init__(self, pipe: Any, capacity: int = RESIDENT_LORAS) -> None:
        self._pipe = pipe
        self.capacity = capacity
        self._loaded: OrderedDict[LoraSpec, str] = OrderedDict()  # spec → adapter name, least recent first
        self._active: tuple[tuple[str, float], ...] = ()
        self._serial = 0
        self.loads = 0  # how many times weights were read (tests and logs)
        # Rebuilt on every change, so the event loop can read it while the GPU thread works.
        self.resident: frozenset[str] = frozenset()

    def use(self, loras: Sequence[tuple[LoraSpec, float]]) -> None:
        """Load what is missing (evicting the least recently used), then activate exactly these weights."""
        keep = {spec for spec, _ in loras}
        wanted = tuple((self._adapter(spec, keep), float(weight)) for spec, weight in loras)
        if wanted == self._active:
            return
        if not wanted:
            self._pipe.disable_lora()
        else:
            self._pipe.enable_lora()  # undoes an earlier disable_lora; a no-op when already on
            self._pipe.set_adapters([name for name, _ in wanted], adapter_weights=[w for _, w in wanted])
        self._active = wanted

    def _adapter(self, spec: LoraSpec, keep: set[LoraSpec]) -> str:
        if spec in self._loaded:
            self._loaded.move_to_end(spec)
            return self._loaded[spec]
        self._evict(keep)
        # Adapter names become module keys in PEFT, where dots are not allowed: ours are "lora1", "lora2", …
        self._serial += 1
        name = f"lora{self._serial}"
        log.info("loading LoRA %s from %s as adapter %s", spec.name, spec.source, name)
        self._load(spec, name)
        self.loads += 1
        self._loaded[spec] = name
        self.resident = frozenset(loaded.name for loaded in self._loaded)
        return name

    def _load(self, spec: LoraSpec, name: str) -> None:
        source = str(Path(spec.source).expanduser()) if is_local_path(spec.source) else spec.source
        kwargs: dict[str, Any] = {"adapter_name": name}
        if spec.weight_name:
            kwargs["weight_name"] = spec.weight_name
        if is_local_path(spec.source) and not Path(source).exists():
            raise ModelUnavailable(f"The LoRA '{spec.name}' is not available: its file {spec.source} is missing.")
        try:
            self._pipe.load_lora_weights(source, **kwargs)
        except Exception as exc:  # a missing download, a file for another kind of model: half-injected, so undo
            self._forget(name)
            text = " ".join(str(exc).split())[:200] or type(exc).__name__
            log.warning("LoRA %s from %s did not load: %s", spec.name, spec.source, text)
            raise ModelUnavailable(
                f"The LoRA '{spec.name}' could not be loaded onto this model ({text}). "
                "Its operator has been told; try without it."
            ) from exc

    def _evict(self, keep: set[LoraSpec]) -> None:
        while len(self._loaded) >= self.capacity:
            victim = next((spec for spec in self._loaded if spec not in keep), None)
            if victim is None:
                return  # every loaded one is wanted now: go over capacity for this call
            name = self._loaded.pop(victim)
            log.info("unloading LoRA %s (adapter %s)", victim.name, name)
            self._active = tuple(item for item in self._active if item[0] != name)
            self._forget(name)
            self.resident = frozenset(loaded.name for loaded in self._loaded)

    def _forget(self, name: str) -> None:
        with contextlib.suppress(ValueError, KeyError, AttributeError):  # it never got as far as the modules
            self._pipe.delete_adapters([name])
