"""Prompts in any language: detect a prompt's language offline and translate it to English before encoding.

Detection is lingua's (offline, CPU); translation a transformers MarianMT model (Helsinki-NLP/opus-mt-mul-en, or a
one-language one such as opus-mt-fr-en) or an M2M100 one (facebook/m2m100_418M). Both are built once, lazily, on
the GPU thread, and used only for models whose text encoders read English (`reads_english`). Cheap to import: torch,
transformers and lingua load when first needed.

A text is translated only when lingua is sure enough (`min_confidence`, default 0.5: lingua's confidence is its
probability over every language it was built with) that it is not English, and the model can read that language.
A1111 syntax stays as typed: only the words between weights, brackets, `BREAK` and `<lora:…>` tags are translated.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from generation.loras import LORA_TAG
from generation.prompt_syntax import parse_prompt
from generation.request import MAX_PROMPT_CHARS, GenerationRequest, without_control_chars
from generation.specs import KIND_DEFAULTS, Defaults, ModelSpec

if TYPE_CHECKING:
    from lingua import Language, LanguageDetector

log = logging.getLogger(__name__)

MIN_CONFIDENCE = 0.5
# The syntax a translation must leave alone: LoRA tags, escaped brackets, `:1.3)` weights, brackets, BREAK.
_SYNTAX = re.compile(rf"(?i:{LORA_TAG.pattern})|\\[()\[\]\\]|:\s*[+-]?[.\d]+\s*\)|[()\[\]]|\bBREAK\b")
_WORD = re.compile(r"\w+")


def reads_english(spec: ModelSpec) -> bool:
    """Whether prompts for this model are translated: the spec's `translate`, else its kind's default."""
    if spec.translate is not None:
        return spec.translate
    return KIND_DEFAULTS.get(spec.kind, Defaults()).translate


def check_languages(codes: Sequence[str]) -> tuple[str, ...]:
    """ISO 639-1 codes lingua knows, lower-cased; a ValueError names the first one it does not know."""
    from lingua import IsoCode639_1

    checked = []
    for code in codes:
        try:
            IsoCode639_1.from_str(str(code).strip().upper())
        except ValueError:
            raise ValueError(
                f"{code!r} is not an ISO 639-1 language code lingua knows (such as 'fr' or 'de')"
            ) from None
        checked.append(str(code).strip().lower())
    return tuple(checked)


def is_local(source: str) -> bool:
    """Whether a translation model source names a directory on this machine rather than a hub id."""
    return bool(source) and (source.startswith(("/", ".", "~")) or Path(source).expanduser().exists())


def check_source(source: str) -> None:
    """Refuse a local translation model that is not there (cheap: used at start-up)."""
    if is_local(source) and not (Path(source).expanduser() / "config.json").is_file():
        raise ValueError(
            f"the translation model '{source}' ([translation] model) is not a transformers model directory "
            "(no config.json in it); write a test one with `imagine-bot tiny-model DIR --kind translation`"
        )


@dataclass(frozen=True)
class Translation:
    """What the text encoders read instead of what was typed, and the language it was read as."""

    language: str  # its English name, e.g. "French": the prompt's, or the negative prompt's when only it was translated
    prompt: str  # as encoded: English, or as typed when only the negative prompt was translated
    negative_prompt: str
    original_prompt: str
    original_negative: str

    @property
    def translated_prompt(self) -> str | None:
        """The English prompt, or None when the prompt was used as typed."""
        return self.prompt if self.prompt != self.original_prompt else None

    @property
    def translated_negative(self) -> str | None:
        """The English negative prompt, or None when it was used as typed."""
        return self.negative_prompt if self.negative_prompt != self.original_negative else None

    def apply(self, request: GenerationRequest) -> GenerationRequest:
        """The request the family runs: the same one, with the English texts."""
        return request.with_changes(prompt=self.prompt, negative_prompt=self.negative_prompt)


def _same_words(a: str, b: str) -> bool:
    # A model asked to translate English (lingua mistook it) gives it back, maybe capitalised and with a full stop.
    return _WORD.findall(a.casefold()) == _WORD.findall(b.casefold())


def _runs(text: str) -> list[tuple[str, bool]]:
    """The text as (piece, translatable) pieces in order: words to translate and syntax to keep."""
    pieces: list[tuple[str, bool]] = []
    position = 0
    for match in [*_SYNTAX.finditer(text), None]:
        words = text[position : match.start() if match else len(text)]
        if words:
            pieces.append((words, any(c.isalpha() for c in words)))
        if match:
            pieces.append((match[0], False))
            position = match.end()
    return pieces


class Translator:
    """Detects and translates prompts. Not thread-safe: call it from the single GPU thread."""

    def __init__(
        self,
        source: str,
        *,
        device: str = "auto",
        dtype: str = "auto",
        min_confidence: float = MIN_CONFIDENCE,
        languages: Sequence[str] = (),
    ) -> None:
        self.source = source
        self.device_name, self.dtype_name = device, dtype
        self.min_confidence = min_confidence
        self.languages = check_languages(languages)  # empty: every language lingua knows
        self._detector: LanguageDetector | None = None
        self._model: Any = None
        self._tokenizer: Any = None
        self._broken = False  # the model could not be loaded (logged once): prompts are used as typed

    def detect(self, text: str) -> Language | None:
        """The language of `text` when lingua is at least `min_confidence` sure it is one other than English."""
        from lingua import Language

        plain = parse_prompt(text).text.strip()
        if not any(c.isalpha() for c in plain):
            return None
        best = self._languages().compute_language_confidence_values(plain)[0]
        if best.language == Language.ENGLISH or best.value < self.min_confidence:
            return None
        return best.language

    def translate(self, requests: Sequence[GenerationRequest]) -> list[Translation | None]:
        """Each request's texts in English, or None where nothing was translated (English, unsure, a language the
        model cannot read). A failure is logged and leaves the requests as typed (out of GPU memory is raised)."""
        import torch

        try:
            return self._translate(requests)
        except torch.OutOfMemoryError:
            raise
        except Exception:
            log.exception("translation failed for %d request(s); their prompts are used as typed", len(requests))
            return [None] * len(requests)

    def _translate(self, requests: Sequence[GenerationRequest]) -> list[Translation | None]:
        detected = [(self.detect(r.prompt), self.detect(r.negative_prompt)) for r in requests]
        if self._broken or not any(language for pair in detected for language in pair) or not self._load():
            return [None] * len(requests)
        readable = {language for pair in detected for language in pair if language and self._reads(language)}
        pieces: dict[str | None, set[str]] = {}  # the source code the model is told (None: none) → pieces
        for request, pair in zip(requests, detected, strict=True):
            for text, language in zip((request.prompt, request.negative_prompt), pair, strict=True):
                if language in readable:
                    pieces.setdefault(self._code(language), set()).update(p for p, words in _runs(text) if words)
        english: dict[str | None, dict[str, str]] = {}
        for code, group in pieces.items():
            ordered = sorted(group)
            english[code] = dict(zip(ordered, self._generate([p.strip() for p in ordered], code), strict=True))
        results: list[Translation | None] = []
        for request, pair in zip(requests, detected, strict=True):
            texts = [
                _rebuilt(text, english.get(self._code(language), {})) if language in readable else text
                for text, language in zip((request.prompt, request.negative_prompt), pair, strict=True)
            ]
            results.append(_translation(request, pair, texts))
        return results

    def _languages(self) -> LanguageDetector:
        if self._detector is None:
            from lingua import IsoCode639_1, LanguageDetectorBuilder

            if self.languages:
                codes = {IsoCode639_1.from_str(code.upper()) for code in ("en", *self.languages)}
                builder = LanguageDetectorBuilder.from_iso_codes_639_1(*codes)
            else:
                builder = LanguageDetectorBuilder.from_all_languages()  # about 1 GB of memory once all are used
            self._detector = builder.build()
        return self._detector

    def _load(self) -> bool:
        if self._model is not None:
            return True
        from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

        from generation.device import resolve_device, resolve_dtype

        device = resolve_device(self.device_name)
        source = str(Path(self.source).expanduser()) if is_local(self.source) else self.source
        try:
            check_source(self.source)
            tokenizer = AutoTokenizer.from_pretrained(source)
            model = AutoModelForSeq2SeqLM.from_pretrained(source, dtype=resolve_dtype(self.dtype_name, device))
        except (OSError, ValueError, ImportError) as exc:  # offline and not cached, not a model, no sentencepiece
            self._broken = True
            log.error("the translation model %s could not be loaded (%s); prompts are used as typed", source, exc)
            return False
        log.info("loaded the translation model %s (%s) on %s", source, model.config.model_type, device)
        self._tokenizer, self._model = tokenizer, model.to(device).eval()
        return True

    def _reads(self, language: Language) -> bool:
        """Whether the model can read a language: M2M100 has a code for it, or a MarianMT is multilingual
        (source_lang "mul") or made for that very language (opus-mt-fr-en: "fr")."""
        if hasattr(self._tokenizer, "lang_code_to_id"):  # M2M100
            return self._code(language) in self._tokenizer.lang_code_to_id
        reads = str(getattr(self._tokenizer, "source_lang", "") or "mul").lower()
        codes = {"mul", language.iso_code_639_1.name.lower(), language.iso_code_639_3.name.lower()}
        return reads in codes

    def _code(self, language: Language | None) -> str | None:
        """The source language code an M2M100 model is told; MarianMT needs none (None)."""
        if language is None or not hasattr(self._tokenizer, "lang_code_to_id"):
            return None
        return language.iso_code_639_1.name.lower()

    def _generate(self, texts: list[str], code: str | None) -> list[str]:
        """One generate call for texts of one source language: what transformers' docs do for either kind."""
        import torch

        tokenizer, model = self._tokenizer, self._model
        extra = {}
        if code is not None:
            tokenizer.src_lang = code
            extra["forced_bos_token_id"] = tokenizer.get_lang_id("en")
        inputs = tokenizer(texts, return_tensors="pt", padding=True, truncation=True).to(model.device)
        with torch.inference_mode():
            output = model.generate(**inputs, **extra)
        return tokenizer.batch_decode(output, skip_special_tokens=True)


def _rebuilt(text: str, english: dict[str, str]) -> str:
    """The text with each translatable piece replaced by its English (whitespace around it kept)."""
    out = []
    for piece, translatable in _runs(text):
        translated = english.get(piece, "").strip() if translatable else ""
        if not translated:  # syntax, or a translation that came back empty: keep what was typed
            out.append(piece)
            continue
        lead, trail = piece[: len(piece) - len(piece.lstrip())], piece[len(piece.rstrip()) :]
        out.append(f"{lead}{translated}{trail}")
    # As a request cleans what it is given, so the text recorded is the text encoded.
    return without_control_chars("".join(out))[:MAX_PROMPT_CHARS].strip()


def _translation(
    request: GenerationRequest, languages: tuple[Language | None, Language | None], texts: list[str]
) -> Translation | None:
    prompt, negative = (
        new if not _same_words(new, old) else old
        for new, old in zip(texts, (request.prompt, request.negative_prompt), strict=True)
    )
    if prompt == request.prompt and negative == request.negative_prompt:
        return None
    language = languages[0] if prompt != request.prompt else languages[1]
    assert language is not None
    return Translation(
        language=language.name.title(),
        prompt=prompt,
        negative_prompt=negative,
        original_prompt=request.prompt,
        original_negative=request.negative_prompt,
    )
