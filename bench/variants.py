"""Sections of bench/gpu.py that change how the pipeline runs, or what previews cost (issue 7, items 3 and 4).

variants    SDPA vs classic attention, channels_last, with output checks
compile     torch.compile mode="max-autotune-no-cudagraphs"
cudagraphs  torch.compile mode="reduce-overhead", i.e. CUDA graphs
preview     TAESD vs full VAE vs linear previews, cost per preview
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from diffusers.models.attention_processor import AttnProcessor, AttnProcessor2_0

from bench.fullsize import build_on, taesd
from bench.measure import Row, failure, median, peak_memory, pixel_diff, timed
from bench.sections import PREVIEW_EVERY, Timing, flop_per_image_step, measure_raw
from generation.preview import LinearPreviewer, TinyVaePreviewer

if TYPE_CHECKING:
    from bench.gpu import Bench


@dataclass
class Baseline:
    """The default configuration's timing, images, and one captured UNet call (inputs and output)."""

    timing: Timing
    unet_args: tuple[Any, ...]
    unet_kwargs: dict[str, Any]
    unet_out: torch.Tensor


def baseline(bench: Bench, pipe: Any) -> Baseline:
    """Time the default configuration (SDPA) and capture the first UNet call of the run."""
    captured: dict[str, Any] = {}

    def grab(module: Any, args: tuple, kwargs: dict, output: Any) -> None:
        if "out" not in captured:
            captured["args"] = tuple(a.clone() if torch.is_tensor(a) else a for a in args)
            captured["kwargs"] = {k: v.clone() if torch.is_tensor(v) else v for k, v in kwargs.items()}
            captured["out"] = output[0].float().clone()

    w = bench.workload
    hook = pipe.unet.register_forward_hook(grab, with_kwargs=True)
    try:
        timing = measure_raw(bench, pipe, w.variant_batch, w.sd_size, w.sd_steps, w.repeats)
    finally:
        hook.remove()
    return Baseline(timing, captured["args"], captured["kwargs"], captured["out"])


def variant_row(bench: Bench, section: str, name: str, timing: Timing, reference: Baseline, check: str) -> Row:
    """A row for one configuration at the variant batch size."""
    w = bench.workload
    rate = w.variant_batch / timing.seconds
    return Row(
        section,
        f"{name}, batch {w.variant_batch}, {w.sd_size}², {w.sd_steps} steps",
        throughput=f"{rate:.2f} img/s ({reference.timing.seconds / timing.seconds:.2f}× default)",
        latency=f"{timing.seconds:.3f} s/call (median of {timing.calls}); first call {timing.first:.1f} s",
        compute=bench.compute(rate, flop_per_image_step(bench, "sd15"), w.sd_steps),
        memory=str(timing.memory),
        check=check,
    )


def run_variant(
    bench: Bench, section: str, name: str, apply: Callable[[], None], revert: Callable[[], None], ref: Baseline
) -> None:
    """Apply a change, time it, compare its UNet output and images with the default's, and undo it."""
    w = bench.workload
    pipe = bench.pipeline("sd15")
    try:
        apply()
        timing = measure_raw(bench, pipe, w.variant_batch, w.sd_size, w.sd_steps, w.repeats)
        with torch.no_grad():
            out = pipe.unet(*ref.unet_args, **ref.unet_kwargs)[0].float().clone()
        relative = ((out - ref.unet_out).abs().mean() / ref.unet_out.abs().mean()).item()
        diff = pixel_diff(timing.images, ref.timing.images)
        check = f"UNet rel. |Δ| {relative:.1e}; images mean |Δ| {diff:.2f}/255 vs default, same seeds"
        bench.add(variant_row(bench, section, name, timing, ref, check))
    except Exception as exc:
        bench.add(Row(section, f"{name}, batch {w.variant_batch}", check=failure(exc)))
    finally:
        revert()


def _attention(pipe: Any, processor: type) -> None:
    pipe.unet.set_attn_processor(processor())
    pipe.vae.set_attn_processor(processor())


def _layout(pipe: Any, memory_format: torch.memory_format) -> None:
    pipe.unet.to(memory_format=memory_format)
    pipe.vae.to(memory_format=memory_format)


def variants(bench: Bench) -> None:
    """Default SDPA vs classic attention vs channels_last, at one batch size."""
    pipe = bench.pipeline("sd15")
    ref = baseline(bench, pipe)
    bench.add(variant_row(bench, "variants", "SDPA (AttnProcessor2_0, default)", ref.timing, ref, "reference"))
    run_variant(
        bench,
        "variants",
        "classic attention (AttnProcessor) in UNet+VAE",
        lambda: _attention(pipe, AttnProcessor),
        lambda: _attention(pipe, AttnProcessor2_0),
        ref,
    )
    run_variant(
        bench,
        "variants",
        "channels_last UNet+VAE",
        lambda: _layout(pipe, torch.channels_last),
        lambda: _layout(pipe, torch.contiguous_format),
        ref,
    )


def _compiled(bench: Bench, section: str, mode: str) -> None:
    w = bench.workload
    label = f'torch.compile(unet, mode="{mode}")'
    if not bench.on_gpu and not bench.args.compile_on_cpu:
        bench.add(Row(section, f"{label}, batch {w.variant_batch}", check="skipped on CPU (--compile-on-cpu runs it)"))
        return
    pipe = bench.pipeline("sd15")
    ref = baseline(bench, pipe)
    bench.add(variant_row(bench, section, "SDPA, eager (default; reference)", ref.timing, ref, "reference"))
    original = pipe.unet

    def apply() -> None:
        pipe.unet = torch.compile(original, mode=mode)

    def revert() -> None:
        pipe.unet = original
        torch._dynamo.reset()

    run_variant(bench, section, f"{label} (first call compiles)", apply, revert, ref)


def compile_autotune(bench: Bench) -> None:
    """torch.compile with Inductor's autotuning, without CUDA graphs."""
    _compiled(bench, "compile", "max-autotune-no-cudagraphs")


def compile_cudagraphs(bench: Bench) -> None:
    """torch.compile with CUDA graphs (reduce-overhead)."""
    _compiled(bench, "cudagraphs", "reduce-overhead")


# --- preview -------------------------------------------------------------------------------------


def preview(bench: Bench) -> None:
    """Cost of one preview: linear 4x3 map vs TAESD vs full VAE decode, against the generation it rides on."""
    w = bench.workload
    pipe = bench.pipeline("sd15")
    tiny = build_on(bench.device, bench.dtype, lambda: taesd(w.arch))
    previewers: dict[str, Callable[[torch.Tensor], list]] = {
        "linear 4x3 latent→RGB (LinearPreviewer)": LinearPreviewer("sd"),
        "TAESD decode (AutoencoderTiny, TinyVaePreviewer)": TinyVaePreviewer(tiny),
        "full VAE decode (AutoencoderKL, same previewer)": TinyVaePreviewer(pipe.vae),
    }
    count = sum(1 for step in range(1, w.sd_steps + 1) if step % PREVIEW_EVERY == 0 and step < w.sd_steps)
    side = w.sd_size // 8
    for batch in w.preview_batches:
        call = measure_raw(bench, pipe, batch, w.sd_size, w.sd_steps, 1)
        generator = torch.Generator("cpu").manual_seed(bench.args.seed)
        latents = torch.randn(batch, 4, side, side, generator=generator).to(bench.device, bench.dtype)
        for name, previewer in previewers.items():
            with peak_memory(bench.device) as memory:
                for _ in range(2):
                    timed(bench.device, lambda p=previewer, x=latents: p(x))
                times, pictures = [], []
                for _ in range(w.preview_repeats):
                    seconds, pictures = timed(bench.device, lambda p=previewer, x=latents: p(x))
                    times.append(seconds)
            ms = 1000 * median(times)
            step_ms = 1000 * call.seconds / w.sd_steps
            share = count * ms / 1000 / call.seconds
            bench.add(
                Row(
                    "preview",
                    f"{name}, batch {batch}, {side}² latents → {pictures[0].width}² px",
                    latency=f"{ms:.2f} ms/preview call ({ms / batch:.2f} ms/image, median of {len(times)})",
                    memory=str(memory),
                    check=f"one preview = {100 * ms / step_ms:.0f}% of a batch-{batch} step ({step_ms:.0f} ms/step); "
                    f"+{100 * share:.1f}% per {w.sd_steps}-step call with {count} preview(s) (every {PREVIEW_EVERY})",
                )
            )
