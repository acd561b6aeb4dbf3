"""A tiny random-weight DALL·E Mini: min-dalle's own modules at small sizes, in min-dalle's file names.

The Bart encoder and decoder are two layers of width 32; the image vocabulary stays min-dalle's 16384 VQGAN codes
(the decoder samples among them) and the VQGAN detokenizer keeps its one fixed size (min-dalle has no other), stored
in float16 to halve the file. The sizes go to dalle_config.json, since min-dalle hard-codes Mini's and Mega's.
"""

from __future__ import annotations

import json
import string
from pathlib import Path

import torch

from generation.families.dalle_layout import TEXT_TOKENS, DalleSizes, write_config
from generation.families.dalle_mini import min_dalle

WORD_START = chr(ord(" ") + 256)  # "Ġ": min-dalle's TextTokenizer starts every word with it
SPECIAL = ("<s>", "<pad>", "</s>", "<unk>")  # Bart's first ids; min-dalle pads with 1 and masks it out
CHARACTERS = string.ascii_lowercase + string.digits + string.punctuation


def tiny_vocab() -> tuple[dict[str, int], list[str]]:
    """A byte-pair vocabulary of single characters, each also merged with the word start."""
    pieces = [*SPECIAL, WORD_START, *CHARACTERS, *(WORD_START + c for c in CHARACTERS)]
    return {piece: index for index, piece in enumerate(pieces)}, [f"{WORD_START} {c}" for c in CHARACTERS]


def tiny_sizes(text_vocab_count: int) -> DalleSizes:
    """Small Bart halves; the image vocabulary must stay 16384: it is the VQGAN's codebook."""
    return DalleSizes(
        layer_count=2,
        attention_head_count=2,
        embed_count=32,
        glu_embed_count=48,
        text_vocab_count=text_vocab_count,
        image_vocab_count=2**14,
    )


def write_tiny_dalle_mini(directory: Path, kind: str = "dalle-mini") -> Path:
    """Write encoder.pt, decoder.pt, detoker.pt, vocab.json, merges.txt and dalle_config.json into `directory`."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    vocab, merges = tiny_vocab()
    sizes = tiny_sizes(len(vocab))
    blocks = min_dalle()
    shape = {
        "attention_head_count": sizes.attention_head_count,
        "embed_count": sizes.embed_count,
        "glu_embed_count": sizes.glu_embed_count,
        "layer_count": sizes.layer_count,
        "device": "cpu",
    }
    with torch.random.fork_rng(devices=[]):  # fixed weights, and the caller's random state left alone
        torch.manual_seed(0)
        encoder = blocks.DalleBartEncoder(text_token_count=TEXT_TOKENS, text_vocab_count=len(vocab), **shape)
        decoder = blocks.DalleBartDecoder(image_vocab_count=sizes.image_vocab_count, **shape)
        detokenizer = blocks.VQGanDetokenizer()
    torch.save(encoder.state_dict(), directory / "encoder.pt")
    torch.save(decoder.state_dict(), directory / "decoder.pt")
    torch.save({k: v.half() for k, v in detokenizer.state_dict().items()}, directory / "detoker.pt")
    (directory / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf8")
    (directory / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf8")
    write_config(directory, kind, sizes)
    return directory
