"""Choosing where and in what precision the pipeline runs."""

from __future__ import annotations

import os

import torch

_DTYPES = {
    "float16": torch.float16,
    "fp16": torch.float16,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
    "float32": torch.float32,
    "fp32": torch.float32,
}


def resolve_device(name: str = "auto") -> torch.device:
    """`auto` picks CUDA when present, else CPU; anything else is taken as a torch device name."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    """`auto` is fp16 on CUDA (tensor cores, the format SD checkpoints ship in) and fp32 elsewhere."""
    if name == "auto":
        return torch.float16 if device.type == "cuda" else torch.float32
    try:
        return _DTYPES[name]
    except KeyError:
        raise ValueError(f"dtype must be auto or one of {', '.join(_DTYPES)}, not {name!r}") from None


def usable_cpus() -> int:
    """CPUs this process may run on (its affinity mask: a container's share, not the host's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def pipeline_threads(device: torch.device, configured: int = 0) -> int | None:
    """Torch's intra-op threads for a pipeline on `device`: `configured` when set; on CPU by default every
    usable core but one, left to the event loop (with all of them, every acknowledgement, edit and PNG
    encode stalls a whole step: OpenMP's threads wait at each op for the one that lost its core); on a GPU,
    None: torch's default, as the CPU only feeds it."""
    if configured > 0:
        return configured
    if device.type != "cpu":
        return None
    return max(1, usable_cpus() - 1)


def use_pipeline_threads(device_name: str, configured: int = 0) -> int | None:
    """Set torch's intra-op threads for the pipeline (see pipeline_threads); returns what was set, if anything.

    Call it before the GPU thread runs its first torch op: each thread takes the count when it first uses one."""
    threads = pipeline_threads(resolve_device(device_name), configured)
    if threads is not None:
        torch.set_num_threads(threads)
    return threads
