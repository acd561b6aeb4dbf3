"""Engine vs raw diffusers: one request, same mid-size random-weight model and arguments, on CPU.

Runs both side by side, interleaved, and prints medians and their ratio (target: <= 1.02).
Usage: python bench/engine_overhead.py [--rounds N] [--steps N] [--size PX]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch
from diffusers import PNDMScheduler, StableDiffusionPipeline, UNet2DConditionModel
from transformers import CLIPTextModel

from generation.engine import Engine
from generation.request import GenerationRequest
from generation.specs import ModelSpec
from generation.tiny import text_config, tiny_tokenizer, tiny_vae


def build_mid_sd() -> StableDiffusionPipeline:
    """An SD-shaped pipeline between tiny and full size (about 1/10 of SD 1.5's UNet)."""
    torch.manual_seed(0)
    tokenizer = tiny_tokenizer()
    config = text_config(tokenizer)
    config.hidden_size, config.num_hidden_layers, config.intermediate_size = 256, 4, 1024
    unet = UNet2DConditionModel(
        block_out_channels=(128, 256, 384),
        layers_per_block=2,
        sample_size=32,
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=256,
        attention_head_dim=8,
        norm_num_groups=32,
    )
    scheduler = PNDMScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", skip_prk_steps=True, steps_offset=1
    )
    return StableDiffusionPipeline(
        unet=unet,
        scheduler=scheduler,
        vae=tiny_vae(),
        text_encoder=CLIPTextModel(config),
        tokenizer=tokenizer,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )


def main() -> None:
    """Print the side-by-side timing table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (1 is steadiest on a shared box)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    with tempfile.TemporaryDirectory() as tmp:
        build_mid_sd().save_pretrained(tmp)
        raw = StableDiffusionPipeline.from_pretrained(tmp)
        raw.set_progress_bar_config(disable=True)
        engine = Engine({"mid": ModelSpec(name="mid", source=tmp)}, device="cpu", preview_every=0)
        engine.load("mid")
        request = GenerationRequest(
            prompt="a lighthouse on a cliff, oil painting",
            negative_prompt="blurry",
            model="mid",
            width=args.size,
            height=args.size,
            steps=args.steps,
            guidance=7.0,
            seed=1234,
        )

        def run_raw() -> None:
            raw(
                request.prompt,
                negative_prompt=request.negative_prompt,
                num_inference_steps=args.steps,
                guidance_scale=7.0,
                height=args.size,
                width=args.size,
                generator=torch.Generator("cpu").manual_seed(1234),
            )

        def run_engine() -> None:
            engine.generate([request])

        def timed(fn) -> float:
            start = time.perf_counter()
            fn()
            return time.perf_counter() - start

        timed(run_raw), timed(run_engine)  # warm-up: allocator, kernels, caches
        raw_times, engine_times = [], []
        for i in range(args.rounds):
            # Alternate which goes first so drift on a noisy machine hits both equally.
            order = (run_raw, run_engine) if i % 2 == 0 else (run_engine, run_raw)
            for fn in order:
                (raw_times if fn is run_raw else engine_times).append(timed(fn))

    params = sum(p.numel() for p in raw.unet.parameters()) / 1e6
    raw_med, eng_med = statistics.median(raw_times), statistics.median(engine_times)
    print(
        f"engine overhead on CPU ({torch.get_num_threads()} threads), UNet {params:.0f}M params, "
        f"{args.size}x{args.size}, {args.steps} steps, CFG 7, {args.rounds} interleaved rounds"
    )
    print(f"{'path':<22}{'median s':>10}{'min s':>10}{'max s':>10}")
    for name, times in (("raw diffusers", raw_times), ("imagine-bot engine", engine_times)):
        print(f"{name:<22}{statistics.median(times):>10.3f}{min(times):>10.3f}{max(times):>10.3f}")
    print(f"ratio engine/raw (median): {eng_med / raw_med:.3f}  (target <= 1.02)")
    # On a shared machine the minimum is the run least disturbed by others: report it too.
    print(f"ratio engine/raw (fastest): {min(engine_times) / min(raw_times):.3f}")


if __name__ == "__main__":
    main()
