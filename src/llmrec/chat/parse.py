"""Understanding one user turn: what it asks for, and what it adds to the dialogue state.

Rules over the catalogue's own mention index (:meth:`llmrec.catalogue.Catalogue.mentions`: titles, genres,
years) and the tolerant title index (:class:`llmrec.chat.link.TitleIndex`: shortened, misspelled and differently
punctuated titles), applied clause by clause so "I loved Heat but hated Alien" likes one film and dislikes the
other:

- a title takes the sentiment of the nearest cue around it: "hated X", "X was boring", "thumbs down on X",
  "not X" dislike it; "I've seen X", "X, seen it" mark it seen (never recommended back); "loved X", "X was
  great", or no cue at all like it. A stated sentiment beats "seen" ("I've seen X and loved it" likes X);
- a genre (or a mood word: "funny" is Comedy, "scary" and "scarier" Horror) is *asked for* unless a negation or
  a comparative governs it ("no horror", "nothing scary", "less romance", "tired of superhero movies"). A
  negation reaches forward to the next comma, "and", "but", "more" or "something", so "no horror, something
  funny" rules out horror and asks for comedy;
- genres named together describe one item and are all required ("a sci-fi thriller", "a funny horror movie",
  "animated musicals"); genres joined by "or", or two plurals joined by "and" ("westerns and comedies"), are
  alternatives;
- words after a title and its "is/was" describe that title ("Goodfellas is a great gangster film", "X is a
  classic"), so they ask for nothing;
- years come from decades ("the 90s", "early 80s", "the 80s or 90s"), bounds ("after 2000", "nothing before
  1980"), single years ("from 2004"), "recent" and "classic";
- descriptive words left over ("something with dinosaurs") become a text query; negated ones ("less violent",
  "not too long") become words to *avoid*, never part of the query.

The intent of the turn decides whether to recommend at all: attempts to get at the system prompt, other users'
data or the store are ``refused``, requests with nothing to do with recommending are ``out_of_scope``.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

import numpy as np

from llmrec.chat.link import TitleIndex
from llmrec.chat.state import StateUpdate
from llmrec.text.extract import GENRE_VOCABULARY, STOPWORDS

if TYPE_CHECKING:
    from llmrec.catalogue import Catalogue
    from llmrec.chat.judge import SentimentJudge

__all__ = ["MOOD_GENRES", "Intent", "TurnParse", "parse_turn"]

Intent = Literal["recommend", "greeting", "reset", "refused", "out_of_scope"]

#: Mood words that name a genre in conversation (the genre vocabulary covers the genres' own names).
MOOD_GENRES: dict[str, str] = {
    "funny": "Comedy",
    "funnier": "Comedy",
    "hilarious": "Comedy",
    "laugh": "Comedy",
    "comedic": "Comedy",
    "scary": "Horror",
    "scarier": "Horror",
    "creepy": "Horror",
    "creepier": "Horror",
    "spooky": "Horror",
    "frightening": "Horror",
    "gory": "Horror",
    "gore": "Horror",
    "tearjerker": "Drama",
    "suspenseful": "Thriller",
    "thrilling": "Thriller",
    "animated": "Animation",
    "cartoons": "Animation",
    "kids": "Children",
    "family": "Children",
    "romantic": "Romance",
    "sci": "Sci-Fi",
    "space": "Sci-Fi",
    "superhero": "Action",
    "detective": "Mystery",
    "western": "Western",
}

_CLAUSE = re.compile(
    r"(?<!\b[A-Z]\.[A-Z])[.;!?\n]+(?:\s+|$)|,?\s+(?<!anything )(?<!everything )(?<!all )"
    r"\b(?:but|however|though|although|whereas|while)\b\s*",
    re.IGNORECASE,
)
_NEGATIVE = re.compile(
    r"\b(?:hate[ds]?|hating|dislike[ds]?|didn'?t (?:like|enjoy|love)|did not (?:like|enjoy|love)|"
    r"don'?t (?:like|enjoy|love|care for)|do not (?:like|enjoy|love)|not (?:\w+ )?(?:a )?fan(?: of)?|"
    r"not (?:into|for me|my thing)|(?:can|couldn)'?t stand|cannot stand|could not stand|boring|bored|awful|"
    r"terrible|worst|worse|overrated|dumb|stupid|gross|childish|confusing|annoying|silly|lame|bad|cheesy|"
    r"weird|slow|not that one|thumbs down(?: on| for)?|no thanks|too \w+|disappointing|disappointed|meh|"
    r"(?:a |such a |kind of a |bit of a )?mess|annoy(?:ed|s|ing)?|(?:couldn'?t|could not|can'?t) (?:get through|"
    r"finish|sit through)|not (?:my (?:thing|cup of tea|style|kind of \w+))|waste of (?:time|money)|dull|tedious|"
    r"forgettable|mediocre|unwatchable|pointless|bland|underwhelming|dreadful|garbage|trash|sucks?|sucked|"
    r"fell asleep|snooze\w*|cringe\w*|painful|so-so)\b",
    re.IGNORECASE,
)
_POSITIVE = re.compile(
    r"\b(?:lo+ved?|liked?|likes|enjoyed|enjoy|adored?|fan of|favou?rites?|great|amazing|brilliant|fantastic|"
    r"awesome|best|fun|masterpiece|thumbs up(?: on| for)?|more like|similar to|inspiring|good|better|cute|"
    r"beautiful|charming|gripping|smart|slick|intense|hilarious|funny|rules|rocks|rocked|gem|wonderful|"
    r"excellent|superb|perfect|incredible|cool|moving|touching|lovely|blast|blew me away)\b",
    re.IGNORECASE,
)
#: Praise that contains a negative word ("stupid fun", "scary in a good way"): it decides the sentiment.
_PRAISE_IDIOM = re.compile(
    r"\b(?:in a good way|(?:stupid|dumb|silly|cheesy|guilty|mindless) (?:fun|pleasure)|so bad (?:it'?s|that it'?s) "
    r"good)\b",
    re.IGNORECASE,
)
_SEEN = re.compile(
    r"\b(?:(?:i'?ve|i have|already|we'?ve|we have) (?:already )?(?:seen|watched|saw)|"
    r"(?:saw|watched|seen) (?:it|that|them|those)(?: already| before| twice)?|seen|saw|watched|already)\b",
    re.IGNORECASE,
)
_NOT_BEFORE = re.compile(r"\b(?:not|never|except|no)\s*$", re.IGNORECASE)
_NEGATION = re.compile(
    r"\b(?:no more|not so|not too|no|not|without|nothing|none|avoid|except|skip|anything but|less|fewer|too|"
    r"tired of|sick of|enough of|hate[sd]?|dislike[sd]?|don'?t (?:want|like|need|enjoy)|"
    r"do not (?:want|like|need)|never|isn'?t|aren'?t)\b",
    re.IGNORECASE,
)
_SCOPE_BREAK = re.compile(
    r"[,;:]|\b(?:but|and|instead|rather|more|something|maybe|just|prefer|preferably|ideally|want a|give me)\b",
    re.IGNORECASE,
)
_COPULA = re.compile(
    r"^\s*(?:is|was|are|were|'s|seems|looked|felt|made|makes|scared|moved|blew|bored|had|has|got|gets)\b", re.I
)
_WISH = re.compile(
    r"\b(?:another|more|something|anything|similar|please|want|recommend|suggest|give me|show me)\b", re.I
)
_FIRST_PERSON = re.compile(r"^\s*(?:i|i'm|im|i've|we|we're|we've|my|me)\b", re.IGNORECASE)
_TOPIC_MARKER = re.compile(r"\b(?:with|about|featuring|involving|set in|where)\b", re.IGNORECASE)
_DECADE = re.compile(
    r"\b(?:(early|mid|late)[\s-]+)?(?:(19|20)(\d)0'?s|'?(\d)0'?s|(twenties|thirties|forties|fifties|sixties|"
    r"seventies|eighties|nineties))\b",
    re.IGNORECASE,
)
_DECADE_WORDS = {"twenties": 2, "thirties": 3, "forties": 4, "fifties": 5, "sixties": 6, "seventies": 7,
                 "eighties": 8, "nineties": 9}  # fmt: skip
_AFTER = re.compile(
    r"\b(after|since|newer than|from|post|in)\s+((?:19|20)\d\d)\b(\s+(?:on|onwards?|forward|to))?", re.I
)
_BEFORE = re.compile(r"\b(before|older than|until|pre|up to)\s+((?:19|20)\d\d)\b", re.IGNORECASE)
_BETWEEN = re.compile(r"\bbetween\s+((?:19|20)\d\d)\s+and\s+((?:19|20)\d\d)\b", re.IGNORECASE)
_NEGATED_BOUND = re.compile(r"\b(?:nothing|no|not|none)\s+(?:\w+\s+)?$", re.IGNORECASE)
#: An open bound written after the year: "2015 or later", "1990 onwards", "1970 and earlier".
_OPEN_BOUND = re.compile(
    r"\b((?:19|20)\d\d)\s*(?:(?:or|and) (later|newer|after|up|above|more recent|earlier|older|before)|"
    r"(onwards?|and beyond)|(\+))",
    re.IGNORECASE,
)
_RECENT = re.compile(r"\b(?:recent|newer(?! than)|latest|new (?:movies|films|ones|releases|stuff))\b", re.IGNORECASE)
_PRONOUN = re.compile(r"\b(?:it|that|this|them|those|both|that one)\b", re.IGNORECASE)
_CLASSIC = re.compile(r"\b(?:classic|classics|old movies|old films|older (?:movies|films|ones)|oldies|old)\b", re.I)
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
    r"tonight|weekend|picks?|pick|seen|saw|one|ones|thumbs|for me|story|stories|epic)\b",
    re.IGNORECASE,
)
_FILLER_TEXT = """movie movies film films flick flicks something anything recommend recommendation recommendations
    suggest suggestion suggestions watch watching want wanna like love loved liked enjoy enjoyed please thanks
    thank good great nice one ones another more else show give me some similar kind sort type tonight maybe
    really also pick picks ideas idea options option looking look find see seen saw watched lol ok okay yes sure
    fun fan recent newer latest classic classics old older oldies releases stuff need needs thing things any
    favourite favorite favourites favorites best amazing awesome brilliant fantastic thumbs up down hate hated
    dislike disliked adore adored boring overrated terrible awful dumb already first second last tired sick
    except skip avoid without twice original fine whatever either bit lot ever yesterday today night week
    weekend evening mood feel feeling fancy craving"""
_FILLER = frozenset(_FILLER_TEXT.split())
_WORD = re.compile(r"[^\W_]+(?:['’\-][^\W_]+)*")
_GENRE_PHRASES: dict[str, tuple[str, ...]] = {}
for _canonical, _phrases in GENRE_VOCABULARY.items():
    for _phrase in (_canonical.lower(), *_phrases) if _canonical != "War" else _phrases:  # bare "war": no
        _GENRE_PHRASES[_phrase] = (*_GENRE_PHRASES.get(_phrase, ()), _canonical)  # "war drama": Drama and War
_GENRE = re.compile(
    r"(?<![\w-])(?:" + "|".join(re.escape(p) for p in sorted(_GENRE_PHRASES, key=len, reverse=True)) + r")(?:e?s)?"
    r"(?![\w-])",
    re.IGNORECASE,
)


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


@dataclass(frozen=True)
class _Genre:
    start: int
    end: int
    genre: str
    plural: bool


def _genres_of(phrase: str) -> tuple[str, ...]:
    """Canonical genres a matched phrase names, plurals included ("romcoms": Comedy and Romance)."""
    low = phrase.lower()
    for form in (low, low[:-2] if low.endswith("es") else low, low[:-1] if low.endswith("s") else low):
        if form in _GENRE_PHRASES:
            return _GENRE_PHRASES[form]
    return ()


def _pick(items: frozenset[int], popularity: np.ndarray | None, looser: frozenset[int] = frozenset()) -> int:
    """Of several catalogue items with the same title, the most interacted-with (else the first).

    An item the words name only loosely (by a leading run or a part of its title) wins when it is at least five
    times as popular: people say "Lord of the Rings" for the 2001 film, not the 1978 one.
    """
    ordered = sorted(items)
    if popularity is None:
        return ordered[0]
    best = max(ordered, key=lambda i: (popularity[i], -i))
    if looser:
        alternative = max(sorted(looser), key=lambda i: (popularity[i], -i))
        if popularity[alternative] >= 5 * max(popularity[best], 1):
            return alternative
    return best


def _inside(pos: int, spans: list[tuple[int, int]]) -> bool:
    return any(s <= pos < e for s, e in spans)


def _negated(clause: str, pos: int) -> bool:
    """Whether a negation or comparative ("no", "less", "too", "tired of") governs the word at ``pos``."""
    before = clause[:pos]
    cues = list(_NEGATION.finditer(before))
    if not cues:
        return False
    cue = cues[-1]
    return not _SCOPE_BREAK.search(before[cue.end() :])


def _sentiment(before: str, after: str) -> str | None:
    """``"disliked"``, ``"seen"``, ``"liked"`` or ``None``: the cue nearest a title (before it, else after it)."""
    if _NOT_BEFORE.search(before):
        return "disliked"
    wish = _WISH.search(after)
    if _PRAISE_IDIOM.search(after[: wish.start()] if wish else after) or _PRAISE_IDIOM.search(before):
        return "liked"
    best: tuple[int, int, str] | None = None
    for kind, rank, pattern in (("disliked", 0, _NEGATIVE), ("seen", 1, _SEEN), ("liked", 2, _POSITIVE)):
        for m in pattern.finditer(before):
            key = (m.end(), -rank, kind)
            if best is None or key[:2] > best[:2]:
                best = key
    if best is not None:
        if best[2] == "seen":  # "I've seen X and loved it": a stated sentiment beats "seen"
            later = _sentiment("", after) if after else None
            return later if later in ("liked", "disliked") else "seen"
        return best[2]
    wish = _WISH.search(after)  # ", more comedies like those" asks for more; it says nothing about the title
    after = after[: wish.start()] if wish else after
    first: tuple[int, int, str] | None = None
    for kind, rank, pattern in (("disliked", 0, _NEGATIVE), ("seen", 1, _SEEN), ("liked", 2, _POSITIVE)):
        hit = pattern.search(after)
        if hit is not None and (first is None or (hit.start(), rank) < first[:2]):
            first = (hit.start(), rank, kind)
    if first is None:
        return None
    if first[2] == "seen":
        rest = after[first[0] :]
        for kind, pattern in (("disliked", _NEGATIVE), ("liked", _POSITIVE)):
            if pattern.search(rest):
                return kind
    return first[2]


def _years(text: str, newest: int | None, ignore: list[tuple[int, int]]) -> tuple[int | None, int | None]:
    """Year bounds the text asks for (``None`` where it sets none); matches inside ``ignore`` spans don't count."""
    low: int | None = None
    high: int | None = None

    def kept(m: re.Match[str]) -> bool:
        return not _inside(m.start(), ignore)

    if (m := _BETWEEN.search(text)) and kept(m):
        a, b = sorted((int(m.group(1)), int(m.group(2))))
        return a, b
    decades = []
    for m in _DECADE.finditer(text):
        if not kept(m):
            continue
        if m.group(2):
            start = int(m.group(2) + m.group(3) + "0")
        elif m.group(5):
            start = 1900 + 10 * _DECADE_WORDS[m.group(5).lower()]
        else:
            digit = int(m.group(4))
            start = (1900 if digit >= 3 else 2000) + digit * 10
        part = (m.group(1) or "").lower()
        first, last = {"early": (0, 4), "mid": (3, 7), "late": (5, 9)}.get(part, (0, 9))
        decades.append((start + first, start + last))
    if decades:
        low, high = min(d[0] for d in decades), max(d[1] for d in decades)
    for m in _AFTER.finditer(text):
        if not kept(m):
            continue
        year, word = int(m.group(2)), m.group(1).lower()
        if _NEGATED_BOUND.search(text[: m.start()]):
            high = year
        elif word in ("from", "in") and not m.group(3):
            low, high = year, year
        else:
            low = year + 1 if word in ("after", "newer than", "post") else year
    for m in _BEFORE.finditer(text):
        if not kept(m):
            continue
        year = int(m.group(2))
        if _NEGATED_BOUND.search(text[: m.start()]):
            low = year
        else:
            high = year - 1 if m.group(1).lower() in ("before", "older than", "pre") else year
    for m in _OPEN_BOUND.finditer(text):
        if kept(m):
            year, word = int(m.group(1)), (m.group(2) or "").lower()
            if word in ("earlier", "older", "before"):
                high = year
            else:
                low = year
    if newest is not None and low is None and any(kept(m) for m in _RECENT.finditer(text)):
        low = newest - 5
    if high is None and any(kept(m) for m in _CLASSIC.finditer(text)):
        high = 1979
    return low, high


def _year_spans(text: str) -> list[tuple[int, int]]:
    """Where the text talks about years (those words are constraints, not a description)."""
    spans = []
    for pattern in (_BETWEEN, _DECADE, _AFTER, _BEFORE, _OPEN_BOUND, _RECENT, _CLASSIC):
        spans += [m.span() for m in pattern.finditer(text)]
    return spans


def _groups(genres: list[_Genre], clause: str) -> list[list[str]]:
    """Included genres grouped: one group is one item's genres ("sci-fi thriller"); groups are alternatives."""
    groups: list[list[str]] = []
    previous: _Genre | None = None
    for g in genres:
        between = clause[previous.end : g.start] if previous is not None else ""
        alternative = bool(re.search(r"\bor\b|\beither\b|[,;/]", between, re.IGNORECASE)) or (
            bool(re.search(r"\band\b", between, re.IGNORECASE))
            and previous is not None
            and previous.plural
            and g.plural
        )
        if previous is None or alternative:
            groups.append([g.genre])
        elif g.genre not in groups[-1]:
            groups[-1].append(g.genre)
        previous = g
    return groups


def parse_turn(
    text: str,
    catalogue: Catalogue,
    *,
    recommended: frozenset[str] | set[str] = frozenset(),
    popularity: np.ndarray | None = None,
    newest_year: int | None = None,
    judge: SentimentJudge | None = None,
) -> TurnParse:
    """Read one user turn (see the module docstring).

    Args:
        text: What the person wrote.
        catalogue: The catalogue whose titles and genres are recognised.
        recommended: Item ids already shown in this conversation ("not that one" rejects them).
        popularity: Interactions per item, to choose among items sharing a title.
        newest_year: The catalogue's newest release year ("recent" means its last five years).
        judge: Decides liked/disliked for a title when no rule cue is found around it (the rules' default is
            *liked*); :class:`~llmrec.chat.judge.LMSentimentJudge` asks the language model by likelihood.
    """
    if _REFUSE.search(text):
        return TurnParse("refused", StateUpdate())
    if _RESET.search(text):
        return TurnParse("reset", StateUpdate(reset=True))
    if _GREETING.match(text):
        return TurnParse("greeting", StateUpdate())
    ids = catalogue.item_ids
    titles = TitleIndex.of(catalogue)
    found: dict[str, list[str]] = {"liked": [], "disliked": [], "seen": [], "rejected": []}
    include: list[str] = []
    require: list[str] = []
    exclude: list[str] = []
    mentioned: list[int] = []
    wanted: list[str] = []
    avoid: list[str] = []
    ignored: list[tuple[int, int]] = []  # title words and descriptions of a title (absolute offsets)
    cuts = [0, *(x for m in _CLAUSE.finditer(text) for x in m.span()), len(text)]
    previous_items: list[str] = []
    for offset, stop in zip(cuts[::2], cuts[1::2], strict=False):
        clause = text[offset:stop]
        if not clause.strip():
            continue
        short_comment = len(_WORD.findall(clause)) <= 5 and not _WISH.search(clause)
        if previous_items and (_PRONOUN.search(clause) or short_comment) and not titles.find(clause):
            # "Coneheads? hated it", "The Notebook? not my thing": the sentiment of a clause about "it" (or of a
            # short comment with no wish of its own) goes to the previous clause's titles.
            feeling = _sentiment(clause, "")
            if feeling in ("liked", "disliked"):
                for item in previous_items:
                    for kind in ("liked", "seen", "disliked"):
                        if item in found[kind]:
                            found[kind].remove(item)
                    found["rejected" if feeling == "disliked" and item in recommended else feeling].append(item)
        links = titles.find(clause)
        items = [(link.span, link.items, link.looser) for link in links]
        item_spans = [span for span, _, _ in items]
        segments = [0, *(m.end() for m in re.finditer(r"[,;:]", clause)), len(clause) + 1]
        zones: list[tuple[int, int]] = []  # "X was great, ..." describes X
        previous: str | None = None
        previous_items = []
        for n, (span, matched, looser) in enumerate(items):
            start_prev = items[n - 1][0][1] if n else 0
            end_next = items[n + 1][0][0] if n + 1 < len(items) else len(clause)
            idx = _pick(matched, popularity, looser)
            cue = _sentiment(clause[start_prev : span[0]], clause[span[1] : end_next])
            if cue is None and previous is None and judge is not None:
                cue = judge(clause.strip(), catalogue.title(idx))  # no rule cue: the model's word, by likelihood
            feeling = cue or previous or "liked"
            previous = feeling
            mentioned.append(idx)
            item = str(ids[idx])
            previous_items.append(item)
            if feeling == "disliked" and item in recommended:
                feeling = "rejected"
            found[feeling].append(item)
            segment_end = min(s for s in segments if s > span[1]) - 1
            if _COPULA.match(clause[span[1] :]):
                wish = _WISH.search(clause, span[1], segment_end)
                zones.append((span[1], wish.start() if wish else segment_end))
        title_segments = [(a, b) for a, b in itertools.pairwise(segments) if any(a <= s < b for s, _ in item_spans)]
        genre_hits = [
            (m.span(), genre, m.group())
            for m in _GENRE.finditer(clause)
            if not _inside(m.start(), item_spans)
            for genre in _genres_of(m.group())
        ]
        for word in _WORD.finditer(clause):
            low = word.group().lower().replace("’", "'")
            if low in MOOD_GENRES and not _inside(word.start(), [h[0] for h in genre_hits] + item_spans):
                genre_hits.append((word.span(), MOOD_GENRES[low], word.group()))
        positive: list[_Genre] = []
        for (start, end), genre, written in sorted(genre_hits):
            if _negated(clause, start):
                exclude.append(genre)
            elif not _inside(start, zones):
                positive.append(_Genre(start, end, genre, written.lower().endswith("s")))
        for group in _groups(positive, clause):
            (include if len(group) == 1 else require).extend(group)
        genre_spans = [h[0] for h in genre_hits]
        years = [(s - offset, e - offset) for s, e in _year_spans(text)]
        for word in _WORD.finditer(clause):
            pos, low = word.start(), word.group().lower().replace("’", "'")
            if _inside(pos, item_spans + genre_spans + years) or low in STOPWORDS or low in _FILLER:
                continue
            if len(low) < 3 or low.isdigit():
                continue
            if _negated(clause, pos):  # "too weird", "nothing too slow": avoided, even as a sentiment word
                avoid.append(word.group())
                continue
            if _NEGATIVE.fullmatch(low) or _POSITIVE.fullmatch(low) or _SEEN.fullmatch(low):
                continue
            in_title_segment = next(((a, b) for a, b in title_segments if a <= pos < b), None)
            segment = next(clause[a:b] for a, b in itertools.pairwise(segments) if a <= pos < b)
            if (title_segments or _FIRST_PERSON.match(segment)) and not (
                _WISH.search(segment) or _TOPIC_MARKER.search(segment)
            ):
                continue  # "seen X, I know the twist", "no horror, I scare easily": a comment, not a wish
            if in_title_segment is not None:
                marker = _TOPIC_MARKER.search(clause, in_title_segment[0], pos)
                if marker is None or any(marker.start() < s[1] <= pos for s in item_spans):
                    continue
            if not _inside(pos, zones):
                wanted.append(word.group())
        ignored += [(offset + a, offset + b) for a, b in zones + item_spans]
    low_year, high_year = _years(text, newest_year, ignored)
    exclude = list(dict.fromkeys(exclude))
    update = StateUpdate(
        liked=list(dict.fromkeys(found["liked"])),
        disliked=list(dict.fromkeys(found["disliked"])),
        seen=list(dict.fromkeys(found["seen"])),
        rejected=list(dict.fromkeys(found["rejected"])),
        genres_include=[g for g in dict.fromkeys(include) if g not in exclude],
        genres_all=[g for g in dict.fromkeys(require) if g not in exclude],
        genres_exclude=exclude,
        year_min=low_year,
        year_max=high_year,
        query=" ".join(dict.fromkeys(wanted)) or None,
        avoid=list(dict.fromkeys(avoid)),
    )
    stated = mentioned or include or require or exclude or low_year or high_year or avoid
    if not (stated or _TOPICAL.search(text) or _NEGATIVE.search(text)):
        return TurnParse("out_of_scope", StateUpdate(), mentioned)
    return TurnParse("recommend", update, mentioned)
