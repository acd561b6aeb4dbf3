"""`imagine-bot` with GPU faults that a test can switch on and off while it runs.

    IMAGINE_GPU_FAULTS=PATH python -m tests.reliability.launch run --config C

PATH holds JSON read at every UNet call: `{"oom_above_rows": N}` makes calls on more than N rows (images x 2
with guidance) raise the torch.OutOfMemoryError a full GPU raises; `{"seconds_per_step": S}` makes each
step take at least S seconds, like a slower GPU. No file, no fault. Everything else is the real program.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path


def inject_gpu_faults(control: Path) -> None:
    """Wrap the UNet's forward so it obeys the faults written in `control`."""
    import torch
    from diffusers import UNet2DConditionModel

    forward = UNet2DConditionModel.forward

    def forward_with_faults(self, sample, *args, **kwargs):
        try:
            faults = json.loads(control.read_text())
        except (OSError, ValueError):
            faults = {}
        limit = faults.get("oom_above_rows")
        if limit and sample.shape[0] > limit:
            raise torch.OutOfMemoryError(f"CUDA out of memory. Tried to allocate 20.00 GiB ({sample.shape[0]} rows)")
        time.sleep(faults.get("seconds_per_step", 0))
        return forward(self, sample, *args, **kwargs)

    UNet2DConditionModel.forward = forward_with_faults


if __name__ == "__main__":
    if control := os.environ.get("IMAGINE_GPU_FAULTS"):
        inject_gpu_faults(Path(control))
    from bot.cli import main

    sys.exit(main())
