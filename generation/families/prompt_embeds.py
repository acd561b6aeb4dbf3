"""Prompt embeddings for SD and SDXL from A1111 syntax (weights, BREAK, prompts past 77 tokens), through compel.

compel gets our parsed fragments and weights directly (its own prompt language is never parsed), and splits each
BREAK segment into 75-token chunks, each wrapped in BOS/EOS and encoded alone; the chunks are concatenated, as
A1111 does. Weights follow compel: above 1 a token's embedding is pushed away from the empty prompt's at that
position only; below 1 it is blended toward the prompt with that fragment masked out. (A1111 instead multiplies
and then rescales the whole prompt's mean, so weighted pictures differ from A1111's in detail.)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from compel import Compel, ReturnedEmbeddingsType, SplitLongTextMode

from generation.prompt_syntax import Fragment, ParsedPrompt

# How many times the longest prompt's length a batch may grow to so every prompt repeats whole (see `pad`).
MAX_REPEAT = 4


def _encoders(pipe: Any) -> list[tuple[Any, Any]]:
    # As diffusers' SDXL encode_prompt: both encoders when present (the refiner has only the second).
    pairs = [(getattr(pipe, "tokenizer", None), getattr(pipe, "text_encoder", None))]
    pairs.append((getattr(pipe, "tokenizer_2", None), getattr(pipe, "text_encoder_2", None)))
    return [(tokenizer, encoder) for tokenizer, encoder in pairs if tokenizer is not None and encoder is not None]


def needs_embeddings(pipe: Any, prompts: Sequence[ParsedPrompt]) -> bool:
    """Whether any prompt needs our encoding: a weight, a BREAK, or more tokens than one CLIP window holds."""
    return any(p.weighted or p.has_break or _too_long(pipe, p.text) for p in prompts)


def _too_long(pipe: Any, text: str) -> bool:
    return any(len(tokenizer.tokenize(text)) > tokenizer.model_max_length - 2 for tokenizer, _ in _encoders(pipe))


@dataclass(frozen=True, eq=False)
class Conditioning:
    """One prompt's embeddings: (1, tokens, dim), and SDXL's pooled (1, dim)."""

    embeds: torch.Tensor
    pooled: torch.Tensor | None


class PromptEncoder:
    """Encodes parsed prompts for one pipeline; build one per call, since LoRAs change the text encoders."""

    def __init__(self, pipe: Any) -> None:
        self.sdxl = getattr(pipe, "text_encoder_2", None) is not None
        # What diffusers hands the UNet: SD the final layer's normalized states, SDXL the penultimate, raw.
        returned = (
            ReturnedEmbeddingsType.PENULTIMATE_HIDDEN_STATES_NON_NORMALIZED
            if self.sdxl
            else ReturnedEmbeddingsType.LAST_HIDDEN_STATES_NORMALIZED
        )
        self.device = pipe._execution_device
        self._compels = [
            Compel(
                tokenizer=tokenizer,
                text_encoder=encoder,
                returned_embeddings_type=returned,
                truncate_long_prompts=False,
                # A1111 cuts at 75 tokens and gives every chunk its own EOS (no CLS copying between chunks).
                split_long_text_mode=SplitLongTextMode.BRUTAL,
                dtype_for_device_getter=lambda _device, encoder=encoder: encoder.dtype,
                device=self.device,
            )
            for tokenizer, encoder in _encoders(pipe)
        ]
        self._pooled_encoder = pipe.text_encoder_2 if self.sdxl else None

    def pad(self, embeds: list[torch.Tensor]) -> list[torch.Tensor]:
        """Embeddings brought to one length for one call, each repeated whole where that stays cheap.

        Cross-attention over a sequence repeated k times equals attention over it once, so a prompt's picture
        does not depend on its batch-mates, nor on its negative prompt's length (A1111 by default runs unequal
        lengths in separate passes: the same result). Past MAX_REPEAT times the longest, shorter ones are padded
        with the empty prompt's chunks instead (A1111's "pad prompt/negative prompt" option).
        """
        chunk = self._compels[0].conditioning_provider.max_token_count
        counts = [e.shape[1] // chunk for e in embeds]
        target = math.lcm(*counts)
        if target <= MAX_REPEAT * max(counts):
            return [e.repeat(1, target // count, 1) for e, count in zip(embeds, counts, strict=True)]
        empty = torch.cat([self._empty(c) for c in self._compels], dim=-1)
        return self._compels[0].pad_conditioning_tensors_to_same_length(embeds, precomputed_padding=empty)

    def encode(self, prompt: ParsedPrompt) -> Conditioning:
        """The embeddings of one prompt: its BREAK segments' chunks, concatenated."""
        sides = []
        for compel in self._compels:
            provider = compel.conditioning_provider
            segments = [self._segment(provider, segment) for segment in prompt.segments]
            sides.append(torch.cat(segments, dim=1))
        # Different tokenizers could split a prompt into different chunk counts: pad each to the longest.
        length = max(side.shape[1] for side in sides)
        sides = [_pad(side, length, self._empty(c)) for side, c in zip(sides, self._compels, strict=True)]
        return Conditioning(torch.cat(sides, dim=-1), self._pooled(prompt) if self.sdxl else None)

    def _segment(self, provider: Any, fragments: Sequence[Fragment]) -> torch.Tensor:
        texts, weights = self._tokenizable(provider, fragments)
        return provider.get_embeddings_for_weighted_prompt_fragments([texts], [weights], device=self.device)

    def _tokenizable(self, provider: Any, fragments: Sequence[Fragment]) -> tuple[list[str], list[float]]:
        tokenizer = provider.tokenizer
        texts = [_without_markers(f.text, tokenizer) for f in fragments]
        tokens = provider.get_token_ids(texts, include_start_and_end_markers=False) if texts else []
        # compel cannot place a fragment with no tokens (whitespace between brackets) and fails on it.
        kept = [(text, f.weight) for text, ids, f in zip(texts, tokens, fragments, strict=True) if ids]
        if not kept:  # an empty segment is the empty prompt's chunk, as A1111 encodes it
            return [""], [1.0]
        return [text for text, _ in kept], [weight for _, weight in kept]

    def _pooled(self, prompt: ParsedPrompt) -> torch.Tensor:
        # As A1111: the pooled embedding of the first chunk, unweighted (CLIP pools the EOS token).
        provider = self._compels[-1].conditioning_provider
        texts, weights = self._tokenizable(provider, prompt.segments[0])
        ids, _, _ = provider.get_token_ids_and_expand_weights(texts, weights, device=self.device)
        return self._pooled_encoder(ids[: provider.max_token_count].unsqueeze(0)).text_embeds

    @staticmethod
    def _empty(compel: Compel) -> torch.Tensor:
        return compel.conditioning_provider.empty_z


def _without_markers(text: str, tokenizer: Any) -> str:
    # Typed "<|endoftext|>" would tokenize as a chunk marker, which compel takes for a chunk boundary.
    for marker in {tokenizer.bos_token, tokenizer.eos_token} - {None}:
        text = text.replace(marker, " ")
    return text


def _pad(embeds: torch.Tensor, length: int, chunk: torch.Tensor) -> torch.Tensor:
    missing = (length - embeds.shape[1]) // chunk.shape[1]
    return torch.cat([embeds, chunk.to(embeds.dtype).repeat(embeds.shape[0], missing, 1)], dim=1) if missing else embeds


def prompt_embeddings(
    pipe: Any, prompts: Sequence[ParsedPrompt], negatives: Sequence[ParsedPrompt] | None, zero_empty: bool
) -> dict[str, object]:
    """The diffusers keywords for a batch's prompts as embeddings, all padded to one length.

    `negatives` is None without classifier-free guidance (diffusers then reads none); with `zero_empty` (SDXL's
    force_zeros_for_empty_prompt) a missing negative prompt is zeros, not the encoded empty prompt.
    """
    with torch.no_grad():
        encoder = PromptEncoder(pipe)
        positive = [encoder.encode(p) for p in prompts]
        negative = [None if zero_empty and n.empty else encoder.encode(n) for n in negatives or ()]
        # Positives and negatives together: diffusers wants both batches of one shape.
        padded = iter(encoder.pad([c.embeds for c in positive] + [n.embeds for n in negative if n is not None]))
        embeds = [next(padded) for _ in positive]
        arguments: dict[str, object] = {"prompt": None, "prompt_embeds": torch.cat(embeds)}
        if encoder.sdxl:
            arguments["pooled_prompt_embeds"] = torch.cat([c.pooled for c in positive])
        if negatives is None:
            return arguments
        zeros = torch.zeros_like(embeds[0])
        arguments["negative_prompt_embeds"] = torch.cat([zeros if n is None else next(padded) for n in negative])
        if encoder.sdxl:
            no_pooled = torch.zeros_like(positive[0].pooled)
            pooled = [no_pooled if n is None else n.pooled for n in negative]
            arguments["negative_pooled_prompt_embeds"] = torch.cat(pooled)
        return arguments
