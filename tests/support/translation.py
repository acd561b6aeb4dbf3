"""What transformers itself makes of a text with a translation model, for tests to compare ours with."""

from __future__ import annotations

from pathlib import Path

from transformers import AutoModelForSeq2SeqLM, AutoTokenizer


def raw_translation(source: Path, text: str, src_lang: str | None = None) -> str:
    """As transformers' docs translate: tokenize, generate with the model's own settings, decode."""
    tokenizer = AutoTokenizer.from_pretrained(source)
    model = AutoModelForSeq2SeqLM.from_pretrained(source)
    extra = {}
    if src_lang is not None:  # M2M100: say the source language, force English as the first token
        tokenizer.src_lang = src_lang
        extra["forced_bos_token_id"] = tokenizer.get_lang_id("en")
    output = model.generate(**tokenizer([text], return_tensors="pt", padding=True, truncation=True), **extra)
    return tokenizer.batch_decode(output, skip_special_tokens=True)[0].strip()
