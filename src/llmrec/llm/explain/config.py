"""Settings of grounded explanations: :class:`ExplainConfig` and the shared default instance.

Every other part of :mod:`llmrec.llm.explain` (evidence, check, generation) reads its limits from one frozen
config, so the settings live alone at the bottom of the import graph and depend on nothing else here. The
catalogue's own settings (tags, title length) are :class:`~llmrec.catalogue.CatalogueConfig`'s, with the same
defaults, so an :class:`ExplainConfig` can be handed to :meth:`~llmrec.catalogue.Catalogue.of` as it is.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict, Field

from llmrec.catalogue import CatalogueConfig

if TYPE_CHECKING:
    from llmrec.catalogue import Catalogue

_CATALOGUE = CatalogueConfig()


class ExplainConfig(BaseModel):
    """How evidence is retrieved, how the model is asked, and how strictly its text is checked.

    Attributes:
        max_links: At most this many history items cited per explanation.
        max_history: Only the most recent this many distinct history items are considered.
        min_value: A history item counts as liked when its latest value is at least this; ``None`` = at least
            the user's mean value (so it works for 1-5 ratings and for implicit 1s alike).
        max_genres: At most this many candidate genres in the evidence.
        max_tags: At most this many candidate tags/keyphrases in the evidence.
        max_tag_words: Longer tags are dropped (user tags can be whole sentences).
        max_tag_chars: Longer tags are dropped.
        tag_noise: Regular expression (case-insensitive) of tags that say nothing about the item
            ("In Netflix queue"); matching tags are dropped.
        genre_weight: Weight of a shared genre (times the genre's inverse catalogue frequency).
        tag_weight: Weight of a shared tag.
        similarity_weight: Weight of the cosine similarity of item vectors (when vectors are given).
        min_similarity: A history item without shared attributes is linked only when at least this similar.
        item_noun: What items are called in prompts ("movie", "book"; "title" fits any catalogue).
        max_new_tokens: Generation budget of the model (greedy).
        max_sentences: At most this many sentences of model text are kept.
        require_reference: Accept model text only when it names at least one history title or evidence
            attribute (otherwise it explains nothing and the template is used).
        flag_quoted: Report quoted phrases that are neither an evidence title nor an evidence attribute (a small
            model quotes invented titles that are not in the catalogue).
        min_title_chars: Titles of one word shorter than this are not matched (too ambiguous).
        strict_words: Every other word of model text must come from the evidence, from common function words, or
            from a short list of words explanations are made of ("liked", "because", "similar"...). A small model
            adds claims no title/genre/year check can see ("a film about politics and social justice"); this
            rejects them, so model text can only rephrase the evidence.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_links: int = Field(default=3, ge=0)
    max_history: int = Field(default=200, ge=1)
    min_value: float | None = None
    max_genres: int = Field(default=3, ge=0)
    max_tags: int = Field(default=4, ge=0)
    max_tag_words: int = Field(default=_CATALOGUE.max_tag_words, ge=1)
    max_tag_chars: int = Field(default=_CATALOGUE.max_tag_chars, ge=1)
    tag_noise: str = _CATALOGUE.tag_noise
    genre_weight: float = Field(default=1.0, ge=0)
    tag_weight: float = Field(default=2.0, ge=0)
    similarity_weight: float = Field(default=1.0, ge=0)
    min_similarity: float = Field(default=0.5, ge=-1.0, le=1.0)
    item_noun: str = Field(default="title", min_length=1, max_length=30)
    max_new_tokens: int = Field(default=60, ge=1)
    max_sentences: int = Field(default=2, ge=1)
    require_reference: bool = True
    flag_quoted: bool = True
    min_title_chars: int = Field(default=_CATALOGUE.min_title_chars, ge=1)
    strict_words: bool = True


_DEFAULT_CONFIG = ExplainConfig()


def settings_of(catalogue: Catalogue) -> ExplainConfig:
    """The explanation settings a catalogue was built with, or the defaults when it was built for another use."""
    return catalogue.config if isinstance(catalogue.config, ExplainConfig) else _DEFAULT_CONFIG
