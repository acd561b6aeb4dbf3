"""Where the pipeline runs: its torch threads leave the event loop a core on CPU devices."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from generation.device import pipeline_threads, usable_cpus

ROOT = Path(__file__).resolve().parents[2]


def test_on_cpu_every_usable_core_but_one_goes_to_the_pipeline() -> None:
    assert pipeline_threads(torch.device("cpu")) == max(1, usable_cpus() - 1)


@pytest.mark.parametrize("device", ["cpu", "cuda"])
def test_a_configured_count_is_used_as_it_is(device: str) -> None:
    assert pipeline_threads(torch.device(device), 3) == 3


def test_on_a_gpu_torch_keeps_its_own_count() -> None:
    assert pipeline_threads(torch.device("cuda")) is None


def test_the_count_reaches_a_pipeline_thread_started_after_it_was_set() -> None:
    # Each thread takes torch's count when it first runs an op: set before the GPU thread starts, it applies
    # there (a separate process: the count is process-wide and tests share theirs).
    code = (
        "import torch\n"
        "from concurrent.futures import ThreadPoolExecutor\n"
        "from generation.device import use_pipeline_threads\n"
        "assert use_pipeline_threads('cpu', 1) == 1\n"
        "gpu = ThreadPoolExecutor(max_workers=1)\n"
        "print(gpu.submit(lambda: (torch.ones(64, 64) @ torch.ones(64, 64), torch.get_num_threads())[1]).result())\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "1"
