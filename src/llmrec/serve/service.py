"""The recommender service behind the HTTP API: one store dataset, its fitted pipelines, and what changed since.

The service is plain Python (no web framework), so the HTTP routes, the chat layer and tests share it. It holds:

* a **snapshot** of the dataset loaded from the store, and the pipelines fitted on it, one per (retriever, rerank)
  pair, each fitted on first use;
* the **marker** of the snapshot (the id of the newest interaction row it holds). What a user did after the marker
  (feedback, new interactions) is read from the store on every recommendation call, so the very next list reflects
  it without waiting for a refit: every such item is left out, and the liked ones (thumbs-up, high ratings; see
  :func:`llmrec.feedback.polarity`) are folded into the retriever with the history it was fitted on (a
  :class:`~llmrec.query.Query` with ``liked`` set), so the rest of the list re-ranks around them;
* :meth:`RecommenderService.refit`, which reloads the store and refits every pipeline in use, then swaps them in at
  once (requests keep being answered from the old snapshot meanwhile).

With ``ServeConfig.model`` (``llmrec serve --model DIR``) the first snapshot is a saved pipeline instead: its data
and its fitted retriever are loaded, not fitted, so the server answers at once; a refit then works as always.

**Several workers** (processes, or nodes on one PostgreSQL database) serve one dataset coherently:

* with ``ServeConfig.artifacts`` (an artifact folder every worker reads), a refit runs under the store's refit lock
  (one at a time across workers), fits, and publishes the result as a new **model version**
  (:class:`~llmrec.serve.versions.ArtifactFolder`: saved pipelines in the folder, the number in the store). Every
  worker checks the store's newest version at most every ``version_poll_s`` seconds (one indexed read, made by a
  request) and switches to a newer one by loading it, not refitting, in a background thread; the swap is atomic,
  and each request keeps the snapshot it started with. A worker starting later loads the newest version; the
  first worker of a dataset with none fits and publishes version 1 while the others wait for it;
* a user deleted through any worker (or ``llmrec forget``) is unknown to every worker at once: each request checks
  the store's audit log for deletions after the snapshot's audit mark (users whose fitted data the snapshot
  still holds), so nothing about it is kept per process.

Recommendations come from :meth:`llmrec.pipeline.Pipeline.recommend` and explanations from
:meth:`~llmrec.pipeline.Pipeline.explain`; filters only choose the ``candidates`` handed to it. Item, user and
interaction records and the data subject's rights are :class:`~llmrec.serve.records.RecordsMixin`'s; request
and result types are in :mod:`llmrec.serve.results`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from contextlib import AbstractContextManager
from dataclasses import replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from llmrec.data.dataset import Dataset
from llmrec.data.store import AuditMark, Deletion, ItemRecord, ModelVersion, Store
from llmrec.errors import ArtifactError, ConfigError, StoreError, UnknownIdError
from llmrec.feedback import FeedbackKind, Taste, taste_of, validate_feedback
from llmrec.models.base import TrainOptions
from llmrec.pipeline import Pipeline, RetrieverSpec
from llmrec.query import Query, RecommendedItem
from llmrec.serve.config import ServeConfig
from llmrec.serve.locks import KeyedLocks
from llmrec.serve.records import RecordsMixin
from llmrec.serve.results import (
    FeedbackResult,
    RecommendationOptions,
    RecommendationResult,
    RefitReport,
    ServiceStatus,
)
from llmrec.serve.snapshot import Snapshot
from llmrec.serve.versions import ArtifactFolder

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

_DELETION_LOOKBACK = 64
"""Audit ids re-read below the cursor of deletions already read (committed out of id order; see _deletions_since)."""


class RecommenderService(RecordsMixin):
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
        self._snapshot: Snapshot | None = None
        self._lock = threading.RLock()
        self._load_lock = threading.Lock()
        self._content: tuple[Snapshot, Content] | None = None
        self._chat: tuple[Snapshot, ConversationalRecommender] | None = None
        # Single-flight builds: the first request after start or a refit builds, concurrent ones wait for it
        # (before, each built its own copy: 1.5 -> 5 GB and chat silent for minutes under load).
        self._content_lock = threading.Lock()
        self._chat_lock = threading.Lock()
        self._session_locks = KeyedLocks()
        # Users whose deletion through this process is under way -> its sequence number (see forget_user). Once
        # it is committed the store's audit log says so to every worker (_is_forgotten), so this is only the gap.
        self._forgotten: dict[str, int] = {}
        self._forget_seq = 0
        # Deletions logged after _deletions_from (an audit marker), read up to _deletions_upto (see _deletions_since).
        self._deletions: list[Deletion] = []
        self._deletions_from = -1
        self._deletions_upto = 0
        self._deletions_lock = threading.Lock()
        # Published model versions (None: pipelines live in this process only).
        self._versions = (
            ArtifactFolder(self.config.artifacts, store, self.config.dataset, keep=self.config.keep_versions)
            if self.config.artifacts
            else None
        )
        self._refit_lock = threading.Lock()  # one refit at a time in this process (the store's lock: across them)
        self._poll_lock = threading.Lock()
        self._polled_at = float("-inf")
        self._switching = False
        self._seen_version = 0  # the newest version this process served or chose not to (a --model start)
        self._failed_version = 0

    # -- plumbing -----------------------------------------------------------------------------------------------
    @property
    def store(self) -> Store:
        """The store the service reads and writes."""
        return self._store

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

    def _load(self) -> Snapshot:
        audit = self._store.audit_mark()  # read first: users deleted after it may still be in the data
        marker = self._store.last_interaction_id(self.dataset)  # read first: rows after it are "recent"
        data = self._store.load(self.dataset)
        return Snapshot(data, marker, datetime.now(UTC), audit=audit)

    def _load_saved(self, path: str) -> Snapshot:
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
        # Users deleted after the saved data was read are unknown; without the marker, every logged deletion counts.
        audit, gaps = pipe.metadata.get("audit_marker"), pipe.metadata.get("audit_gaps")
        mark = AuditMark()
        if isinstance(audit, int) and audit > 0 and isinstance(gaps, list) and all(isinstance(g, int) for g in gaps):
            mark = AuditMark(audit, tuple(gaps))
        fitted = datetime.fromisoformat(pipe.fitted_at) if pipe.fitted_at else datetime.now(UTC)
        log.info("loaded model from %s (fitted %s, no refit): %r", path, pipe.fitted_at, pipe.data)
        return Snapshot(pipe.data, marker, fitted, saved=(pipe,), audit=mark)

    def snapshot(self) -> Snapshot:
        """The served snapshot (loaded on first use: from ``config.model``, else the newest version, else the store).

        With an artifact folder, a newer published version is noticed here (and switched to in the background).
        """
        snap = self._snapshot
        if snap is not None:
            self._poll()
            return snap
        with self._load_lock:
            if self._snapshot is None:
                self._snapshot = self._first_snapshot()
                if self._snapshot.version is not None:
                    self._seen_version = max(self._seen_version, self._snapshot.version)
            return self._snapshot

    def _first_snapshot(self) -> Snapshot:
        """The snapshot a new service starts from (see :meth:`snapshot`)."""
        if self.config.model is not None:
            snap = self._load_saved(self.config.model)
            if self._versions is not None:  # serve the saved model until a version is published after this start
                latest = self._store.latest_model_version(self.dataset)
                self._seen_version = latest.version if latest is not None else 0
            return snap
        if self._versions is None:
            return self._load()
        latest = self._store.latest_model_version(self.dataset)
        loaded = self._try_load_version(latest) if latest is not None else None
        if loaded is not None:
            return loaded
        with self._refit_lock, self._store.refit_lock(self.dataset):
            latest = self._store.latest_model_version(self.dataset)  # published while we waited for the lock?
            loaded = self._try_load_version(latest) if latest is not None else None
            if loaded is not None:
                return loaded
            snap = self._load()
            retriever = self._retriever(None)
            snap.pipelines[(retriever, False)] = self._fit(snap, retriever, False)
            self._versions.publish(snap)
            return snap

    # -- model versions -----------------------------------------------------------------------------------------
    def _try_load_version(self, version: ModelVersion) -> Snapshot | None:
        """The snapshot of a published version, or ``None`` (logged once per version) when it cannot be loaded."""
        assert self._versions is not None
        try:
            return self._versions.load(version)
        except (ArtifactError, OSError) as exc:
            if version.version != self._failed_version:
                self._failed_version = version.version
                log.warning("cannot load model version %d of %s: %s", version.version, self.dataset, exc)
            return None

    def _poll(self) -> None:
        """Look for a newer published version (at most every ``version_poll_s``); switch to it in the background."""
        if self._versions is None or time.monotonic() - self._polled_at < self.config.version_poll_s:
            return
        if not self._poll_lock.acquire(blocking=False):
            return  # another request is checking
        try:
            if self._switching or time.monotonic() - self._polled_at < self.config.version_poll_s:
                return
            self._polled_at = time.monotonic()
            try:
                latest = self._store.latest_model_version(self.dataset)
            except StoreError as exc:  # the request goes on with what is loaded
                log.warning("cannot check for a new model version of %s: %s", self.dataset, exc)
                return
            if latest is None or latest.version <= self._seen_version:
                return
            self._switching = True
        finally:
            self._poll_lock.release()
        threading.Thread(target=self._switch_to, args=(latest,), name="llmrec-switch-version", daemon=True).start()

    def _switch_to(self, version: ModelVersion) -> None:
        """Load a published version and swap it in (unless a newer one is in by then)."""
        try:
            started = time.perf_counter()
            snap = self._try_load_version(version)
            if snap is not None and self._swap(snap):
                log.info(
                    "switched %s to model version %d in %.1f s (loaded, not refitted)",
                    self.dataset,
                    version.version,
                    time.perf_counter() - started,
                )
        finally:
            with self._poll_lock:
                self._switching = False

    def sync(self) -> int | None:
        """Check the store for a newer published version now and switch to it before returning (no background).

        Returns:
            The version served afterwards (``None`` when none is).

        """
        snap = self.snapshot()
        if self._versions is not None:
            latest = self._store.latest_model_version(self.dataset)
            if latest is not None and latest.version > self._seen_version:
                loaded = self._try_load_version(latest)
                if loaded is not None:
                    self._swap(loaded)
            snap = self._snapshot or snap
        return snap.version

    def _swap(self, snap: Snapshot) -> bool:
        """Serve ``snap`` from now on, unless it is an older published version than the one served; whether it is."""
        with self._load_lock, self._lock:
            current = self._snapshot
            if snap.version is not None and current is not None and (current.version or 0) > snap.version:
                return False
            self._snapshot = snap
            self._content = None
            self._chat = None
            if snap.version is not None:
                self._seen_version = max(self._seen_version, snap.version)
            return True

    # -- deletions ----------------------------------------------------------------------------------------------
    def _deletions_since(self, low: int) -> list[Deletion]:
        """User deletions logged after audit row ``low``: the cached ones plus any new (one range read).

        The read reaches ``_DELETION_LOOKBACK`` ids below what was read before: PostgreSQL hands out row ids before
        commit, so a deletion committing late can carry a lower id than one already read.
        """
        with self._deletions_lock:
            if low < self._deletions_from:  # an older snapshot than the cache covers (a request during a swap)
                return self._store.deletions_after(self.dataset, low)
            if low > self._deletions_from:
                self._deletions = [d for d in self._deletions if d.id > low]
                self._deletions_from = low
                self._deletions_upto = max(self._deletions_upto, low)
            since = max(self._deletions_from, self._deletions_upto - _DELETION_LOOKBACK)
            known = {d.id for d in self._deletions}
            new = [d for d in self._store.deletions_after(self.dataset, since) if d.id not in known]
            if new:
                self._deletions.extend(new)
                self._deletions_upto = max(self._deletions_upto, max(d.id for d in new))
            return list(self._deletions)

    def _is_forgotten(self, snap: Snapshot, user_id: str) -> bool:
        """Whether ``user_id`` was deleted after ``snap``'s data was read (through any worker): treat as unknown.

        Only users in the snapshot's fitted data can be: anyone else has nothing fitted to forget.
        """
        if user_id in self._forgotten:
            return True
        if user_id not in snap.data.user_vocab:
            return False
        mark = snap.audit
        return any(not mark.covers(d.id) and d.names(self.dataset, user_id) for d in self._deletions_since(mark.low))

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

    def _fit(self, snap: Snapshot, retriever: str, rerank: bool) -> Pipeline:
        config = self._pipeline_config(retriever, rerank)
        needs_lm = rerank or config.explain_with_lm
        for saved in snap.saved:
            if config.retriever == saved.config.retriever:
                pipe = saved.reconfigured(config, lm=self.lm if needs_lm else None)
                log.info("%s (rerank=%s) from the saved model %s: no refit", retriever, rerank, saved.loaded_from)
                return pipe
        started = time.perf_counter()
        pipe = Pipeline(config, lm=self.lm if needs_lm else None).fit(snap.data, self.options)
        log.info("fitted %s (rerank=%s) on %r in %.1f s", retriever, rerank, snap.data, time.perf_counter() - started)
        return pipe

    def _pipeline_on(self, snap: Snapshot, retriever: str, rerank: bool) -> Pipeline:
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

        With an artifact folder (``config.artifacts``) the refit holds the store's refit lock (a refit on another
        worker waits for this one, then fits again with what was stored meanwhile) and publishes the pipelines as
        a new model version, which every worker switches to (see the module docstring).

        Args:
            retrievers: Retrievers to fit (without rerank); by default every pipeline fitted so far (and every
                retriever of the version served), or the default retriever when none was.

        Raises:
            ConflictError: Another worker's refit held the lock too long.
            ArtifactError: The version could not be written to the artifact folder (nothing was published).

        """
        started = time.perf_counter()
        old = self._snapshot
        keys = list(old.pipelines) if old is not None else []
        if old is not None:  # a published version's retrievers stay published, whoever used them
            for saved in old.saved:
                key = (saved.config.retriever.name, False)
                if key[0] in self.config.retrievers and key not in keys:
                    keys.append(key)
        if retrievers is not None:
            keys = [(self._retriever(r), False) for r in retrievers]
        if not keys:
            keys = [(self._retriever(None), False)]
        with self._refit_lock:
            if self._versions is None:
                snap = self._fit_all(keys)
            else:
                with self._store.refit_lock(self.dataset):
                    snap = self._fit_all(keys)
                    self._versions.publish(snap)
        self._swap(snap)
        data = snap.data
        names = [f"{r}+rerank" if rr else r for r, rr in keys]
        seconds = time.perf_counter() - started
        return RefitReport(self.dataset, data.n_users, data.n_items, len(data), names, seconds, snap.version)

    def _fit_all(self, keys: Sequence[tuple[str, bool]]) -> Snapshot:
        """A snapshot loaded from the store now, with a pipeline fitted for each (retriever, rerank) key."""
        snap = self._load()
        for retriever, rerank in keys:
            snap.pipelines[(retriever, rerank)] = self._fit(snap, retriever, rerank)
        return snap

    def status(self) -> ServiceStatus:
        """What is loaded and fitted (loads nothing; notices a newer published version, as any request does)."""
        snap = self._snapshot
        if snap is None:
            return ServiceStatus(self.dataset, False, None, [], None, None, None)
        self._poll()
        with self._lock:
            names = [f"{r}+rerank" if rr else r for r, rr in snap.pipelines]
        data = snap.data
        return ServiceStatus(
            self.dataset, True, snap.loaded_at, names, data.n_items, data.n_users, len(data), snap.version
        )

    # -- recommendations ----------------------------------------------------------------------------------------
    def user_exists(self, user_id: str) -> bool:
        """Whether the user is in the fitted data (and not deleted since), the users table, or has interactions."""
        snap = self.snapshot()
        if str(user_id) in snap.data.user_vocab and not self._is_forgotten(snap, str(user_id)):
            return True
        if self._store.get_user(self.dataset, str(user_id)) is not None:
            return True
        return not self._store.user_interactions(self.dataset, str(user_id)).empty

    def _allowed(self, snap: Snapshot, options: RecommendationOptions) -> tuple[str, ...] | None:
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

    def _query(self, snap: Snapshot, user_id: str, taste: Taste, options: RecommendationOptions) -> Query:
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
        forgotten = self._is_forgotten(snap, user_id)  # deleted since the fit: their fitted history is not used
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
        return RecommendationResult(
            user_id, items, retriever, options.rerank, known, excluded, snap.loaded_at, snap.version
        )

    def _profile_taste(self, snap: Snapshot, user_id: str) -> StateUpdate | None:
        """What a stored profile says ("I love sci-fi", "heist films and 90s comedies"), read like a chat message.

        For a user with no interactions at all; ``None`` without a profile, or when it states nothing usable.
        """
        record = self._store.get_user(self.dataset, user_id)
        if record is None or not record.profile.strip():
            return None
        from llmrec.catalogue import Catalogue
        from llmrec.chat.parse import parse_turn

        parsed = parse_turn(record.profile[:2000], Catalogue.of(snap.data), popularity=snap.data.item_popularity)
        return None if parsed.intent != "recommend" or parsed.update.empty else parsed.update

    @staticmethod
    def _profile_query(snap: Snapshot, query: Query, profile: StateUpdate, options: RecommendationOptions) -> Query:
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

    def _taste(self, snap: Snapshot, user_id: str) -> Taste:
        return taste_of(self._store.user_events(self.dataset, user_id, after_id=snap.marker))

    def explain(self, user_id: str, item_ids: Sequence[str], retriever: str | None = None) -> list[Explanation]:
        """Grounded explanations of items for a user in the fitted data (see :meth:`Pipeline.explain`).

        Raises:
            UnknownIdError: The user or an item is not in the fitted data (or the user was deleted since).

        """
        if self._is_forgotten(self.snapshot(), str(user_id)):
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

    def _content_on(self, snap: Snapshot) -> Content:
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

    def _build_chat(self, snap: Snapshot) -> ConversationalRecommender:
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

    # -- data subject rights --------------------------------------------------------------------------------------
