"""The recommender service behind the HTTP API: one store dataset, its fitted pipelines, and what changed since.

The service is plain Python (no web framework), so the HTTP routes, the chat layer and tests share it. It holds:

* a **snapshot** of the dataset loaded from the store, and the pipelines fitted on it, one per (retriever, rerank)
  pair, each fitted on first use;
* the **marker** of the snapshot (the id of the newest interaction row it holds). What a user did after the marker
  (feedback, new interactions) is read from the store on every recommendation call, so the very next list reflects
  it without waiting for a refit: every such item is left out, and the liked ones (thumbs-up, high ratings; see
  :func:`llmrec.feedback.polarity`) are folded into the retriever with the history it was fitted on
  (:meth:`~llmrec.pipeline.Pipeline.recommend_history`), so the rest of the list re-ranks around them;
* :meth:`RecommenderService.refit`, which reloads the store and refits every pipeline in use, then swaps them in at
  once (requests keep being answered from the old snapshot meanwhile).

With ``ServeConfig.model`` (``llmrec serve --model DIR``) the first snapshot is a saved pipeline instead: its data
and its fitted retriever are loaded, not fitted, so the server answers at once; a refit then works as always.

Recommendations come from :meth:`llmrec.pipeline.Pipeline.recommend` (or ``recommend_history`` after new
feedback) and explanations from
:meth:`~llmrec.pipeline.Pipeline.explain`; filters only choose the ``candidates`` handed to it.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated, Any

import numpy as np
import pandas as pd
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from llmrec.data.dataset import Dataset
from llmrec.data.filters import ItemFilters
from llmrec.data.store import AuditRecord, ForgetReport, IngestReport, ItemRecord, Page, Store, UserRecord
from llmrec.errors import ConfigError, ConflictError, UnknownIdError
from llmrec.feedback import FeedbackKind, Taste, taste_of, validate_feedback
from llmrec.models.base import TrainOptions
from llmrec.pipeline import Pipeline, RetrieverSpec
from llmrec.query import Query, RecommendedItem
from llmrec.serve.config import ServeConfig

if TYPE_CHECKING:
    from llmrec.chat import ConversationalRecommender
    from llmrec.chat.state import StateUpdate
    from llmrec.llm.base import LanguageModel
    from llmrec.llm.explain import Explanation
    from llmrec.models.content import Content

__all__ = [
    "FeedbackResult",
    "RecommendationOptions",
    "RecommendationResult",
    "RecommendedItem",
    "RecommenderService",
    "RefitReport",
    "ServiceStatus",
]

log = logging.getLogger(__name__)


def _not_bool(value: object) -> object:
    """Refuse ``true``/``false`` as numbers (pydantic would read them as 1/0); read ``5.0`` as 5.

    Query-string digits are parsed as usual.
    """
    if isinstance(value, bool):
        raise ValueError("a number is expected, not true/false")
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


_Int = Annotated[int, BeforeValidator(_not_bool)]
_Year = Annotated[int, Field(ge=0, le=9999), BeforeValidator(_not_bool)]


class RecommendationOptions(BaseModel):
    """What a recommendation request may choose (the same fields as the API's query string and JSON body).

    Attributes:
        k: List length.
        retriever: A retriever of ``ServeConfig.retrievers``; the default pipeline's when ``None``.
        rerank: Rerank the retriever's candidates with the language model.
        explain: Add a grounded explanation to each item.
        exclude_seen: Leave out items the user already interacted with.
        exclude_items: Item ids never to recommend in this list.
        genres: Only items with at least one of these genres (case-insensitive).
        exclude_genres: No items with any of these genres.
        year_min: Only items from this year on.
        year_max: Only items up to this year.

    """

    model_config = ConfigDict(extra="forbid")

    k: _Int = Field(default=10, ge=1, le=1000)
    retriever: str | None = None
    rerank: bool = False
    explain: bool = False
    exclude_seen: bool = True
    exclude_items: list[str] = Field(default_factory=list, max_length=10_000)
    genres: list[str] = Field(default_factory=list, max_length=100)
    exclude_genres: list[str] = Field(default_factory=list, max_length=100)
    year_min: _Year | None = None
    year_max: _Year | None = None


@dataclass(frozen=True)
class RecommendationResult:
    """A user's list and how it was made.

    Attributes:
        user_id: The user.
        items: Best first.
        retriever: The retriever used.
        reranked: Whether the language model reranked the candidates.
        known_user: Whether the user was in the fitted data (unknown users get the retriever's cold-start list,
            steered by their stored profile when it names titles, genres or years).
        excluded_recent: Items left out because the user interacted with them after the last fit.
        fitted_at: When the data behind the list was loaded.

    """

    user_id: str
    items: list[RecommendedItem]
    retriever: str
    reranked: bool
    known_user: bool
    excluded_recent: list[str]
    fitted_at: datetime


@dataclass(frozen=True)
class FeedbackResult:
    """A stored piece of feedback (``stored`` is false when the identical event was already stored)."""

    user_id: str
    item_id: str
    kind: str
    value: float
    timestamp: int
    stored: bool


@dataclass(frozen=True)
class RefitReport:
    """What a refit loaded and fitted."""

    dataset: str
    users: int
    items: int
    interactions: int
    pipelines: list[str]
    seconds: float


@dataclass(frozen=True)
class ServiceStatus:
    """The service's state, for health checks."""

    dataset: str
    loaded: bool
    fitted_at: datetime | None
    pipelines: list[str]
    items: int | None
    users: int | None
    interactions: int | None


class _KeyedLocks:
    """One lock per key, made on first use and dropped when no thread holds or waits for it."""

    def __init__(self) -> None:
        self._guard = threading.Lock()
        self._locks: dict[str, tuple[threading.Lock, int]] = {}

    def get(self, key: str) -> _KeyedLock:
        """A lock for ``key``; use it as a context manager (``with locks.get(key):``)."""
        return _KeyedLock(self, key)

    def _acquire(self, key: str) -> threading.Lock:
        with self._guard:
            lock, users = self._locks.get(key, (None, 0))
            lock = lock or threading.Lock()
            self._locks[key] = (lock, users + 1)
        lock.acquire()
        return lock

    def _release(self, key: str) -> None:
        with self._guard:
            lock, users = self._locks[key]
            if users == 1:
                del self._locks[key]
            else:
                self._locks[key] = (lock, users - 1)
        lock.release()


class _KeyedLock:
    """The context manager of one key of :class:`_KeyedLocks`."""

    def __init__(self, locks: _KeyedLocks, key: str) -> None:
        self._locks = locks
        self._key = key

    def __enter__(self) -> None:
        self._locks._acquire(self._key)

    def __exit__(self, *exc: object) -> None:
        self._locks._release(self._key)


@dataclass
class _Snapshot:
    """The dataset as loaded from the store, and what has been fitted on it."""

    data: Dataset
    marker: int
    loaded_at: datetime
    removed: set[str] = field(default_factory=set)
    pipelines: dict[tuple[str, bool], Pipeline] = field(default_factory=dict)
    fit_locks: dict[tuple[str, bool], threading.Lock] = field(default_factory=dict)
    saved: Pipeline | None = None
    """The saved pipeline this snapshot came from (``ServeConfig.model``); ``None`` when loaded from the store."""
    _filters: ItemFilters | None = None
    _records: list[dict[str, Any]] | None = None

    def filters(self) -> ItemFilters:
        """Genre and year masks of the items (built on first use)."""
        if self._filters is None:
            from llmrec.llm.explain import Catalogue

            self._filters = Catalogue.of(self.data).filters()
        return self._filters

    def record(self, idx: int) -> dict[str, Any]:
        """Title and JSON-safe attributes of item ``idx``."""
        if self._records is None:
            from llmrec.data.store.core import _json_safe

            items = self.data.items
            attrs = [c for c in items.columns if c not in ("item_id", "title", "text")]
            titles = items["title"].fillna("").astype(str).tolist()
            columns = {c: items[c].tolist() for c in attrs}
            self._records = [
                {"title": titles[i], "attributes": {c: _json_safe(columns[c][i]) for c in attrs}}
                for i in range(len(items))
            ]
        return self._records[idx]


class RecommenderService:
    """One dataset of a store, served: records, fitted pipelines, feedback (see the module docstring).

    Args:
        store: Where the dataset lives; every write goes here first.
        config: What is served and which choices requests may make.
        lm: A language model shared by every pipeline that reranks or phrases explanations (built from
            ``config.pipeline.lm`` on first use when ``None``).
        options: Training options of every fit (seed, threads).

    Example:
        >>> service = RecommenderService(Store("sqlite:///llmrec.db"), ServeConfig(dataset="movielens-small"))
        >>> service.prepare()  # doctest: +SKIP
        >>> service.recommend("1", RecommendationOptions(k=5)).items  # doctest: +SKIP

    """

    def __init__(
        self,
        store: Store,
        config: ServeConfig | None = None,
        *,
        lm: LanguageModel | None = None,
        options: TrainOptions | None = None,
    ) -> None:
        self._store = store
        self.config = config or ServeConfig()
        self._lm = lm
        self.options = options or TrainOptions(seed=self.config.seed)
        self._snapshot: _Snapshot | None = None
        self._lock = threading.RLock()
        self._load_lock = threading.Lock()
        self._content: tuple[_Snapshot, Content] | None = None
        self._chat: tuple[_Snapshot, ConversationalRecommender] | None = None
        # Single-flight builds: the first request after start or a refit builds, concurrent ones wait for it
        # (before, each built its own copy: 1.5 -> 5 GB and chat silent for minutes under load).
        self._content_lock = threading.Lock()
        self._chat_lock = threading.Lock()
        self._session_locks = _KeyedLocks()
        # Users deleted since the snapshot was loaded -> the deletion's sequence number (see forget_user): the
        # fitted data still holds them, so every path treats them as unknown until a refit loaded after it.
        self._forgotten: dict[str, int] = {}
        self._forget_seq = 0

    # -- plumbing -----------------------------------------------------------------------------------------------
    @property
    def store(self) -> Store:
        """The store the service reads and writes."""
        return self._store

    @property
    def dataset(self) -> str:
        """Name of the served dataset."""
        return self.config.dataset

    @property
    def lm(self) -> LanguageModel:
        """The shared language model (built on first use; weights load when first asked for)."""
        with self._lock:
            if self._lm is None:
                self._lm = self.config.pipeline.lm.build()
            return self._lm

    def prepare(self, *, show_progress: bool = False) -> None:
        """Make sure the dataset is in the store: a built-in one (``movielens-small``...) is ingested when missing.

        Raises:
            ConfigError: The dataset is neither stored nor built in.

        """
        if self.dataset in self._store.datasets():
            return
        from llmrec.data.registry import BUILTIN_DATASETS

        if self.dataset not in BUILTIN_DATASETS:
            raise ConfigError(
                f"dataset {self.dataset!r} is not in the store at {self._store.display_url} and is not built in "
                f"({', '.join(BUILTIN_DATASETS)}). Fix: ingest it first (llmrec ingest), or serve a built-in one"
            )
        log.info("ingesting the built-in %s into %s", self.dataset, self._store.display_url)
        self._store.ingest(BUILTIN_DATASETS[self.dataset](), name=self.dataset, show_progress=show_progress)

    def _load(self) -> _Snapshot:
        marker = self._store.last_interaction_id(self.dataset)  # read first: rows after it are "recent"
        data = self._store.load(self.dataset)
        return _Snapshot(data, marker, datetime.now(UTC))

    def _load_saved(self, path: str) -> _Snapshot:
        """The first snapshot of a service started from a saved pipeline: its data and retriever, no fit.

        Interactions stored after the saved data was read count as recent (left out, liked ones folded in) when the
        folder records the store's marker (``metadata["store_marker"]``); otherwise everything stored now is taken
        as covered by the saved model until the next refit.
        """
        marker = self._store.last_interaction_id(self.dataset)
        pipe = Pipeline.load(path)
        if pipe.data.name != self.dataset:
            raise ConfigError(
                f"model {path} was fitted on dataset {pipe.data.name!r}, but this server serves {self.dataset!r}. "
                f"Fix: serve --dataset {pipe.data.name}, or train a model on {self.dataset}"
            )
        if pipe.config.retriever != self.config.pipeline.retriever:
            raise ConfigError(
                f"model {path} holds the retriever {pipe.config.retriever.model_dump()}, but the serve config's "
                f"default is {self.config.pipeline.retriever.model_dump()}. Fix: build the config with "
                "ServeConfig.for_model(path), or set pipeline.retriever to the saved one"
            )
        saved_marker = pipe.metadata.get("store_marker")
        if isinstance(saved_marker, int) and 0 <= saved_marker <= marker:
            marker = saved_marker
        fitted = datetime.fromisoformat(pipe.fitted_at) if pipe.fitted_at else datetime.now(UTC)
        log.info("loaded model from %s (fitted %s, no refit): %r", path, pipe.fitted_at, pipe.data)
        return _Snapshot(pipe.data, marker, fitted, saved=pipe)

    def snapshot(self) -> _Snapshot:
        """The loaded dataset (loaded on first use: from ``config.model`` when set, else from the store)."""
        snap = self._snapshot
        if snap is not None:
            return snap
        with self._load_lock:
            if self._snapshot is None:
                model = self.config.model
                self._snapshot = self._load_saved(model) if model is not None else self._load()
            return self._snapshot

    @property
    def data(self) -> Dataset:
        """The dataset the pipelines are fitted on (loaded on first use)."""
        return self.snapshot().data

    # -- pipelines ----------------------------------------------------------------------------------------------
    def _retriever(self, name: str | None) -> str:
        name = name or self.config.pipeline.retriever.name
        if name not in self.config.retrievers:
            raise ConfigError(
                f"retriever {name!r} is not served here",
                field="retriever",
                fix=f"choose one of {', '.join(self.config.retrievers)}",
            )
        return name

    def _pipeline_config(self, retriever: str, rerank: bool) -> Any:
        base = self.config.pipeline
        spec = base.retriever if retriever == base.retriever.name else RetrieverSpec(name=retriever)
        if rerank:
            return base.model_copy(update={"retriever": spec, "rerank": base.rerank or self.config.rerank})
        return base.model_copy(
            update={"retriever": spec, "rerank": None, "candidates": max(base.candidates, self.config.max_k)}
        )

    def _fit(self, snap: _Snapshot, retriever: str, rerank: bool) -> Pipeline:
        config = self._pipeline_config(retriever, rerank)
        needs_lm = rerank or config.explain_with_lm
        if snap.saved is not None and config.retriever == snap.saved.config.retriever:
            pipe = snap.saved.reconfigured(config, lm=self.lm if needs_lm else None)
            log.info("%s (rerank=%s) from the saved model %s: no refit", retriever, rerank, snap.saved.loaded_from)
            return pipe
        started = time.perf_counter()
        pipe = Pipeline(config, lm=self.lm if needs_lm else None).fit(snap.data, self.options)
        log.info("fitted %s (rerank=%s) on %r in %.1f s", retriever, rerank, snap.data, time.perf_counter() - started)
        return pipe

    def _pipeline_on(self, snap: _Snapshot, retriever: str, rerank: bool) -> Pipeline:
        key = (retriever, rerank)
        with self._lock:
            pipe = snap.pipelines.get(key)
            if pipe is not None:
                return pipe
            lock = snap.fit_locks.setdefault(key, threading.Lock())
        with lock:  # one fit per key; concurrent requests for it wait for that fit
            with self._lock:
                pipe = snap.pipelines.get(key)
            if pipe is None:
                pipe = self._fit(snap, retriever, rerank)
                with self._lock:
                    snap.pipelines[key] = pipe
            return pipe

    def pipeline(self, retriever: str | None = None, rerank: bool = False) -> Pipeline:
        """The fitted pipeline for a retriever (the default one when ``None``), with or without the LM rerank.

        Raises:
            ConfigError: The retriever is not in ``config.retrievers``.

        """
        return self._pipeline_on(self.snapshot(), self._retriever(retriever), rerank)

    def refit(self, retrievers: Sequence[str] | None = None) -> RefitReport:
        """Reload the dataset from the store and refit pipelines, then swap them in at once.

        Args:
            retrievers: Retrievers to fit (without rerank); by default every pipeline fitted so far, or the
                default retriever when none was.

        """
        started = time.perf_counter()
        old = self._snapshot
        keys = list(old.pipelines) if old is not None else []
        if retrievers is not None:
            keys = [(self._retriever(r), False) for r in retrievers]
        if not keys:
            keys = [(self._retriever(None), False)]
        with self._lock:
            loaded_after = self._forget_seq  # deletions up to here are not in the data loaded next
        snap = self._load()
        for retriever, rerank in keys:
            snap.pipelines[(retriever, rerank)] = self._fit(snap, retriever, rerank)
        with self._load_lock, self._lock:
            self._snapshot = snap
            self._content = None
            self._chat = None
            self._forgotten = {u: seq for u, seq in self._forgotten.items() if seq > loaded_after}
        data = snap.data
        names = [f"{r}+rerank" if rr else r for r, rr in keys]
        return RefitReport(self.dataset, data.n_users, data.n_items, len(data), names, time.perf_counter() - started)

    def status(self) -> ServiceStatus:
        """What is loaded and fitted (loads nothing)."""
        snap = self._snapshot
        if snap is None:
            return ServiceStatus(self.dataset, False, None, [], None, None, None)
        with self._lock:
            names = [f"{r}+rerank" if rr else r for r, rr in snap.pipelines]
        data = snap.data
        return ServiceStatus(self.dataset, True, snap.loaded_at, names, data.n_items, data.n_users, len(data))

    # -- recommendations ----------------------------------------------------------------------------------------
    def user_exists(self, user_id: str) -> bool:
        """Whether the user is in the fitted data (and not deleted since), the users table, or has interactions."""
        if str(user_id) in self.data.user_vocab and str(user_id) not in self._forgotten:
            return True
        if self._store.get_user(self.dataset, str(user_id)) is not None:
            return True
        return not self._store.user_interactions(self.dataset, str(user_id)).empty

    def _allowed(self, snap: _Snapshot, options: RecommendationOptions) -> tuple[str, ...] | None:
        """The item ids meeting the request's attribute filters, or ``None`` when every item does."""
        keep = snap.filters().mask(
            genres=options.genres,
            exclude_genres=options.exclude_genres,
            year_min=options.year_min,
            year_max=options.year_max,
        )
        return None if keep is None else tuple(str(i) for i in snap.data.item_vocab.ids[keep])

    def query(self, user_id: str, options: RecommendationOptions | None = None) -> Query:
        """The pipeline query of a user's request: their news since the fit, the filters and the exclusions.

        What they liked or disliked since the last fit is folded into their fitted history; everything they touched
        since (and, with ``exclude_seen``, before) is left out, as are removed items and ``exclude_items``.
        """
        options = options or RecommendationOptions()
        snap = self.snapshot()
        return self._query(snap, str(user_id), self._taste(snap, str(user_id)), options)

    def _query(self, snap: _Snapshot, user_id: str, taste: Taste, options: RecommendationOptions) -> Query:
        excluded = taste.touched if options.exclude_seen else []
        return Query(
            user=user_id,
            liked=tuple(taste.liked),
            disliked=tuple(taste.disliked),
            exclude=(*excluded, *sorted(snap.removed), *options.exclude_items),
            candidates=self._allowed(snap, options),
            exclude_seen=options.exclude_seen,
        )

    def recommend(self, user_id: str, options: RecommendationOptions | None = None) -> RecommendationResult:
        """A user's top-k through the pipeline, with filters, recent interactions left out, and explanations.

        Raises:
            UnknownIdError: The user is not known at all (not fitted, not stored, no interactions).
            ConfigError: A choice is not allowed (retriever, k, unknown genre...).

        """
        options = options or RecommendationOptions()
        user_id = str(user_id)
        retriever = self._retriever(options.retriever)
        limit = self.config.pipeline.candidates if options.rerank else self.config.max_k
        if options.k > limit:
            why = "the candidates the language model reranks" if options.rerank else "max_k"
            raise ConfigError(
                f"at most {limit} items per list here ({why}), got k={options.k}",
                field="k",
                fix=f"ask for k <= {limit}",
            )
        snap = self.snapshot()
        forgotten = user_id in self._forgotten  # deleted since the fit: their fitted history is not used
        known = user_id in snap.data.user_vocab and not forgotten
        if not known and not self.user_exists(user_id):
            raise UnknownIdError(
                f"user {user_id!r} is not in dataset {self.dataset!r}",
                field="user_id",
                fix="check the id, or create the user first",
            )
        taste = self._taste(snap, user_id)
        query = self._query(snap, user_id, taste, options)
        pipe = self._pipeline_on(snap, retriever, options.rerank)
        # A user with no interactions at all (stored with a profile, none fitted, none since) is read from the profile.
        history = bool(taste) or (known and bool(pipe.seen(user_id)))
        profile = None if history else self._profile_taste(snap, user_id)
        if forgotten:  # deleted since the fit (perhaps created again): only what they did since counts
            query = replace(query, user=None)
        if profile is not None:
            query = self._profile_query(snap, query, profile, options)
        items: list[RecommendedItem] = []
        if query.candidates is None or query.candidates:
            recs = pipe.recommend([query], options.k, rerank=options.rerank)
            for rank, (item, idx, score) in enumerate(
                zip(recs.items[0], recs.item_idx[0], recs.scores[0], strict=True), 1
            ):
                if idx < 0:
                    continue
                record = snap.record(int(idx))
                value = float(score) if np.isfinite(score) else None
                items.append(RecommendedItem(str(item), rank, value, record["title"], attributes=record["attributes"]))
        if options.explain and items:
            # A user outside the fitted data is explained from what their profile likes (maybe nothing: then
            # from the item's own facts), never left without an explanation.
            who: object = profile.liked if profile is not None else (user_id if known else [])
            explanations = pipe.explain(who, [it.item_id for it in items])
            items = [it.with_explanation(ex) for it, ex in zip(items, explanations, strict=True)]
        excluded = taste.touched if options.exclude_seen else []
        return RecommendationResult(user_id, items, retriever, options.rerank, known, excluded, snap.loaded_at)

    def _profile_taste(self, snap: _Snapshot, user_id: str) -> StateUpdate | None:
        """What a stored profile says ("I love sci-fi", "heist films and 90s comedies"), read like a chat message.

        For a user with no interactions at all; ``None`` without a profile, or when it states nothing usable.
        """
        record = self._store.get_user(self.dataset, user_id)
        if record is None or not record.profile.strip():
            return None
        from llmrec.chat.parse import parse_turn
        from llmrec.llm.explain import Catalogue

        parsed = parse_turn(record.profile[:2000], Catalogue.of(snap.data), popularity=snap.data.item_popularity)
        return None if parsed.intent != "recommend" or parsed.update.empty else parsed.update

    @staticmethod
    def _profile_query(snap: _Snapshot, query: Query, profile: StateUpdate, options: RecommendationOptions) -> Query:
        """The query of a user known only by a profile: its titles as the history, its genres and years as a wish.

        The profile is a preference, not a filter the person asked for in this request: its genres and years
        narrow the candidates only while at least ``k`` items still qualify, and never when the request sets its
        own filters.
        """
        vocab = snap.data.item_vocab
        if profile.liked:
            seen = (*profile.liked, *profile.disliked, *profile.seen)
            query = replace(query, user=None, liked=tuple(profile.liked), disliked=tuple(profile.disliked),
                            exclude=(*query.exclude, *seen))  # fmt: skip
        if options.genres or options.exclude_genres or options.year_min is not None or options.year_max is not None:
            return query
        wanted = snap.filters().mask(
            genres=profile.genres_include,
            exclude_genres=profile.genres_exclude,
            year_min=profile.year_min,
            year_max=profile.year_max,
            strict=False,
            all_genres=profile.genres_all,
        )
        if wanted is None:
            return query
        narrowed = wanted if query.candidates is None else wanted & vocab.mask(query.candidates)
        if int(narrowed.sum()) < options.k:
            return query
        return replace(query, candidates=tuple(str(i) for i in vocab.ids[narrowed]))

    def recent_taste(self, user_id: str) -> Taste:
        """What a user did since the last fit (feedback, new interactions), read from the store now."""
        return self._taste(self.snapshot(), str(user_id))

    def _taste(self, snap: _Snapshot, user_id: str) -> Taste:
        return taste_of(self._store.user_events(self.dataset, user_id, after_id=snap.marker))

    def explain(self, user_id: str, item_ids: Sequence[str], retriever: str | None = None) -> list[Explanation]:
        """Grounded explanations of items for a user in the fitted data (see :meth:`Pipeline.explain`).

        Raises:
            UnknownIdError: The user or an item is not in the fitted data (or the user was deleted since).

        """
        if str(user_id) in self._forgotten:
            raise UnknownIdError(
                f"user {user_id!r} is not in dataset {self.dataset!r}", field="user_id", fix="check the id"
            )
        return self.pipeline(retriever).explain(str(user_id), [str(i) for i in item_ids])

    # -- feedback and interactions ------------------------------------------------------------------------------
    def record_feedback(
        self, user_id: str, item_id: str, kind: FeedbackKind, value: float | None = None, timestamp: int | None = None
    ) -> FeedbackResult:
        """Store feedback as an interaction (``event`` = the kind) stamped now; the next list reflects it.

        Args:
            user_id: The user giving feedback.
            item_id: A stored item.
            kind: ``thumbs_up``, ``thumbs_down``, ``seen`` or ``rating``.
            value: The rating (required for ``rating``, within ``config.rating_range``; not allowed otherwise).
            timestamp: Seconds since the epoch (now when ``None``).

        Raises:
            UnknownIdError: The user or the item is not known (feedback never creates either).
            ConfigError: The value is missing, out of range, or given for a kind that takes none
                (:func:`llmrec.feedback.validate_feedback`, as the chat's feedback).

        """
        stored_value = validate_feedback(kind, value, self.config.rating_range)
        if not self.user_exists(str(user_id)):
            raise UnknownIdError(
                f"user {user_id!r} is not in dataset {self.dataset!r}",
                field="user_id",
                fix="create the user first (POST /v1/users), or check the id",
            )
        if self._store.get_item(self.dataset, str(item_id)) is None:
            raise UnknownIdError(
                f"item {item_id!r} is not in dataset {self.dataset!r}", field="item_id", fix="check the id"
            )
        stamp = int(time.time()) if timestamp is None else int(timestamp)
        frame = pd.DataFrame(
            {"user_id": [str(user_id)], "item_id": [str(item_id)], "timestamp": [stamp], "value": [stored_value]}
        )
        frame["event"] = kind
        report = self._store.ingest_interactions(self.dataset, frame)
        return FeedbackResult(str(user_id), str(item_id), kind, stored_value, stamp, report.inserted == 1)

    def ingest_interactions(self, rows: pd.DataFrame) -> IngestReport:
        """Validate and store a batch of interactions in one transaction (a bad batch stores nothing).

        The rules of feedback apply to every row: the item must be in the catalogue (an unknown id would otherwise
        become an item at the next refit, around the admin-only item routes); a row whose ``event`` is a feedback
        kind gets the value :func:`llmrec.feedback.validate_feedback` gives it (a rating within
        ``config.rating_range``, no value for the others); any other value must lie within ``rating_range``.
        A missing value (NaN) is 1 for events that are not feedback.

        Raises:
            DataValidationError: Rows have problems (row and field named); nothing was stored.

        """
        return self._store.ingest_interactions(self.dataset, self._checked_interactions(rows))

    def _checked_interactions(self, rows: pd.DataFrame) -> pd.DataFrame:
        """``rows`` with their values settled by the feedback rules; a :class:`DataValidationError` otherwise."""
        from llmrec.errors import DataProblem, DataValidationError
        from llmrec.feedback import FEEDBACK_KINDS

        if not isinstance(rows, pd.DataFrame) or "item_id" not in rows:
            return rows  # the store's own validation names what is missing
        rows = rows.copy()
        low, high = self.config.rating_range
        items = rows["item_id"].astype(str).tolist()
        stored = self._store.stored_item_ids(self.dataset, items)
        events = rows["event"].tolist() if "event" in rows else ["interaction"] * len(rows)
        given = rows["value"].tolist() if "value" in rows else [None] * len(rows)
        values: list[float] = []
        problems: list[DataProblem] = []
        for line, (item, event, value) in enumerate(zip(items, events, given, strict=True), 1):
            missing = value is None or (isinstance(value, float) and np.isnan(value))
            if item not in stored:
                problems.append(
                    DataProblem("<request>", line, "item_id", f"item {item!r} is not in the catalogue", "check the id")
                )
            try:
                if event in FEEDBACK_KINDS:
                    values.append(validate_feedback(event, None if missing else value, (low, high)))
                elif missing:
                    values.append(1.0)
                else:
                    values.append(validate_feedback("rating", value, (low, high)))
            except ConfigError as exc:
                problems.append(DataProblem("<request>", line, "value", exc.reason, exc.fix or "check the value"))
                values.append(1.0)
        if problems:
            raise DataValidationError(problems)
        rows["value"] = values
        return rows

    def user_interactions(self, user_id: str, since: int | None = None) -> pd.DataFrame:
        """A user's stored interactions, oldest first (from ``since`` on, seconds since the epoch)."""
        return self._store.user_interactions(self.dataset, str(user_id), since=since)

    # -- items and users ----------------------------------------------------------------------------------------
    def create_item(self, item_id: str, title: str, text: str, attributes: Mapping[str, Any]) -> ItemRecord:
        """Store a new item (recommendable after the next refit).

        Raises:
            ConflictError: An item with that id is stored.
            DataValidationError: The item is invalid.

        """
        if not self._store.add_item(self.dataset, item_id, title, text, attributes):
            raise ConflictError(f"item {item_id!r} already exists; update it with PATCH /v1/items/{item_id}")
        with self._lock:
            if self._snapshot is not None:
                self._snapshot.removed.discard(str(item_id))
        record = self._store.get_item(self.dataset, item_id)
        assert record is not None
        return record

    def get_item(self, item_id: str) -> ItemRecord:
        """A stored item.

        Raises:
            UnknownIdError: It is not stored.

        """
        record = self._store.get_item(self.dataset, str(item_id))
        if record is None:
            raise UnknownIdError(
                f"item {item_id!r} is not in dataset {self.dataset!r}", field="item_id", fix="check the id"
            )
        return record

    def update_item(
        self, item_id: str, *, title: str | None, text: str | None, attributes: Mapping[str, Any] | None
    ) -> ItemRecord:
        """Change a stored item's fields (attributes merge; ``None`` removes one). Lists use it after a refit.

        Raises:
            UnknownIdError: It is not stored.

        """
        record = self._store.update_item(self.dataset, str(item_id), title=title, text=text, attributes=attributes)
        if record is None:
            raise UnknownIdError(
                f"item {item_id!r} is not in dataset {self.dataset!r}", field="item_id", fix="check the id"
            )
        return record

    def delete_item(self, item_id: str) -> None:
        """Delete a stored item and its interactions; it is never recommended again.

        Raises:
            UnknownIdError: It is not stored.

        """
        if not self._store.delete_item(self.dataset, str(item_id)):
            raise UnknownIdError(
                f"item {item_id!r} is not in dataset {self.dataset!r}", field="item_id", fix="check the id"
            )
        with self._lock:
            if self._snapshot is not None:
                self._snapshot.removed.add(str(item_id))

    def list_items(self, offset: int = 0, limit: int = 50, query: str | None = None) -> Page[ItemRecord]:
        """Stored items in catalogue order; with ``query``, those whose title or text holds every word."""
        return self._store.list_items(self.dataset, offset=offset, limit=limit, query=query)

    def catalogue_size(self) -> int:
        """Items in the fitted catalogue (the most a semantic search can rank)."""
        return self.snapshot().data.n_items

    def search_items(self, query: str, k: int = 10) -> list[tuple[ItemRecord, float]]:
        """Items whose text means what ``query`` says (the packaged text encoder over the fitted catalogue).

        The first call embeds the catalogue (vectors are cached in the store, so only once per text).
        """
        if not query.strip():
            raise ConfigError("the search text is empty", field="q", fix="give some words to search for")
        snap = self.snapshot()
        k = max(1, min(k, snap.data.n_items))  # never more slots than items, whatever the caller asks
        content = self._content_on(snap)
        candidates = None
        if snap.removed:
            candidates = [i for i in snap.data.item_vocab.ids if i not in snap.removed]
        out = []
        for item_id, score in content.recommend_text(query, k=k, candidates=candidates):
            record = self._store.get_item(self.dataset, item_id)
            if record is not None:
                out.append((record, float(score)))
        return out

    def _content_on(self, snap: _Snapshot) -> Content:
        """The text-search scorer over the snapshot's catalogue (built once per snapshot, single-flight)."""
        with self._lock:
            if self._content is not None and self._content[0] is snap:
                return self._content[1]
        with self._content_lock:
            with self._lock:  # built while we waited?
                if self._content is not None and self._content[0] is snap:
                    return self._content[1]
            from llmrec.encode.cache import EmbeddingCache
            from llmrec.models.content import Content

            started = time.perf_counter()
            content = Content(embedding_cache=EmbeddingCache(self._store)).fit(snap.data, self.options)
            seconds = time.perf_counter() - started
            log.info("text search index over %d items built in %.1f s", snap.data.n_items, seconds)
            with self._lock:
                if self._snapshot is snap or self._snapshot is None:
                    self._content = (snap, content)
            return content

    # -- chat -----------------------------------------------------------------------------------------------------
    def chat(self) -> ConversationalRecommender:
        """The conversational recommender over the default retriever (built once, rebuilt once after a refit).

        Sessions live in the store (``chat_sessions``), so they outlive refits and restarts; feedback given in a
        user's session is stored as that user's interactions, which the next list and the next fit see. Concurrent
        first calls build it once (a single-flight lock); the others wait for that build.
        """
        snap = self.snapshot()
        with self._lock:
            if self._chat is not None and self._chat[0] is snap:
                return self._chat[1]
        with self._chat_lock:
            with self._lock:
                if self._chat is not None and self._chat[0] is snap:
                    return self._chat[1]
            chat = self._build_chat(snap)
            with self._lock:
                if self._snapshot is snap:
                    self._chat = (snap, chat)
            return chat

    def _build_chat(self, snap: _Snapshot) -> ConversationalRecommender:
        from llmrec.chat import ConversationalRecommender, SqlSessionStore

        config = self.config.chat
        pipe = self._pipeline_on(snap, self._retriever(None), config.rerank)
        searcher = self._content_on(snap) if self.config.chat_text_search else None
        return ConversationalRecommender(
            pipe,
            sessions=SqlSessionStore(self._store),
            store=self._store,
            dataset=self.dataset,
            searcher=searcher,
            config=config,
            user_exists=self._may_chat,
            recent=self.recent_taste,
            rating_range=self.config.rating_range,
        )

    def session_lock(self, session_id: str) -> AbstractContextManager[None]:
        """The lock that orders the writes of one chat session in this process (turns, feedback, edits, delete).

        A turn reads the session, answers, and writes it back; two turns at once would each write their own
        copy and one would be lost. The routes hold this lock around each of them.
        """
        return self._session_locks.get(session_id)

    def warm_up(self, *, chat: bool = True) -> None:
        """Do at start what the first requests would otherwise wait for.

        Stores the dataset when missing, loads it, fits the default pipeline (and builds the language model when
        the default pipeline uses one); with ``chat``, also builds the chat recommender with its text-search index
        (the text encoder loads and embeds the catalogue: the slow part on a first start, cached in the store after).
        """
        started = time.perf_counter()
        self.prepare()
        self.pipeline()
        if self.config.pipeline.rerank is not None or self.config.pipeline.explain_with_lm:
            _ = self.lm  # built now, not by the first request
        if chat:
            self.chat()
        log.info("warmed up %s in %.1f s (chat: %s)", self.dataset, time.perf_counter() - started, chat)

    def warm_up_in_background(self) -> threading.Thread:
        """Build the chat recommender and its text-search index in a daemon thread (see :meth:`warm_up`).

        The server answers meanwhile; a chat request that comes before it is done waits for this same build (the
        single-flight lock), never starts its own. A daemon thread: a server stopped meanwhile does not wait for it.
        """

        def build() -> None:
            started = time.perf_counter()
            try:
                self.chat()
            except Exception:  # logged: the first chat request will try again and answer the error
                log.exception("building the chat of %s at start failed", self.dataset)
                return
            log.info("chat and text search of %s ready in %.1f s", self.dataset, time.perf_counter() - started)

        thread = threading.Thread(target=build, name="llmrec-warm-chat", daemon=True)
        thread.start()
        return thread

    def create_user(self, user_id: str, profile: str, attributes: Mapping[str, Any]) -> UserRecord:
        """Store a new user (until their first interactions, recommendations follow what their profile says).

        Raises:
            ConflictError: A user with that id is stored.

        """
        if not self._store.add_user(self.dataset, user_id, profile, attributes):
            raise ConflictError(f"user {user_id!r} already exists")
        record = self._store.get_user(self.dataset, user_id)
        assert record is not None
        return record

    def get_user(self, user_id: str) -> UserRecord:
        """A stored user (one known only from interactions gets an empty profile).

        Raises:
            UnknownIdError: The user is not known.

        """
        record = self._store.get_user(self.dataset, str(user_id))
        if record is not None:
            return record
        if self.user_exists(str(user_id)):
            return UserRecord(str(user_id), "", {})
        raise UnknownIdError(
            f"user {user_id!r} is not in dataset {self.dataset!r}", field="user_id", fix="check the id"
        )

    def list_users(self, offset: int = 0, limit: int = 50) -> Page[UserRecord]:
        """Stored users in the order they were first stored."""
        return self._store.list_users(self.dataset, offset=offset, limit=limit)

    # -- data subject rights --------------------------------------------------------------------------------------
    def _may_chat(self, user_id: str) -> bool:
        """Whether a session may belong to ``user_id``: a known user not deleted since the fit.

        A chat folds in the fitted history, so a user deleted and created again chats only after the next refit.
        """
        return str(user_id) not in self._forgotten and self.user_exists(user_id)

    def forget_user(self, user_id: str, actor: str) -> ForgetReport:
        """Delete everything stored about a user and stop using their fitted data at once.

        Deletes their profile, interactions and feedback, chat sessions, API keys and embedding-cache rows of their
        texts, with an audit row naming ``actor`` (:func:`llmrec.privacy.forget_user`). Until the next refit the
        fitted data still holds them, so from now on every path treats them as unknown: their lists are cold-start
        lists, explanations and chats refuse them; the next refit loads no trace of them. Kept language-model
        prompts are dropped.

        Args:
            user_id: The user.
            actor: Who asks, for the audit log (``admin``, ``key:<id>``).

        Raises:
            UnknownIdError: The user is not known (nothing was deleted).

        """
        from llmrec.privacy import forget_user

        user_id = str(user_id)
        if not self.user_exists(user_id):
            raise UnknownIdError(
                f"user {user_id!r} is not in dataset {self.dataset!r}", field="user_id", fix="check the id"
            )
        with self._lock:  # before the rows go, so no request folds in a half-deleted history
            self._forget_seq += 1
            self._forgotten[user_id] = self._forget_seq
        report = forget_user(self._store, self.dataset, user_id, actor=actor)
        local = sys.modules.get("llmrec.llm.local")
        if local is not None:
            local.clear_prompt_caches()
        log.info("deleted the data of a user of %s (audit entry %d)", self.dataset, report.audit_id)
        return report

    def export_user(self, user_id: str, actor: str) -> dict[str, Any]:
        """Everything stored about a user (:meth:`Store.export_user`), with an audit row naming ``actor``.

        Raises:
            UnknownIdError: The user is not known.

        """
        from llmrec.privacy import export_user

        user_id = str(user_id)
        if not self.user_exists(user_id):
            raise UnknownIdError(
                f"user {user_id!r} is not in dataset {self.dataset!r}", field="user_id", fix="check the id"
            )
        data = export_user(self._store, self.dataset, user_id, actor=actor)
        data["in_fitted_model"] = user_id in self.snapshot().data.user_vocab
        data["fitted_at"] = self.snapshot().loaded_at
        return data

    def audit_log(self, user_id: str | None = None, offset: int = 0, limit: int = 50) -> Page[AuditRecord]:
        """Who deleted or exported whose data, newest first (about ``user_id`` only, when given)."""
        return self._store.audit_log(self.dataset, user_id=user_id, offset=offset, limit=limit)
