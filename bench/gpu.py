"""GPU benchmark (issue 7): raw diffusers vs our JobQueue + Worker on random-weight SD 1.5 and SDXL.

Full-size models with random weights are built on the GPU in fp16; everything is measured side by side in
one run and printed as one table. Without a GPU the same code paths run at reduced size on CPU, and the
figures are not comparable to the targets.

  python bench/gpu.py                      # GPU default: params,sd15,variants,preview (one 10-minute call)
  python bench/gpu.py --only sdxl          # SDXL 1024², batches 1/2/4, saturated and Poisson 2 req/s load
  python bench/gpu.py --only compile       # torch.compile max-autotune-no-cudagraphs (long compile)
  python bench/gpu.py --only cudagraphs    # torch.compile reduce-overhead (CUDA graphs)
  python bench/gpu.py --quick --out r.md   # smallest CPU run; table also written as markdown
"""

from __future__ import annotations

import argparse
import datetime
import logging
import os
import platform
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import diffusers
import torch
import transformers

from bench.fullsize import FULL, REDUCED, Architecture, build_sd15, build_sdxl, parameter_counts
from bench.measure import Row, failure, render_markdown, render_text
from bench.sections import params, sd15, sdxl
from bench.variants import compile_autotune, compile_cudagraphs, preview, variants

SD15_TFLOP_PER_STEP = 1.68  # DESIGN.md: SD 1.5 UNet with CFG, one 512² image-step
H200_PEAK_TFLOPS = 790.0  # DESIGN.md: bf16 dense, as measured on this workplace's H200s


@dataclass(frozen=True)
class Workload:
    """How much work each section does; one preset per machine class."""

    arch: Architecture
    sd_size: int = 512
    sd_steps: int = 20
    sd_batches: tuple[int, ...] = (1, 2, 4, 8, 16)
    repeats: int = 3  # timed calls per configuration, after one warm-up call
    users: int = 8
    max_batches: tuple[int, ...] = (8, 16)
    batches_per_run: int = 6  # length of a closed-loop serving run, in full batches
    overhead_rounds: int = 9
    variant_batch: int = 8
    preview_batches: tuple[int, ...] = (1, 8)
    preview_repeats: int = 10
    sdxl_size: int = 1024
    sdxl_steps: int = 20
    sdxl_batches: tuple[int, ...] = (1, 2, 4)
    sdxl_repeats: int = 2
    sdxl_max_batch: int = 4
    sdxl_users: int = 16
    poisson_seconds: float = 60.0
    poisson_rate: float = 2.0
    guidance: float = 7.0


GPU_WORKLOAD = Workload(FULL, repeats=5, overhead_rounds=11)
CPU_WORKLOAD = Workload(
    REDUCED,
    sd_size=128,
    sd_steps=6,
    sd_batches=(1, 2, 4),
    repeats=2,
    users=4,
    max_batches=(2, 4),
    batches_per_run=4,
    overhead_rounds=5,
    variant_batch=2,
    preview_batches=(1, 4),
    preview_repeats=5,
    sdxl_size=128,
    sdxl_steps=6,
    sdxl_batches=(1, 2),
    sdxl_max_batch=2,
    sdxl_users=4,
    poisson_seconds=15.0,
    poisson_rate=2.0,
)
QUICK_WORKLOAD = replace(
    CPU_WORKLOAD,
    sd_size=64,
    sd_steps=2,
    sd_batches=(1, 2),
    repeats=1,
    users=2,
    max_batches=(2,),
    batches_per_run=2,
    overhead_rounds=2,
    preview_batches=(2,),
    preview_repeats=2,
    sdxl_size=64,
    sdxl_steps=2,
    sdxl_batches=(1,),
    sdxl_max_batch=2,
    sdxl_users=2,
    sdxl_repeats=1,
    poisson_seconds=3.0,
)

GPU_DEFAULT_SECTIONS = ("params", "sd15", "variants", "preview")


class Bench:
    """Shared state of one run: device, workload, the resident pipeline, and the rows so far."""

    def __init__(self, args: argparse.Namespace, device: torch.device, workload: Workload) -> None:
        self.args = args
        self.device = device
        self.workload = workload
        self.on_gpu = device.type == "cuda"
        gpu_dtype = {"float16": torch.float16, "bfloat16": torch.bfloat16}[args.dtype]
        self.dtype = gpu_dtype if self.on_gpu else torch.float32  # fp16 on CPU is slow and partly unsupported
        self.rows: list[Row] = []
        self.header: list[str] = []
        self.elapsed: list[str] = []  # "section seconds", as sections finish
        self.flops: dict[str, float] = {}  # counted UNet FLOPs per image-step, by model and latent size
        self._pipes: dict[str, object] = {}

    @property
    def dtype_name(self) -> str:
        """The dtype as generation.device spells it."""
        return str(self.dtype).removeprefix("torch.")

    def pipeline(self, kind: str) -> Any:
        """The random-weight pipeline of a kind ('sd15' or 'sdxl'), built once; only one kept resident."""
        if kind not in self._pipes:
            self._pipes.clear()
            if self.on_gpu:
                torch.cuda.empty_cache()
            build = build_sd15 if kind == "sd15" else build_sdxl
            start = time.perf_counter()
            pipe = build(self.workload.arch, self.device, self.dtype).to(self.device)
            counts = ", ".join(f"{name} {n / 1e6:.2f}M" for name, n in parameter_counts(pipe).items())
            seconds = time.perf_counter() - start
            print(f"built {kind} ({self.workload.arch.name}, {self.dtype_name}) in {seconds:.1f} s:")
            print(f"  parameters: {counts}", flush=True)
            self._pipes[kind] = pipe
        return self._pipes[kind]

    def add(self, row: Row) -> None:
        """Record a row and show (and save) it at once: a run cut short still shows what it measured."""
        self.rows.append(row)
        print(render_text([row]), flush=True)
        self.save()

    def save(self) -> None:
        """Write the header and the rows so far as markdown, if --out was given."""
        if self.args.out:
            notes = [*self.header, f"elapsed per section: {', '.join(self.elapsed) or '(first still running)'}"]
            text = "\n".join(f"- {line}" for line in notes) + f"\n\n{render_markdown(self.rows)}\n"
            self.args.out.write_text(text, encoding="utf-8")

    def compute(self, images_per_second: float, flop_per_image_step: float, steps: int) -> str:
        """Achieved UNet TFLOP/s, and the fraction of the assumed peak on a GPU."""
        tflops = images_per_second * steps * flop_per_image_step / 1e12
        if not self.on_gpu:
            return f"{tflops:.4f} TFLOP/s (CPU)"
        return f"{tflops:.0f} TFLOP/s = {100 * tflops / self.args.peak_tflops:.1f}% of {self.args.peak_tflops:g}"

    def target(self, text: str, met: bool | None) -> str:
        """A target and whether this run met it; never judged on a reduced-size CPU run."""
        if not self.on_gpu or self.workload.arch is not FULL:
            return f"{text}: n/a (reduced size)"
        return f"{text}: {'met' if met else 'NOT met'}"


# In the order that shares models best (SD 1.5 first, SDXL last); `--only` keeps this order.
SECTIONS: dict[str, Callable[[Bench], None]] = {
    "params": params,
    "sd15": sd15,
    "variants": variants,
    "compile": compile_autotune,
    "cudagraphs": compile_cudagraphs,
    "preview": preview,
    "sdxl": sdxl,
}


def header(bench: Bench, sections: list[str]) -> list[str]:
    """Lines that say where, when and with what the figures were measured."""
    lines = []
    if not bench.on_gpu:
        lines.append("NO GPU: reduced-size CPU run; figures are not comparable to the targets")
    elif bench.workload.arch is not FULL:
        lines.append("QUICK: reduced-size GPU smoke run; figures are not comparable to the targets")
    gpu = torch.cuda.get_device_name(bench.device) if bench.on_gpu else "none"
    lines += [
        f"date: {datetime.datetime.now(datetime.UTC).isoformat(timespec='seconds')}",
        f"device: {bench.device} ({gpu}); CPU threads: {torch.get_num_threads()}; {platform.platform()}",
        f"python {platform.python_version()}, torch {torch.__version__}, diffusers {diffusers.__version__}, "
        f"transformers {transformers.__version__}",
        f"models: {bench.workload.arch.name}, random weights, {bench.dtype_name}; sections: {', '.join(sections)}",
        f"assumed peak: {bench.args.peak_tflops:g} TFLOP/s (--peak-tflops); SD1.5 UNet FLOP per 512² image-step "
        f"with CFG: {bench.args.sd15_tflop:g} TFLOP (--sd15-tflop)",
    ]
    return lines


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", help=f"comma-separated sections: {', '.join(SECTIONS)} (or all)")
    parser.add_argument("--quick", action="store_true", help="smallest reduced-size run (tests; a GPU smoke check)")
    parser.add_argument("--out", type=Path, help="also write the table as markdown to this file")
    parser.add_argument("--device", default="auto", help="auto (cuda if present), cuda, cuda:1 or cpu")
    parser.add_argument("--dtype", choices=("float16", "bfloat16"), default="float16", help="GPU dtype")
    parser.add_argument("--peak-tflops", type=float, default=H200_PEAK_TFLOPS, help="assumed GPU peak TFLOP/s")
    parser.add_argument("--sd15-tflop", type=float, default=SD15_TFLOP_PER_STEP, help="TFLOP per SD1.5 step")
    parser.add_argument("--seconds", type=float, help="length of the SDXL Poisson arrival window")
    parser.add_argument("--rate", type=float, help="SDXL Poisson arrival rate, requests per second")
    parser.add_argument("--seed", type=int, default=1234, help="seed of images and arrivals")
    parser.add_argument("--threads", type=int, help="CPU intra-op threads (default 1 on CPU runs)")
    parser.add_argument("--compile-on-cpu", action="store_true", help="run the torch.compile variants on CPU too")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    """Run the selected sections and print (and optionally write) the table."""
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    diffusers.utils.logging.set_verbosity_error()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else None
    device = device or torch.device(args.device)
    if device.type == "cpu":
        # One intra-op thread by default: on a shared 2-core machine, 2 threads made the same call take
        # 0.2 s or 25 s depending on what else ran; CPU figures are smoke checks, not measurements.
        torch.set_num_threads(args.threads or 1)
    workload = QUICK_WORKLOAD if args.quick else GPU_WORKLOAD if device.type == "cuda" else CPU_WORKLOAD
    workload = replace(
        workload,
        poisson_seconds=args.seconds or workload.poisson_seconds,
        poisson_rate=args.rate or workload.poisson_rate,
    )
    if not args.only:
        chosen = GPU_DEFAULT_SECTIONS if device.type == "cuda" else tuple(SECTIONS)
    elif args.only == "all":
        chosen = tuple(SECTIONS)
    else:
        chosen = tuple(name.strip() for name in args.only.split(","))
    unknown = [name for name in chosen if name not in SECTIONS]
    if unknown:
        raise SystemExit(f"unknown section(s) {', '.join(unknown)}; choose from {', '.join(SECTIONS)}")
    sections = [name for name in SECTIONS if name in chosen]

    bench = Bench(args, device, workload)
    bench.header = header(bench, sections)
    print("\n".join(bench.header), flush=True)
    if device.type == "cuda" and not args.only:
        rest = [name for name in SECTIONS if name not in sections]
        print(f"not run by default (each fits one 10-minute call): {', '.join(f'--only {n}' for n in rest)}")
    for name in sections:
        print(f"\n== {name} ==", flush=True)
        start = time.perf_counter()
        try:
            SECTIONS[name](bench)
        except Exception as exc:
            traceback.print_exc()
            bench.add(Row(name, "section", check=failure(exc)))
        bench.elapsed.append(f"{name} {time.perf_counter() - start:.1f} s")
        print(f"-- {name}: {time.perf_counter() - start:.1f} s", flush=True)
        bench.save()
    print("\n" + "\n".join(bench.header))
    print(f"elapsed per section: {', '.join(bench.elapsed)}\n")
    print(render_text(bench.rows))


if __name__ == "__main__":
    main()
