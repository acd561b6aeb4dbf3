"""Upscalers against the libraries called directly: spandrel's network on the whole picture, diffusers' x4 pipeline.

Tolerances: one tile is the library's result exactly. Several tiles of a network that looks no further than a
quarter of the overlap around a pixel are the untiled result within 1 level of 255 (float sums rounded to 8 bits);
a network that looks further gets no step along the tile borders, where the same tiles without overlap show one.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import spandrel
import torch
from diffusers import StableDiffusionUpscalePipeline
from PIL import Image
from safetensors.torch import save_file

from generation.errors import Cancelled, InvalidRequest, ModelUnavailable
from generation.specs import UpscalerSpec
from generation.tiling import plan
from generation.tiny.upscaler import tiny_compact_state_dict, write_tiny_upscaler
from generation.upscalers import image_tensor, load_upscaler, network_scale, upscale_cost

CPU = torch.device("cpu")


def picture(width: int, height: int, seed: int = 0) -> Image.Image:
    """A smooth random picture (noise blown up), so neighbouring pixels relate as in a photo."""
    noise = np.random.default_rng(seed).integers(0, 256, (max(2, height // 8), max(2, width // 8), 3), dtype=np.uint8)
    return Image.fromarray(noise).resize((width, height), Image.Resampling.BICUBIC)


def network(tmp_path: Path, convs: int = 2) -> Path:
    path = tmp_path / f"compact-{convs}.safetensors"
    save_file(tiny_compact_state_dict(convs=convs), path)
    return path


def spandrel_direct(path: Path, image: Image.Image) -> np.ndarray:
    """spandrel called as its README shows, on the whole picture, rounded to 8 bits."""
    model = spandrel.ModelLoader("cpu").load_from_file(path).eval()
    return (model(image_tensor(image))[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)


def upscaled(path: Path, image: Image.Image, **spec: object) -> np.ndarray:
    return np.asarray(load_upscaler(UpscalerSpec("net", str(path), **spec), CPU, torch.float32).upscale(image))


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_the_tiny_network_is_a_real_esrgan_compact_that_spandrel_loads(tmp_path: Path, suffix: str) -> None:
    path = write_tiny_upscaler(tmp_path / f"tiny{suffix}")
    model = spandrel.ModelLoader("cpu").load_from_file(path)
    assert (model.architecture.id, model.architecture.name, model.scale) == ("Compact", "RealESRGAN Compact", 4)
    assert load_upscaler(UpscalerSpec("tiny", str(path)), CPU, torch.float32).scale == 4
    assert write_tiny_upscaler(tmp_path / "dir").name == "tiny-realesrgan-x4.safetensors"


def test_one_tile_is_spandrel_on_the_whole_picture_exactly(tmp_path: Path) -> None:
    path = network(tmp_path)
    image = picture(50, 36)
    ours = upscaled(path, image)
    assert ours.shape == (144, 200, 3)
    assert np.array_equal(ours, spandrel_direct(path, image))


def test_tiles_blend_to_the_untiled_result(tmp_path: Path) -> None:
    path = network(tmp_path)  # 4 convolutions: it looks 4 pixels around, within a quarter of the 32 px overlap
    image = picture(160, 100)
    assert len(plan(160, 100, 64, 32)) == 12
    ours = upscaled(path, image, tile=64, overlap=32)
    assert ours.shape == (400, 640, 3)
    difference = np.abs(ours.astype(int) - spandrel_direct(path, image))
    assert difference.max() <= 1


def _border_step(result: np.ndarray, reference: np.ndarray, edges: list[int]) -> float:
    """The largest mean change, across any tile edge, of the jump between the two columns meeting there."""
    jumps = np.diff(result.astype(float), axis=1) - np.diff(reference.astype(float), axis=1)
    return max(float(np.abs(jumps[:, edge - 1]).mean()) for edge in edges)


@pytest.mark.parametrize(("overlap", "seamless"), [(16, True), (0, False)])
def test_no_step_along_tile_borders(tmp_path: Path, overlap: int, seamless: bool) -> None:
    path = network(tmp_path, convs=12)  # looks 14 pixels around: further than a quarter of the overlap
    image = picture(120, 40)
    tiles = plan(120, 40, 48, overlap)
    edges = sorted({edge * 4 for tile in tiles for edge in (tile.left, tile.right) if 0 < edge < 120})
    ours = upscaled(path, image, tile=48, overlap=overlap)
    untiled = spandrel_direct(path, image)
    step = _border_step(ours, untiled, edges)
    if seamless:
        assert step < 0.25 and np.abs(ours.astype(int) - untiled).max() <= 2
    else:  # the control: the same tiles cut edge to edge show their borders, so the measure can see a seam
        assert step > 2


def test_scale_is_the_networks_or_less_resized_down(tmp_path: Path) -> None:
    path = network(tmp_path)
    image = picture(40, 32)
    half = np.asarray(load_upscaler(UpscalerSpec("net", str(path)), CPU, torch.float32).upscale(image, scale=2))
    full = Image.fromarray(spandrel_direct(path, image))
    assert np.array_equal(half, np.asarray(full.resize((80, 64), Image.Resampling.LANCZOS)))
    configured = load_upscaler(UpscalerSpec("net", str(path), scale=3), CPU, torch.float32)
    assert configured.upscale(image).size == (120, 96) and configured.output_size(40, 32) == (120, 96)
    with pytest.raises(InvalidRequest, match="enlarges up to 4x, so a scale of 8 is not possible: pick 1 to 4"):
        configured.upscale(image, scale=8)
    with pytest.raises(ModelUnavailable, match="it enlarges 4x but is configured with scale = 5"):
        load_upscaler(UpscalerSpec("net", str(path), scale=5), CPU, torch.float32)


def test_progress_counts_tiles_and_a_cancel_stops_between_them(tmp_path: Path) -> None:
    upscaler = load_upscaler(UpscalerSpec("net", str(network(tmp_path)), tile=32, overlap=8), CPU, torch.float32)
    seen: list[tuple[int, int]] = []
    upscaler.upscale(picture(80, 40), lambda done, total: seen.append((done, total)))
    assert seen == [(n, 6) for n in range(1, 7)]  # 3 x 2 tiles
    seen.clear()
    with pytest.raises(Cancelled):
        upscaler.upscale(picture(80, 40), lambda d, t: seen.append((d, t)), lambda: len(seen) >= 3)
    assert seen == [(1, 6), (2, 6), (3, 6)]


def test_files_that_are_not_upscalers_are_refused_by_name(tmp_path: Path) -> None:
    text = tmp_path / "notes.pth"
    text.write_text("not weights")
    with pytest.raises(ModelUnavailable, match=r"Upscaler 'x' could not be loaded from '.*notes.pth': it could not"):
        load_upscaler(UpscalerSpec("x", str(text)), CPU, torch.float32)
    unknown = tmp_path / "odd.safetensors"
    save_file({"weight": torch.zeros(3)}, unknown)
    with pytest.raises(ModelUnavailable, match="spandrel does not recognise the network in it"):
        load_upscaler(UpscalerSpec("x", str(unknown)), CPU, torch.float32)
    with pytest.raises(ModelUnavailable, match="no such file.*--kind upscaler"):
        load_upscaler(UpscalerSpec("x", str(tmp_path / "gone.pth")), CPU, torch.float32)
    with pytest.raises(ModelUnavailable, match=r"not a diffusers directory.*--kind sd-x4"):
        load_upscaler(UpscalerSpec("x", str(tmp_path), kind="sd-x4"), CPU, torch.float32)


def test_cost_counts_output_pixels_of_every_tile(tmp_path: Path) -> None:
    net = UpscalerSpec("net", "x.pth")
    assert upscale_cost(net, 512, 512, 4) == 2048 * 2048  # one tile: the output pixels
    assert upscale_cost(net, 256, 256, 4) == 1024 * 1024
    assert upscale_cost(UpscalerSpec("net", "x.pth", tile=160), 256, 256, 4) == 4 * 160 * 160 * 16  # overlaps count
    x4 = UpscalerSpec("x4", "hub/id", kind="sd-x4", steps=20)
    # 128 px tiles with 32 px overlap: 3 x 3 tiles over 256 px, 2.2 units per output pixel and step.
    assert upscale_cost(x4, 256, 256, 4) == round(9 * 128 * 128 * 16 * 2.2 * 20)
    assert network_scale(UpscalerSpec("net", str(network(tmp_path)))) == 4


@pytest.fixture(scope="module")
def tiny_x4(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_upscaler(tmp_path_factory.mktemp("models") / "x4", "sd-x4")


def test_sd_x4_in_one_tile_is_the_diffusers_pipeline_exactly(tiny_x4: Path) -> None:
    image = picture(32, 24)
    spec = UpscalerSpec("x4", str(tiny_x4), kind="sd-x4", steps=3)
    upscaler = load_upscaler(spec, CPU, torch.float32)
    seen: list[tuple[int, int]] = []
    ours = upscaler.upscale(image, lambda d, t: seen.append((d, t)), prompt="a red fox", seed=5)
    pipe = StableDiffusionUpscalePipeline.from_pretrained(tiny_x4)
    pipe.set_progress_bar_config(disable=True)
    raw = pipe(
        prompt="a red fox",
        image=image,
        num_inference_steps=3,
        generator=torch.Generator("cpu").manual_seed(5),
    ).images[0]  # diffusers' own guidance (9) and noise level (20)
    assert ours.size == (128, 96) and seen == [(1, 3), (2, 3), (3, 3)] and network_scale(spec) == 4
    assert np.array_equal(np.asarray(ours), np.asarray(raw))


def test_sd_x4_tiles_make_the_exact_size_step_by_step_and_stop_on_cancel(tiny_x4: Path) -> None:
    # Seams are the shared blending's, measured above with a network: the tiny x4 pipeline's random weights make
    # noise, in which no step would show.
    image = picture(70, 38)  # not a multiple of the pipeline's 4: padded, then cut back
    spec = UpscalerSpec("x4", str(tiny_x4), kind="sd-x4", steps=2, tile=32, overlap=16)
    upscaler = load_upscaler(spec, CPU, torch.float32)
    assert len(plan(72, 40, 32, 16)) == 8
    seen: list[tuple[int, int]] = []
    assert upscaler.upscale(image, lambda d, t: seen.append((d, t)), seed=1).size == (280, 152)
    assert seen == [(n, 16) for n in range(1, 17)]  # 4 x 2 tiles of 2 steps
    seen.clear()
    with pytest.raises(Cancelled):
        upscaler.upscale(image, lambda d, t: seen.append((d, t)), lambda: len(seen) >= 3)
    assert seen == [(1, 16), (2, 16), (3, 16)]  # stopped inside the second tile, between its steps
