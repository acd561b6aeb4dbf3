"""Timing, memory and table helpers for bench/gpu.py: synchronised clocks, percentiles, result rows."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

PROMPTS = (
    "a lighthouse on a cliff at dusk, oil painting",
    "a red fox in fresh snow, photograph, 85mm",
    "isometric pixel art of a tiny cafe",
    "a bowl of ramen, studio lighting",
    "portrait of an astronaut, watercolor",
    "a castle in the clouds, concept art",
    "macro photo of a dewdrop on a leaf",
    "a cyberpunk street at night, rain",
)
NEGATIVE = "blurry, low quality"


def sync(device: torch.device) -> None:
    """Wait for queued GPU work, so wall-clock timers measure it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(device: torch.device, fn: Callable[[], Any]) -> tuple[float, Any]:
    """Seconds one call takes, GPU work included (synchronised before and after), and its result."""
    sync(device)
    start = time.perf_counter()
    result = fn()
    sync(device)
    return time.perf_counter() - start, result


@dataclass
class PeakMemory:
    """Peak allocated GPU memory inside a block, and what was allocated when it began (GiB; None on CPU)."""

    peak: float | None = None
    resident: float | None = None

    def __str__(self) -> str:
        if self.peak is None or self.resident is None:
            return "n/a (CPU)"
        return f"{self.peak:.2f} GiB (+{self.peak - self.resident:.2f} over resident)"


@contextmanager
def peak_memory(device: torch.device) -> Iterator[PeakMemory]:
    """Measure the peak of torch.cuda.max_memory_allocated inside the block (weights included)."""
    box = PeakMemory()
    if device.type == "cuda":
        sync(device)
        torch.cuda.reset_peak_memory_stats(device)
        box.resident = torch.cuda.memory_allocated(device) / 2**30
    yield box
    if device.type == "cuda":
        sync(device)
        box.peak = torch.cuda.max_memory_allocated(device) / 2**30


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0-100), linear interpolation between closest ranks."""
    return float(np.percentile(np.asarray(values, dtype=np.float64), q))


def median(values: list[float]) -> float:
    """The median of a non-empty list."""
    return statistics.median(values)


def raw_arguments(batch: int, size: int, steps: int, guidance: float, seed: int) -> dict[str, Any]:
    """Arguments of a plain diffusers call for `batch` images, one seeded CPU generator each (as the engine)."""
    return {
        "prompt": [PROMPTS[i % len(PROMPTS)] for i in range(batch)],
        "negative_prompt": [NEGATIVE] * batch,
        "generator": [torch.Generator("cpu").manual_seed(seed + i) for i in range(batch)],
        "num_inference_steps": steps,
        "guidance_scale": guidance,
        "height": size,
        "width": size,
    }


def pixel_diff(images: list[Any], reference: list[Any]) -> float:
    """Mean absolute difference of two image lists, in 8-bit levels (0-255)."""
    pairs = zip(images, reference, strict=True)
    diffs = [np.abs(np.asarray(a, np.float32) - np.asarray(b, np.float32)).mean() for a, b in pairs]
    return float(np.mean(diffs))


@dataclass
class Row:
    """One line of the results table; every figure carries its unit in its text."""

    section: str
    configuration: str
    throughput: str = ""
    latency: str = ""
    compute: str = ""
    memory: str = ""
    check: str = ""
    target: str = ""


COLUMNS = (
    ("section", "section"),
    ("configuration", "configuration"),
    ("throughput", "throughput"),
    ("latency", "latency"),
    ("compute", "UNet compute"),
    ("memory", "peak GPU mem"),
    ("check", "check"),
    ("target", "target"),
)


def render_text(rows: list[Row]) -> str:
    """Rows as plain text: the configuration on one line, its non-empty figures indented below."""
    lines = []
    for row in rows:
        lines.append(f"[{row.section}] {row.configuration}")
        figures = [f"{title}: {getattr(row, key)}" for key, title in COLUMNS[2:] if getattr(row, key)]
        lines.append("    " + " | ".join(figures) if figures else "    –")
    return "\n".join(lines)


def render_markdown(rows: list[Row]) -> str:
    """Rows as a GitHub markdown table."""
    lines = ["| " + " | ".join(title for _, title in COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for row in rows:
        values = [(getattr(row, key) or "–").replace("|", "\\|") for key, _ in COLUMNS]
        lines.append("| " + " | ".join(values) + " |")
    return "\n".join(lines)


def failure(exc: BaseException) -> str:
    """A one-line reason for a failed configuration."""
    text = str(exc).strip().splitlines()
    return f"FAILED: {type(exc).__name__}: {text[0][:160] if text else ''}".rstrip(": ")
