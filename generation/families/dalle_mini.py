"""DALL·E Mini and Mega (Craiyon's model): a Bart encoder-decoder writes 256 VQGAN tokens, one at a time.

Built from min-dalle's pieces (TextTokenizer, DalleBartEncoder, DalleBartDecoder, VQGanDetokenizer) with the
sampling loop of `MinDalle.generate_raw_image_stream`, because MinDalle itself asks the hub for config.json even
when every file is on disk and hard-codes its sizes. The loop is ours so that each image has its own seeded CPU
generator (min-dalle seeds the global one, once for a whole grid), a batch can hold several prompts, progress
counts the 16 token rows, and cancel stops at the next row. Previews: none. A partial picture costs a whole VQGAN
decode (2.5e11 FLOPs, an eighth of a Mini picture's work): three previews a picture would add 40% to Mini's.

Guidance is min-dalle's `supercondition_factor` (logits = (1 - g)·unconditioned + g·conditioned; 16 by default);
temperature and top-k are min-dalle's defaults. No negative prompt, sampler, steps setting, or other size.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch
from PIL import Image

from generation.errors import Cancelled, InvalidRequest
from generation.families.base import Family, StepReporter, generators
from generation.families.dalle_layout import (
    DALLE_KINDS,
    IMAGE_TOKENS,
    ROW_TOKENS,
    SD15_FLOPS_PER_PIXEL_STEP,
    SIDE,
    TEXT_TOKENS,
    sizes_for,
    weight_paths,
)
from generation.families.loading import check_source, unavailable
from generation.loras import strip_lora_tags
from generation.request import GenerationRequest, Mode
from generation.specs import ModelSpec

log = logging.getLogger(__name__)

TEMPERATURE = 1.0  # min-dalle's defaults (generate_raw_image_stream)
TOP_K = 256
ROWS = IMAGE_TOKENS // ROW_TOKENS  # progress steps: one per row of 16 tokens
START_TOKEN = 2**14 - 1  # what min-dalle puts before the first image token
CODEBOOK = 2**14  # VQGAN codes; the decoder's extra logits are never sampled
PAD_TOKEN = 1  # Bart's <pad>: min-dalle fills the prompt rows with it and masks it out
SAMPLER = f"min-dalle top-k {TOP_K}"
NAMES = {"dalle-mini": "DALL·E Mini", "dalle-mega": "DALL·E Mega"}


def min_dalle() -> SimpleNamespace:
    """min-dalle's building blocks, imported without the global torch settings its import changes.

    `import min_dalle` (any submodule: the package's __init__ imports min_dalle.min_dalle) turns grad mode off,
    sets torch's thread count to the CPU count and touches cuDNN's flags; training in the same process needs
    grad mode, and the operator chose the threads. Everything is put back as it was.
    """
    grad, threads = torch.is_grad_enabled(), torch.get_num_threads()
    cudnn, tf32 = torch.backends.cudnn.enabled, torch.backends.cudnn.allow_tf32
    try:
        from min_dalle.models import DalleBartDecoder, DalleBartEncoder, VQGanDetokenizer
        from min_dalle.text_tokenizer import TextTokenizer
    finally:
        torch.set_grad_enabled(grad)
        torch.set_num_threads(threads)
        torch.backends.cudnn.enabled, torch.backends.cudnn.allow_tf32 = cudnn, tf32
    return SimpleNamespace(
        TextTokenizer=TextTokenizer,
        DalleBartEncoder=DalleBartEncoder,
        DalleBartDecoder=DalleBartDecoder,
        VQGanDetokenizer=VQGanDetokenizer,
    )


def read_merges(path: Path) -> list[str]:
    """merges.txt as min-dalle reads it: without the `#version` header line and the final empty line."""
    return path.read_text(encoding="utf8").split("\n")[1:-1]


def text_tokens(tokenizer: Any, prompt: str) -> torch.Tensor:
    """The (2, 64) token rows min-dalle encodes: the empty prompt (<s></s>) and the prompt, padded with 1."""
    tokens = tokenizer.tokenize(prompt)[:TEXT_TOKENS]
    rows = np.ones((2, TEXT_TOKENS), dtype=np.int32)
    rows[0, :2] = [tokens[0], tokens[-1]]  # as min-dalle: after truncation, tokens[-1] may not be </s>
    rows[1, : len(tokens)] = tokens
    return torch.tensor(rows, dtype=torch.long)


def sample_tokens(logits: torch.Tensor, settings: torch.Tensor, draws: Sequence[torch.Generator]) -> torch.Tensor:
    """One token per image: `DalleBartDecoder.sample_tokens`' arithmetic, with each image's own generator.

    `logits` holds the unconditioned rows, then the conditioned ones; `settings` is min-dalle's
    (temperature, top_k, supercondition_factor) tensor. The draw runs on the CPU, so a seed gives the same
    tokens on any device (for the same logits).
    """
    count = logits.shape[0] // 2
    temperature, top_k, supercondition = settings[[0]], settings[[1]].to(torch.long), settings[[2]]
    logits = logits[:, -1, :CODEBOOK]
    logits = logits[:count] * (1 - supercondition) + logits[count:] * supercondition
    logits_sorted, _ = logits.sort(descending=True)
    is_kept = logits >= logits_sorted[:, top_k - 1]
    logits -= logits_sorted[:, [0]]
    logits /= temperature
    logits.exp_()
    logits *= is_kept.to(torch.float32)
    weights = logits.to("cpu", torch.float32)
    drawn = [torch.multinomial(weights[i : i + 1], 1, generator=g)[:, 0] for i, g in enumerate(draws)]
    return torch.cat(drawn).to(logits.device)


class DalleMini(Family):
    """DALL·E Mini (`dalle-mini`) and Mega (`dalle-mega`): equality with min-dalle's own loop is the proof."""

    kinds = DALLE_KINDS
    modes = frozenset({Mode.TXT2IMG})
    negative_prompt = False  # supercondition mixes the prompt with the empty prompt, never another one
    samplers = False

    def __init__(self, spec: ModelSpec, device: torch.device, dtype: torch.dtype) -> None:
        super().__init__(spec, device, dtype)
        check_source(spec)
        paths, _ = weight_paths(Path(spec.source).expanduser(), spec.kind)
        self.sizes = sizes_for(spec.source, spec.kind)
        blocks = min_dalle()
        vocab = json.loads(paths["vocab.json"].read_text(encoding="utf8"))
        self.tokenizer = blocks.TextTokenizer(vocab, read_merges(paths["merges.txt"]))
        shape = {
            "attention_head_count": self.sizes.attention_head_count,
            "embed_count": self.sizes.embed_count,
            "glu_embed_count": self.sizes.glu_embed_count,
            "layer_count": self.sizes.layer_count,
            "device": device,
        }
        encoder = blocks.DalleBartEncoder(
            text_token_count=TEXT_TOKENS, text_vocab_count=self.sizes.text_vocab_count, **shape
        )
        decoder = blocks.DalleBartDecoder(image_vocab_count=self.sizes.image_vocab_count, **shape)
        # As MinDalle: the Bart halves in the model dtype, the VQGAN in float32 (it upsamples in float32 anyway).
        self.encoder = self._load(encoder.to(dtype).eval(), paths["encoder.pt"])
        self.decoder = self._load(decoder.to(dtype).eval(), paths["decoder.pt"])
        self.detokenizer = self._load(blocks.VQGanDetokenizer().eval(), paths["detoker.pt"], strict=True)

    def _load(self, module: torch.nn.Module, path: Path, strict: bool = False) -> torch.nn.Module:
        # MinDalle loads the Bart halves with strict=False; sizes that do not match still raise.
        state = torch.load(path, map_location="cpu", weights_only=True)
        try:
            result = module.load_state_dict(state, strict=strict)
        except RuntimeError as exc:
            name = NAMES.get(self.spec.kind, self.spec.kind)
            raise unavailable(
                self.spec, f"{path.name} does not fit {name}'s sizes (the other kind's weights, or a wrong file)"
            ) from exc
        if result.missing_keys:
            log.warning("%s: %s lacks %s; those stay random", self.spec.name, path.name, ", ".join(result.missing_keys))
        return module.to(self.device)

    @classmethod
    def check(cls, spec: ModelSpec, request: GenerationRequest) -> None:
        """The common refusals, then min-dalle's fixed 256x256 pictures and its 16 token rows (no steps)."""
        super().check(spec, request)
        name = NAMES.get(spec.kind, spec.kind)
        if (request.width, request.height) != (SIDE, SIDE):
            raise InvalidRequest(
                f"The model '{spec.name}' ({name}) makes {SIDE}x{SIDE} pictures only, not "
                f"{request.width}x{request.height}: leave the size out or pick another model."
            )
        if request.steps != ROWS:
            raise InvalidRequest(
                f"The model '{spec.name}' ({name}) always draws its picture in {ROWS} rows of tokens and has no "
                f"steps setting; leave steps out (or give {ROWS}), not {request.steps}."
            )

    @classmethod
    def cost(cls, spec: ModelSpec, request: GenerationRequest) -> int:
        """FLOPs in SD 1.5 pixel-steps: the prompt encoded once, then each image's 256 passes and VQGAN decode.

        The FLOPs come from the sizes (DalleSizes.image_flops): Mini ≈ 2.1 TFLOP a picture, about 1/20 of a
        25-step SD 1.5 512² image; Mega ≈ 15 TFLOP, about 1/3. Token-by-token decoding runs small kernels and is
        slower per FLOP than a UNet on a GPU; the estimate leaves that out.
        """
        sizes = sizes_for(spec.source, spec.kind)
        flops = sizes.encoder_flops() + request.count * sizes.image_flops()
        return max(1, round(flops / SD15_FLOPS_PER_PIXEL_STEP))

    def core_module(self) -> torch.nn.Module:
        """The Bart decoder (it runs 256 times per picture)."""
        return self.decoder

    def _autocast(self) -> torch.autocast:
        # MinDalle runs under torch.cuda.amp.autocast(dtype): float16/bfloat16 weights meet its float32 cache.
        return torch.autocast(self.device.type, dtype=self.dtype, enabled=self.dtype != torch.float32)

    def run(self, requests: Sequence[GenerationRequest], report: StepReporter) -> tuple[list[Image.Image], str]:
        """All images of the batch decoded together, token by token; each image drawn with its own generator."""
        tokens = self.image_tokens(requests, report)
        return [self._picture(tokens[i : i + 1]) for i in range(tokens.shape[0])], SAMPLER

    def _encode(self, requests: Sequence[GenerationRequest]) -> tuple[torch.Tensor, torch.Tensor]:
        """Encoder states and prompt tokens per image: every unconditioned row first, then every conditioned one."""
        rows = [text_tokens(self.tokenizer, strip_lora_tags(r.prompt)).to(self.device) for r in requests]
        with self._autocast():
            states = [self.encoder.forward(r) for r in rows]  # min-dalle's encoder takes exactly these two rows
        owners = [index for index, request in enumerate(requests) for _ in request.seeds]
        state = torch.cat([torch.stack([states[i][half] for i in owners]) for half in (0, 1)])
        tokens = torch.cat([torch.stack([rows[i][half] for i in owners]) for half in (0, 1)])
        return state, tokens

    @torch.inference_mode()  # grad mode stays as the caller had it (training in this process needs it on)
    def image_tokens(self, requests: Sequence[GenerationRequest], report: StepReporter) -> torch.Tensor:
        """The 256 VQGAN tokens of every image, (images, 256): MinDalle.generate_raw_image_stream's loop."""
        draws = generators(requests)
        count = len(draws)
        encoder_state, prompt_tokens = self._encode(requests)
        attention_mask = prompt_tokens.not_equal(PAD_TOKEN)[:, None, None, :]
        shape = (self.sizes.layer_count, count * 4, IMAGE_TOKENS, self.sizes.embed_count)
        attention_state = torch.zeros(shape, device=self.device)  # keys and values of both halves, float32
        tokens = torch.full((count, IMAGE_TOKENS + 1), START_TOKEN, dtype=torch.long, device=self.device)
        token_indices = torch.arange(IMAGE_TOKENS, device=self.device)
        settings = torch.tensor([TEMPERATURE, TOP_K, requests[0].guidance], dtype=torch.float32, device=self.device)
        for i in range(IMAGE_TOKENS):
            with self._autocast():
                logits, attention_state = self.decoder.forward(
                    attention_mask=attention_mask,
                    encoder_state=encoder_state,
                    attention_state=attention_state,
                    prev_tokens=tokens[:, [i]],
                    token_index=token_indices[[i]],
                )
                tokens[:, i + 1] = sample_tokens(logits, settings, draws)
            if (i + 1) % ROW_TOKENS == 0:
                report.step((i + 1) // ROW_TOKENS, ROWS)
                if report.cancelled:
                    raise Cancelled("Cancelled.")
        return tokens[:, 1:]

    @torch.inference_mode()
    def _picture(self, tokens: torch.Tensor) -> Image.Image:
        """One image's tokens through the VQGAN, to pixels as min-dalle's generate_image makes them."""
        rgb = self.detokenizer.forward(False, tokens)  # (256, 256, 3), 0 to 255 in float32
        return Image.fromarray(rgb.to(torch.uint8).cpu().numpy())
