"""Tile layouts and the feathered blend, on plain arrays."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from generation.tiling import Canvas, Tile, plan, spans


@pytest.mark.parametrize("length", [1, 63, 64, 65, 113, 200, 1000])
def test_spans_cover_the_side_with_equal_tiles_sharing_the_overlap(length: int) -> None:
    found = spans(length, 64, 16)
    assert found[0][0] == 0 and found[-1][1] == length
    assert len({end - start for start, end in found}) == 1  # equal tiles (one shorter tile only when alone)
    for (_, end), (start, _) in itertools.pairwise(found):
        assert end - start >= 16
    assert len(found) == (1 if length <= 64 else -(-(length - 16) // 48))  # as few as the overlap allows


def test_the_overlap_must_leave_a_tile() -> None:
    with pytest.raises(ValueError, match="overlap must be from 0 to less than the tile"):
        spans(100, 32, 32)


def test_blended_tiles_of_one_picture_give_that_picture() -> None:
    # Each tile carries the same values where tiles overlap: weights that sum to one give them back.
    rng = np.random.default_rng(0)
    whole = rng.random((2 * 50, 2 * 90, 3), dtype=np.float32)
    canvas = Canvas(90, 50, scale=2, overlap=12)
    tiles = plan(90, 50, 32, 12)
    assert len(tiles) == 4 * 2
    for tile in tiles:
        canvas.add(tile, whole[tile.top * 2 : tile.bottom * 2, tile.left * 2 : tile.right * 2])
    assert np.abs(canvas.pixels() - whole).max() < 1e-6


def test_weights_ramp_across_the_overlap_and_leave_the_edge_to_the_neighbour() -> None:
    canvas = Canvas(48, 8, scale=1, overlap=16)
    left, right = Tile(0, 0, 32, 8), Tile(16, 0, 48, 8)
    canvas.add(left, np.zeros((8, 32, 3), dtype=np.float32))
    canvas.add(right, np.ones((8, 32, 3), dtype=np.float32))
    row = canvas.pixels()[0, :, 0]
    assert np.all(row[:20] < 1e-5) and np.all(row[28:] > 1 - 1e-5)  # outer quarters: one tile alone
    assert np.all(np.diff(row[20:28]) > 0) and abs(row[23] + row[24] - 1) < 1e-6  # a linear ramp between
    with pytest.raises(ValueError, match="tile output is"):
        canvas.add(left, np.zeros((8, 8, 3), dtype=np.float32))
