"""Configuration from a TOML file; config.example.toml documents every key."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from generation.loras import check_weight
from generation.specs import KIND_DEFAULTS, LORA_KINDS, MODEL_KINDS, LoraSpec, ModelSpec
from generation.training_inputs import MAX_PHOTOS, MAX_STEPS, MIN_PHOTOS
from jobs.limits import Limits


class ConfigError(Exception):
    """The config file is missing, unreadable, or has a wrong key or value."""


@dataclass(frozen=True)
class DiscordConfig:
    """How to reach Discord (or a proxy / local fake standing in for it)."""

    token_env: str = "DISCORD_TOKEN"
    api_base: str = ""  # e.g. a nirn-proxy: http://127.0.0.1:8080/api/v10
    gateway_url: str = ""  # e.g. ws://127.0.0.1:8080/gateway
    guild_ids: tuple[int, ...] = ()


@dataclass(frozen=True)
class StorageConfig:
    """Where history and images are kept."""

    path: Path = Path("data/imagine.sqlite3")
    images_dir: Path = Path("data/images")


@dataclass(frozen=True)
class GenerationConfig:
    """The GPU side: device, precision, default model, batching."""

    device: str = "auto"
    dtype: str = "auto"
    default_model: str = "sd-turbo"
    max_batch: int = 4
    preview_every: int = 5
    max_attempts: int = 3
    max_loras: int = 3
    train_chunk_steps: int = 25  # LoRA training steps per turn on the GPU (and per checkpoint)
    train_steps: int = 500  # /train's steps when the member gives none (at most the server's max_train_steps)
    train_learning_rate: float = 1e-4  # the Dreambooth LoRA recipe's
    train_class_images: int = 0  # prior preservation for /train: class images the model makes first (0: none)


DEFAULT_MODELS = (
    ModelSpec(
        name="sd-turbo",
        source="stabilityai/sd-turbo",
        steps=2,
        guidance=0.0,
        description="SD-Turbo: fast drafts in 1-4 steps",
    ),
    ModelSpec(
        name="sd15",
        source="stable-diffusion-v1-5/stable-diffusion-v1-5",
        steps=25,
        guidance=7.0,
        sampler="DPM++ 2M Karras",
        description="Stable Diffusion 1.5",
    ),
)


@dataclass(frozen=True)
class Config:
    """The whole configuration."""

    discord: DiscordConfig = field(default_factory=DiscordConfig)
    storage: StorageConfig = field(default_factory=StorageConfig)
    generation: GenerationConfig = field(default_factory=GenerationConfig)
    limits: Limits = field(default_factory=Limits)
    models: tuple[ModelSpec, ...] = DEFAULT_MODELS
    loras: tuple[LoraSpec, ...] = ()

    @property
    def model_map(self) -> dict[str, ModelSpec]:
        """Models by name, in config order."""
        return {m.name: m for m in self.models}

    @property
    def lora_map(self) -> dict[str, LoraSpec]:
        """LoRAs by name, in config order."""
        return {lora.name: lora for lora in self.loras}


def _section(cls: type, data: dict[str, Any], where: str, base: Path) -> Any:
    known = {f.name: f for f in fields(cls)}
    unknown = set(data) - set(known)
    if unknown:
        raise ConfigError(f"[{where}] has unknown key(s): {', '.join(sorted(unknown))}")
    defaults, values = cls(), {}
    for key, value in data.items():
        default = getattr(defaults, key)
        if isinstance(default, Path):
            value = Path(value)
            value = value if value.is_absolute() else base / value
        elif isinstance(default, tuple):
            value = tuple(value)
        elif isinstance(default, float) and isinstance(value, int):
            value = float(value)
        values[key] = value
    try:
        return cls(**values)
    except TypeError as exc:
        raise ConfigError(f"[{where}] {exc}") from None


def _model(data: dict[str, Any], base: Path, index: int) -> ModelSpec:
    where = f"models #{index + 1}"
    known = {f.name for f in fields(ModelSpec)}
    unknown = set(data) - known
    if unknown:
        raise ConfigError(f"[[models]] #{index + 1} has unknown key(s): {', '.join(sorted(unknown))}")
    for key in ("name", "source"):
        if not isinstance(data.get(key), str) or not data[key]:
            raise ConfigError(f"[[models]] #{index + 1} needs a `{key}`")
    data = dict(data)
    for key in ("source", "config", "preview_vae", "safety_checker", "stage_2", "stage_3"):
        value = data.get(key)
        if isinstance(value, str) and value.startswith((".", "~")):
            data[key] = str((base / value).expanduser().resolve()) if value.startswith(".") else value
    if data.get("kind", "sd") not in MODEL_KINDS:
        raise ConfigError(f"[{where}] kind must be one of {', '.join(MODEL_KINDS)}, not {data['kind']!r}")
    defaults = KIND_DEFAULTS[data.get("kind", "sd")]
    for key in ("steps", "guidance", "width", "height"):
        data.setdefault(key, getattr(defaults, key))
    data["guidance"] = float(data["guidance"])
    return ModelSpec(**data)


_LORA_NAME_FORBIDDEN = set(':<>,"`#')  # `#`: trained LoRAs are NAME#ID


def _lora(data: dict[str, Any], base: Path, index: int) -> LoraSpec:
    where = f"[[loras]] #{index + 1}"
    unknown = set(data) - {f.name for f in fields(LoraSpec)}
    if unknown:
        raise ConfigError(f"{where} has unknown key(s): {', '.join(sorted(unknown))}")
    for key in ("name", "source"):
        if not isinstance(data.get(key), str) or not data[key].strip():
            raise ConfigError(f"{where} needs a `{key}`")
    data = dict(data)
    name = data["name"] = data["name"].strip()
    if _LORA_NAME_FORBIDDEN & set(name) or name != " ".join(name.split()):
        raise ConfigError(f'{where}: name {name!r} cannot hold any of : < > , " ` # (it is typed as <lora:NAME:0.8>)')
    if data["source"].startswith("."):
        data["source"] = str((base / data["source"]).resolve())
    if data.get("kind", "sd") not in LORA_KINDS:
        raise ConfigError(f"{where} kind must be one of {', '.join(LORA_KINDS)}, not {data['kind']!r}")
    triggers = data.get("triggers", ())
    if isinstance(triggers, str) or not all(isinstance(t, str) for t in triggers):
        raise ConfigError(f'{where} triggers must be a list of words, such as ["sks dog"]')
    data["triggers"] = tuple(triggers)
    try:
        data["weight"] = float(data.get("weight", 1.0))
        check_weight(name, data["weight"])
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{where} weight: {exc}") from None
    return LoraSpec(**data)


def load_config(path: Path | None) -> Config:
    """Read a TOML config; with no path, the built-in defaults."""
    if path is None:
        return Config()
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"Config file {path} does not exist (copy config.example.toml to start).") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"Config file {path} is not valid TOML: {exc}") from None
    base = path.resolve().parent
    sections = {"discord": DiscordConfig, "storage": StorageConfig, "generation": GenerationConfig, "limits": Limits}
    unknown = set(raw) - set(sections) - {"models", "loras"}
    if unknown:
        raise ConfigError(f"{path} has unknown section(s): {', '.join(sorted(unknown))}")
    parts = {name: _section(cls, raw.get(name, {}), name, base) for name, cls in sections.items()}
    models = tuple(_model(m, base, i) for i, m in enumerate(raw.get("models", []))) or DEFAULT_MODELS
    loras = tuple(_lora(lora, base, i) for i, lora in enumerate(raw.get("loras", [])))
    names = [lora.name for lora in loras]
    twice = sorted({name for name in names if names.count(name) > 1})
    if twice:
        raise ConfigError(f"[[loras]] names must be unique; given more than once: {', '.join(twice)}")
    config = Config(**parts, models=models, loras=loras)
    if config.generation.default_model not in config.model_map:
        raise ConfigError(
            f"[generation] default_model is {config.generation.default_model!r}, "
            f"but [[models]] only has: {', '.join(config.model_map)}"
        )
    if config.generation.max_loras < 0:
        raise ConfigError(f"[generation] max_loras must be 0 or more, not {config.generation.max_loras}")
    _check_training_limits(config.limits)
    return config


def _check_training_limits(limits: Limits) -> None:
    # Outside these a server could set no value at all (e.g. max_train_photos 2: a training needs 3).
    for key, value, low, high in (
        ("max_train_steps", limits.max_train_steps, 1, MAX_STEPS),
        ("max_train_photos", limits.max_train_photos, MIN_PHOTOS, MAX_PHOTOS),
        ("daily_trainings_per_user", limits.daily_trainings_per_user, 0, 1_000_000),
    ):
        if not low <= value <= high:
            raise ConfigError(f"[limits] {key} must be from {low} to {high}, not {value}")
