"""Local commands that use the engine without Discord: `generate` and `history`."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from bot.config import Config
from bot.flags import PromptFlags
from generation.atomic import write_atomic
from generation.errors import InvalidRequest, ModelUnavailable, UserFacingError
from generation.families.dalle_layout import detect_kind as dalle_kind
from generation.loras import parse_weight
from generation.request import GenerationRequest
from generation.specs import KIND_DEFAULTS, LORA_KINDS, SINGLE_FILE_SUFFIXES, LoraSpec, ModelSpec
from storage.lock import DatabaseInUse, DatabaseLock

if TYPE_CHECKING:
    from generation.catalog import Catalog

LOCAL_USER = 0  # jobs from the command line belong to user 0


def model_for_cli(catalog: Catalog, name: str | None) -> ModelSpec:
    """A configured model by name (the default when None), or an ad-hoc one for a local directory or file."""
    if name is None or name in catalog.models:
        return catalog.spec(name)
    path = Path(name).expanduser()
    if path.is_dir() or (path.is_file() and path.suffix in SINGLE_FILE_SUFFIXES):
        kind = _detect_kind(path)
        defaults = KIND_DEFAULTS[kind]
        return ModelSpec(
            name=path.name,
            source=str(path.resolve()),
            kind=kind,
            steps=defaults.steps,
            guidance=defaults.guidance,
            width=defaults.width,
            height=defaults.height,
        )
    raise ModelUnavailable(
        f"Model '{name}' is neither a configured model ({', '.join(catalog.names)}) nor a local "
        "diffusers directory. Pass --model DIR with a directory written by `save_pretrained` "
        "(or `imagine-bot tiny-model DIR`), or add it under [[models]] in the config."
    )


def loras_for_cli(
    given: list[str], configured: dict[str, LoraSpec], model: ModelSpec
) -> tuple[list[tuple[str, float | None]], dict[str, LoraSpec]]:
    """`--lora NAME[:WEIGHT]` values as (name, weight), and the LoRAs known: the config's plus any given as a
    file or directory (named after it, taken to fit the model)."""
    chosen: list[tuple[str, float | None]] = []
    known = dict(configured)
    for value in given:
        name, _, tail = value.rpartition(":")
        if not name or (tail and not _is_number(tail)):  # no weight, or a colon inside a path
            name, tail = value, ""
        weight = parse_weight(tail, name) if tail else None
        path = Path(name).expanduser()
        if name not in configured and (path.is_file() or path.is_dir()):
            adhoc = LoraSpec(name=path.stem, source=str(path.resolve()), kind=model.kind)  # type: ignore[arg-type]
            if known.get(adhoc.name, adhoc) != adhoc:
                raise InvalidRequest(f"--lora {value}: a LoRA called '{adhoc.name}' is already configured.")
            known[adhoc.name] = adhoc
            name = adhoc.name
        chosen.append((name, weight))
    return chosen, known


async def trained_loras(config: Config) -> dict[str, LoraSpec]:
    """The LoRAs trained locally (`imagine-bot train`), by name, from the store; the config's win on a clash."""
    from storage.store import Store

    if not config.storage.path.exists():
        return {}
    async with await Store.open(config.storage.path, config.storage.images_dir) as store:
        records = await store.loras_for(LOCAL_USER, None)
        return {
            r.name: LoraSpec(
                name=r.name, source=str(store.lora_path(r).resolve()), kind=r.kind, triggers=(r.trigger_token,)
            )
            for r in records
            if r.name not in config.lora_map and r.kind in LORA_KINDS
        }


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _detect_kind(path: Path) -> str:
    index = path / "model_index.json"
    if not index.is_file() and path.is_dir() and (dalle := dalle_kind(path)):
        return dalle  # min-dalle's weight files (generation.families.dalle_layout)
    name = json.loads(index.read_text()).get("_class_name", "") if index.is_file() else ""
    for prefix, kind in (
        ("IF", "if"),
        ("Flux", "flux"),
        ("StableDiffusion3", "sd3"),
        ("KandinskyV22", "kandinsky"),
        ("UnCLIPPipeline", "karlo"),
    ):
        if name.startswith(prefix):
            return kind
    return "sdxl" if "XL" in name else "sd"


def free_path(directory: Path, stem: str) -> Path:
    """`directory/stem.png`, or `stem-2.png`, `stem-3.png`… when taken: output never overwrites a file."""
    candidate, n = directory / f"{stem}.png", 1
    while candidate.exists():
        n += 1
        candidate = directory / f"{stem}-{n}.png"
    return candidate


async def _generate(
    args: argparse.Namespace, config: Config, spec: ModelSpec, request: GenerationRequest, catalog: Catalog
) -> int:
    from tqdm import tqdm

    from generation.engine import Engine
    from jobs.events import EventBus, JobDone, JobFailed, JobProgress, JobQueued
    from jobs.limits import Limits
    from jobs.queue import JobQueue, Requester
    from jobs.worker import Worker
    from storage.store import Store

    engine = Engine(
        {spec.name: spec},
        device=config.generation.device,
        dtype=config.generation.dtype,
        preview_every=0,
        loras=catalog.loras,
        translator=config.translation.translator(config.generation.device, config.generation.dtype),
    )
    engine.load(spec.name)  # before the progress bar, so loading does not look like a stalled step
    async with await Store.open(config.storage.path, config.storage.images_dir) as store:
        bus = EventBus()
        # The operator's own command: no server limits, and no other jobs in this queue.
        queue = JobQueue(store, bus, Limits.unlimited(), catalog=catalog)
        worker = Worker(engine, queue, max_batch=config.generation.max_batch)
        with bus.subscribe() as events:
            ticket = await queue.submit(request, Requester(user_id=LOCAL_USER), origin={"cli": True})
            worker.start()
            try:
                with tqdm(total=request.steps, desc=f"job {ticket.job.id}", unit="step", file=sys.stderr) as bar:
                    async for event in events:
                        if event.job_id != ticket.job.id or isinstance(event, JobQueued):
                            continue
                        if isinstance(event, JobProgress):
                            bar.total, bar.n = event.total, event.step
                            bar.refresh()
                        elif isinstance(event, JobFailed):
                            print(f"imagine-bot: {event.error}", file=sys.stderr)
                            return 1
                        elif isinstance(event, JobDone):
                            break
            finally:
                await worker.stop()
        for record in event.images:
            path = free_path(args.out, f"{ticket.job.id}-{record.seed}")
            write_atomic(path, store.image_path(record).read_bytes())
            print(path)
        await store.mark_delivered(ticket.job.id, f"cli:{args.out}")
    return 0


def generate(args: argparse.Namespace, config: Config) -> int:
    """Generate images for one prompt through the store, queue and worker; print the paths written."""
    from generation.catalog import Catalog
    from generation.options import make_request

    try:
        spec = model_for_cli(Catalog(config.models, config.generation.default_model), args.model)
        given, known = loras_for_cli(args.lora, config.lora_map | asyncio.run(trained_loras(config)), spec)
        asked = PromptFlags(
            prompt=args.prompt,
            negative=args.negative,
            strength=args.strength,
            seed=args.seed,
            steps=args.steps,
            guidance=args.guidance,
            size=args.size,
            model=args.model,
            sampler=args.sampler,
            count=args.count,
            loras=tuple(given),
        )
        image, mask = (path.read_bytes() if path else None for path in (args.image, args.mask))
        request = make_request(spec, asked.options(image, mask), loras=known)
        catalog = Catalog([spec], spec.name, loras=known, max_loras=config.generation.max_loras)
        catalog.check(request)  # before the model loads: an unknown LoRA is refused at once
        # Locked as the bot is: a bot started meanwhile would take this job for a crash's leftover and run it too.
        with DatabaseLock.acquire(config.storage.path, "generate"):
            return asyncio.run(_generate(args, config, spec, request, catalog))
    except DatabaseInUse as exc:
        print(f"imagine-bot: {exc.message('[storage] path')}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"imagine-bot: cannot read {exc.filename}: {exc.strerror}", file=sys.stderr)
        return 2
    except UserFacingError as exc:
        print(f"imagine-bot: {exc.user_message}", file=sys.stderr)
        return 1


def history(args: argparse.Namespace, config: Config) -> int:
    """List recent jobs from the store, newest first."""
    return asyncio.run(_history(args, config))


async def _history(args: argparse.Namespace, config: Config) -> int:
    from storage.store import Store

    if not config.storage.path.exists():
        print(f"imagine-bot: no history yet ({config.storage.path} does not exist).", file=sys.stderr)
        return 0
    async with await Store.open(config.storage.path, config.storage.images_dir) as store:
        if args.search:
            jobs = await store.search_jobs(args.search, user_id=args.user, limit=args.limit)
        elif args.user is not None:
            jobs = await store.jobs_by_user(args.user, limit=args.limit)
        else:
            jobs = await store.recent_jobs(limit=args.limit)
        for job in jobs:
            when = job.created_at.strftime("%Y-%m-%d %H:%M")
            where = f"guild {job.guild_id}" if job.guild_id else "DM/local"
            params = job.params
            print(
                f"#{job.id:<6} {when}  {job.status.value:<9} user {job.user_id} ({where})  {job.model} "
                f"{params['width']}x{params['height']} seed {params['seed']}  {job.prompt[:60]!r}"
            )
            if job.translated_prompt is not None:
                print(f"         translated from {job.prompt_language}: {job.translated_prompt[:60]!r}")
            if job.error:
                print(f"         error: {job.error}")
    return 0
