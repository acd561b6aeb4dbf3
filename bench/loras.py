"""LoRA switch versus reload, and Dreambooth-LoRA training speed, side by side in one run (CPU: tiny model).

    python bench/loras.py [--rounds 5] [--train-steps 20]

1. Two tiny LoRAs on the tiny SD model: switching between resident adapters (generation's AdapterCache,
   set_adapters) versus what a bot without a cache does, unloading and loading the weights each time.
2. Training: LoraTrainer steps/s and peak resident memory at 64 px, rank 8, batch 1, on 4 generated photos.
Absolute figures on this 2-core box say little; the GPU run belongs to issue 14. Medians of --rounds.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch
from PIL import Image, ImageDraw

from generation.families.adapters import AdapterCache
from generation.specs import LoraSpec
from generation.tiny import build_tiny_sd
from generation.tiny.lora import write_tiny_lora
from generation.training import LoraTrainer
from generation.training_inputs import TrainingSettings


def switching(folder: Path, rounds: int) -> tuple[float, float]:
    """Median seconds per change of LoRA: resident switch, then unload + load."""
    pipe = build_tiny_sd()
    a, b = (
        LoraSpec(name=n, source=str(write_tiny_lora(folder / f"{n}.safetensors", seed=s)), kind="sd")
        for n, s in (("a", 1), ("b", 2))
    )
    cache = AdapterCache(pipe)
    cache.use([(a, 1.0)])
    cache.use([(b, 1.0)])  # both resident now
    switch, reload = [], []
    for i in range(rounds):
        started = time.perf_counter()
        cache.use([((a, b)[i % 2], 1.0)])
        switch.append(time.perf_counter() - started)
    plain = build_tiny_sd()
    for i in range(rounds):
        spec = (a, b)[i % 2]
        started = time.perf_counter()
        plain.unload_lora_weights()
        plain.load_lora_weights(spec.source, adapter_name=spec.name)
        reload.append(time.perf_counter() - started)
    return statistics.median(switch), statistics.median(reload)


def training(steps: int) -> tuple[float, float]:
    """Steps per second and peak RSS (MiB) of a short training run."""
    photos = []
    for i in range(4):
        photo = Image.new("RGB", (64, 64), "white")
        ImageDraw.Draw(photo).ellipse((8 + 4 * i, 8, 48 + 4 * i, 48), fill=(200, 40 * i, 60))
        photos.append(photo)
    settings = TrainingSettings(token="sks", class_word="ball", steps=steps + 2, rank=8, resolution=64)
    trainer = LoraTrainer(build_tiny_sd(), photos, settings)
    trainer.run_chunk(2)  # warm-up
    started = time.perf_counter()
    trainer.run_chunk(steps)
    seconds = time.perf_counter() - started
    return steps / seconds, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--train-steps", type=int, default=20)
    args = parser.parse_args()
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory(prefix="imagine-loras-") as temp:
        switch, reload = switching(Path(temp), args.rounds)
    print(
        f"LoRA change (tiny SD, median of {args.rounds}): resident switch {switch * 1000:.2f} ms, "
        f"unload + load {reload * 1000:.2f} ms ({reload / switch:.0f}x)"
    )
    rate, peak = training(args.train_steps)
    print(
        f"Training (tiny SD, 64 px, rank 8, batch 1, {args.train_steps} steps): {rate:.1f} steps/s, "
        f"peak RSS {peak:.0f} MiB"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
