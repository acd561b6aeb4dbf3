"""Running tiny models on one CPU thread."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch

# Tiny models gain nothing from threads, and on shared cores OpenMP's spin-waits make them ~5x slower.
ONE_THREAD = {"OMP_NUM_THREADS": "1"}  # for subprocesses


@contextmanager
def one_torch_thread() -> Iterator[None]:
    """This process's torch on one thread for the duration; the previous count comes back."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
