"""Turn what a user typed into a safe FTS5 MATCH expression."""

from __future__ import annotations


def fts_query(text: str, *, include_negative: bool = False) -> str | None:
    """An FTS5 query matching every word of `text` (a trailing `*` is a prefix); None if no words.

    Each word becomes a quoted string, so FTS5 operators and punctuation in user text (`"`, `-`,
    `AND`, `:`, `(`) are searched for as text and can never make the query fail to parse.
    """
    phrases: list[str] = []
    for word in text.split():
        prefix = word.endswith("*")
        word = word.rstrip("*")
        # A word with no letters or digits tokenizes to nothing; skipping it keeps "!!!" from
        # turning the whole search into "match nothing".
        if not any(ch.isalnum() for ch in word):
            continue
        quoted = '"' + word.replace('"', '""') + '"'
        phrases.append(quoted + "*" if prefix else quoted)
    if not phrases:
        return None
    # A translated job is found by what was typed or by the English its encoders read.
    columns = (
        "{prompt negative_prompt translated_prompt translated_negative}"
        if include_negative
        else "{prompt translated_prompt}"
    )
    return f"{columns} : ({' '.join(phrases)})"
