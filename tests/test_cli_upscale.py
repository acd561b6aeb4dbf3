"""`imagine-bot tiny-model --kind upscaler|sd-x4` then `imagine-bot upscale`, against spandrel and diffusers called
directly. The first test runs the command line as a user would, in a subprocess; the others call its `main`."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import spandrel
import torch
from diffusers import StableDiffusionImg2ImgPipeline, StableDiffusionUpscalePipeline
from PIL import Image
from PIL.PngImagePlugin import PngInfo
from sd_parsers import ParserManager

from bot.cli import main
from generation.upscalers import image_tensor
from tests.test_cli import imagine_bot


def _picture(path: Path, size: int, parameters: str | None = None) -> Path:
    noise = np.random.default_rng(size).integers(0, 256, (8, 8, 3), dtype=np.uint8)
    info = PngInfo()
    if parameters:
        info.add_text("parameters", parameters)
    Image.fromarray(noise).resize((size, size), Image.Resampling.BICUBIC).save(path, pnginfo=info)
    return path


def _spandrel(network: Path, image: Path) -> Image.Image:
    model = spandrel.ModelLoader("cpu").load_from_file(network).eval()
    with Image.open(image) as opened:
        output = model(image_tensor(opened))[0].permute(1, 2, 0).numpy()
    return Image.fromarray((output * 255).round().astype(np.uint8))


@pytest.fixture(autouse=True)
def _in_tmp_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # where `main` writes its default out/ folder


def _run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture(scope="module")
def network(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from generation.tiny.upscaler import write_tiny_upscaler

    return write_tiny_upscaler(tmp_path_factory.mktemp("models") / "net.pth")


def test_tiny_upscaler_then_upscale_writes_a_4x_png(tmp_path: Path) -> None:
    network, out = tmp_path / "esrgan.safetensors", tmp_path / "O"
    made = imagine_bot("tiny-model", str(network), "--kind", "upscaler", cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    assert made.stdout.strip() == str(network)
    image = _picture(tmp_path / "cat.png", 64)
    result = imagine_bot("upscale", str(image), "--upscaler", str(network), "--out", str(out), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    (written,) = [Path(line) for line in result.stdout.splitlines()]
    assert written == out / "cat-x4.png"
    assert "upscaling with esrgan: 100%" in result.stderr  # the progress bar
    with Image.open(written) as upscaled:
        assert upscaled.size == (256, 256)
        assert upscaled.info["parameters"] == "Postprocess upscale by: 4, Postprocess upscaler: esrgan, Size: 256x256"
        assert np.array_equal(np.asarray(upscaled), np.asarray(_spandrel(network, image)))


def test_a_smaller_scale_resizes_down_and_keeps_the_pictures_own_parameters(
    tmp_path: Path, network: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    own = "a red cube\nNegative prompt: blur\nSteps: 4, Sampler: Euler, CFG scale: 7, Seed: 7, Size: 48x48, Model: sd"
    image = _picture(tmp_path / "cube.png", 48, own)
    code, out, err = _run(capsys, "upscale", str(image), "--upscaler", str(network), "--scale", "2")
    assert code == 0, err
    assert out == f"{Path('out') / 'cube-x2.png'}\n"
    with Image.open(out.strip()) as upscaled:
        info = ParserManager().parse(upscaled)
        assert upscaled.info["parameters"] == own.replace("48x48", "96x96") + (
            ", Postprocess upscale by: 2, Postprocess upscaler: net"
        )
        expected = _spandrel(network, image).resize((96, 96), Image.Resampling.LANCZOS)
        assert np.array_equal(np.asarray(upscaled), np.asarray(expected))
    assert (info.full_prompt, info.metadata["Size"], info.metadata["Postprocess upscaler"]) == (
        "a red cube",
        "96x96",
        "net",
    )


def test_refusals_name_what_was_wrong(tmp_path: Path, network: Path, capsys: pytest.CaptureFixture[str]) -> None:
    notes, image = tmp_path / "notes.png", _picture(tmp_path / "in.png", 80)
    notes.write_text("not a picture")
    code, _, err = _run(capsys, "upscale", str(notes), "--upscaler", str(network))
    assert (code, err) == (
        2,
        "imagine-bot: The image is not a picture we can read: send PNG, JPEG, WebP, GIF or AVIF.\n",
    )
    code, _, err = _run(capsys, "upscale", str(image), "--upscaler", str(network), "--scale", "8")
    assert code == 2 and err == (
        "imagine-bot: The upscaler 'net' enlarges up to 4x, so a scale of 8 is not possible: pick 1 to 4.\n"
    )
    config = tmp_path / "c.toml"
    config.write_text("[limits]\nmax_upscaled_pixels = 65536\n")
    code, out, err = _run(capsys, "upscale", str(image), "--upscaler", str(network), "--config", str(config))
    assert code == 2 and out == "" and err.count("\n") == 1
    assert err == (
        "imagine-bot: Upscaling 80x80 4x would make 320x320 (102,400 pixels), over the limit of 65,536 for "
        "upscaled pictures (e.g. 256x256): pick a smaller scale or a smaller picture.\n"
    )
    code, _, err = _run(capsys, "upscale", str(image))
    assert code == 1 and "No upscaler is configured: pass --upscaler FILE" in err
    code, _, err = _run(capsys, "upscale", str(image), "--upscaler", "nowhere", "--steps", "3")
    assert code == 1 and "Upscaler 'nowhere' is neither a configured upscaler (none configured)" in err
    code, _, err = _run(capsys, "upscale", str(image), "--upscaler", str(network), "--steps", "3")
    assert code == 2 and "--steps is for the SD x4 upscaler; 'net' is a network" in err
    assert not (tmp_path / "out").exists()


def test_configured_upscalers_and_the_default(
    tmp_path: Path, network: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "nets").mkdir()
    (tmp_path / "nets" / "a.pth").write_bytes(network.read_bytes())
    config = tmp_path / "c.toml"
    config.write_text(
        '[generation]\ndefault_upscaler = "sharp"\n'
        '[[upscalers]]\nname = "first"\nsource = "./nowhere.pth"\n'
        '[[upscalers]]\nname = "sharp"\nsource = "./nets/a.pth"\nscale = 2\n'
    )
    image = _picture(tmp_path / "in.png", 40)
    code, out, err = _run(capsys, "upscale", str(image), "--config", str(config), "--out", str(tmp_path / "o"))
    assert code == 0, err
    with Image.open(out.strip()) as upscaled:  # the configured scale 2 of a 4x network
        assert upscaled.size == (80, 80) and "Postprocess upscaler: sharp" in upscaled.info["parameters"]
    code, _, err = _run(capsys, "upscale", str(image), "--config", str(config), "--upscaler", "first")
    assert code == 1 and f"Upscaler 'first' could not be loaded from '{tmp_path / 'nowhere.pth'}': no such file" in err


def test_sd_x4_directory_upscales_as_the_diffusers_pipeline(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    x4 = tmp_path / "x4"
    code, out, err = _run(capsys, "tiny-model", str(x4), "--kind", "sd-x4")
    assert code == 0 and out.strip() == str(x4), err
    image = _picture(tmp_path / "fox.png", 32)
    args = ("--upscaler", str(x4), "--steps", "2", "--seed", "3", "--prompt", "a fox", "--out", str(tmp_path / "o"))
    code, out, err = _run(capsys, "upscale", str(image), *args)
    assert code == 0, err
    pipe = StableDiffusionUpscalePipeline.from_pretrained(x4)
    with Image.open(image) as opened:
        raw = pipe("a fox", image=opened, num_inference_steps=2, generator=torch.Generator("cpu").manual_seed(3))
    with Image.open(out.strip()) as upscaled:
        assert upscaled.size == (128, 128)
        assert np.array_equal(np.asarray(upscaled), np.asarray(raw.images[0]))


def test_creative_repaints_the_upscaled_picture_with_the_model(
    tmp_path: Path, network: Path, tiny_sd_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    image = _picture(tmp_path / "in.png", 32)
    args = ("--upscaler", str(network), "--creative", "--model", str(tiny_sd_dir), "--prompt", "a red cube")
    code, out, err = _run(capsys, "upscale", str(image), *args, "--seed", "5", "--out", str(tmp_path / "o"))
    assert code == 0, err
    pipe = StableDiffusionImg2ImgPipeline.from_pretrained(tiny_sd_dir)
    raw = pipe(  # the tiny model's defaults (the sd kind's: 25 steps, guidance 7) at the creative strength
        "a red cube",
        image=_spandrel(network, image),
        strength=0.3,
        num_inference_steps=25,
        guidance_scale=7.0,
        generator=torch.Generator("cpu").manual_seed(5),
    ).images[0]
    with Image.open(out.strip()) as repainted:
        parameters = repainted.info["parameters"]
        assert repainted.size == (128, 128)
        assert np.array_equal(np.asarray(repainted), np.asarray(raw))
    assert parameters.startswith("a red cube\nSteps: 25, ") and "Size: 128x128" in parameters
    assert parameters.endswith("Denoising strength: 0.3, Hires upscale: 4, Hires upscaler: net")
    wide = tmp_path / "wide.png"
    Image.new("RGB", (600, 100), (9, 99, 199)).save(wide)
    capsys.readouterr()  # the raw pipeline's progress bar
    code, out, err = _run(capsys, "upscale", str(wide), *args, "--out", str(tmp_path / "o"))
    assert (code, out) == (2, "") and err == (
        "imagine-bot: The creative pass paints up to 2048 pixels a side, and 2400x400 is larger: pick a smaller "
        "--scale or leave out --creative.\n"
    )
