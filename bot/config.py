"""Configuration from a TOML file; config.example.toml documents every key."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from generation.loras import NAME_FORBIDDEN, check_weight
from generation.specs import KIND_DEFAULTS, LORA_KINDS, MODEL_KINDS, UPSCALER_KINDS, LoraSpec, ModelSpec, UpscalerSpec
from generation.training_inputs import MAX_PHOTOS, MAX_STEPS, MIN_PHOTOS
from generation.translation import MIN_CONFIDENCE, Translator, check_languages, check_source
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
    shards: int | str | None = None  # "auto" (Discord's count) or a number: AutoShardedBot; None: one connection
    delivery_retry_first: float = 2.0  # seconds before a result that failed to reach Discord is tried again
    delivery_retry_max: float = 300.0  # the pause doubles up to this

    def __post_init__(self) -> None:
        shards = self.shards
        if shards is not None and shards != "auto" and (type(shards) is not int or shards < 1):
            raise ConfigError(f'[discord] shards must be "auto" or a whole number of at least 1, not {shards!r}')
        if not 0 < self.delivery_retry_first <= self.delivery_retry_max:
            raise ConfigError(
                "[discord] delivery_retry_first must be more than 0 and at most delivery_retry_max, not "
                f"{self.delivery_retry_first} and {self.delivery_retry_max}"
            )


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
    # Torch threads for the pipeline; 0: on CPU every core but one, left to the event loop (GPU: torch's).
    cpu_threads: int = 0
    max_attempts: int = 3
    max_loras: int = 3
    train_chunk_steps: int = 25  # LoRA training steps per turn on the GPU (and per checkpoint)
    train_steps: int = 500  # /train's steps when the member gives none (at most the server's max_train_steps)
    train_learning_rate: float = 1e-4  # the Dreambooth LoRA recipe's
    train_class_images: int = 0  # prior preservation for /train: class images the model makes first (0: none)
    default_upscaler: str = ""  # a name under [[upscalers]]; empty: the first one


@dataclass(frozen=True)
class DescribeConfig:
    """/describe: the captioning model that suggests prompts for a picture."""

    model: str = ""  # BLIP hub id or local directory; empty: /describe is not set up


@dataclass(frozen=True)
class TranslationConfig:
    """Prompts in other languages, translated to English for models whose encoders read English."""

    model: str = ""  # MarianMT or M2M100 hub id or local directory; empty: prompts are used as typed
    min_confidence: float = MIN_CONFIDENCE  # how sure lingua must be that a text is in another language
    languages: tuple[str, ...] = ()  # ISO 639-1 codes lingua tells apart (English always); empty: all it knows

    def translator(self, device: str, dtype: str) -> Translator | None:
        """The translator these settings describe (its model loads on the GPU thread when first needed), if any."""
        if not self.model:
            return None
        return Translator(
            self.model, device=device, dtype=dtype, min_confidence=self.min_confidence, languages=self.languages
        )


@dataclass(frozen=True)
class MetricsConfig:
    """Prometheus metrics and a liveness check over HTTP (README: Metrics)."""

    port: int = 0  # 0: not served
    host: str = "127.0.0.1"  # loopback: only this machine (a Prometheus beside the bot) can scrape it


BACKENDS = ("local", "ray")


@dataclass(frozen=True)
class ClusterWorkerConfig:
    """One Ray worker's own settings: a `[[cluster.worker]]` table (the first table is worker 1, and so on)."""

    models: tuple[str, ...] = ()  # the models it runs (e.g. a small GPU: no SDXL); empty: every model


@dataclass(frozen=True)
class ClusterConfig:
    """Where GPU work runs: the bot's own GPU ("local"), or Ray actors on the GPUs of a Ray cluster ("ray")."""

    backend: str = "local"
    address: str = ""  # "auto" (a cluster of `ray start`), "ray://host:10001" (Ray Client), empty: start Ray here
    workers: int = 1  # Ray actors, each one a GPU worker holding its own model
    num_gpus: float = 1.0  # GPUs per actor (0: CPU actors, for tests; 0.5: two actors share a GPU)
    num_cpus: float = 1.0  # CPUs per actor (its torch threads, tokenising, PNG encoding)
    worker: tuple[ClusterWorkerConfig, ...] = ()  # [[cluster.worker]]: per-worker settings, in order

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise ConfigError(f'[cluster] backend must be "local" or "ray", not {self.backend!r}')
        if not isinstance(self.address, str):
            raise ConfigError(f'[cluster] address must be "auto", "ray://host:port" or "", not {self.address!r}')
        if type(self.workers) is not int or self.workers < 1:
            raise ConfigError(f"[cluster] workers must be a whole number of at least 1, not {self.workers!r}")
        for key in ("num_gpus", "num_cpus"):
            value = getattr(self, key)
            if type(value) not in (int, float) or value < 0:
                raise ConfigError(f"[cluster] {key} must be a number of at least 0, not {value!r}")
        if len(self.worker) > self.workers:
            raise ConfigError(
                f"[cluster] workers is {self.workers}, but there are {len(self.worker)} [[cluster.worker]] tables"
            )

    def worker_models(self) -> list[frozenset[str] | None]:
        """The models each Ray worker runs, one entry per worker; None: every model."""
        tables = [*self.worker, *[ClusterWorkerConfig()] * (self.workers - len(self.worker))]
        return [frozenset(table.models) or None for table in tables]


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
    upscalers: tuple[UpscalerSpec, ...] = ()
    describe: DescribeConfig = field(default_factory=DescribeConfig)
    translation: TranslationConfig = field(default_factory=TranslationConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    cluster: ClusterConfig = field(default_factory=ClusterConfig)

    @property
    def model_map(self) -> dict[str, ModelSpec]:
        """Models by name, in config order."""
        return {m.name: m for m in self.models}

    @property
    def lora_map(self) -> dict[str, LoraSpec]:
        """LoRAs by name, in config order."""
        return {lora.name: lora for lora in self.loras}

    @property
    def upscaler_map(self) -> dict[str, UpscalerSpec]:
        """Upscalers by name, in config order."""
        return {upscaler.name: upscaler for upscaler in self.upscalers}

    @property
    def default_upscaler(self) -> UpscalerSpec | None:
        """The upscaler Upscale buttons use: [generation] default_upscaler, else the first; None without any."""
        return self.upscaler_map.get(self.generation.default_upscaler) or next(iter(self.upscalers), None)


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
    for key in ("source", "config", "preview_vae", "safety_checker", "stage_2", "stage_3", "prior", "inpaint_decoder"):
        value = data.get(key)
        if isinstance(value, str) and value.startswith((".", "~")):
            data[key] = str((base / value).expanduser().resolve()) if value.startswith(".") else value
    if data.get("kind", "sd") not in MODEL_KINDS:
        raise ConfigError(f"[{where}] kind must be one of {', '.join(MODEL_KINDS)}, not {data['kind']!r}")
    defaults = KIND_DEFAULTS[data.get("kind", "sd")]
    for key in ("steps", "guidance", "width", "height"):
        data.setdefault(key, getattr(defaults, key))
    data["guidance"] = float(data["guidance"])
    if not isinstance(data.get("translate", False), bool):
        raise ConfigError(f"[{where}] translate must be true or false, not {data['translate']!r}")
    return ModelSpec(**data)


def _named_entry(data: dict[str, Any], spec: type, where: str) -> dict[str, Any]:
    """A copy of a `[[loras]]`/`[[upscalers]]` table, its name stripped; refuses unknown keys, no name or source."""
    unknown = set(data) - {f.name for f in fields(spec)}
    if unknown:
        raise ConfigError(f"{where} has unknown key(s): {', '.join(sorted(unknown))}")
    for key in ("name", "source"):
        if not isinstance(data.get(key), str) or not data[key].strip():
            raise ConfigError(f"{where} needs a `{key}`")
    return {**data, "name": data["name"].strip()}


def _lora(data: dict[str, Any], base: Path, index: int) -> LoraSpec:
    where = f"[[loras]] #{index + 1}"
    data = _named_entry(data, LoraSpec, where)
    name = data["name"]
    if NAME_FORBIDDEN & set(name) or name != " ".join(name.split()):
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


def _upscaler(data: dict[str, Any], base: Path, index: int) -> UpscalerSpec:
    where = f"[[upscalers]] #{index + 1}"
    data = _named_entry(data, UpscalerSpec, where)
    if data["source"].startswith((".", "~")):
        data["source"] = str((base / data["source"]).expanduser().resolve())
    if data.get("kind", "spandrel") not in UPSCALER_KINDS:
        raise ConfigError(f"{where} kind must be one of {', '.join(UPSCALER_KINDS)}, not {data['kind']!r}")
    if "guidance" in data and isinstance(data["guidance"], int):
        data["guidance"] = float(data["guidance"])
    try:
        spec = UpscalerSpec(**data)
    except TypeError as exc:
        raise ConfigError(f"{where} {exc}") from None
    for key, value, low, high in (
        ("scale", spec.scale, 1, 16),
        ("tile", spec.tile, 32, 4096),
        ("steps", spec.steps, 1, 1000),
        ("noise_level", spec.noise_level, 0, 350),  # the x4 upscaler's max_noise_level
        ("overlap", spec.overlap, 0, spec.tile_size // 2),  # more would make a pixel lie in three tiles
    ):
        if value is not None and not (type(value) is int and low <= value <= high):
            raise ConfigError(
                f"{where} ({spec.name}): {key} must be a whole number from {low} to {high}, not {value!r}"
            )
    return spec


def _upscalers(entries: list[dict[str, Any]], base: Path, default: str) -> tuple[UpscalerSpec, ...]:
    upscalers = tuple(_upscaler(entry, base, index) for index, entry in enumerate(entries))
    names = [upscaler.name for upscaler in upscalers]
    twice = sorted({name for name in names if names.count(name) > 1})
    if twice:
        raise ConfigError(f"[[upscalers]] names must be unique; given more than once: {', '.join(twice)}")
    if default and default not in names:
        raise ConfigError(
            f"[generation] default_upscaler is {default!r}, but [[upscalers]] has: {', '.join(names) or 'none'}"
        )
    return upscalers


def _translation(settings: TranslationConfig, base: Path) -> TranslationConfig:
    if not isinstance(settings.model, str):
        raise ConfigError(f"[translation] model must be a hub id or a directory in quotes, not {settings.model!r}")
    confidence = settings.min_confidence
    if not isinstance(confidence, float | int) or not 0 < confidence <= 1:
        raise ConfigError(f"[translation] min_confidence must be above 0 and at most 1, not {confidence!r}")
    try:
        languages = check_languages(settings.languages)
    except ValueError as exc:
        raise ConfigError(f"[translation] languages: {exc}") from None
    model = str((base / settings.model).resolve()) if settings.model.startswith(".") else settings.model
    try:
        if model:
            check_source(model)
    except ValueError as exc:
        raise ConfigError(f"[translation] model: {exc}") from None
    return TranslationConfig(model=model, min_confidence=float(confidence), languages=languages)


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
    sections["describe"] = DescribeConfig
    sections["translation"] = TranslationConfig
    sections["metrics"] = MetricsConfig
    unknown = set(raw) - set(sections) - {"models", "loras", "upscalers", "cluster"}
    if unknown:
        raise ConfigError(f"{path} has unknown section(s): {', '.join(sorted(unknown))}")
    parts = {name: _section(cls, raw.get(name, {}), name, base) for name, cls in sections.items()}
    models = tuple(_model(m, base, i) for i, m in enumerate(raw.get("models", []))) or DEFAULT_MODELS
    loras = tuple(_lora(lora, base, i) for i, lora in enumerate(raw.get("loras", [])))
    names = [lora.name for lora in loras]
    twice = sorted({name for name in names if names.count(name) > 1})
    if twice:
        raise ConfigError(f"[[loras]] names must be unique; given more than once: {', '.join(twice)}")
    caption_model = parts["describe"].model
    if not isinstance(caption_model, str):
        raise ConfigError(f"[describe] model must be a hub id or a directory in quotes, not {caption_model!r}")
    if caption_model.startswith("."):  # a local directory beside the config file
        parts["describe"] = DescribeConfig(model=str((base / caption_model).resolve()))
    upscalers = _upscalers(raw.get("upscalers", []), base, parts["generation"].default_upscaler)
    if clash := sorted({u.name for u in upscalers} & {m.name for m in models}):
        raise ConfigError(f"[[upscalers]] and [[models]] share the name(s) {', '.join(clash)}; rename one of each")
    parts["translation"] = _translation(parts["translation"], base)
    cluster = _cluster(raw.get("cluster", {}), models)
    config = Config(**parts, models=models, loras=loras, upscalers=upscalers, cluster=cluster)
    if config.generation.default_model not in config.model_map:
        raise ConfigError(
            f"[generation] default_model is {config.generation.default_model!r}, "
            f"but [[models]] only has: {', '.join(config.model_map)}"
        )
    if (threads := config.generation.cpu_threads) < 0:
        raise ConfigError(f"[generation] cpu_threads must be 0 (one per core but one) or more, not {threads}")
    if config.generation.max_loras < 0:
        raise ConfigError(f"[generation] max_loras must be 0 or more, not {config.generation.max_loras}")
    _check_training_limits(config.limits)
    _check_metrics(config.metrics)
    return config


def _cluster(data: dict[str, Any], models: tuple[ModelSpec, ...]) -> ClusterConfig:
    """[cluster] and its [[cluster.worker]] tables; each worker's models must be configured, and each model run."""
    data = dict(data)
    tables = data.pop("worker", [])
    if not isinstance(tables, list) or not all(isinstance(table, dict) for table in tables):
        raise ConfigError("[cluster] worker must be written as [[cluster.worker]] tables, one per worker")
    unknown = set(data) - {f.name for f in fields(ClusterConfig)}
    if unknown:
        raise ConfigError(f"[cluster] has unknown key(s): {', '.join(sorted(unknown))}")
    names = [spec.name for spec in models]
    workers = []
    for index, table in enumerate(tables, 1):
        unknown = set(table) - {f.name for f in fields(ClusterWorkerConfig)}
        if unknown:
            raise ConfigError(f"[[cluster.worker]] #{index} has unknown key(s): {', '.join(sorted(unknown))}")
        listed = table.get("models", [])
        if isinstance(listed, str) or not all(isinstance(name, str) for name in listed):
            raise ConfigError(f'[[cluster.worker]] #{index} models must be a list of model names, such as ["sd15"]')
        missing = [name for name in listed if name not in names]
        if missing:
            raise ConfigError(
                f"[[cluster.worker]] #{index} models: {', '.join(missing)} not under [[models]] "
                f"(there: {', '.join(names)})"
            )
        workers.append(ClusterWorkerConfig(models=tuple(listed)))
    data.setdefault("workers", max(1, len(workers)))
    cluster = ClusterConfig(**data, worker=tuple(workers))
    served = cluster.worker_models()
    if None not in served:
        unserved = [name for name in names if not any(name in listed for listed in served if listed)]
        if unserved:
            raise ConfigError(
                f"[[models]] {', '.join(unserved)}: no [[cluster.worker]] runs it; add it to a worker's models, or "
                "leave one worker's models empty (that worker runs every model)"
            )
    return cluster


def _check_metrics(metrics: MetricsConfig) -> None:
    if type(metrics.port) is not int or not 0 <= metrics.port <= 65535:
        raise ConfigError(f"[metrics] port must be a whole number from 1 to 65535 (0: off), not {metrics.port!r}")
    if not isinstance(metrics.host, str) or not metrics.host.strip():
        raise ConfigError(f'[metrics] host must be an address such as "127.0.0.1", not {metrics.host!r}')


def _check_training_limits(limits: Limits) -> None:
    # Outside these a server could set no value at all (e.g. max_train_photos 2: a training needs 3).
    for key, value, low, high in (
        ("max_train_steps", limits.max_train_steps, 1, MAX_STEPS),
        ("max_train_photos", limits.max_train_photos, MIN_PHOTOS, MAX_PHOTOS),
        ("daily_trainings_per_user", limits.daily_trainings_per_user, 0, 1_000_000),
    ):
        if not low <= value <= high:
            raise ConfigError(f"[limits] {key} must be from {low} to {high}, not {value}")
