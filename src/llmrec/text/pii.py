"""A PII scrubber for user-written text: regular expressions plus checksums, no models.

User profiles, reviews and chat messages can carry personal data that must never reach an embedding, a prompt,
a log or a third-party language model. :func:`scrub` replaces it with typed placeholders (``[EMAIL]``,
``[PHONE]``, ``[CARD]``, ``[IBAN]``, ``[IP]``, ``[ADDRESS]``, ``[NATIONAL_ID]``) and says how many of each it
removed. (Presidio would need spaCy models that cannot be fetched here, so this is our own, see DESIGN.md.)

What is detected, and how false positives are kept down (movie text is full of numbers: "Blade Runner 2049
(2017)", "Ocean's 11", "4.5/5", "$100,000,000"):

========================  =========================================================================================
kind                      rule
========================  =========================================================================================
``email``                 RFC 5322 dot-atom local part ``@`` a domain with a TLD of two or more characters.
``phone``                 International ``+CC ...``/``00CC ...`` (8-15 digits, E.164); North American
                          ``(415) 555-2671``/``415-555-2671``/``+1 ...`` (NANP area and exchange rules, a separator
                          required); national numbers with a trunk ``0`` (UK ``020 7946 0958``, FR ``06 12 34 56
                          78``, DE ``030 1234567``: 9-11 digits, a separator required, dates rejected). A bare run of
                          digits without separators is never a phone number.
``card``                  13-19 digits (spaces or dashes allowed between them) that pass the Luhn check and are not
                          all one digit; 16 random digits that fail Luhn are left alone.
``iban``                  Upper-case country code, two check digits, then groups of four capitals/digits (or one
                          compact block); the length must be the country's (:data:`IBAN_LENGTHS`; 15-34 for
                          countries not in it) and the ISO 13616 mod-97 check must hold.
``ip``                    IPv4 dotted quads (not glued to a letter or dot, not after "version"/"v"/"build", so
                          "version 1.2.3.4" stays), IPv6 validated with :mod:`ipaddress`.
``address``               A house number, one to four capitalized words and a street type ("221B Baker Street",
                          "1600 Pennsylvania Ave NW", optionally ", Apt 4", ", City", "ST 12345"); French
                          "12 rue de Rivoli"; "Via Roma 12"/"Calle Mayor 5"; German/Dutch/Nordic compounds
                          "Hauptstraße 5"; a US state with a ZIP ("IL 62704"); a UK postcode ("SW1A 1AA"); "PO Box 12".
``national_id``           US Social Security numbers ``123-45-6789`` (separated, or nine digits after "SSN"), with
                          the invalid ranges excluded: area 000, 666 or 900-999, group 00, serial 0000; UK National
                          Insurance numbers ``AB 12 34 56 C`` (the unallocated letters and prefixes excluded);
                          Spanish DNI ``12345678Z`` and NIE ``X1234567L`` with their mod-23 check letter.
========================  =========================================================================================

Known gaps: phone numbers without separators, seven-digit local numbers ("555-1234"), lower-case IBANs,
free-form addresses without a house number or street type, names, and dates of birth are not detected. Street
addresses need capitalized street names, so all-lowercase text ("i live at 12 baker street") is missed; that
choice keeps "2 men walk down the street" intact. Known false positives: a number before a capitalized street
name ("his 1987 Classic Wall Street"), and movie titles that are addresses by form ("21 Jump Street"); pass such
phrases in :attr:`ScrubPolicy.allow` (the user-text builder passes the catalogue's titles).

Measured false positives (tests/text/test_pii.py): 0 in the 2,000 Pang & Lee movie reviews (7.8 MB), 1 in
each of their title-cased and upper-cased versions, 0 in 23,952 ReDial chat messages, and in MovieLens only the
four titles that are addresses ("84 Charing Cross Road", "21 Jump Street", "22 Jump Street", "10 Cloverfield
Lane").
"""

from __future__ import annotations

import ipaddress
import re
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "IBAN_LENGTHS",
    "PiiKind",
    "PiiMatch",
    "ScrubPolicy",
    "ScrubResult",
    "detect_pii",
    "iban_valid",
    "luhn_valid",
    "scrub",
]


class PiiKind(StrEnum):
    """Kinds of personal data the scrubber knows; the value is the key in :attr:`ScrubResult.counts`."""

    EMAIL = "email"
    PHONE = "phone"
    CARD = "card"
    IBAN = "iban"
    IP = "ip"
    ADDRESS = "address"
    NATIONAL_ID = "national_id"


#: IBAN length per country (ISO 13616 registry, the countries most often seen); other country codes are
#: accepted with any length from 15 to 34 when the mod-97 check holds.
IBAN_LENGTHS: dict[str, int] = {
    "AD": 24, "AE": 23, "AL": 28, "AT": 20, "AZ": 28, "BA": 20, "BE": 16, "BG": 22, "BH": 22, "BR": 29,
    "BY": 28, "CH": 21, "CR": 22, "CY": 28, "CZ": 24, "DE": 22, "DK": 18, "DO": 28, "EE": 20, "EG": 29,
    "ES": 24, "FI": 18, "FO": 18, "FR": 27, "GB": 22, "GE": 22, "GI": 23, "GL": 18, "GR": 27, "GT": 28,
    "HR": 21, "HU": 28, "IE": 22, "IL": 23, "IQ": 23, "IS": 26, "IT": 27, "JO": 30, "KW": 30, "KZ": 20,
    "LB": 28, "LC": 32, "LI": 21, "LT": 20, "LU": 20, "LV": 21, "MC": 27, "MD": 24, "ME": 22, "MK": 19,
    "MR": 27, "MT": 31, "MU": 30, "NL": 18, "NO": 15, "PK": 24, "PL": 28, "PS": 29, "PT": 25, "QA": 29,
    "RO": 24, "RS": 22, "SA": 24, "SC": 31, "SE": 24, "SI": 19, "SK": 24, "SM": 27, "ST": 25, "SV": 28,
    "TL": 23, "TN": 24, "TR": 26, "UA": 29, "VA": 22, "VG": 24, "XK": 20,
}  # fmt: skip

# Ties between overlapping matches of equal length go to the kind listed first.
_PRIORITY = [
    PiiKind.EMAIL,
    PiiKind.IBAN,
    PiiKind.CARD,
    PiiKind.NATIONAL_ID,
    PiiKind.IP,
    PiiKind.PHONE,
    PiiKind.ADDRESS,
]


class ScrubPolicy(BaseModel):
    """What :func:`scrub` removes and how it marks the removal.

    Attributes:
        kinds: Kinds of PII to remove (all by default).
        placeholder: Replacement text; ``{kind}`` becomes the kind in upper case (``[EMAIL]``, ``[NATIONAL_ID]``).
        allow: Phrases never scrubbed, matched case-insensitively: a match lying wholly inside an occurrence of
            one of them is kept (e.g. catalogue titles such as "21 Jump Street"). A match that reaches beyond
            the phrase is still scrubbed, so an allowed phrase cannot shield the PII around it.

    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    kinds: frozenset[PiiKind] = Field(default_factory=lambda: frozenset(PiiKind))
    placeholder: str = "[{kind}]"
    allow: tuple[str, ...] = ()

    def replacement(self, kind: PiiKind) -> str:
        """The text that replaces one match of ``kind``."""
        return self.placeholder.replace("{kind}", kind.value.upper())


@dataclass(frozen=True)
class PiiMatch:
    """One piece of PII found in a text: its kind and its ``text[start:end]`` span."""

    kind: PiiKind
    start: int
    end: int


@dataclass(frozen=True)
class ScrubResult:
    """Scrubbed text and how many matches of each kind were replaced.

    Attributes:
        text: The text with PII replaced by placeholders.
        counts: Kind name (``"email"``, ``"phone"``, ...) -> number of replacements, for every kind the policy
            covers (zeros included, so reports have a fixed shape).

    """

    text: str
    counts: dict[str, int] = field(default_factory=dict)

    @property
    def total(self) -> int:
        """Number of replacements of all kinds."""
        return sum(self.counts.values())


# -- checksums -------------------------------------------------------------------------------------------


def luhn_valid(number: str) -> bool:
    """Whether the digits of ``number`` pass the Luhn (mod 10) check used by payment cards.

    Non-digits (spaces, dashes) are ignored; a string without digits is not valid.
    """
    digits = [int(c) for c in number if c.isdigit()]
    if not digits:
        return False
    total = 0
    for i, d in enumerate(reversed(digits)):
        if i % 2 == 1:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


def iban_valid(iban: str) -> bool:
    """Whether ``iban`` (spaces allowed, any case) has a plausible length and passes the ISO 13616 mod-97 check.

    The length must match :data:`IBAN_LENGTHS` for known countries, 15-34 otherwise.
    """
    compact = "".join(iban.split()).replace("-", "").upper()
    if not re.fullmatch(r"[A-Z]{2}\d{2}[A-Z0-9]{11,30}", compact):
        return False
    expected = IBAN_LENGTHS.get(compact[:2])
    if (expected is not None and len(compact) != expected) or not 15 <= len(compact) <= 34:
        return False
    rearranged = compact[4:] + compact[:4]
    return int("".join(str(int(c, 36)) for c in rearranged)) % 97 == 1


# -- detectors -------------------------------------------------------------------------------------------

Span = tuple[int, int]

_EMAIL = re.compile(
    r"(?<![\w!#$%&'*+/=?^`{|}~.-])[\w!#$%&'*+/=?^`{|}~-]+(?:\.[\w!#$%&'*+/=?^`{|}~-]+)*"
    r"@(?:[^\W_](?:[\w-]{0,61}[^\W_])?\.)+[^\W\d_][\w-]*[^\W_]"
)

_NOT_IN_NUMBER = r"(?<![\w+])(?<!\d[ .\-/])"  # not glued to a word, nor continuing a run of digit groups
_NUMBER_END = r"(?!\w)(?![ .\-/]?\d)"
_PHONE_INTL = re.compile(
    r"(?<!\d[ .\-/])(?:(?<!\+)\+|(?<![\w+])00)[1-9]\d{0,3}(?:[ .\-]?(?:\(\d{1,4}\)|\d{1,5})){1,7}" + _NUMBER_END
)
_PHONE_NANP = re.compile(
    _NOT_IN_NUMBER + r"(?:1[ .\-]?)?(?:\([2-9]\d{2}\)[ .\-]?|[2-9]\d{2}[ .\-])[2-9]\d{2}[ .\-]\d{4}" + _NUMBER_END
)
_PHONE_TRUNK = re.compile(_NOT_IN_NUMBER + r"(?:\(0[1-9]\d{0,3}\)|0[1-9]\d{0,3})(?:[ .\-/]?\d{2,4}){1,5}" + _NUMBER_END)
_DATE_LIKE = re.compile(r"\(?\d{1,2}[./-]\d{1,2}[./-]\d{2,4}\b")

_DIGIT_RUN = re.compile(r"\d(?:[ \-]?\d)*")

_IBAN = re.compile(r"(?<![A-Za-z0-9])[A-Z]{2}\d{2}(?:[ \-]?[A-Z0-9]{4}){2,7}(?:[ \-]?[A-Z0-9]{1,4})?(?![A-Za-z0-9])")

_OCTET = r"(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)"
_IPV4 = re.compile(rf"(?<![\w.])(?:{_OCTET}\.){{3}}{_OCTET}(?!\w|\.\d)")
_VERSION_BEFORE = re.compile(r"(?i)\b(?:version|ver\.?|release|build|firmware|v)\s*$")
_IPV6 = re.compile(
    r"(?<![\w:.])(?:[0-9A-Fa-f]{0,4}:){2,7}(?:\d{1,3}(?:\.\d{1,3}){3}|[0-9A-Fa-f]{0,4})(?:%[\w.]+)?(?![\w:])"
)

_US_STATE = (
    r"(?:A[KLRZ]|C[AOT]|D[CE]|FL|GA|HI|I[ADLN]|K[SY]|LA|M[ADEINOST]|N[CDEHJMVY]|O[HKR]|PA|PR|RI|S[CD]|T[NX]|UT|"
    r"V[AIT]|W[AIVY])"
)
_UK_POSTCODE = r"(?:[A-PR-UWYZ][A-HK-Y]?\d[A-Z\d]?|GIR) ?\d[ABD-HJLNP-UW-Z]{2}"
_STREET_TYPE = (
    r"(?i:Street|St|Avenue|Ave|Road|Rd|Boulevard|Blvd|Lane|Ln|Drive|Dr|Court|Ct|Place|Pl|Terrace|Ter|Way|Parkway|"
    r"Pkwy|Highway|Hwy|Circle|Cir|Square|Sq|Crescent|Cres|Close|Grove|Gardens|Row|Mews|Alley|Trail|Plaza|Walk)"
)
# Words that never form a street name: in Title Case text "Takes Place", "In The Way", "Dr. Evil" would
# otherwise look like street names ("Place", "Way", "Dr" are street types).
_NOT_STREET_NAME = (
    r"(?!(?i:a|an|the|and|or|but|nor|of|in|on|at|to|for|from|with|by|into|onto|as|is|are|was|were|be|been|it|its|"
    r"it's|this|that|these|those|his|her|their|our|my|your|he|she|they|we|you|i|who|which|what|when|where|while|"
    r"not|no|so|than|then|take|takes|took|taken|taking|come|comes|came|coming|go|goes|went|going|gone|make|makes|"
    r"made|find|finds|found|get|gets|got|give|gives|gave|show|shows|know|knows|knew|see|sees|saw)\b)"
)
_CAP_WORD = rf"(?:{_NOT_STREET_NAME}[A-Z][\w'’.-]*|\d{{1,3}}(?:st|nd|rd|th))"
_ADDRESS_TAIL = (
    r"(?:,?\s+(?:N|S|E|W|NE|NW|SE|SW)\b\.?)?"
    r"(?:,?\s+(?i:Apt|Apartment|Suite|Ste|Unit|Flat|Floor|Fl)\.?\s*#?\s*[\w-]{1,6}|,?\s+#\s?[\w-]{1,6})?"
    r"(?:,\s*[A-Z][a-z][\w'’.-]*(?:\s[A-Z][a-z][\w'’.-]*){0,2})?"
    rf"(?:,?\s+{_US_STATE}\s+\d{{5}}(?:-\d{{4}})?|,?\s+{_UK_POSTCODE}|,?\s+\d{{4,5}}\s+[A-Z][\w'’-]+)?"
)
_ADDRESS_PATTERNS = [
    # 221B Baker Street, London NW1 6XE / 1600 Pennsylvania Ave NW, Washington, DC 20500
    re.compile(
        rf"(?<![\w.,/-])(?<!\d[ -])\d{{1,5}}[A-Za-z]?(?:-\d{{1,5}})?,?\s+(?:(?:[NSEW]|North|South|East|West)\.?\s+)?"
        rf"(?:{_CAP_WORD}\s+){{1,4}}{_STREET_TYPE}\b(?![-'’])(?:\.(?=,))?" + _ADDRESS_TAIL
    ),
    # 12 rue de Rivoli / 5 bis, avenue de la République
    re.compile(
        r"(?<![\w.,/-])(?<!\d[ -])\d{1,4}(?:\s?(?:bis|ter))?,?\s+"
        r"(?:rue|boulevard|bd|chemin|allée|impasse|quai|avenue|place)\s+"
        r"(?:(?:de la|de|du|des|la|le|l'|d')\s*)?[A-ZÀ-Ý][\w'’-]+(?:[ -][A-ZÀ-Ý][\w'’-]+){0,3}"
        r"(?:,?\s+\d{5}\s+[A-ZÀ-Ý][\w'’-]+)?"
    ),
    # Via Roma 12 / Calle Mayor, 5 / Rua Augusta 100
    re.compile(
        r"\b(?:Via|Viale|Piazza|Corso|Calle|Avenida|Plaza|Paseo|Rua|Travessa|Carrer)\s+"
        r"(?:(?:de|del|della|di|da|do|dos|la|las|los|el)\s+)*[A-ZÀ-Ý][\w'’-]+(?:\s+[A-ZÀ-Ý][\w'’-]+){0,3},?\s+"
        r"\d{1,4}[a-zA-Z]?\b(?:,?\s+\d{4,5}\s+[A-ZÀ-Ý][\w'’-]+)?"
    ),
    re.compile(rf"\b{_US_STATE}\s+\d{{5}}(?:-\d{{4}})?(?![\w-])"),  # IL 62704
    re.compile(rf"(?<![\w-]){_UK_POSTCODE}\b"),  # SW1A 1AA
    re.compile(r"(?i)\b(?:zip(?: ?code)?|postcode|postal code)\s*:?\s*\d{5}(?:-\d{4})?\b"),
    re.compile(r"(?i)\bP\.?\s?O\.?\s*Box\s+\d{1,6}\b"),
]

# Hauptstraße 5 / Karl-Marx-Allee 12a / Keizersgracht 123 / Drottninggatan 7, 10115 Berlin. Searched only where
# the cheap _COMPOUND_HINT finds a street suffix before a number (the full pattern is slow on Title Case text).
_COMPOUND_SUFFIX = (
    r"(?:straße|strasse|str\.|gasse|weg|allee|platz|damm|ufer|laan|straat|gracht|plein|kade|vej|gade|gatan|"
    r"vägen|veien|gata)"
)
_COMPOUND_WORD = "Straße|Strasse|Weg|Allee|Platz|Gasse"  # as a word of its own, or after a hyphen
_COMPOUND_HINT = re.compile(rf"(?:{_COMPOUND_SUFFIX}|{_COMPOUND_WORD})\s+\d")  # case-sensitive: fast
_COMPOUND_STREET = re.compile(
    r"\b(?:[A-ZÄÖÜÅØÆ][\wäöüßåøæ.-]*\s)?"
    rf"(?:[A-ZÄÖÜÅØÆ][\wäöüßåøæ-]*?(?:{_COMPOUND_SUFFIX}|-(?:{_COMPOUND_WORD}))|(?:{_COMPOUND_WORD}))"
    r"\s+\d{1,4}[a-z]?\b(?:,?\s+\d{4,5}\s+[A-ZÄÖÜÅØÆ][\wäöüßåøæ-]+)?"
)

_SSN = re.compile(r"(?<![\w-])(\d{3})([- ])(\d{2})\2(\d{4})(?![\w]|-\d)")
_SSN_LABELLED = re.compile(r"(?i)\b(?:ssn|social security(?: number| no\.?| #)?)\s*(?:#|:|is|no\.?)?\s*(\d{9})\b")
_NINO = re.compile(r"\b([A-CEGHJ-PR-TW-Z][A-CEGHJ-NPR-TW-Z]) ?(\d{2}) ?(\d{2}) ?(\d{2}) ?([A-D])\b")
_NINO_BAD_PREFIXES = frozenset({"BG", "GB", "KN", "NK", "NT", "TN", "ZZ"})
_DNI = re.compile(r"\b([XYZ]?)[ -]?(\d{7,8})[ -]?([A-Z])\b")
_DNI_LETTERS = "TRWAGMYFPDXBNJZSQVHLCKE"


def _emails(text: str) -> Iterator[Span]:
    if "@" not in text:
        return
    for m in _EMAIL.finditer(text):
        yield m.span()


def _phones(text: str) -> Iterator[Span]:
    for m in _PHONE_INTL.finditer(text):
        digits = sum(c.isdigit() for c in m.group())
        if m.group().startswith("00"):
            digits -= 2
        if 8 <= digits <= 15:
            yield m.span()
    for m in _PHONE_NANP.finditer(text):
        yield m.span()
    for m in _PHONE_TRUNK.finditer(text):
        candidate = m.group()
        digits = sum(c.isdigit() for c in candidate)
        has_separator = any(not c.isdigit() for c in candidate)
        if 9 <= digits <= 11 and has_separator and not _DATE_LIKE.match(candidate):
            yield m.span()


def _groups(run: str, offset: int) -> list[Span]:
    return [(offset + m.start(), offset + m.end()) for m in re.finditer(r"\d+", run)]


def _is_card(digits: str) -> bool:
    return 13 <= len(digits) <= 19 and len(set(digits)) > 1 and luhn_valid(digits)


def _cards(text: str) -> Iterator[Span]:
    for m in _DIGIT_RUN.finditer(text):
        run = m.group()
        digits = "".join(c for c in run if c.isdigit())
        if len(digits) < 13:
            continue
        if _is_card(digits):
            yield m.span()
            continue
        # A longer run of groups (a card next to another number): try contiguous groups of 3+ digits each,
        # longest first, so "ref 12 4111 1111 1111 1111" still loses its card number.
        groups = _groups(run, m.start())
        found: list[Span] = []
        spans = sorted(
            ((i, j) for i in range(len(groups)) for j in range(i + 1, len(groups) + 1)),
            key=lambda ij: -(groups[ij[1] - 1][1] - groups[ij[0]][0]),
        )
        for i, j in spans:
            part = groups[i:j]
            if any(e - s < 3 for s, e in part):
                continue
            start, end = part[0][0], part[-1][1]
            if any(not (end <= s or start >= e) for s, e in found):
                continue
            if _is_card("".join(text[s:e] for s, e in part)):
                found.append((start, end))
        yield from found


def _ibans(text: str) -> Iterator[Span]:
    for m in _IBAN.finditer(text):
        positions = [m.start() + i for i, c in enumerate(m.group()) if c.isalnum()]
        compact = "".join(text[p] for p in positions).upper()
        length = IBAN_LENGTHS.get(compact[:2], len(compact))
        if length > len(compact):
            continue
        end = positions[length - 1] + 1  # a known country's IBAN may be followed by another group of capitals
        if (end >= len(text) or not text[end].isalnum()) and iban_valid(compact[:length]):
            yield m.start(), end


def _ips(text: str) -> Iterator[Span]:
    for m in _IPV4.finditer(text):
        if not _VERSION_BEFORE.search(text, max(0, m.start() - 12), m.start()):
            yield m.span()
    for m in _IPV6.finditer(text) if ":" in text else ():
        candidate, end = m.group(), m.end()
        while candidate.endswith(":") and not candidate.endswith("::"):
            candidate, end = candidate[:-1], end - 1
        if sum(c in "0123456789abcdefABCDEF" for c in candidate.split("%")[0]) < 2:
            continue
        try:
            ipaddress.IPv6Address(candidate)
        except ValueError:
            continue
        yield m.start(), end


def _addresses(text: str) -> Iterator[Span]:
    for pattern in _ADDRESS_PATTERNS:
        for m in pattern.finditer(text):
            yield m.span()
    if _COMPOUND_HINT.search(text):
        for m in _COMPOUND_STREET.finditer(text):
            yield m.span()


def _ssn_ok(area: str, group: str, serial: str) -> bool:
    return area not in {"000", "666"} and not area.startswith("9") and group != "00" and serial != "0000"


def _national_ids(text: str) -> Iterator[Span]:
    for m in _SSN.finditer(text):
        if _ssn_ok(m.group(1), m.group(3), m.group(4)):
            yield m.span()
    for m in _SSN_LABELLED.finditer(text):
        number = m.group(1)
        if _ssn_ok(number[:3], number[3:5], number[5:]):
            yield m.span(1)
    for m in _NINO.finditer(text):
        if m.group(1) not in _NINO_BAD_PREFIXES:
            yield m.span()
    for m in _DNI.finditer(text):
        prefix, number, letter = m.groups()
        if prefix:
            if len(number) != 7:
                continue
            number = str("XYZ".index(prefix)) + number
        elif len(number) != 8:
            continue
        if _DNI_LETTERS[int(number) % 23] == letter:
            yield m.span()


_DETECTORS: dict[PiiKind, Callable[[str], Iterator[Span]]] = {
    PiiKind.EMAIL: _emails,
    PiiKind.PHONE: _phones,
    PiiKind.CARD: _cards,
    PiiKind.IBAN: _ibans,
    PiiKind.IP: _ips,
    PiiKind.ADDRESS: _addresses,
    PiiKind.NATIONAL_ID: _national_ids,
}


def _allowed(text: str, match: PiiMatch, allow: tuple[str, ...]) -> bool:
    """Whether ``match`` lies wholly inside an occurrence of an allowed phrase."""
    if not allow:
        return False
    lowered = text.lower()
    if len(lowered) != len(text):  # lowercasing changed offsets (rare characters): compare as written
        lowered = text
    found = lowered[match.start : match.end]
    for phrase in allow:
        phrase = phrase.lower() if lowered is not text else phrase
        if found not in phrase:
            continue
        lo = max(0, match.end - len(phrase))
        at = lowered.find(phrase, lo)
        while at != -1 and at <= match.start:
            if at + len(phrase) >= match.end:
                return True
            at = lowered.find(phrase, at + 1)
    return False


def detect_pii(text: str, policy: ScrubPolicy | None = None) -> list[PiiMatch]:
    """Find the PII in ``text`` that ``policy`` covers, as non-overlapping matches in text order.

    Where matches of different detectors overlap, the longest wins (ties: email, IBAN, card, national id, IP,
    phone, address), so an IBAN is not also counted as a phone number.

    Args:
        text: Any text.
        policy: Kinds to look for and phrases to allow; :class:`ScrubPolicy` defaults when ``None``.

    Returns:
        The matches, sorted by position.

    """
    policy = policy or _DEFAULT_POLICY
    found: list[PiiMatch] = []
    for kind in _PRIORITY:
        if kind in policy.kinds:
            found.extend(PiiMatch(kind, s, e) for s, e in _DETECTORS[kind](text) if e > s)
    rank = {kind: i for i, kind in enumerate(_PRIORITY)}
    found.sort(key=lambda m: (-(m.end - m.start), rank[m.kind], m.start))
    chosen: list[PiiMatch] = []
    for match in found:
        if any(match.start < c.end and c.start < match.end for c in chosen):
            continue
        if _allowed(text, match, policy.allow):
            continue
        chosen.append(match)
    return sorted(chosen, key=lambda m: m.start)


def scrub(text: str, policy: ScrubPolicy | None = None) -> ScrubResult:
    """Replace the PII in ``text`` with typed placeholders.

    Args:
        text: Any text (a profile, a review, a chat message).
        policy: What to remove; everything :class:`PiiKind` names when ``None``.

    Returns:
        The scrubbed text and the count of replacements per kind.

    Example:
        >>> scrub("Mail jane.doe@example.com or call +44 20 7946 0958.").text
        'Mail [EMAIL] or call [PHONE].'

    """
    policy = policy or _DEFAULT_POLICY
    counts: Counter[str] = Counter()
    # A replacement can expose PII that its neighbour hid ("a@b.io+44 20 7946 0958": the phone number is glued to
    # the e-mail address until that becomes "[EMAIL]"), so repeat until nothing is found: scrubbing is idempotent.
    for _ in range(_MAX_PASSES):
        matches = detect_pii(text, policy)
        if not matches:
            break
        counts.update(m.kind.value for m in matches)
        parts: list[str] = []
        last = 0
        for match in matches:
            parts.append(text[last : match.start])
            parts.append(policy.replacement(match.kind))
            last = match.end
        parts.append(text[last:])
        text = "".join(parts)
    return ScrubResult(text=text, counts={k.value: counts.get(k.value, 0) for k in PiiKind if k in policy.kinds})


_DEFAULT_POLICY = ScrubPolicy()
_MAX_PASSES = 16  # a guard: each pass removes digits, '@' or ':' that placeholders do not bring back
