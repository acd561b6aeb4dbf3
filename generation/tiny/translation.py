"""Tiny random-weight translation models (MarianMT, M2M100) with real sentencepiece tokenizers, built offline.

The sentencepiece model is trained in memory on a few sentences, so the tokenizers are the very classes the real
checkpoints use (MarianTokenizer, M2M100Tokenizer) and load back with AutoTokenizer. With random weights the
"translation" is gibberish: tests compare it with transformers' own generate, not with English.
"""

from __future__ import annotations

import io
import json
import tempfile
from pathlib import Path
from typing import Any

import torch
from transformers import (
    GenerationConfig,
    M2M100Config,
    M2M100ForConditionalGeneration,
    M2M100Tokenizer,
    MarianConfig,
    MarianMTModel,
    MarianTokenizer,
)
from transformers.models.m2m_100.tokenization_m2m_100 import FAIRSEQ_LANGUAGE_CODES

# Words of a few languages and every letter they use, so typical test prompts get real pieces.
_CORPUS = [
    "un chat sur un toit au coucher du soleil",
    "une forêt enchantée avec des champignons lumineux, peinture à l'huile",
    "ein Hund im Park bei Nacht",
    "un perro en la playa",
    "a cat on a roof at sunset, a dog in the park",
    "abcdefghijklmnopqrstuvwxyz àâçéèêëîïôùûüÿœæäöß ñ",
]
_SIZES = {"d_model": 16, "encoder_ffn_dim": 32, "decoder_ffn_dim": 32, "encoder_layers": 1, "decoder_layers": 1}
_HEADS = {"encoder_attention_heads": 2, "decoder_attention_heads": 2, "max_position_embeddings": 128}
# Random weights at the usual 0.02 give every input the same output; wider ones make outputs depend on the input.
_INIT_STD = 0.5


def _sentencepiece(**ids: int) -> bytes:
    """A small unigram sentencepiece model with these special ids (Marian's or fairseq's order)."""
    import sentencepiece

    model = io.BytesIO()
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(_CORPUS),
        model_writer=model,
        vocab_size=60,
        hard_vocab_limit=False,
        model_type="unigram",
        character_coverage=1.0,
        num_threads=1,
        shuffle_input_sentence=False,
        minloglevel=2,
        **ids,
    )
    return model.getvalue()


def _generation_config(config: MarianConfig | M2M100Config, **extra: Any) -> GenerationConfig:
    # Short greedy outputs keep tests fast; real checkpoints ship their own (beam search, longer outputs). Random
    # weights repeat one token whatever the input: no repeats make the output follow the input.
    return GenerationConfig(
        max_length=24,
        num_beams=1,
        no_repeat_ngram_size=1,
        decoder_start_token_id=config.decoder_start_token_id,
        eos_token_id=config.eos_token_id,
        pad_token_id=config.pad_token_id,
        **extra,
    )


def write_tiny_marian(directory: Path) -> Path:
    """A multilingual-to-English MarianMT (as Helsinki-NLP/opus-mt-mul-en is) with random weights."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    spm = _sentencepiece(eos_id=0, unk_id=1, bos_id=-1, pad_id=-1)
    with tempfile.TemporaryDirectory() as scratch:
        files = Path(scratch)
        (files / "source.spm").write_bytes(spm)
        (files / "target.spm").write_bytes(spm)
        pieces = _pieces(spm)
        words = [p for p in pieces if p not in ("</s>", "<unk>")]
        vocab = {"</s>": 0, "<unk>": 1, "<pad>": 2} | {p: 3 + i for i, p in enumerate(words)}
        (files / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
        tokenizer = MarianTokenizer(
            source_spm=str(files / "source.spm"),
            target_spm=str(files / "target.spm"),
            vocab=str(files / "vocab.json"),
            source_lang="mul",
            target_lang="en",
            model_max_length=128,
        )
        tokenizer.save_pretrained(directory)
    torch.manual_seed(0)
    config = MarianConfig(
        vocab_size=len(vocab),
        decoder_vocab_size=len(vocab),
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        decoder_start_token_id=tokenizer.pad_token_id,
        forced_eos_token_id=tokenizer.eos_token_id,
        init_std=_INIT_STD,
        **_SIZES,
        **_HEADS,
    )
    model = MarianMTModel(config)
    model.generation_config = _generation_config(
        config, forced_eos_token_id=tokenizer.eos_token_id, suppress_tokens=[tokenizer.unk_token_id]
    )
    model.save_pretrained(directory)
    return directory


def write_tiny_m2m100(directory: Path) -> Path:
    """A many-to-many M2M100 (as facebook/m2m100_418M is) with random weights and its 100 language codes."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    spm = _sentencepiece(bos_id=0, pad_id=1, eos_id=2, unk_id=3)
    with tempfile.TemporaryDirectory() as scratch:
        files = Path(scratch)
        (files / "sentencepiece.bpe.model").write_bytes(spm)
        specials = ["<s>", "<pad>", "</s>", "<unk>"]
        pieces = specials + [p for p in _pieces(spm) if p not in specials]
        (files / "vocab.json").write_text(json.dumps({p: i for i, p in enumerate(pieces)}, ensure_ascii=False))
        tokenizer = M2M100Tokenizer(
            vocab_file=str(files / "vocab.json"),
            spm_file=str(files / "sentencepiece.bpe.model"),
            src_lang="fr",
            tgt_lang="en",
            model_max_length=128,
            # As facebook/m2m100_418M's tokenizer_config lists them: decoding then drops the language codes.
            additional_special_tokens=[f"__{code}__" for code in FAIRSEQ_LANGUAGE_CODES["m2m100"]],
        )
        tokenizer.save_pretrained(directory)
    torch.manual_seed(0)
    config = M2M100Config(
        # The language codes (and fairseq's made-up words) come after the sentencepiece vocabulary.
        vocab_size=max(tokenizer.lang_code_to_id.values()) + 1 + tokenizer.num_madeup_words,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=tokenizer.bos_token_id,
        decoder_start_token_id=tokenizer.eos_token_id,
        init_std=_INIT_STD,
        **_SIZES,
        **_HEADS,
    )
    model = M2M100ForConditionalGeneration(config)
    # Random weights favour the language codes; a trained model writes them only first (the forced `__en__`), and
    # never fairseq's made-up words (which decode as <unk>).
    codes = [i for code, i in tokenizer.lang_code_to_id.items() if code != "en"]
    unused = [tokenizer.unk_token_id, *range(max(tokenizer.lang_code_to_id.values()) + 1, config.vocab_size)]
    model.generation_config = _generation_config(config, suppress_tokens=[*codes, *unused])
    model.save_pretrained(directory)
    return directory


def _pieces(spm: bytes) -> list[str]:
    import sentencepiece

    processor = sentencepiece.SentencePieceProcessor(model_proto=spm)
    return [processor.id_to_piece(i) for i in range(processor.get_piece_size())]
