"""A1111-style `parameters` text for PNG files, so other tools read back how an image was made."""

from __future__ import annotations

import io
import json
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING

from PIL import Image
from PIL.PngImagePlugin import PngInfo

from generation.request import GenerationRequest, Mode

if TYPE_CHECKING:
    from generation.translation import Translation

_NAME_SYMBOLS = str.maketrans("", "", ':,"')


def _clean(text: str) -> str:
    # The format is line-based: a newline inside the prompt would start a bogus field.
    return " ".join(text.split())


def parameters_text(
    request: GenerationRequest,
    seed: int,
    sampler: str,
    model: str | None = None,
    size: tuple[int, int] | None = None,
    lora_hashes: Mapping[str, str] | None = None,
    translation: Translation | None = None,
) -> str:
    """The `parameters` chunk text: prompt, negative prompt line, then `Key: value` pairs.

    `size` is the picture's own, where a family's output differs from the request (IF's stages upscale).
    `lora_hashes`: A1111's short hash by LoRA name, written as A1111 does (`Lora hashes: "name: hash, …"`).
    `translation`: the request holds the English the encoders read; the typed text goes in quoted fields
    (`Original prompt: "…"`, as A1111 quotes values holding commas), with `Translated from: French`.
    """
    width, height = size or (request.width, request.height)
    if request.upscale is not None:  # the picture's own parameters at its new size (generation.families.upscaling)
        upscale = request.upscale
        return upscale_parameters(upscale.parameters or None, model or request.model, upscale.scale, (width, height))
    lines = [_clean(request.prompt)]
    if request.negative_prompt:
        lines.append(f"Negative prompt: {_clean(request.negative_prompt)}")
    fields = [
        f"Steps: {request.steps}",
        f"Sampler: {sampler}",
        f"CFG scale: {request.guidance:g}",
        f"Seed: {seed}",
        f"Size: {width}x{height}",
        f"Model: {_clean(model or request.model).replace(',', ' ')}",
    ]
    if request.mode is not Mode.TXT2IMG:
        fields.append(f"Denoising strength: {request.strength:g}")
    if request.mode is Mode.INPAINT:
        fields.append("Mask mode: Inpaint masked")
    hashes = [(name, lora_hashes[name]) for name, _ in request.loras if lora_hashes and name in lora_hashes]
    if hashes:
        # A1111 drops ':' and ',' from the names, and quotes the value because it holds both.
        listed = ", ".join(f"{_clean(name).translate(_NAME_SYMBOLS)}: {value}" for name, value in hashes)
        fields.append(f'Lora hashes: "{listed}"')
    if translation is not None:
        fields.append(f"Translated from: {translation.language}")
        if translation.translated_prompt is not None:
            fields.append(f"Original prompt: {json.dumps(_clean(translation.original_prompt), ensure_ascii=False)}")
        if translation.translated_negative is not None:
            original = _clean(translation.original_negative)
            fields.append(f"Original negative prompt: {json.dumps(original, ensure_ascii=False)}")
    lines.append(", ".join(fields))
    return "\n".join(lines)


def png_bytes(image: Image.Image, parameters: str | None = None, *, compress_level: int | None = None) -> bytes:
    """Encode an image as PNG with the `parameters` text chunk (none for pictures that are not results);
    `compress_level` (zlib's 0-9; None: Pillow's 6) trades size for encoding time."""
    info = PngInfo()
    if parameters is not None:
        info.add_text("parameters", parameters)
    buffer = io.BytesIO()
    level = {} if compress_level is None else {"compress_level": compress_level}
    image.save(buffer, format="PNG", pnginfo=info, **level)
    return buffer.getvalue()


def read_parameters(data: bytes) -> str | None:
    """The `parameters` text of a PNG, if it has one."""
    with Image.open(io.BytesIO(data)) as image:
        return image.info.get("parameters")


def own_prompt(parameters: str | None) -> tuple[str, str]:
    """The prompt and negative prompt in A1111 `parameters` text ("" when there are none)."""
    lines = (parameters or "").strip().split("\n")
    if "Steps: " not in lines[-1]:  # not a generated picture's (the fields line comes last)
        return "", ""
    prompt, negative = [], []
    for line in lines[:-1]:
        if line.startswith("Negative prompt: ") or negative:
            negative.append(line.removeprefix("Negative prompt: "))
        else:
            prompt.append(line)
    return "\n".join(prompt), "\n".join(negative)


_SIZE_FIELD = re.compile(r"(^|, )Size: \d+x\d+")  # the field, not e.g. `Hires size`


def upscale_parameters(
    original: str | None, upscaler: str, scale: int, size: tuple[int, int], *, creative: bool = False
) -> str:
    """The `parameters` of an upscaled picture: its own (when it has them) at the new size, plus A1111's fields
    `Postprocess upscale by` / `Postprocess upscaler` (its Extras tab), or `Hires upscale` / `Hires upscaler`
    after a creative pass (its hires fix: upscale, then img2img at the new size)."""
    prefix = "Hires" if creative else "Postprocess"
    by = "upscale" if creative else "upscale by"
    added = f"{prefix} {by}: {scale}, {prefix} upscaler: {_clean(upscaler).replace(',', ' ')}"
    width, height = size
    if not original or not original.strip():
        return f"{added}, Size: {width}x{height}"
    lines = original.rstrip("\n").split("\n")
    last, count = _SIZE_FIELD.subn(lambda match: f"{match[1]}Size: {width}x{height}", lines[-1], count=1)
    if count:
        lines[-1] = f"{last}, {added}"
    elif "Steps: " in last:  # the fields line, without a size
        lines[-1] = f"{last}, Size: {width}x{height}, {added}"
    else:  # only a prompt: the fields go on a line of their own, as A1111 writes them
        lines.append(f"{added}, Size: {width}x{height}")
    return "\n".join(lines)
