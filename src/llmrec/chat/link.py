"""Title linking: finding catalogue titles in a message the way people actually write them.

People shorten titles ("Lord of the Rings", "Kill Bill", "Eternal Sunshine"), misspell them ("Jurasic Park",
"Forest Gump"), and punctuate them differently ("Spiderman", "Wall-E", "Monsters Inc", "Dumb and Dumber",
"Leon the Professional"). The catalogue's exact mention index (:meth:`llmrec.catalogue.Catalogue.mentions`)
finds none of those, so the chat also looks titles up here:

1. Every short title is normalised (accents and apostrophes dropped, ``&`` read as "and", punctuation as space,
   number words and roman numerals after "part"/"episode" as digits) and indexed with its variants: without a
   leading article, without its leading stopwords ("Spinal Tap"), each part around a ``:`` or `` - `` ("Kill
   Bill", "The Two Towers"), every leading run of words that ends on a content word ("Eternal Sunshine"; one
   word only when it is long and unusual, "Shawshank"), and all of it without spaces ("spiderman" is
   "Spider-Man").
2. A span of the message is looked up exactly among those keys, else compared with the full titles and their
   parts by :func:`rapidfuzz.fuzz.ratio` (a kept, C-implemented string-similarity library; the ``chat`` extra)
   above a cut-off that rises for short strings, so one or two typos are forgiven but "time travel" does not
   become a film. Without rapidfuzz installed only that fuzzy step is skipped (with a warning at import).
3. Only plausible spans are tried: a span never starts or ends on a stopword, a request word ("movie",
   "please"), a sentiment word ("loved", "thumbs") or a genre word. Spans written in lower case, and any span
   at the start of a sentence, must also stand where a title is expected: after "loved", "seen", "fan of",
   "thumbs down on", "like", "than", "not", or an already linked title's "and"; or at the start of a clause,
   before "is/was/...". So "something with dinosaurs" never links *Dinosaur* (2000), while "interstelar was
   amazing" links *Interstellar*.

When several items share the winning key, the caller picks one (the most popular: a shortened "Star Wars" is
Episode IV, "Harry Potter" the first film). A shorter exact key beats a longer fuzzy one only when it covers
the same words; otherwise the span covering more of the message wins.
"""

from __future__ import annotations

import importlib.util
import logging
import re
import threading
import unicodedata
import weakref
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from llmrec.text.extract import GENRE_VOCABULARY, STOPWORDS

if TYPE_CHECKING:
    from llmrec.catalogue import Catalogue

__all__ = ["LinkKind", "TitleIndex", "TitleLink", "normalize_title"]

log = logging.getLogger(__name__)
_FUZZY = importlib.util.find_spec("rapidfuzz") is not None
if not _FUZZY:
    log.warning("rapidfuzz is not installed: chat title linking forgives no typos (pip install 'llmrec[chat]')")

LinkKind = Literal["exact", "variant", "part", "compact", "prefix", "fuzzy"]
_QUALITY: dict[str, float] = {"exact": 100.0, "variant": 99.0, "compact": 98.5, "part": 98.0, "prefix": 96.0}

_NUMBER_WORDS = {
    "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5", "six": "6", "seven": "7",
    "eight": "8", "nine": "9", "ten": "10", "eleven": "11", "twelve": "12", "thirteen": "13", "twenty": "20",
    "thirty": "30", "forty": "40", "fifty": "50", "sixty": "60", "seventy": "70", "eighty": "80", "ninety": "90",
    "hundred": "100",
}  # fmt: skip
_ROMAN = {"i": "1", "ii": "2", "iii": "3", "iv": "4", "v": "5", "vi": "6", "vii": "7", "viii": "8", "ix": "9"}
_SEQUEL_WORDS = frozenset({"part", "episode", "chapter", "vol", "volume"})
_ARTICLES = frozenset({"the", "a", "an"})
_DELETED = "'’`·‧.´"  # joined, not split: "Schindler's" is "schindlers", "WALL·E" "walle", "E.T." "et"
_SPLIT = re.compile(r"[^0-9a-z]+")
_TOKEN = re.compile(r"[^\W_]+(?:['’·.\-][^\W_]+)*|&")
_PART_SEPARATOR = re.compile(r":|\s+-\s+|\s+–\s+")

#: Words a title span never starts or ends with: what people wrap around a title, not a title's own words.
_REQUEST_WORDS_TEXT = """movie movies film films flick something anything recommend recommendation recommendations
    suggest please
    thanks want wanna like love loved liked likes enjoy enjoyed adore adored hate hated disliked dislike seen
    saw watched watch rewatched fan favourite favorite favourites favorites thumbs up down great good amazing
    awesome brilliant fantastic best fun boring overrated terrible awful dumb cute epic weird slow smart
    intense gripping funny scary creepy classic classics old new recent newer older ones stuff kind sort type
    similar more less another else tonight maybe really also pick ideas options lol ok okay yes sure kids
    superhero detective space cartoons hilarious spooky gory frightening suspenseful thrilling tearjerker
    romantic animated"""
REQUEST_WORDS = frozenset(_REQUEST_WORDS_TEXT.split())
_GENRE_WORDS = frozenset(w for c, ps in GENRE_VOCABULARY.items() for p in (c, *ps) for w in _SPLIT.split(p.lower()))
_BREAKERS = STOPWORDS | REQUEST_WORDS | (_GENRE_WORDS - {""})

#: A title is expected right after these (an optional article between): "loved X", "fan of X", "than X".
_TITLE_BEFORE_TEXT = """loved love liked like likes enjoyed enjoy adored adore hated hate disliked dislike
    seen saw watched
    rewatched of on for than not stand first original thought think found"""
_TITLE_BEFORE = frozenset(_TITLE_BEFORE_TEXT.split())
#: ... or at the start of a clause, right before these: "X was great", "X made me cry".
_TITLE_AFTER_TEXT = """is was are were made makes scared blew moved bored had has gets got did seen gave gives rules
    rocks rocked annoyed annoys holds held still remains deserves deserved sucks sucked left kept reminded changed
    felt looked nailed never"""
_TITLE_AFTER = frozenset(_TITLE_AFTER_TEXT.split())


def normalize_title(text: str) -> str:
    """``text`` as the index compares titles: lower case, no accents or apostrophes, digits for numbers."""
    decomposed = unicodedata.normalize("NFKD", text)
    plain = "".join(c for c in decomposed if not unicodedata.combining(c)).lower().replace("&", " and ")
    for char in _DELETED:
        plain = plain.replace(char, "")
    words = [w for w in _SPLIT.split(plain) if w]
    out: list[str] = []
    for i, word in enumerate(words):
        if word in _NUMBER_WORDS:
            word = _NUMBER_WORDS[word]
        elif word in _ROMAN and ((len(word) > 1 and word != "vi") or (i > 0 and words[i - 1] in _SEQUEL_WORDS)):
            word = _ROMAN[word]
        out.append(word)
    return " ".join(out)


@dataclass(frozen=True)
class TitleLink:
    """One title found in a message.

    Attributes:
        span: Character offsets of the words that name it.
        items: Dense indices of the catalogue items the matched key names (one title can name several items).
        kind: How it matched: the title as written, a variant (no article), a part (around a colon), the
            title without spaces, a leading run of words, or a fuzzy match.
        score: 100 for an exact title; lower for looser matches (the fuzzy ratio, scaled).
        key: The normalised key that matched.
        looser: Items the same key names only as a part or a leading run ("Lord of the Rings" is exactly the
            1978 film, and the start of the 2001 one); the caller may prefer one that is far more popular.
    """

    span: tuple[int, int]
    items: frozenset[int]
    kind: LinkKind
    score: float
    key: str
    looser: frozenset[int] = frozenset()


class TitleIndex:
    """The normalised title keys of one catalogue (see the module docstring); :meth:`of` caches one per catalogue.

    Args:
        catalogue: Whose short titles are indexed.
        fuzzy_cutoff: Least :func:`rapidfuzz.fuzz.ratio` (0-100) for keys of 10 or more characters; shorter
            keys need ``fuzzy_cutoff + 3``, and keys under 6 characters must match exactly.
    """

    _cache: weakref.WeakKeyDictionary[Catalogue, TitleIndex] = weakref.WeakKeyDictionary()  # noqa: RUF012
    _lock = threading.Lock()

    def __init__(self, catalogue: Catalogue, *, fuzzy_cutoff: float = 85.0) -> None:
        self.fuzzy_cutoff = fuzzy_cutoff
        tiers: dict[str, tuple[int, set[int]]] = {}
        looser: dict[str, set[int]] = {}
        compact: dict[str, set[int]] = {}
        order: list[LinkKind] = ["exact", "variant", "part", "prefix"]

        def add(key: str, tier: int, idx: int) -> None:
            if not key:
                return
            best = tiers.get(key)
            if best is None or tier < best[0]:
                if best is not None:
                    looser.setdefault(key, set()).update(best[1])
                tiers[key] = (tier, {idx})
            elif tier == best[0]:
                best[1].add(idx)
            else:
                looser.setdefault(key, set()).add(idx)

        for idx in range(len(catalogue)):
            title = catalogue.title(idx)
            if not title:
                continue
            full = normalize_title(title)
            forms = [full]
            add(full, 0, idx)
            words = full.split()
            if len(words) >= 2 and words[0] in _ARTICLES:
                forms.append(" ".join(words[1:]))
                add(forms[-1], 1, idx)
            for part in _PART_SEPARATOR.split(title):
                key = normalize_title(part)
                part_words = key.split()
                if part_words and part_words[0] in _ARTICLES:
                    part_words = part_words[1:]
                long_word = len(part_words) == 1 and len(part_words[0]) >= 5 and part_words[0] not in _BREAKERS
                if (len(part_words) >= 2 or long_word) and part_words[0] not in _SEQUEL_WORDS and key != full:
                    add(" ".join(part_words), 2, idx)  # "Kill Bill", "The Two Towers", "Borat"
            first = title.split()[0] if title.split() else ""
            if first.count(".") >= 2 and len(words) >= 2:
                add(words[0], 3, idx)  # an initialism names its title on its own: "E.T." is "E.T. the Extra-..."
            lead = 0
            while lead < len(words) - 2 and words[lead] in STOPWORDS:
                lead += 1
            if lead > 0 and not any(w in STOPWORDS for w in words[lead : lead + 1]):
                add(" ".join(words[lead:]), 2, idx)  # "This Is Spinal Tap" is also "Spinal Tap"
            for form in forms:
                compact.setdefault(form.replace(" ", ""), set()).add(idx)
                form_words = form.split()
                for n in range(1, len(form_words)):
                    head = form_words[:n]
                    if head[-1] in STOPWORDS or not any(len(w) >= 4 and w not in STOPWORDS for w in head):
                        continue
                    if n == 1 and (len(head[0]) < 7 or head[0] in _BREAKERS):
                        continue  # one word names a title by its start only when long and unusual ("Shawshank")
                    add(" ".join(head), 3, idx)
        self._keys: dict[str, tuple[LinkKind, frozenset[int]]] = {
            k: (order[t], frozenset(v)) for k, (t, v) in tiers.items()
        }
        self._compact: dict[str, frozenset[int]] = {k: frozenset(v) for k, v in compact.items()}
        self._looser: dict[str, frozenset[int]] = {k: frozenset(v - tiers[k][1]) for k, v in looser.items()}
        # Fuzzy candidates by first letter: a typo rarely hits the first letter, and one letter's titles are a
        # twentieth of the catalogue, so a long message costs milliseconds, not a scan of every title per span.
        self._fuzzy_choices: dict[str, list[str]] = {}
        for k in sorted(k for k, (t, _) in tiers.items() if t <= 2 and len(k) >= 6):
            self._fuzzy_choices.setdefault(k[0], []).append(k)
        self._memo: dict[str, tuple[LinkKind, float, str, frozenset[int]] | None] = {}

    @classmethod
    def of(cls, catalogue: Catalogue) -> TitleIndex:
        """The index of ``catalogue``, built once (about a second for MovieLens' 9,742 titles)."""
        with cls._lock:
            index = cls._cache.get(catalogue)
            if index is None:
                index = cls(catalogue)
                cls._cache[catalogue] = index
            return index

    def lookup(self, phrase: str) -> tuple[LinkKind, float, str, frozenset[int]] | None:
        """How ``phrase`` names a title: ``(kind, score, key, items)``, or ``None`` when it names none."""
        key = normalize_title(phrase)
        if not key:
            return None
        if key in self._memo:
            return self._memo[key]
        if len(self._memo) > 100_000:  # a bounded memo: long conversations repeat their phrases
            self._memo.clear()
        found = self._lookup(key)
        self._memo[key] = found
        return found

    def _lookup(self, key: str) -> tuple[LinkKind, float, str, frozenset[int]] | None:
        hit = self._keys.get(key)
        words = key.split()
        if hit is None and len(words) >= 2 and words[0] in _ARTICLES:  # "The Phantom Menace": a part's article
            key = " ".join(words[1:])
            hit = self._keys.get(key)
        if hit is not None:
            return hit[0], _QUALITY[hit[0]], key, hit[1]
        compact = key.replace(" ", "")
        if compact in self._compact:
            return "compact", _QUALITY["compact"], compact, self._compact[compact]
        if len(key) < 6 or not _FUZZY:
            return None
        from rapidfuzz import fuzz, process

        cutoff = self.fuzzy_cutoff if len(key) >= 10 else self.fuzzy_cutoff + 3
        choices = self._fuzzy_choices.get(key[0], [])
        best = process.extractOne(key, choices, scorer=fuzz.ratio, score_cutoff=cutoff)
        if best is None:
            return None
        choice, score = str(best[0]), float(best[1])
        return "fuzzy", score * 0.95, choice, self._keys[choice][1]

    def find(self, text: str, taken: list[tuple[int, int]] | None = None, max_words: int = 10) -> list[TitleLink]:
        """Titles named in ``text`` outside the ``taken`` character spans, in text order (non-overlapping)."""
        taken = taken or []
        words = [(m.start(), m.end(), m.group()) for m in _TOKEN.finditer(text)]
        free = [not any(s <= a < e or a <= s < b for s, e in taken) for a, b, _ in words]
        lowered = [w[2].lower().replace("’", "'") for w in words]
        chosen: list[tuple[int, int, TitleLink]] = []
        starts = list(range(len(words)))
        while starts:
            found: list[tuple[int, int, TitleLink]] = []
            for i in starts:
                found.extend(self._at(text, words, lowered, free, i, max_words, chosen))
            before = len(chosen)
            for i, j, link in sorted(found, key=lambda f: (-(f[1] - f[0]), -f[2].score, f[0])):
                if all(j < a or i > b for a, b, _ in chosen):
                    chosen.append((i, j, link))
            # A second pass for "X and Y": Y is in a title position once X is linked.
            ends = {j for _, j, _ in chosen[before:]}
            starts = [e + 2 for e in ends if e + 2 < len(words) and lowered[e + 1] in ("and", "or", "&")]
        return [c[2] for c in sorted(chosen, key=lambda c: c[0])]

    def _at(
        self,
        text: str,
        words: list[tuple[int, int, str]],
        lowered: list[str],
        free: list[bool],
        i: int,
        max_words: int,
        chosen: list[tuple[int, int, TitleLink]],
    ) -> list[tuple[int, int, TitleLink]]:
        """Candidate links starting at word ``i`` (longest first)."""
        if not free[i] or any(a <= i <= b for a, b, _ in chosen):
            return []
        # A breaker word may open a title only when written like a name ("Dumb and Dumber", "Back to the Future").
        open_named = lowered[i] in _BREAKERS - _ARTICLES
        after_link = i >= 2 and lowered[i - 1] in ("and", "or", "&") and any(b == i - 2 for _, b, _ in chosen)
        out = []
        for j in range(min(len(words), i + max_words) - 1, i - 1, -1):
            if not all(free[i : j + 1]) or _crosses_sentence(text, words, i, j):
                continue
            if i == j and (lowered[i] in _ARTICLES or (open_named and lowered[i] not in STOPWORDS)):
                continue
            closes = lowered[j] not in _BREAKERS or (_named(words[j][2]) and (j > i or _mid_sentence(text, words, i)))
            # Otherwise a span may open or close on an ordinary word only as an exact multi-word title in a title
            # position ("back to the future is great", "I've seen get out", "catch me if you can, seen it").
            edge_breaker = not closes or (lowered[i] in _BREAKERS - _ARTICLES and not _named(words[i][2]))
            where = "position" if after_link else self._plausible(text, words, lowered, i, j)
            if where is None:
                continue
            hit = self.lookup(text[words[i][0] : words[j][1]])
            if hit is None:
                continue
            kind, score, key, items = hit
            if where == "named" and kind in ("part", "prefix", "fuzzy"):
                continue  # a loose match needs a title position: "set in New York" is no "New York Stories"
            if edge_breaker and (
                sum(w not in _ARTICLES for w in lowered[i : j + 1]) < 2
                or kind not in ("exact", "variant")
                or where != "position"
            ):
                continue
            single_lower = i == j and not words[i][2][:1].isupper()
            if (
                single_lower
                and kind not in ("exact", "variant", "compact")
                and not self._misspelt_single(words, lowered, i)
            ):
                continue
            if i == j and lowered[i] in STOPWORDS and (single_lower or not _mid_sentence(text, words, i)):
                continue  # "Her" names the film only mid-sentence and capitalised
            if kind == "fuzzy" and any(_named(w[2]) for w in words[i : j + 1]) and not _named(words[i][2]):
                continue  # "set in New York" is not "Lost in New York": a written name starts where it starts
            looser = self._looser.get(key, frozenset())
            out.append((i, j, TitleLink((words[i][0], words[j][1]), items, kind, score, key, looser)))
        return out

    @staticmethod
    def _misspelt_single(words: list[tuple[int, int, str]], lowered: list[str], i: int) -> bool:
        """A lower-case one-word fuzzy match counts only when it is long and in a title position."""
        return len(lowered[i]) >= 7 and (
            (i > 0 and lowered[i - 1] in _TITLE_BEFORE) or (i + 1 < len(words) and lowered[i + 1] in _TITLE_AFTER)
        )

    @staticmethod
    def _plausible(
        text: str, words: list[tuple[int, int, str]], lowered: list[str], i: int, j: int
    ) -> Literal["position", "named"] | None:
        """Where words ``i..j`` stand: where a title is expected, only written like a name, or neither.

        ``"position"``: after a title cue, or at a clause start before "is/was"; ``"named"``: capitalised
        mid-sentence, or a capitalised run of two or more words; ``None``: neither (see the module docstring).
        """
        sentence_start = i == 0 or bool(re.search(r"[.!?;,]\s*$", text[words[i - 1][1] : words[i][0]]))
        capitalised = any(w[2][:1].isupper() for w in words[i : j + 1] if w[2].lower() not in STOPWORDS)
        k = i - 1
        if k >= 0 and lowered[k] in _ARTICLES:
            k -= 1
        thumbs = k > 0 and lowered[k - 1] in ("up", "down")  # "thumbs down on X"; not "something for a date night"
        if k >= 0 and lowered[k] in _TITLE_BEFORE and (lowered[k] not in ("on", "for") or thumbs):
            return "position"
        at_clause_start = sentence_start or (i > 0 and lowered[i - 1] in _ARTICLES and i - 1 == 0)
        after = lowered[j + 1] if j + 1 < len(words) else ""
        gap = text[words[j][1] : words[j + 1][0]] if j + 1 < len(words) else ""
        if at_clause_start and (after in _TITLE_AFTER or after in ("and", "or")):
            return "position"
        if at_clause_start and capitalised and gap.strip().startswith("("):
            return "position"  # "Psycho (the original) is...": a parenthesis right after a name qualifies a title
        if at_clause_start and ("," in gap or not after) and (_CUE_AFTER.search(text, words[j][1]) or capitalised):
            return "position"  # "the princess bride, loved it", "Spaceballs!"; but "a scary movie" alone is no film
        if capitalised and (not sentence_start or j > i):
            return "named"  # a name mid-sentence, or a capitalised run of two or more words
        return None


_CUE_AFTER = re.compile(
    r"\b(?:lo+ved?|liked?|hated?|seen|saw|watched|enjoyed|favou?rites?|great|boring|overrated|amazing|awful)\b",
    re.IGNORECASE,
)


def _named(word: str) -> bool:
    """Whether a word is written like part of a name (capitalised, and not the pronoun "I")."""
    return word[:1].isupper() and word != "I"


def _mid_sentence(text: str, words: list[tuple[int, int, str]], i: int) -> bool:
    """Whether word ``i`` does not start a sentence (so its capital letter means something)."""
    return i > 0 and not re.search(r"[.!?;]\s*$", text[words[i - 1][1] : words[i][0]])


def _crosses_sentence(text: str, words: list[tuple[int, int, str]], i: int, j: int) -> bool:
    """Whether words ``i..j`` run across a comma or a sentence end (a title's own ". " after "Dr" is allowed)."""
    for k in range(i, j):
        gap = text[words[k][1] : words[k + 1][0]]
        if re.search(r"[,;!?]", gap):
            return True
        if "." in gap and len(words[k][2]) > 3:
            return True
    return False
