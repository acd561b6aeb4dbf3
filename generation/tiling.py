"""Cutting a picture into overlapping tiles and blending the upscaled tiles back without seams.

Where two tiles overlap, each one's weight ramps linearly across the overlap, and the weights are normalised
to sum to one. The outer quarter of an overlap on each side is left to the other tile altogether: a network
sees padding past its tile's edge, so the pixels nearest that edge are the least like the untiled result.
A network that looks no further than a quarter of the overlap around a pixel (a small convolutional one)
therefore gives the untiled result exactly, up to float rounding; a wider one gives a smooth blend of the two
tiles' versions instead of a step. One tile covering the whole picture has weight 1 everywhere: exactly the
untiled result.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

# Weight floor: a pixel that every covering tile leaves to another one still gets a value.
_FLOOR = 1e-6


@dataclass(frozen=True)
class Tile:
    """One tile, in input pixels: columns [left, right), rows [top, bottom)."""

    left: int
    top: int
    right: int
    bottom: int

    @property
    def width(self) -> int:
        """Columns in the tile."""
        return self.right - self.left

    @property
    def height(self) -> int:
        """Rows in the tile."""
        return self.bottom - self.top

    @property
    def box(self) -> tuple[int, int, int, int]:
        """(left, top, right, bottom), as PIL's `crop` takes it."""
        return self.left, self.top, self.right, self.bottom


def spans(length: int, tile: int, overlap: int) -> list[tuple[int, int]]:
    """Equal tiles along one side, spread evenly from edge to edge, neighbours sharing at least `overlap`."""
    if not 0 <= overlap < tile:
        raise ValueError(f"overlap must be from 0 to less than the tile ({tile}), not {overlap}")
    if length <= tile:
        return [(0, length)]
    count = math.ceil((length - overlap) / (tile - overlap))
    starts = [round(index * (length - tile) / (count - 1)) for index in range(count)]
    return [(start, start + tile) for start in starts]


def plan(width: int, height: int, tile: int, overlap: int) -> list[Tile]:
    """Tiles covering a width x height picture, row by row."""
    columns, rows = spans(width, tile, overlap), spans(height, tile, overlap)
    return [Tile(left, top, right, bottom) for top, bottom in rows for left, right in columns]


def _ramp(start: int, end: int, scale: int, overlap: int, first: bool, last: bool) -> np.ndarray:
    """Weights along one side of the tile [start, end) in output pixels: 1 inside, ramps toward inner edges."""
    position = np.arange(start * scale, end * scale, dtype=np.float64) + 0.5
    weight = np.ones_like(position)
    blend = overlap * scale
    if blend == 0:
        return weight
    margin, width = blend / 4, blend / 2
    if not first:  # a tile before this one: ramp up from this tile's starting edge
        weight = np.minimum(weight, (position - start * scale - margin) / width)
    if not last:  # a tile after this one: ramp down toward this tile's ending edge
        weight = np.minimum(weight, (end * scale - position - margin) / width)
    return np.clip(weight, _FLOOR, 1.0)


class Canvas:
    """Accumulates upscaled tiles (float RGB in [0, 1]) with feathered weights into one picture."""

    def __init__(self, width: int, height: int, scale: int, overlap: int, channels: int = 3) -> None:
        self.width, self.height, self.scale, self.overlap = width, height, scale, overlap
        self._sum = np.zeros((height * scale, width * scale, channels), dtype=np.float32)
        self._weight = np.zeros((height * scale, width * scale, 1), dtype=np.float32)

    def add(self, tile: Tile, pixels: np.ndarray) -> None:
        """Blend in one tile's output: `pixels` is (tile height x scale, tile width x scale, channels)."""
        s = self.scale
        expected = (tile.height * s, tile.width * s)
        if pixels.shape[:2] != expected:
            raise ValueError(f"tile output is {pixels.shape[:2]}, expected {expected} for {tile} at {s}x")
        across = _ramp(tile.left, tile.right, s, self.overlap, tile.left == 0, tile.right == self.width)
        down = _ramp(tile.top, tile.bottom, s, self.overlap, tile.top == 0, tile.bottom == self.height)
        weight = np.outer(down, across).astype(np.float32)[..., None]
        rows, columns = slice(tile.top * s, tile.bottom * s), slice(tile.left * s, tile.right * s)
        self._sum[rows, columns] += pixels * weight  # a lone tile's weight is 1: its pixels exactly
        self._weight[rows, columns] += weight

    def pixels(self) -> np.ndarray:
        """The blended picture, float in [0, 1]."""
        return np.clip(self._sum / np.maximum(self._weight, _FLOOR), 0.0, 1.0)

    def image_array(self) -> np.ndarray:
        """The blended picture as 8-bit RGB, rounded as diffusers rounds its outputs."""
        return (self.pixels() * 255).round().astype(np.uint8)
