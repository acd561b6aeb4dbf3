"""Upscalers as a family: an upscale job equals the upscaler called directly, through the engine and the queue."""

from __future__ import annotations

import asyncio
import io
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from generation.catalog import Catalog
from generation.engine import Engine
from generation.errors import Cancelled, InvalidRequest
from generation.families.upscaling import upscale_request
from generation.metadata import read_parameters, upscale_parameters
from generation.request import GenerationRequest, Mode
from generation.results import StepProgress
from generation.specs import ModelSpec, UpscalerSpec
from generation.tiling import plan
from generation.tiny.upscaler import write_tiny_upscaler
from generation.upscalers import load_upscaler, upscale_cost
from jobs.events import EventBus, JobDone, JobProgress
from jobs.limits import LimitExceeded, Limits
from jobs.queue import JobQueue, Requester
from jobs.worker import Worker
from storage.store import Store

OWN = "a lighthouse\nSteps: 4, Sampler: Euler, CFG scale: 7, Seed: 5, Size: 64x48, Model: tiny"


@pytest.fixture(scope="module")
def network(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_upscaler(tmp_path_factory.mktemp("upscalers") / "x4.safetensors")


def picture(width: int, height: int, seed: int = 0) -> Image.Image:
    noise = np.random.default_rng(seed).integers(0, 256, (height // 4, width // 4, 3), dtype=np.uint8)
    return Image.fromarray(noise).resize((width, height), Image.Resampling.BICUBIC)


def spec_of(network: Path, **settings: object) -> UpscalerSpec:
    return UpscalerSpec(name="x4", source=str(network), **settings)


def engine_for(*upscalers: UpscalerSpec) -> Engine:
    return Engine({u.name: u.as_model() for u in upscalers}, device="cpu", preview_every=0)


def direct(spec: UpscalerSpec, image: Image.Image, scale: int | None = None) -> np.ndarray:
    upscaler = load_upscaler(spec, torch.device("cpu"), torch.float32)
    return np.asarray(upscaler.upscale(image, scale=scale))


def request_for(spec: UpscalerSpec, image: Image.Image, scale: int = 4, parameters: str | None = OWN):
    return upscale_request(spec, image, scale=scale, prompt="a lighthouse", seed=5, parameters=parameters)


@pytest.mark.parametrize(("size", "scale"), [((64, 48), 4), ((50, 37), 4), ((64, 48), 2)])
def test_an_upscale_equals_the_upscaler_called_directly(network: Path, size: tuple[int, int], scale: int) -> None:
    spec = spec_of(network, tile=32, overlap=8)  # several tiles, and a picture that is no multiple of 8
    image = picture(*size)
    request = request_for(spec, image, scale)
    assert (request.width % 8, request.height % 8) == (0, 0) and request.mode is Mode.IMG2IMG
    (made,) = engine_for(spec).generate([request])[0]
    assert made.image.size == (size[0] * scale, size[1] * scale)
    stored = Image.open(io.BytesIO(made.png()))  # after the PNG round trip, as the store keeps it
    assert np.array_equal(np.asarray(stored), direct(spec, image, scale))
    assert read_parameters(made.png()) == upscale_parameters(OWN, "x4", scale, stored.size)


def test_progress_counts_tiles_and_a_cancel_stops_between_them(network: Path) -> None:
    spec = spec_of(network, tile=32, overlap=8)
    image = picture(64, 48)
    tiles = len(plan(64, 48, 32, 8))
    assert tiles == 6
    engine = engine_for(spec)
    seen: list[StepProgress] = []
    engine.generate([request_for(spec, image)], on_progress=seen.append)
    assert [(p.step, p.total) for p in seen] == [(n, tiles) for n in range(1, tiles + 1)]

    seen.clear()
    with pytest.raises(Cancelled):
        engine.generate([request_for(spec, image)], on_progress=seen.append, should_cancel=lambda: len(seen) >= 2)
    assert [p.step for p in seen] == [1, 2]  # the third tile never ran


def test_the_catalog_hides_upscalers_from_imagine_and_costs_by_output_pixels(network: Path) -> None:
    spec = spec_of(network)
    catalog = Catalog([ModelSpec(name="sd", source="sd")], upscalers=[spec])
    assert catalog.names == ["sd"] and catalog.upscaler().name == "x4"
    with pytest.raises(InvalidRequest, match="'x4' is an upscaler, not a model that draws: use it with /upscale"):
        catalog.spec("x4")
    drawing = GenerationRequest(prompt="a cat", model="x4", width=64, height=64, steps=1, guidance=9.0, seed=1)
    with pytest.raises(InvalidRequest, match="'x4' is an upscaler: it enlarges pictures"):
        catalog.check(drawing)
    request = request_for(spec, picture(64, 48), scale=2)  # 2x of a 4x network: its full 4x work, resized down
    catalog.check(request)
    assert catalog.cost(request) == upscale_cost(spec, 64, 48, 4) == 64 * 48 * 16
    assert catalog.family("x4").uses_negative(request) is False  # the server's negative prompt is not added
    with pytest.raises(InvalidRequest, match="enlarges up to 4x, so a scale of 8 is not possible: pick 1 to 4"):
        catalog.check(request.with_changes(upscale=request.upscale.__class__(8, 64, 48)))
    with pytest.raises(InvalidRequest, match="no upscaler called 'nope'. Choose one of: x4"):
        catalog.upscaler("nope")
    with pytest.raises(InvalidRequest, match="No upscaler is set up"):
        Catalog([ModelSpec(name="sd", source="sd")]).upscaler()
    with pytest.raises(ValueError, match="both use the name"):
        Catalog([ModelSpec(name="x4", source="sd")], upscalers=[spec])


def test_an_upscale_survives_the_stored_params(network: Path) -> None:
    request = request_for(spec_of(network), picture(50, 37), 3)
    again = GenerationRequest.from_params(request.params(), init_image=request.init_image)
    assert again == request and again.upscale.width == 50
    with pytest.raises(InvalidRequest, match="An upscale takes one picture"):
        request.with_changes(mode=Mode.TXT2IMG, init_image=None)


async def test_an_upscale_job_through_the_queue_is_the_direct_upscale(network: Path, tmp_path: Path) -> None:
    spec = spec_of(network, tile=32, overlap=8)
    catalog = Catalog([], upscalers=[spec])
    image = picture(64, 48)
    async with await Store.open(tmp_path / "db.sqlite3", tmp_path / "images") as store:
        bus = EventBus()
        queue = JobQueue(store, bus, Limits(max_upscaled_pixels=256 * 192), catalog=catalog)
        tight = Limits(max_upscaled_pixels=256 * 192 - 1)
        with pytest.raises(LimitExceeded, match=r"would make 256x192 \(49,152 pixels\), over the limit of 49,151"):
            await queue.submit(request_for(spec, image), Requester(user_id=1), limits=tight)
        assert await store.recent_jobs() == []  # refused before anything was stored
        worker = Worker(engine_for(spec), queue)
        events = bus.subscribe()
        worker.start()
        try:
            ticket = await queue.submit(request_for(spec, image), Requester(user_id=1))
            progress = []
            async with asyncio.timeout(60):
                while not isinstance(event := await events.get(), JobDone):
                    if isinstance(event, JobProgress):
                        progress.append((event.step, event.total))
            (record,) = event.images
            assert event.job_id == ticket.job.id and progress == [(n, 6) for n in range(1, 7)]
            stored = Image.open(store.image_path(record))
            assert stored.size == (256, 192) and (record.width, record.height) == (256, 192)
            assert np.array_equal(np.asarray(stored.convert("RGB")), direct(spec, image, 4))
        finally:
            await worker.stop(timeout=5)


@pytest.fixture(scope="module")
def tiny_x4(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_upscaler(tmp_path_factory.mktemp("models") / "sd-x4", "sd-x4")


def test_sd_x4_reads_the_pictures_own_prompts_and_the_seed(tiny_x4: Path) -> None:
    spec = UpscalerSpec(name="sd-x4", source=str(tiny_x4), kind="sd-x4", steps=2, tile=32, overlap=16)
    image = picture(48, 32)
    engine = engine_for(spec)
    upscaler = load_upscaler(spec, torch.device("cpu"), torch.float32)

    def ours(parameters: str | None, title: str = "a lighthouse") -> np.ndarray:
        request = upscale_request(spec, image, scale=4, prompt=title, seed=5, parameters=parameters)
        return np.asarray(engine.generate([request])[0][0].image)

    own = "a red fox\nNegative prompt: fog\nSteps: 4, Seed: 5, Size: 48x32"
    steered = np.asarray(upscaler.upscale(image, prompt="a red fox", negative_prompt="fog", seed=5))
    assert np.array_equal(ours(own), steered)  # as `imagine-bot upscale` reads them
    # A picture without parameters (an upload) has no prompt: the job's title is not read as one.
    assert np.array_equal(ours(None, title="photo.png"), np.asarray(upscaler.upscale(image, seed=5)))
    assert not np.array_equal(ours(None), steered)
    assert Catalog([], upscalers=[spec]).family("sd-x4").uses_negative(request_for(spec, image)) is False


def test_an_upscaler_whose_file_is_gone_is_refused_but_its_queued_jobs_still_cost(tmp_path: Path) -> None:
    spec = UpscalerSpec(name="gone", source=str(tmp_path / "gone.pth"))
    catalog = Catalog([], upscalers=[spec])
    request = request_for(spec, picture(64, 48))
    assert catalog.cost(request) == upscale_cost(spec, 64, 48, 4)  # a restart restoring it must not stop
    with pytest.raises(InvalidRequest, match="'gone' cannot be used right now: its files are missing or damaged"):
        catalog.check(request)
