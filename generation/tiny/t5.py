"""A tiny T5 text encoder and a tokenizer built in memory: the T5 half of IF, FLUX and SD3 test models."""

from __future__ import annotations

from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import T5Config, T5EncoderModel, T5TokenizerFast

T5_HIDDEN = 32
_WORDS = [
    "a",
    "an",
    "the",
    "of",
    "in",
    "on",
    "with",
    "and",
    "sign",
    "says",
    "hello",
    "red",
    "blue",
    "green",
    "cube",
    "cat",
    "dog",
    "photo",
    "painting",
    "picture",
    "house",
    "tree",
    "sky",
    "sun",
    "city",
    "night",
    "light",
    "dark",
    "big",
    "small",
    "old",
    "new",
    "text",
    "word",
]


def tiny_t5_tokenizer(max_length: int = 77) -> T5TokenizerFast:
    """A Unigram tokenizer over a small vocabulary plus single letters, so any text gets real ids."""
    letters = [chr(c) for c in range(ord("a"), ord("z") + 1)] + [chr(c) for c in range(ord("0"), ord("9") + 1)]
    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)]
    pieces += [(f"▁{word}", -1.0) for word in _WORDS]
    pieces += [("▁", -2.0)] + [(letter, -3.0) for letter in letters] + [(f"▁{letter}", -3.0) for letter in letters]
    tokenizer = Tokenizer(models.Unigram(pieces, unk_id=2))
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace()
    tokenizer.decoder = decoders.Metaspace()
    return T5TokenizerFast(
        tokenizer_object=tokenizer,
        eos_token="</s>",
        unk_token="<unk>",
        pad_token="<pad>",
        extra_ids=0,
        model_max_length=max_length,
    )


def tiny_t5_encoder(tokenizer: T5TokenizerFast, d_model: int = T5_HIDDEN) -> T5EncoderModel:
    """A two-layer T5 encoder with random weights sized for `tokenizer`."""
    config = T5Config(
        vocab_size=len(tokenizer),
        d_model=d_model,
        d_ff=37,
        d_kv=8,
        num_layers=2,
        num_heads=4,
        relative_attention_num_buckets=8,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        decoder_start_token_id=tokenizer.pad_token_id,
    )
    return T5EncoderModel(config)
