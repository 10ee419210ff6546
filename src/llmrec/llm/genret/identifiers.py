"""Item identifiers: the text each catalogue item is named by, and its tokens in the model's tokenizer.

:func:`title_identifiers` makes unique short titles (a year, then a number, tells apart titles that clash);
semantic ids come from :mod:`llmrec.llm.genret.semantic`. :class:`ItemIdentifiers` maps item index <-> identifier
text <-> token ids, taking the text the tokenizer decodes back, so whatever the model writes is looked up exactly.
"""

from __future__ import annotations

import logging
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

import numpy as np

from llmrec.data.dataset import Dataset
from llmrec.errors import ConfigError
from llmrec.llm.prompts import sanitize, short_title

if TYPE_CHECKING:
    from llmrec.llm.genret.trie import SupportsBeamSearch

__all__ = ["IdentifierKind", "ItemIdentifiers", "title_identifiers"]

logger = logging.getLogger(__name__)

IdentifierKind = Literal["title", "semantic"]
"""How items are named: ``title`` (short title, zero-shot) or ``semantic`` (residual k-means code)."""


def title_identifiers(data: Dataset, *, max_chars: int = 60) -> list[str]:
    """Each item's short title (see :func:`~llmrec.llm.prompts.short_title`), made unique.

    Titles shared by several items get their year ("Hamlet (1990)", "Hamlet (1996)"); any that still clash, or
    have no year, are numbered ("Hamlet #2"). An item without a title is named by its id ("item 123").

    Args:
        data: The dataset (its items table, in item index order).
        max_chars: Longest title kept (longer ones are cut at a word boundary by sanitize).
    """
    titles = data.items["title"].tolist() if "title" in data.items else [""] * data.n_items
    years = data.items["year"].tolist() if "year" in data.items else [None] * data.n_items
    ids = data.item_vocab.ids
    names = []
    for item_id, title in zip(ids, titles, strict=True):
        short = sanitize(short_title(title), max_chars=max_chars)
        names.append(short or f"item {sanitize(item_id, max_chars=40)}")
    counts = Counter(names)
    for i, name in enumerate(names):
        if counts[name] > 1:
            year = _year_of(years[i], titles[i])
            names[i] = f"{name} ({year})" if year else name
    counts = Counter(names)
    taken = set(counts)
    numbered: Counter[str] = Counter()
    for i, name in enumerate(names):
        if counts[name] > 1:
            numbered[name] += 1
            if numbered[name] > 1:  # the first keeps the plain name
                n = numbered[name]
                while f"{name} #{n}" in taken:
                    n += 1
                names[i] = f"{name} #{n}"
                taken.add(names[i])
    return names


def _year_of(year: object, title: object) -> str:
    """A four-digit year from the items table's ``year`` or from a "(1995)" at the end of the title."""
    try:
        if year is not None and not (isinstance(year, float) and np.isnan(year)) and str(year).strip():
            return str(int(year))  # type: ignore[call-overload]
    except (TypeError, ValueError):
        pass
    match = re.search(r"\((\d{4})\)\s*$", str(title or ""))
    return match.group(1) if match else ""


@dataclass(frozen=True)
class ItemIdentifiers:
    """Item index <-> identifier text <-> token ids.

    Attributes:
        kind: ``title`` or ``semantic``.
        strings: Identifier text per item index (all distinct).
        token_ids: Tokens of each identifier as the model writes it as a reply (no end-of-turn token).
        end_id: The end-of-turn token id that closes every identifier.
    """

    kind: IdentifierKind
    strings: list[str]
    token_ids: list[list[int]]
    end_id: int
    _lookup: dict[str, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        lookup = {s: i for i, s in enumerate(self.strings)}
        if len(lookup) != len(self.strings):
            dup = [s for s, c in Counter(self.strings).items() if c > 1][:3]
            raise ConfigError(f"identifiers must be unique, these repeat: {dup}")
        object.__setattr__(self, "_lookup", lookup)

    @classmethod
    def build(cls, kind: IdentifierKind, strings: Sequence[str], lm: SupportsBeamSearch) -> ItemIdentifiers:
        """Tokenize ``strings`` with ``lm``'s tokenizer.

        An identifier whose tokens decode to different text (a tokenizer that normalises) is replaced by the
        decoded text, so what the model writes can always be looked up exactly.

        Raises:
            ConfigError: ``lm`` has no end-of-turn token, or two identifiers coincide.
        """
        end = lm.encode(lm.end_of_turn_text) if lm.end_of_turn_text else []
        if len(end) != 1:
            raise ConfigError(f"{lm.model_id} has no single end-of-turn token: identifiers cannot be closed")
        tokens = [lm.encode(s) for s in strings]
        texts = []
        for s, t in zip(strings, tokens, strict=True):
            if not t:
                raise ConfigError("an identifier is empty: every item needs a non-empty name")
            decoded = lm.decode(t)
            if decoded != s:
                logger.debug("identifier %r decodes as %r; using the decoded text", s, decoded)
            texts.append(decoded)
        return cls(kind, texts, tokens, end[0])

    def __len__(self) -> int:
        return len(self.strings)

    def index_of(self, text: str) -> int | None:
        """Item index named by ``text`` exactly; ``None`` when no item has that identifier."""
        return self._lookup.get(text)

    @property
    def max_tokens(self) -> int:
        """Tokens of the longest identifier (without the end-of-turn token)."""
        return max((len(t) for t in self.token_ids), default=0)
