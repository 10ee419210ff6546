"""Understanding one user turn: what it asks for, and what it adds to the dialogue state.

Rules over the catalogue's own mention index (:meth:`llmrec.llm.explain.Catalogue.mentions`: titles, genres,
years), applied clause by clause so "I loved Heat but hated Alien" likes one film and dislikes the other:

- a title is *liked* unless its clause says it was disliked ("hated", "didn't like", "boring") or already seen
  ("I've seen it");
- a genre (or a mood word: "funny" is Comedy, "scary" is Horror) is *asked for* unless a negation comes before it
  in its clause ("no horror", "nothing scary", "anything but westerns");
- years come from decades ("the 90s"), bounds ("after 2000", "before 1980"), "recent" and "classic";
- the words left over, when there are any, become a text-search query.

The intent of the turn decides whether to recommend at all: attempts to get at the system prompt, other users'
data or the store are ``refused``, requests with nothing to do with recommending are ``out_of_scope``.
"""

from __future__ import annotations

import re
import weakref
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

import numpy as np

from llmrec.chat.state import StateUpdate
from llmrec.text.extract import STOPWORDS

if TYPE_CHECKING:
    from llmrec.llm.explain import Catalogue

__all__ = ["MOOD_GENRES", "Intent", "TurnParse", "parse_turn"]

Intent = Literal["recommend", "greeting", "reset", "refused", "out_of_scope"]

#: Mood words that name a genre in conversation (the genre vocabulary covers the genres' own names).
MOOD_GENRES: dict[str, str] = {
    "funny": "Comedy",
    "hilarious": "Comedy",
    "laugh": "Comedy",
    "comedic": "Comedy",
    "scary": "Horror",
    "creepy": "Horror",
    "spooky": "Horror",
    "frightening": "Horror",
    "gory": "Horror",
    "tearjerker": "Drama",
    "suspenseful": "Thriller",
    "thrilling": "Thriller",
    "animated": "Animation",
    "cartoons": "Animation",
    "kids": "Children",
    "romantic": "Romance",
    "sci": "Sci-Fi",
    "space": "Sci-Fi",
    "superhero": "Action",
    "detective": "Mystery",
}

_CLAUSE = re.compile(r"[.;!?\n]+|,?\s+\b(?:but|however|though|although|whereas|while)\b\s*", re.IGNORECASE)
_NEGATIVE = re.compile(
    r"\b(?:hate[ds]?|hating|dislike[ds]?|didn'?t (?:like|enjoy|love)|did not (?:like|enjoy|love)|"
    r"don'?t (?:like|enjoy|love|care for)|do not (?:like|enjoy|love)|not (?:a fan|into|for me|my thing)|"
    r"can'?t stand|cannot stand|boring|awful|terrible|worst|overrated|not that one|thumbs down|no thanks)\b",
    re.IGNORECASE,
)
_SEEN = re.compile(
    r"\b(?:(?:i'?ve|i have|already|we'?ve) (?:already )?(?:seen|watched|saw)|seen (?:it|that|them|those) already|"
    r"(?:saw|watched|seen) (?:it|that|them|those)(?: already| before)?)\b",
    re.IGNORECASE,
)
_NEGATION = re.compile(
    r"\b(?:no|not|without|nothing|avoid|except|none|skip|anything but|hate|hates|dislike|don'?t want|"
    r"do not want|never|isn'?t|aren'?t|too)\b",
    re.IGNORECASE,
)
_DECADE = re.compile(r"\b(?:(19|20)(\d)0'?s|'?(\d)0'?s)\b", re.IGNORECASE)
_AFTER = re.compile(r"\b(after|since|newer than|from|post)\s+((?:19|20)\d\d)\b", re.IGNORECASE)
_BEFORE = re.compile(r"\b(before|older than|until|pre|up to)\s+((?:19|20)\d\d)\b", re.IGNORECASE)
_BETWEEN = re.compile(r"\bbetween\s+((?:19|20)\d\d)\s+and\s+((?:19|20)\d\d)\b", re.IGNORECASE)
_RECENT = re.compile(r"\b(?:recent|newer|latest|new (?:movies|films|ones|releases|stuff))\b", re.IGNORECASE)
_CLASSIC = re.compile(r"\b(?:classic|classics|old movies|old films|older (?:movies|films|ones)|oldies)\b", re.I)
_RESET = re.compile(r"\b(?:start over|start again|reset|forget (?:everything|all that|it all)|new search)\b", re.I)
_GREETING = re.compile(r"^\s*(?:hi|hello|hey|good (?:morning|evening|afternoon)|howdy)\b[\s!.,]*$", re.IGNORECASE)
_REFUSE = re.compile(
    r"system prompt|your (?:instructions|prompt|rules|configuration)|ignore (?:all |the |any )?(?:previous|above|"
    r"prior|earlier) (?:instructions|prompts|messages)|developer mode|jailbreak|\bdatabase\b|\bsql\b|password|"
    r"api[ -]?keys?|\b(?:other|another|all|every) (?:users?|people|customers|members)\b|\buser\s*#?\s*\d+|"
    r"\bsomeone else'?s\b|\b(?:what|which) (?:did|does|has) (?!it|that|this)\w+ (?:watch|rate|like)|"
    r"(?:email|home|postal) address|phone number",
    re.IGNORECASE,
)
_TOPICAL = re.compile(
    r"\b(?:movies?|films?|watch(?:ed|ing)?|recommend\w*|suggest\w*|something|anything|more|another|others?|"
    r"else|similar|like|love[ds]?|enjoy(?:ed)?|fan|genre|actor|actress|director|show me|ideas?|options?|"
    r"tonight|weekend|picks?|pick|seen|saw|one|ones)\b",
    re.IGNORECASE,
)
_FILLER_TEXT = """movie movies film films something anything recommend recommendation recommendations suggest suggestion
    suggestions watch watching want wanna like love loved liked enjoy enjoyed please thanks thank good great nice
    one ones another more else show give me some similar kind sort type tonight maybe really also pick picks
    ideas idea options option looking look find see seen saw watched lol ok okay yes sure fun fan recent newer
    latest new classic classics old older oldies"""
_FILLER = frozenset(_FILLER_TEXT.split())
_WORD = re.compile(r"[A-Za-z][A-Za-z'-]+")
_ONE_WORD_TITLES: weakref.WeakKeyDictionary[Catalogue, dict[str, frozenset[int]]] = weakref.WeakKeyDictionary()


def _one_word_titles(catalogue: Catalogue) -> dict[str, frozenset[int]]:
    """One-word titles by lowercase word ("heat" -> Heat).

    The catalogue's mention index leaves out one-word titles that are also ordinary words, because an
    explanation saying "heat" rarely means the film. In a request, a capitalised word that is exactly a title
    ("I loved Heat") usually does, so the chat looks those up here.
    """
    table = _ONE_WORD_TITLES.get(catalogue)
    if table is None:
        found: dict[str, set[int]] = {}
        for idx in range(len(catalogue)):
            words = catalogue.title(idx).split()
            if len(words) == 1 and len(words[0]) >= 3:
                found.setdefault(words[0].lower().strip(".,!?:"), set()).add(idx)
        table = {k: frozenset(v) for k, v in found.items()}
        _ONE_WORD_TITLES[catalogue] = table
    return table


@dataclass(frozen=True)
class TurnParse:
    """The reading of one user turn.

    Attributes:
        intent: What the turn asks for (see :data:`Intent`).
        update: What it adds to the dialogue state.
        mentioned: Dense indices of the catalogue items it names (any sentiment), in text order.
    """

    intent: Intent
    update: StateUpdate
    mentioned: list[int] = field(default_factory=list)


def _pick(items: frozenset[int], popularity: np.ndarray | None) -> int:
    """Of several catalogue items with the same title, the most interacted-with (else the first)."""
    ordered = sorted(items)
    if popularity is None:
        return ordered[0]
    return max(ordered, key=lambda i: (popularity[i], -i))


def _years(text: str, newest: int | None) -> tuple[int | None, int | None]:
    """Year bounds the text asks for (``None`` where it sets none)."""
    low: int | None = None
    high: int | None = None
    if m := _BETWEEN.search(text):
        a, b = sorted((int(m.group(1)), int(m.group(2))))
        return a, b
    if m := _DECADE.search(text):
        if m.group(1):
            start = int(m.group(1) + m.group(2) + "0")
        else:
            digit = int(m.group(3))
            start = (1900 if digit >= 3 else 2000) + digit * 10
        low, high = start, start + 9
    if m := _AFTER.search(text):
        year = int(m.group(2))
        low = year + 1 if m.group(1).lower() in ("after", "newer than", "post") else year
    if m := _BEFORE.search(text):
        year = int(m.group(2))
        high = year - 1 if m.group(1).lower() in ("before", "older than", "pre") else year
    if newest is not None and low is None and _RECENT.search(text):
        low = newest - 5
    if high is None and _CLASSIC.search(text):
        high = 1979
    return low, high


def parse_turn(
    text: str,
    catalogue: Catalogue,
    *,
    recommended: frozenset[str] | set[str] = frozenset(),
    popularity: np.ndarray | None = None,
    newest_year: int | None = None,
) -> TurnParse:
    """Read one user turn (see the module docstring).

    Args:
        text: What the person wrote.
        catalogue: The catalogue whose titles and genres are recognised.
        recommended: Item ids already shown in this conversation ("not that one" rejects them).
        popularity: Interactions per item, to choose among items sharing a title.
        newest_year: The catalogue's newest release year ("recent" means its last five years).

    """
    if _REFUSE.search(text):
        return TurnParse("refused", StateUpdate())
    if _RESET.search(text):
        return TurnParse("reset", StateUpdate(reset=True))
    if _GREETING.match(text):
        return TurnParse("greeting", StateUpdate())
    ids = catalogue.item_ids
    liked: list[str] = []
    disliked: list[str] = []
    seen: list[str] = []
    rejected: list[str] = []
    include: list[str] = []
    exclude: list[str] = []
    mentioned: list[int] = []
    leftover: list[str] = []
    for clause in (c for c in _CLAUSE.split(text) if c and c.strip()):
        negative, was_seen = bool(_NEGATIVE.search(clause)), bool(_SEEN.search(clause))
        mentions = catalogue.mentions(clause)
        used = [m.span for m in mentions if m.kind in ("item", "genre", "year")]

        def note(items: frozenset[int], negative: bool = negative, was_seen: bool = was_seen) -> None:
            idx = _pick(items, popularity)
            mentioned.append(idx)
            item = str(ids[idx])
            if was_seen:
                seen.append(item)
            elif negative:
                (rejected if item in recommended else disliked).append(item)
            else:
                liked.append(item)

        for m in mentions:
            before = clause[: m.span[0]]
            if m.kind == "item" and m.items:
                note(m.items)
            elif m.kind == "genre":
                (exclude if _NEGATION.search(before) else include).append(m.value)
        one_word = _one_word_titles(catalogue)
        for word in _WORD.finditer(clause):
            if any(s <= word.start() < e for s, e in used):
                continue
            low = word.group().lower()
            genre = MOOD_GENRES.get(low)
            ordinary = low in STOPWORDS or low in _FILLER
            titled = one_word.get(low) if word.group()[0].isupper() and not ordinary else None
            if titled:
                note(titled)
            elif genre is not None:
                (exclude if _NEGATION.search(clause[: word.start()]) else include).append(genre)
            elif not ordinary and not _NEGATION.fullmatch(low):
                leftover.append(word.group())
    low_year, high_year = _years(text, newest_year)
    descriptive = [w for w in leftover if not (_NEGATIVE.search(w) or _SEEN.search(w))]
    query = " ".join(descriptive) if descriptive else None
    update = StateUpdate(
        liked=liked,
        disliked=disliked,
        seen=seen,
        rejected=rejected,
        genres_include=[g for g in dict.fromkeys(include) if g not in exclude],
        genres_exclude=list(dict.fromkeys(exclude)),
        year_min=low_year,
        year_max=high_year,
        query=query,
    )
    on_topic = bool(mentioned or include or exclude or low_year or high_year or _TOPICAL.search(text))
    if not on_topic:
        return TurnParse("out_of_scope", StateUpdate(), mentioned)
    return TurnParse("recommend", update, mentioned)
