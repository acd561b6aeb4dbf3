"""Sections of bench/gpu.py that compare raw diffusers with our queue+worker, and their shared helpers.

params      full-size parameter and FLOP counts (meta device; runs anywhere)
sd15        raw diffusers batches (1), single-job overhead, queue+worker under N users (2), TFLOP/s (5, 6)
sdxl        SDXL batches, saturated queue+worker, Poisson arrivals (7)
The numbers are the items of issue 7; bench/variants.py holds items 3 and 4.
"""

from __future__ import annotations

import asyncio
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from bench.fullsize import (
    FULL,
    meta_parameter_counts,
    sd15_unet,
    sdxl_unet,
    unet_flops_per_image_step,
)
from bench.measure import (
    NEGATIVE,
    PROMPTS,
    PeakMemory,
    Row,
    median,
    peak_memory,
    percentile,
    pixel_diff,
    raw_arguments,
    timed,
)
from bench.serving import LoadResult, RequestFactory, ServingRig
from generation.engine import Engine
from generation.families.stable_diffusion import StableDiffusion
from generation.request import GenerationRequest
from generation.specs import ModelSpec

if TYPE_CHECKING:
    from bench.gpu import Bench

PREVIEW_EVERY = 5  # the production default (config.example.toml)
# Sizes of the real checkpoints, to check the random-weight builds against (DESIGN.md; SDXL base's configs).
EXPECTED_PARAMS = {
    "SD1.5 unet": 859.5e6,
    "SD1.5 vae": 83.7e6,
    "SD1.5 text_encoder (CLIP-L)": 123.1e6,
    "SDXL unet": 2567.5e6,
    "SDXL text_encoder_2 (bigG)": 694.7e6,
}


@dataclass
class Timing:
    """A pipeline configuration timed: median seconds per call, the first (warm-up) call, memory, images."""

    seconds: float
    first: float
    memory: PeakMemory
    images: list[Any]
    calls: int


def flop_per_image_step(bench: Bench, kind: str) -> float:
    """UNet FLOPs per image-step with CFG: DESIGN.md's figure for full SD1.5 at 512², else counted."""
    w = bench.workload
    if kind == "sd15" and w.arch is FULL and w.sd_size == 512:
        return bench.args.sd15_tflop * 1e12
    side = (w.sd_size if kind == "sd15" else w.sdxl_size) // 8
    key = f"{kind}@{side}"
    if key not in bench.flops:
        bench.flops[key] = unet_flops_per_image_step(bench.pipeline(kind).unet, side)
    return bench.flops[key]


def measure_raw(bench: Bench, pipe: Any, batch: int, size: int, steps: int, repeats: int) -> Timing:
    """One warm-up call, then `repeats` timed plain diffusers calls with the same seeds."""

    def call() -> Any:
        return pipe(**raw_arguments(batch, size, steps, bench.workload.guidance, bench.args.seed))

    with peak_memory(bench.device) as memory:
        first, _ = timed(bench.device, call)
        times, output = [], None
        for _ in range(repeats):
            seconds, output = timed(bench.device, call)
            times.append(seconds)
    return Timing(median(times), first, memory, list(output.images), repeats)


def make_engine(bench: Bench, name: str, kind: str, pipe: Any, size: int, steps: int) -> Engine:
    """Our Engine, serving the prebuilt pipeline adopted as its resident model (no loading)."""
    spec = ModelSpec(
        name=name,
        source="random weights",
        kind=kind,
        steps=steps,
        guidance=bench.workload.guidance,
        width=size,
        height=size,
    )
    engine = Engine({name: spec}, device=str(bench.device), dtype=bench.dtype_name, preview_every=PREVIEW_EVERY)
    engine.adopt(StableDiffusion(spec, engine.device, engine.dtype, pipe=pipe))
    return engine


def request_factory(bench: Bench, model: str, size: int, steps: int) -> RequestFactory:
    """Requests as users send them: one image each, a prompt per user, the given seed."""

    def make(user: int, seed: int) -> GenerationRequest:
        return GenerationRequest(
            prompt=PROMPTS[user % len(PROMPTS)],
            negative_prompt=NEGATIVE,
            model=model,
            width=size,
            height=size,
            steps=steps,
            guidance=bench.workload.guidance,
            seed=seed,
        )

    return make


def latency_text(result: LoadResult) -> str:
    """p50/p99 submit→JobDone latency cell."""
    if not result.latencies:
        return "no job finished"
    p50, p99 = percentile(result.latencies, 50), percentile(result.latencies, 99)
    return f"p50 {p50:.2f} s · p99 {p99:.2f} s (submit→JobDone, n={len(result.latencies)})"


def load_check(result: LoadResult) -> str:
    """Batching and failures of a load run."""
    text = f"{result.mean_batch:.1f} images/call"
    if result.failures:
        text += f"; {len(result.failures)} FAILED: {result.failures[0][:80]}"
    return text


# --- params --------------------------------------------------------------------------------------


def params(bench: Bench) -> None:
    """Full-size parameter counts (meta device) against the published sizes, FLOPs and the compute floor."""
    for name, count in meta_parameter_counts(FULL).items():
        expected = EXPECTED_PARAMS.get(name)
        if expected is None:
            check = f"{count / 1e6:.2f}M params (diffusers' default config is TAESD's architecture)"
        else:
            verdict = "match" if abs(count - expected) / expected < 0.001 else "MISMATCH"
            check = f"{count / 1e6:.2f}M params (expected {expected / 1e6:.1f}M): {verdict}"
        bench.add(Row("params", f"{name}, full size", check=check))
    with torch.device("meta"):
        unets = {"SD1.5 512²": (sd15_unet(FULL), 64), "SDXL 1024²": (sdxl_unet(FULL), 128)}
    for label, (unet, side) in unets.items():
        counted = unet_flops_per_image_step(unet, side)
        assumed = bench.args.sd15_tflop * 1e12 if label.startswith("SD1.5") else counted
        floor = bench.args.peak_tflops * 1e12 / (assumed * 20)
        bench.add(
            Row(
                "params",
                f"{label} UNet, one image-step with CFG (2 rows)",
                throughput=f"floor {floor:.1f} img/s at 20 steps, {bench.args.peak_tflops:g} TFLOP/s, UNet only",
                compute=f"{counted / 1e12:.3f} TFLOP counted (matmul/conv/attention only)",
                check=f"used below: {assumed / 1e12:.3f} TFLOP" + (" (--sd15-tflop)" if assumed != counted else ""),
            )
        )


# --- sd15 ----------------------------------------------------------------------------------------


def sd15(bench: Bench) -> None:
    """Raw diffusers batches, single-job overhead of queue+worker, and queue+worker under concurrent users."""
    w = bench.workload
    pipe = bench.pipeline("sd15")
    flop = flop_per_image_step(bench, "sd15")
    conditions = f"{w.sd_size}², {w.sd_steps} steps, CFG {w.guidance:g}"
    raw_rate: dict[int, float] = {}
    for batch in w.sd_batches:
        timing = measure_raw(bench, pipe, batch, w.sd_size, w.sd_steps, w.repeats)
        raw_rate[batch] = batch / timing.seconds
        bench.add(
            Row(
                "sd15 raw",
                f"diffusers, batch {batch}, {conditions}",
                throughput=f"{raw_rate[batch]:.2f} img/s",
                latency=f"{timing.seconds:.3f} s/call (median of {timing.calls})",
                compute=bench.compute(raw_rate[batch], flop, w.sd_steps),
                memory=str(timing.memory),
            )
        )
    engine = make_engine(bench, "sd15-random", "sd", pipe, w.sd_size, w.sd_steps)
    make = request_factory(bench, "sd15-random", w.sd_size, w.sd_steps)
    asyncio.run(single_job_overhead(bench, engine, pipe, make, conditions))
    for max_batch in w.max_batches:
        result, memory, in_flight = asyncio.run(closed_loop(bench, engine, make, max_batch, w.users))
        rate = result.images_per_second
        versus = f"; {rate / raw_rate[max_batch]:.2f}× raw batch {max_batch}" if max_batch in raw_rate else ""
        bench.add(
            Row(
                "sd15 serving",
                f"queue+worker, {w.users} users × {in_flight} in flight, max_batch {max_batch}, {conditions}",
                throughput=f"{rate:.2f} img/s ({result.images} images / {result.wall:.1f} s)",
                latency=latency_text(result),
                compute=bench.compute(rate, flop, w.sd_steps),
                memory=str(memory),
                check=load_check(result) + versus,
                target=bench.target("≥ 10 img/s under 8-user load", rate >= 10.0),
            )
        )


async def single_job_overhead(bench: Bench, engine: Engine, pipe: Any, make: RequestFactory, conditions: str) -> None:
    """One request: raw pipeline vs queue+worker (previews on and off), interleaved; medians and ratios."""
    request = make(0, bench.args.seed)

    last: dict[str, Any] = {}

    def raw() -> float:
        arguments = raw_arguments(1, request.width, request.steps, request.guidance, request.seed)
        arguments |= {"prompt": request.prompt, "negative_prompt": request.negative_prompt}
        seconds, output = timed(bench.device, lambda: pipe(**arguments))
        last["raw"] = output.images
        return seconds

    async def queued(rig: ServingRig, preview_every: int) -> float:
        engine.preview_every = preview_every
        finished = await rig.run_job(request, user=1)
        if finished.error is not None:
            raise RuntimeError(finished.error)
        last["job"] = finished.job_id
        return finished.latency

    previews = {"raw diffusers": None, f"queue+worker, previews every {PREVIEW_EVERY} steps (default)": PREVIEW_EVERY}
    previews["queue+worker, previews off"] = 0
    names = list(previews)
    times: dict[str, list[float]] = {name: [] for name in names}
    async with ServingRig(engine, max_batch=1) as rig:
        for round_ in range(bench.workload.overhead_rounds + 1):  # round 0 warms every path up
            shift = round_ % len(names)  # rotate the order so drift hits every path alike
            for name in names[shift:] + names[:shift]:
                every = previews[name]
                seconds = raw() if every is None else await queued(rig, every)
                if round_:
                    times[name].append(seconds)
        # Same seed, same work: the stored PNG should be the raw pipeline's picture.
        same = f"stored image vs raw: mean |Δ| {pixel_diff(await rig.stored_images(last['job']), last['raw']):.2f}/255"
    engine.preview_every = PREVIEW_EVERY
    raw_median = median(times[names[0]])
    for name in names:
        value = median(times[name])
        ratio = value / raw_median
        bench.add(
            Row(
                "sd15 overhead",
                f"{name}, 1 request, {conditions}",
                latency=f"median {value:.3f} s (min {min(times[name]):.3f}, n={len(times[name])}, interleaved)",
                check=f"{ratio:.3f}× raw (medians)" + ("" if name == names[0] else f"; {same}"),
                target="" if name == names[0] else bench.target("≤ 1.02× raw", ratio <= 1.02),
            )
        )


async def closed_loop(
    bench: Bench, engine: Engine, make: RequestFactory, max_batch: int, users: int
) -> tuple[LoadResult, PeakMemory, int]:
    """Users keep enough jobs queued for a full batch to wait while one runs; returns what was measured."""
    in_flight = max(1, math.ceil(2 * max_batch / users))
    jobs_per_user = max(in_flight, bench.workload.batches_per_run * max_batch // users)
    async with ServingRig(engine, max_batch) as rig:
        warm = [rig.run_job(make(user, 10**6 + user), user) for user in range(max_batch)]
        await asyncio.gather(*warm)
        with peak_memory(bench.device) as memory:
            result = await rig.closed_loop(make, users, in_flight, jobs_per_user)
    return result, memory, in_flight


# --- sdxl ----------------------------------------------------------------------------------------


def sdxl(bench: Bench) -> None:
    """SDXL: raw batches, fp16 VAE decode, saturated queue+worker, and latency under Poisson arrivals."""
    w = bench.workload
    pipe = bench.pipeline("sdxl")
    flop = flop_per_image_step(bench, "sdxl")
    conditions = f"{w.sdxl_size}², {w.sdxl_steps} steps, CFG {w.guidance:g}"

    def raw_row(label: str, batch: int) -> float:
        timing = measure_raw(bench, pipe, batch, w.sdxl_size, w.sdxl_steps, w.sdxl_repeats)
        rate = batch / timing.seconds
        bench.add(
            Row(
                "sdxl raw",
                f"{label}, batch {batch}, {conditions}",
                throughput=f"{rate:.2f} img/s",
                latency=f"{timing.seconds:.3f} s/call (median of {timing.calls})",
                compute=bench.compute(rate, flop, w.sdxl_steps),
                memory=str(timing.memory),
            )
        )
        return rate

    for batch in w.sdxl_batches:
        raw_row("diffusers (VAE force_upcast on, as in the checkpoint)", batch)
    if bench.on_gpu:
        pipe.vae.register_to_config(force_upcast=False)
        try:
            raw_row("diffusers, VAE decode in fp16 (force_upcast off, as with an fp16-fix VAE)", max(w.sdxl_batches))
        finally:
            pipe.vae.register_to_config(force_upcast=True)
    engine = make_engine(bench, "sdxl-random", "sdxl", pipe, w.sdxl_size, w.sdxl_steps)
    make = request_factory(bench, "sdxl-random", w.sdxl_size, w.sdxl_steps)
    result, memory, in_flight = asyncio.run(closed_loop(bench, engine, make, w.sdxl_max_batch, w.users))
    rate = result.images_per_second
    bench.add(
        Row(
            "sdxl serving",
            f"queue+worker, {w.users} users × {in_flight} in flight, max_batch {w.sdxl_max_batch}, {conditions}",
            throughput=f"{rate:.2f} img/s ({result.images} images / {result.wall:.1f} s)",
            latency=latency_text(result),
            compute=bench.compute(rate, flop, w.sdxl_steps),
            memory=str(memory),
            check=load_check(result),
            target=bench.target("≥ 2.2 img/s", rate >= 2.2),
        )
    )
    result, memory = asyncio.run(poisson(bench, engine, make))
    p99 = percentile(result.latencies, 99) if result.latencies else math.inf
    bench.add(
        Row(
            "sdxl serving",
            f"queue+worker, Poisson {w.poisson_rate:g} req/s for {w.poisson_seconds:g} s (seed {bench.args.seed}), "
            f"{w.sdxl_users} users, max_batch {w.sdxl_max_batch}, {conditions}",
            throughput=f"served {result.images_per_second:.2f} img/s ({result.images} images / {result.wall:.1f} s)",
            latency=latency_text(result),
            memory=str(memory),
            check=load_check(result),
            target=bench.target("p99 < 15 s at 2 req/s", p99 < 15.0 and w.poisson_rate >= 2.0),
        )
    )


async def poisson(bench: Bench, engine: Engine, make: RequestFactory) -> tuple[LoadResult, PeakMemory]:
    """Open-loop Poisson arrivals through a fresh queue+worker, after one warm-up job."""
    w = bench.workload
    async with ServingRig(engine, w.sdxl_max_batch) as rig:
        await rig.run_job(make(0, 10**6), 0)
        with peak_memory(bench.device) as memory:
            result = await rig.poisson(make, w.sdxl_users, w.poisson_rate, w.poisson_seconds, bench.args.seed)
    return result, memory
