"""A tiny random-weight BLIP captioning model with its processor, built offline, for /describe's tests.

Same classes as Salesforce/blip-image-captioning-*: a BERT WordPiece tokenizer with BLIP's `[DEC]` start token,
a BlipImageProcessor (32 px here, 384 there) and BlipForConditionalGeneration; only the sizes are small.
"""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import BertTokenizer, BlipConfig, BlipForConditionalGeneration, BlipImageProcessor, BlipProcessor

from generation.captioning import PREFIXES

IMAGE_SIZE = 32
HIDDEN = 32
_WORDS = "cat dog house tree sky sun city night light dark red blue green big small old man woman sitting on in with"


def tiny_blip_processor() -> BlipProcessor:
    """A WordPiece tokenizer over the suggestions' opening words and a few more, and a 32 px image processor."""
    words = dict.fromkeys(word for text in (*PREFIXES, _WORDS) for word in text.split())
    tokens = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words, "[DEC]"]
    tokenizer = BertTokenizer(vocab={t: i for i, t in enumerate(tokens)}, bos_token="[DEC]", model_max_length=64)
    image_processor = BlipImageProcessor(size={"height": IMAGE_SIZE, "width": IMAGE_SIZE})
    return BlipProcessor(image_processor=image_processor, tokenizer=tokenizer)


def build_tiny_blip(processor: BlipProcessor, seed: int = 0) -> BlipForConditionalGeneration:
    """A two-layer BLIP for `processor`'s vocabulary, its weights drawn large enough that the picture counts."""
    tokenizer = processor.tokenizer
    config = BlipConfig(
        vision_config={
            "hidden_size": HIDDEN,
            "intermediate_size": 37,
            "projection_dim": HIDDEN,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "image_size": IMAGE_SIZE,
            "patch_size": 8,
            "initializer_range": 0.1,
        },
        text_config={
            "vocab_size": len(tokenizer),
            "hidden_size": HIDDEN,
            "intermediate_size": 37,
            "projection_dim": HIDDEN,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "max_position_embeddings": 64,
            "bos_token_id": tokenizer.bos_token_id,
            "eos_token_id": tokenizer.sep_token_id,
            "pad_token_id": tokenizer.pad_token_id,
            "sep_token_id": tokenizer.sep_token_id,
            "initializer_range": 0.1,  # at BLIP's 0.02 the random cross-attention hardly sees the picture
        },
        projection_dim=HIDDEN,
        image_text_hidden_size=HIDDEN,
    )
    torch.manual_seed(seed)
    return BlipForConditionalGeneration(config).eval()


def write_tiny_captioner(directory: Path) -> Path:
    """Write the tiny BLIP and its processor into `directory`; `from_pretrained(directory)` loads both offline."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    processor = tiny_blip_processor()
    build_tiny_blip(processor).save_pretrained(directory)
    processor.save_pretrained(directory)
    return directory
