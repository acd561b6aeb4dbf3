"""The composition root of the bot: config → catalog → store → engine → queue → worker → Discord client.

Everything is built here, in that order, and nothing is assigned after construction. A problem the bot
cannot start without ends as a StartupError whose message is one line saying what failed and where.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sqlite3
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import aiohttp
import discord
import yarl

from bot.app import ImagineBot, build_bot
from bot.config import Config, DiscordConfig, MetricsConfig, StorageConfig
from bot.metrics_server import MetricsServer
from bot.services import Services
from generation.captioning import Captioner
from generation.catalog import Catalog
from generation.device import use_pipeline_threads
from generation.engine import Engine
from generation.errors import ModelUnavailable, UserFacingError
from generation.families.loading import check_source
from jobs.cluster import ClusterUnavailable, RemoteEngine, capacity_problem, connect, disconnect
from jobs.cluster_actor import ActorSettings
from jobs.events import EventBus
from jobs.queue import JobQueue
from jobs.training import register_trained
from jobs.worker import Worker
from storage.lock import DatabaseInUse, DatabaseLock
from storage.store import Store

log = logging.getLogger(__name__)


class StartupError(Exception):
    """Something the bot cannot start without; the message is one line saying what failed and where."""


def _one_line(error: BaseException) -> str:
    text = " ".join(str(error).split())
    return text or type(error).__name__


def point_discord_at(settings: DiscordConfig) -> None:
    """Send REST and gateway traffic to a proxy or a local server when configured."""
    if settings.api_base:
        discord.http.Route.BASE = settings.api_base.rstrip("/")
    if settings.gateway_url:
        discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(settings.gateway_url)


def build_catalog(config: Config) -> Catalog:
    """The configured models, their local files checked: a missing default stops the start, others are hidden."""
    catalog = Catalog(
        config.models,
        config.generation.default_model,
        loras=config.loras,
        max_loras=config.generation.max_loras,
        upscalers=config.upscalers,
        default_upscaler=config.generation.default_upscaler or None,
    )
    for lora in config.loras:
        if lora.source.startswith(("/", ".", "~")) and not Path(lora.source).expanduser().exists():
            log.warning("LoRA %s: %s does not exist; requests using it will fail until it does", lora.name, lora.source)
    missing: list[str] = []
    for spec in config.models:
        try:
            check_source(spec)
        except ModelUnavailable as exc:
            if spec.name == catalog.default:
                raise StartupError(
                    f"{exc.user_message} It is the default model ([generation] default_model), so the bot cannot start."
                ) from None
            log.warning("%s Until then it is hidden from /imagine and its requests are refused.", exc.user_message)
            missing.append(spec.name)
    available = ", ".join(spec.name for spec in config.models if spec.name not in missing)
    for name in missing:
        catalog.mark_broken(
            name,
            f"its files are missing on the bot's machine (its operator has been told). Choose one of: {available}.",
        )
    return catalog


async def open_store(settings: StorageConfig) -> Store:
    """The store at `[storage] path`, or a StartupError naming the file and what is wrong with it."""
    try:
        return await Store.open(settings.path, settings.images_dir)
    except sqlite3.DatabaseError as exc:
        if getattr(exc, "sqlite_errorname", "") == "SQLITE_NOTADB":
            raise StartupError(
                f"{settings.path} ([storage] path) is not a SQLite database; it was left as it is. Point `path` at "
                "the bot's database, or at a file that does not exist yet to start a new one."
            ) from None
        raise StartupError(f"cannot open the database {settings.path} ([storage] path): {_one_line(exc)}") from None
    except OSError as exc:  # e.g. a folder that cannot be created
        raise StartupError(f"cannot open the database {settings.path} ([storage] path): {_one_line(exc)}") from None


def lock_database(settings: StorageConfig, command: str = "run") -> DatabaseLock:
    """The database's lock for this process, or a StartupError naming the process that holds it.

    Taken before the store opens: a second bot restoring the queue would take the first one's running
    jobs for a crash's leftovers and generate them again."""
    try:
        return DatabaseLock.acquire(settings.path, command)
    except DatabaseInUse as exc:
        raise StartupError(exc.message("[storage] path")) from None
    except OSError as exc:
        raise StartupError(f"cannot lock the database {settings.path} ([storage] path): {_one_line(exc)}") from None


async def serve_metrics(settings: MetricsConfig, bot: ImagineBot) -> MetricsServer | None:
    """The metrics endpoint when `[metrics] port` is set; a StartupError when that port cannot be had."""
    if not settings.port:
        return None
    server = MetricsServer(settings, bot)
    try:
        await server.start()
    except OSError as exc:  # in use, or an address this machine does not have
        raise StartupError(
            f"cannot serve metrics on {settings.host}:{settings.port} ([metrics] host and port): {_one_line(exc)}"
        ) from None
    return server


async def load_default_model(worker: Worker, name: str) -> None:
    """Load the default model on the GPU thread before any job runs; a StartupError if it cannot be loaded."""
    try:
        await worker.load(name)
    except UserFacingError as exc:
        raise StartupError(
            f"{exc.user_message} It is the default model ([generation] default_model), so the bot cannot start."
        ) from None
    except Exception as exc:
        log.debug("loading the default model %s failed", name, exc_info=True)  # hidden by default: one line says it
        raise StartupError(
            f"could not load the default model '{name}' ([generation] default_model): "
            f"{type(exc).__name__}: {_one_line(exc)}"
        ) from None


@contextlib.asynccontextmanager
async def gpu_engines(
    config: Config, catalog: Catalog, engine: Engine | None
) -> AsyncIterator[Sequence[tuple[Engine | RemoteEngine, frozenset[str] | None]]]:
    """The engine of each GPU worker, with the models it runs (None: every one): the local engine, or one Ray
    actor per `[cluster] workers` (Ray joined, or started here, for as long as the bot runs)."""
    if config.cluster.backend == "local":
        assert engine is not None
        yield [(engine, None)]
        return
    cluster, generation = config.cluster, config.generation
    try:
        started = connect(cluster.address)
        fatal, warning = capacity_problem(cluster.workers, cluster.num_gpus, cluster.num_cpus)
    except ClusterUnavailable as exc:
        raise StartupError(str(exc)) from None
    if fatal:
        if started:
            disconnect()
        raise StartupError(fatal)
    if warning:
        log.warning("%s", warning)
    models = config.model_map | catalog.upscaler_models  # upscale jobs run on an upscaler's name, on any worker
    engines: list[tuple[Engine | RemoteEngine, frozenset[str] | None]] = []
    try:
        for number, serves in enumerate(cluster.worker_models(), 1):
            settings = ActorSettings(
                models,
                device=generation.device,
                dtype=generation.dtype,
                preview_every=generation.preview_every,
                loras=config.lora_map,
                translator=config.translation.translator(generation.device, generation.dtype),
            )
            remote = RemoteEngine(
                settings,
                name=f"gpu-{number}",
                num_gpus=cluster.num_gpus,
                num_cpus=cluster.num_cpus,
                loras=catalog.all_loras,
            )
            engines.append((remote, serves and serves | frozenset(catalog.upscaler_models)))
        yield engines
    finally:
        for remote, _ in engines:
            assert isinstance(remote, RemoteEngine)
            remote.close()
        if started:
            disconnect()


@contextlib.asynccontextmanager
async def bot_parts(config: Config, engine: Engine | None = None) -> AsyncIterator[tuple[ImagineBot, Worker]]:
    """Catalog, store, queue (restored), default model, running GPU worker and an unstarted client; torn down
    in order. Raises StartupError when one of them cannot be had."""
    generation = config.generation
    catalog = build_catalog(config)
    translator = config.translation.translator(generation.device, generation.dtype)
    if config.cluster.backend == "ray":
        engine = None  # each Ray worker builds its own from the config (gpu_engines)
    elif engine is None:
        engine = Engine(
            config.model_map | catalog.upscaler_models,  # upscale jobs run on an upscaler's name
            device=generation.device,
            dtype=generation.dtype,
            preview_every=generation.preview_every,
            loras=catalog.all_loras,  # live: LoRAs members train are added as they finish
            translator=translator,
        )
    else:
        engine.loras = catalog.all_loras  # an engine handed in (tests reuse one) serves this catalog's LoRAs
        engine.models.update(catalog.upscaler_models)
        engine.translator = translator
    async with (
        lock_database(config.storage),
        await open_store(config.storage) as store,
        gpu_engines(config, catalog, engine) as engines,
    ):
        local = config.cluster.backend == "local"  # Ray workers cannot train: /train is refused
        queue = JobQueue(
            store,
            EventBus(),
            config.limits,
            catalog=catalog,
            training_chunk=generation.train_chunk_steps,
            trainings=local,
            workers=len(engines),
        )
        await register_trained(catalog, store)
        requeued, failed = await queue.restore(generation.max_attempts)
        log.info(
            "queue restored: %d waiting (%d re-queued after a crash, %d given up)",
            len(queue),
            len(requeued),
            len(failed),
        )
        workers = [
            Worker(
                slot,
                queue,
                max_batch=generation.max_batch,
                serves=serves,
                max_attempts=generation.max_attempts,
                name="gpu-worker" if local else f"gpu-{number}",
            )
            for number, (slot, serves) in enumerate(engines, 1)
        ]
        worker = workers[0]  # the local GPU's, or Ray worker 1: /describe captions on its thread
        # Before any job runs; a worker without the default model loads its first job's model when it comes.
        default = generation.default_model
        await asyncio.gather(
            *(load_default_model(w, default) for w in workers if w.serves is None or default in w.serves)
        )
        # /describe's captioning model, loaded on the GPU thread the first time someone uses it.
        captioner = (
            Captioner(config.describe.model, generation.device, generation.dtype) if config.describe.model else None
        )
        services = Services(
            config,
            store,
            queue,
            catalog,
            has_safety_checker=worker.engine.has_safety_checker,
            run_on_gpu=worker.call_on_gpu,
            captioner=captioner,
            workers=tuple(workers),
        )
        bot = build_bot(services)  # [discord] shards: one gateway connection, or AutoShardedBot's
        metrics = await serve_metrics(config.metrics, bot)  # None unless [metrics] port is set
        for each in workers:
            each.start()
        try:
            yield bot, worker
        finally:
            if metrics is not None:
                await metrics.stop()
            await bot.close()
            await asyncio.gather(*(each.stop() for each in workers))


async def run_bot(config: Config, token: str) -> None:
    """Run until the connection closes or the process is told to stop; the GPU loop stops gracefully."""
    point_discord_at(config.discord)
    # Before the GPU thread's first torch op (each thread takes the count then); not in bot_parts, whose
    # callers include tests that share their process.
    if (threads := use_pipeline_threads(config.generation.device, config.generation.cpu_threads)) is not None:
        log.info("the pipeline uses %d CPU thread(s) ([generation] cpu_threads)", threads)
    async with bot_parts(config) as (bot, _worker):
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, lambda: asyncio.ensure_future(bot.close()))
        try:
            await bot.login(token)
        except aiohttp.ClientConnectionError as exc:  # a name that does not resolve, a closed port, TLS
            where = "[discord] api_base" if config.discord.api_base else "this machine's network"
            raise StartupError(
                f"cannot reach Discord at {discord.http.Route.BASE} (check {where}): {_one_line(exc)}"
            ) from None
        await bot.connect()
