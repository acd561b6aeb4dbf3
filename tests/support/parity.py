"""The batch-equals-single check every family's tests make."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from generation.engine import Engine
from generation.request import GenerationRequest
from tests.support.requests import pixels


def assert_batch_equals_single(engine: Engine, requests: Sequence[GenerationRequest]) -> None:
    """One batched call gives each request the images it gets alone, seeds and parameters included.

    Batched kernels round floats differently (~1e-6); after 8-bit quantisation an odd pixel may land one
    level apart. Anything more would mean a wrong seed, prompt, image or mask pairing.
    """
    batched = engine.generate(list(requests))
    for request, batch_images in zip(requests, batched, strict=True):
        (single_images,) = engine.generate([request])
        assert [i.seed for i in batch_images] == [i.seed for i in single_images]
        for b, s in zip(batch_images, single_images, strict=True):
            difference = np.abs(pixels(b.image) - pixels(s.image))
            assert difference.max() <= 1 and difference.mean() < 0.01
            assert b.parameters == s.parameters
