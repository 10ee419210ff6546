"""Input representation: cleaning, key facts, PII scrubbing, and the item and user texts models embed and quote.

Everything here is plain Python (the standard library, pandas and pydantic): no model weights are needed.
"""

from llmrec.text.build import (
    ItemTextConfig,
    UserTextConfig,
    item_text,
    item_texts,
    user_text,
    user_text_with_report,
    user_texts,
    user_texts_with_report,
)
from llmrec.text.clean import (
    DEFAULT_BOILERPLATE,
    CleanConfig,
    clean_text,
    dedupe_sentences,
    normalize_unicode,
    remove_boilerplate,
    split_sentences,
    strip_html,
)
from llmrec.text.extract import (
    GENRE_VOCABULARY,
    STOPWORDS,
    ItemFacts,
    extract_genres,
    extract_year,
    item_facts,
    keyphrases,
    word_idf,
)
from llmrec.text.pii import (
    IBAN_LENGTHS,
    PiiKind,
    PiiMatch,
    ScrubPolicy,
    ScrubResult,
    detect_pii,
    iban_valid,
    luhn_valid,
    scrub,
)

__all__ = [
    "DEFAULT_BOILERPLATE",
    "GENRE_VOCABULARY",
    "IBAN_LENGTHS",
    "STOPWORDS",
    "CleanConfig",
    "ItemFacts",
    "ItemTextConfig",
    "PiiKind",
    "PiiMatch",
    "ScrubPolicy",
    "ScrubResult",
    "UserTextConfig",
    "clean_text",
    "dedupe_sentences",
    "detect_pii",
    "extract_genres",
    "extract_year",
    "iban_valid",
    "item_facts",
    "item_text",
    "item_texts",
    "keyphrases",
    "luhn_valid",
    "normalize_unicode",
    "remove_boilerplate",
    "scrub",
    "split_sentences",
    "strip_html",
    "user_text",
    "user_text_with_report",
    "user_texts",
    "user_texts_with_report",
    "word_idf",
]
