"""What the unCLIP families share (Kandinsky 2.2, Karlo): a prior that turns the prompt into a CLIP image
embedding, decoders after it, one progress bar over those phases, and their costs.

Costs, in the queue's unit (SD 1.5 pixel-steps: an SD 1.5 step at WxH costs W*H). FLOPs were counted with
torch.utils.flop_counter on full-size random-weight configs on the meta device (diffusers 0.42.1; configs from
Kakao Brain's conversion script and Kandinsky 2.2's UNet, whose 1.25B parameters match its model card's 1.22B),
against SD 1.5's UNet counted the same way (1.61 TFLOP per 512² step with CFG, so one SD pixel-step is 6.13
MFLOP). Counted, not timed: a GPU benchmark should recalibrate these (on a large GPU the small prior is
launch-bound and takes longer than its FLOPs say). Left out: text and image encoders (once per call) and the
final VAE/MoVQ decode, as every family leaves them out.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from PIL import Image

from generation.errors import Cancelled
from generation.families.base import StepReporter

# The priors' defaults in diffusers' KandinskyV22PriorPipeline and UnCLIPPipeline signatures.
PRIOR_STEPS = 25
PRIOR_GUIDANCE = 4.0

SD15_FLOPS_PER_PIXEL_STEP = 1.6065e12 / (512 * 512)  # counted as above (DESIGN.md's anchor says 1.68e12)
# Both priors are 20 blocks of width 2048 over 81 tokens (1.02-1.03B parameters): 0.329 TFLOP per step and
# image with CFG, whatever the picture's size.
PRIOR_STEP_COST = round(0.329e12 / SD15_FLOPS_PER_PIXEL_STEP)  # ≈ 53,700 SD pixel-steps

PreviewFn = Callable[[torch.Tensor], Sequence[Image.Image]]


class Phase:
    """One loop of the run (a prior, a decoder, a super-resolution), worth `units` of the bar over `steps` steps."""

    def __init__(self, progress: PhasedProgress, start: int, steps: int, units: int) -> None:
        self._progress, self._start, self._steps, self._units = progress, start, steps, units
        self._done = 0

    def step(self, previews: Callable[[], Sequence[Image.Image]] | None = None) -> None:
        """Count one step: the bar moves to this phase's share so far (some steps of a light phase move it not at
        all); then a cancel, if asked for, stops the run here."""
        self._done += 1
        position = self._start + self._units * self._done // self._steps
        if position > self._progress.position:
            self._progress.position = position
            self._progress.report.step(position, self._progress.total, previews)
        if self._progress.report.cancelled:
            raise Cancelled("Cancelled.")

    def on_step_end(self, preview: PreviewFn | None = None) -> Callable[..., dict]:
        """A diffusers `callback_on_step_end` that counts each step (previews from its latents)."""

        def callback(pipe: Any, index: int, timestep: Any, tensors: dict) -> dict:
            latents = tensors.get("latents")
            self.step((lambda: preview(latents)) if preview is not None and latents is not None else None)
            return tensors

        return callback


class PhasedProgress:
    """One progress bar over a prior and its decoders, counted in decoder steps.

    The decoder's steps count one each, so previews come every `preview_every` of them and the total is near the
    steps asked for; the other loops count what their FLOPs are worth in decoder steps (at least one), spread over
    their steps. Cancel is checked after every step of every loop; the unCLIP pipelines have no interrupt flag, so
    an exception leaves their loops.
    """

    def __init__(self, report: StepReporter, loops: Sequence[tuple[int, float]]) -> None:
        # loops: (steps, weight of one step in decoder steps), in the order they run
        self.report = report
        self.position = 0
        self.phases: list[Phase] = []
        start = 0
        for steps, weight in loops:
            units = max(1, round(steps * weight))
            self.phases.append(Phase(self, start, steps, units))
            start += units
        self.total = start
