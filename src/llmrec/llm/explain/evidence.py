"""Evidence retrieval for grounded explanations: a user's :class:`History` and what links it to a candidate.

:func:`build_evidence` is pure and deterministic: it gathers the candidate's facts and the liked history items
that share genres or tags with it (or are similar by item vectors) into an :class:`Evidence`, the only thing an
explanation may rest on. It is kept apart from the check and the model so that retrieval can be tested and
benchmarked on its own.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from llmrec.catalogue import Catalogue
from llmrec.errors import ConfigError, UnknownIdError
from llmrec.llm.explain.config import _DEFAULT_CONFIG, ExplainConfig

if TYPE_CHECKING:
    from llmrec.data.dataset import Dataset


@dataclass(frozen=True)
class History:
    """A user's history: dense item indices in time order (oldest first) and the value of each interaction.

    Attributes:
        items: Dense item indices, shape ``(n,)``.
        values: Interaction values (ratings, or 1 for implicit feedback), shape ``(n,)``.
    """

    items: np.ndarray
    values: np.ndarray

    def __post_init__(self) -> None:
        items = np.asarray(self.items, dtype=np.int64).ravel()
        values = np.ones(len(items)) if self.values is None else np.asarray(self.values, dtype=np.float64).ravel()
        if len(values) != len(items):
            raise ConfigError(f"history has {len(items)} items but {len(values)} values: give one value per item")
        object.__setattr__(self, "items", items)
        object.__setattr__(self, "values", values)

    @classmethod
    def of_user(cls, data: Dataset, user: object) -> History:
        """The history of external user ``user`` in ``data`` (pass the training split when evaluating).

        Raises:
            UnknownIdError: ``user`` is not in the dataset.
        """
        idx = int(data.user_vocab.index([user])[0])
        rows = np.flatnonzero(data.user_idx == idx)
        return cls(data.item_idx[rows], data.values[rows])

    @classmethod
    def from_ids(cls, data: Dataset, item_ids: Sequence[object], values: Sequence[float] | None = None) -> History:
        """A history of external item ids (oldest first), each with value 1 unless ``values`` are given.

        Raises:
            UnknownIdError: An item id is not in the catalogue.
        """
        items = data.item_vocab.index(list(item_ids))
        return cls(items, np.ones(len(items)) if values is None else np.asarray(values, dtype=np.float64))


@dataclass(frozen=True)
class HistoryLink:
    """One history item the candidate connects to, with what they share.

    Attributes:
        item_id: External id of the history item.
        title: Its short title (sanitized).
        year: Its release year.
        value: The user's latest value for it.
        shared_genres: Genres it shares with the candidate.
        shared_tags: Tags it shares with the candidate.
        similarity: Cosine similarity of the item vectors, when vectors were given.
        score: The link strength used to rank links.
    """

    item_id: str
    title: str
    year: int | None
    value: float
    shared_genres: tuple[str, ...]
    shared_tags: tuple[str, ...]
    similarity: float | None
    score: float


@dataclass(frozen=True)
class Evidence:
    """Everything an explanation of one candidate may rest on.

    Attributes:
        item_id: External id of the candidate.
        item_index: Its dense index.
        title: Its short title (sanitized; ``""`` when the title reads like an instruction).
        year: Its release year.
        genres: Its genres (at most ``max_genres``, those shared with the history first).
        tags: Its short, safe tags and keyphrases (at most ``max_tags``, shared ones first).
        links: The history items it connects to, strongest first.
        withheld: Candidate tags left out (too long, noise, or instruction-like), for auditing.
    """

    item_id: str
    item_index: int
    title: str
    year: int | None
    genres: tuple[str, ...]
    tags: tuple[str, ...]
    links: tuple[HistoryLink, ...]
    withheld: tuple[str, ...] = ()

    @property
    def item_ids(self) -> frozenset[str]:
        """External ids of the items in evidence (the candidate and the linked history items)."""
        return frozenset([self.item_id, *(link.item_id for link in self.links)])

    @property
    def allowed_genres(self) -> frozenset[str]:
        """Genres an explanation may name."""
        return frozenset([*self.genres, *(g for link in self.links for g in link.shared_genres)])

    @property
    def allowed_tags(self) -> frozenset[str]:
        """Tags an explanation may name (lowercase)."""
        return frozenset([*self.tags, *(t for link in self.links for t in link.shared_tags)])

    @property
    def allowed_years(self) -> frozenset[int]:
        """Years an explanation may name (the candidate's and the linked items')."""
        return frozenset(y for y in (self.year, *(link.year for link in self.links)) if y is not None)

    def lines(self) -> list[str]:
        """The evidence as data-block lines (every value already sanitized)."""
        head = self.title or "(title withheld)"
        parts = [f"Recommended: {head}" + (f" ({self.year})" if self.year else "")]
        if self.genres:
            parts.append("Genres: " + ", ".join(self.genres))
        if self.tags:
            parts.append("Tags: " + ", ".join(self.tags))
        out = [". ".join(parts) + "."]
        for link in self.links:
            shared = [*link.shared_genres, *link.shared_tags]
            why = f" - shares {', '.join(shared)}" if shared else " - similar"
            out.append(f"User liked: {link.title}" + (f" ({link.year})" if link.year else "") + why)
        return out


def build_evidence(
    history: History,
    candidate: int,
    data: Dataset,
    *,
    config: ExplainConfig | None = None,
    item_vectors: np.ndarray | None = None,
    catalogue: Catalogue | None = None,
) -> Evidence:
    """The evidence for explaining ``candidate`` to a user with ``history``: pure, fast and deterministic.

    History items the user liked (value at least ``min_value``, or the user's mean) are linked to the candidate
    when they share genres or tags with it, or (with ``item_vectors``) are similar enough. Links are ranked by
    ``genre_weight * sum(idf(shared genres)) + tag_weight * |shared tags| + similarity_weight * cosine``, then by
    value and recency, so a shared "Film-Noir" counts for more than a shared "Drama".

    Args:
        history: The user's interactions in time order (dense item indices).
        candidate: Dense index of the item to explain.
        data: The dataset holding the catalogue.
        config: Settings; :class:`ExplainConfig` defaults when ``None``.
        item_vectors: Optional item embeddings, shape ``(n_items, d)``, for similarity links.
        catalogue: The catalogue of ``data`` (built and cached when ``None``).

    Returns:
        The candidate's :class:`Evidence`.

    Raises:
        UnknownIdError: ``candidate`` or a history index is out of range.
        ConfigError: ``item_vectors`` has the wrong number of rows.
    """
    config = config or _DEFAULT_CONFIG
    cat = catalogue or Catalogue.of(data, config)
    n_items = len(cat)
    if not 0 <= int(candidate) < n_items:
        raise UnknownIdError(f"item index {candidate} is outside the catalogue (0..{n_items - 1})")
    if len(history.items) and (history.items.min() < 0 or history.items.max() >= n_items):
        raise UnknownIdError(f"history holds item indices outside the catalogue (0..{n_items - 1})")
    if item_vectors is not None and len(item_vectors) != n_items:
        raise ConfigError(f"item_vectors has {len(item_vectors)} rows but the catalogue has {n_items} items")
    candidate = int(candidate)
    c_genres = cat.genres(candidate)
    c_tags = cat.tags(candidate)
    c_tagset = set(c_tags)

    # Latest value per distinct item, most recent first.
    latest: dict[int, tuple[float, int]] = {}
    for pos in range(len(history.items) - 1, -1, -1):
        item = int(history.items[pos])
        if item not in latest:
            latest[item] = (float(history.values[pos]), pos)
            if len(latest) >= config.max_history:
                break
    threshold = config.min_value
    if threshold is None and latest:
        threshold = float(np.mean([v for v, _ in latest.values()]))
    liked = [i for i, (v, _) in latest.items() if i != candidate and (threshold is None or v >= threshold)]

    sims: dict[int, float] = {}
    if item_vectors is not None and liked:
        vectors = np.asarray(item_vectors, dtype=np.float64)
        target = vectors[candidate]
        rows = vectors[liked]
        norms = np.linalg.norm(rows, axis=1) * (np.linalg.norm(target) or 1.0)
        cos = rows @ target / np.where(norms == 0, 1.0, norms)
        sims = {i: float(s) for i, s in zip(liked, cos, strict=True)}

    scored: list[tuple[float, float, int, HistoryLink]] = []
    for item in liked:
        title = cat.title(item)
        if not title:
            continue  # a title that reads like an instruction is never cited
        shared_g = tuple(g for g in c_genres if g in cat.genres(item))
        shared_t = tuple(t for t in cat.tags(item) if t in c_tagset)
        sim = sims.get(item)
        if not shared_g and not shared_t and (sim is None or sim < config.min_similarity):
            continue
        score = config.genre_weight * sum(cat.genre_idf.get(g, 1.0) for g in shared_g)
        score += config.tag_weight * len(shared_t)
        if sim is not None:
            score += config.similarity_weight * sim
        value, pos = latest[item]
        link = HistoryLink(
            item_id=str(cat.item_ids[item]),
            title=title,
            year=cat.year(item),
            value=value,
            shared_genres=shared_g,
            shared_tags=shared_t,
            similarity=sim,
            score=round(score, 9),
        )
        scored.append((-link.score, -value, -pos, link))
    scored.sort(key=lambda s: s[:3])
    links = tuple(s[3] for s in scored[: config.max_links])

    shared_genres = {g for link in links for g in link.shared_genres}
    genres = sorted(c_genres, key=lambda g: (g not in shared_genres, c_genres.index(g)))[: config.max_genres]
    shared_tags = {t for link in links for t in link.shared_tags}
    pool = list(dict.fromkeys([*c_tags, *cat.keyphrases(candidate, config.max_tags)]))
    tags = sorted(pool, key=lambda t: (t not in shared_tags, pool.index(t)))[: config.max_tags]
    return Evidence(
        item_id=str(cat.item_ids[candidate]),
        item_index=candidate,
        title=cat.title(candidate),
        year=cat.year(candidate),
        genres=tuple(genres),
        tags=tuple(tags),
        links=links,
        withheld=cat.dropped_tags(candidate),
    )
