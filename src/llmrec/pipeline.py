"""The Pipeline: retrieve -> (fuse) -> LM rerank -> explain, configured in one place.

It is the only way llmrec produces recommendations for people: the CLI, the HTTP API and the evaluation runner
all call :meth:`Pipeline.recommend`, so what is measured is what is served.

Stages:
1. **Retrieve**: any registered scorer (a ``fusion`` of several is one scorer) ranks the catalogue and hands the
   top ``candidates`` to the next stage (seen items and items outside an allowed set are already gone).
2. **Rerank** (optional): a language model scores the candidates given the user's history (and few-shot
   demonstrations from similar training users); its score is blended with the retriever's. The result is a
   permutation of the candidates, so nothing outside them can be recommended. The causal model reads the liked
   history in a prompt (:class:`~llmrec.llm.rerank.LMReranker`); ``method="encoder"`` asks the text encoder
   instead, for each candidate's similarity to everything watched recently
   (:class:`~llmrec.llm.encoder_rerank.EncoderReranker`, the variant that measurably beats its retriever).
3. **Explain** (on request): grounded explanations of the final items from the user's history and item facts.

A fitted pipeline is saved with :meth:`Pipeline.save` (a folder: the fitted retriever as a scorer folder, the
:class:`PipelineConfig` as JSON, and a reference to the language model, never its weights) and read back with
:meth:`Pipeline.load`, which recommends at once, without a refit.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Self

import numpy as np
import scipy.sparse as sp
from pydantic import BaseModel, ConfigDict, Field, GetJsonSchemaHandler, ValidationError, model_validator
from pydantic.json_schema import JsonSchemaValue

from llmrec.data.artifacts import new_header, read_meta, write_meta, writing_folder
from llmrec.data.dataset import Dataset
from llmrec.errors import ArtifactError, ConfigError, NotFittedError
from llmrec.llm.encoder_rerank import EncoderReranker
from llmrec.llm.explain import ExplainConfig, Explainer, Explanation, ExplanationStream
from llmrec.llm.fewshot import FewShotConfig, FewShotPool
from llmrec.llm.rerank import LMReranker, RerankConfig, blend
from llmrec.models.base import Recommendations, Scorer, TrainOptions, mask_scores, top_k
from llmrec.models.registry import get_scorer
from llmrec.query import Query, as_queries
from llmrec.text.titles import short_title

if TYPE_CHECKING:
    from llmrec.llm.base import LanguageModel

__all__ = ["LMSpec", "Pipeline", "PipelineConfig", "RerankedBatch", "RetrieverSpec", "saved_pipeline_info"]

log = logging.getLogger(__name__)

PIPELINE_FILE = "pipeline.json"
"""The file that makes a folder a saved pipeline."""
PIPELINE_KIND = "llmrec-pipeline"
RETRIEVER_DIR = "retriever"
_CHUNK = 256
"""Queries ranked at once (bounds the dense ``(chunk, n_items)`` score block)."""
_SECRET_FIELDS = ("api_key",)


class RetrieverSpec(BaseModel):
    """A registered scorer and its configuration (``{"name": "fusion", "config": {"components": [...]}}`` fuses)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = "ease"
    config: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _known_scorer_and_fields(self) -> Self:
        """Check the name and the config against the scorer's own config class now, not at the first fit.

        A typo (``{"name": "nope"}``, ``{"config": {"bogus": 1}}``) fails here with the field named.
        """
        from llmrec.models.registry import SCORERS, available_scorers

        if self.name not in SCORERS:
            raise ValueError(f"unknown scorer {self.name!r}; valid names: {', '.join(available_scorers())}")
        SCORERS[self.name].config_class.model_validate(self.config)
        return self

    @classmethod
    def __get_pydantic_json_schema__(cls, core_schema: Any, handler: GetJsonSchemaHandler) -> JsonSchemaValue:
        """One variant per registered scorer, its ``config`` the scorer's own config class (the real shapes)."""
        from llmrec.models.registry import SCORERS

        default = cls.model_fields["name"].default
        return _tagged_union(
            "RetrieverSpec",
            cls.__doc__ or "",
            "name",
            {name: {"config": klass.config_class} for name, klass in sorted(SCORERS.items())},
            default,
            handler,
        )


class LMSpec(BaseModel):
    """Which language model the rerank and explain stages use.

    Attributes:
        backend: ``local`` (transformers in this process; the packaged SmolLM2 unless ``local`` names weights) or
            ``openai`` (any OpenAI-compatible server the user runs; ``openai`` holds its address).
        local: :class:`~llmrec.llm.local.LocalLMConfig` fields.
        openai: :class:`~llmrec.llm.openai_http.OpenAIConfig` fields.

    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    backend: Literal["local", "openai"] = "local"
    local: dict[str, Any] = Field(default_factory=dict)
    openai: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _backend_fields(self) -> Self:
        """Check ``local`` and ``openai`` against the backends' config classes now (no weights are loaded)."""
        from llmrec.llm.local import LocalLMConfig
        from llmrec.llm.openai_http import OpenAIConfig

        LocalLMConfig.model_validate(self.local)
        if self.openai or self.backend == "openai":
            OpenAIConfig.model_validate(self.openai)
        return self

    @classmethod
    def __get_pydantic_json_schema__(cls, core_schema: Any, handler: GetJsonSchemaHandler) -> JsonSchemaValue:
        """One variant per backend, with that backend's own config class (the real shapes)."""
        from llmrec.llm.local import LocalLMConfig
        from llmrec.llm.openai_http import OpenAIConfig

        # The field of the other backend may be present (a dump holds both); it is checked only when not empty.
        variants: dict[str, dict[str, type[BaseModel] | JsonSchemaValue]] = {
            "local": {"local": LocalLMConfig, "openai": {"type": "object"}},
            "openai": {"local": LocalLMConfig, "openai": OpenAIConfig},
        }
        return _tagged_union("LMSpec", "Which language model the rerank and explain stages use.", "backend", variants,
                             "local", handler)  # fmt: skip

    def build(self) -> LanguageModel:
        """The configured language model (weights load lazily, on first use)."""
        try:
            if self.backend == "openai":
                from llmrec.llm.openai_http import OpenAIChatLM, OpenAIConfig

                return OpenAIChatLM(OpenAIConfig(**self.openai))
            from llmrec.llm.local import LocalLM, LocalLMConfig

            return LocalLM(LocalLMConfig(**self.local))
        except ValueError as exc:  # pydantic validation of the backend's own config
            raise ConfigError(f"invalid {self.backend} language model config: {exc}") from exc


class PipelineConfig(BaseModel):
    """Every stage's settings.

    Attributes:
        retriever: The scorer that finds candidates.
        candidates: How many of the retriever's top items the reranker sees (and reorders).
        rerank: The language-model rerank stage; ``None`` switches it off (the retriever's order is final).
        fewshot: In-context demonstrations for the rerank prompt; ``None`` = zero-shot.
        lm: The language model of the rerank and explain stages.
        explain: Evidence and checking settings of the explain stage.
        explain_with_lm: Let the language model phrase explanations (checked, repaired when unfaithful). Off by
            default: the packaged model mostly restates its evidence lines ("The user liked: X - shares ...") or
            is repaired back to the template (``benchmarks/explanations.py``, results/explanations.json), so the
            template, written from the evidence alone, instant and grounded by construction, reads better.
        liked_min_value: Interactions with ``value >= liked_min_value`` make up the history shown to the language
            model (all interactions when a user has none, or when ``None``).

    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    retriever: RetrieverSpec = Field(default_factory=RetrieverSpec)
    candidates: int = Field(default=20, ge=1, le=1000)
    rerank: RerankConfig | None = Field(default_factory=RerankConfig)
    fewshot: FewShotConfig | None = None
    lm: LMSpec = Field(default_factory=LMSpec)
    explain: ExplainConfig = Field(default_factory=ExplainConfig)
    explain_with_lm: bool = False
    liked_min_value: float | None = 4.0


@dataclass(frozen=True)
class RerankedBatch:
    """The rerank stage's inputs and outputs for a batch of users (what :func:`blend` combines).

    Attributes:
        retrieved: The retriever's top ``candidates`` per user.
        lm_scores: The language model's score of each retrieved item, ``(n_users, candidates)``; NaN in padded
            slots. ``None`` when the pipeline does not rerank.

    """

    retrieved: Recommendations
    lm_scores: np.ndarray | None

    def final(self, k: int, weight: float) -> Recommendations:
        """The top ``k`` after blending with ``weight`` (the language model's share)."""
        base = self.retrieved
        scores = base.scores.copy()
        if self.lm_scores is not None:
            for row in range(len(base)):
                real = base.item_idx[row] >= 0
                scores[row, real] = blend(base.scores[row, real], self.lm_scores[row, real], weight)
        pos, vals = top_k(scores, k)
        idx = np.where(pos >= 0, np.take_along_axis(base.item_idx, np.maximum(pos, 0), axis=1), -1)
        items = np.where(
            idx >= 0, np.take_along_axis(base.items, np.maximum(pos, 0), axis=1), np.array(None, dtype=object)
        )
        return Recommendations(base.users, items, vals, idx)


class Pipeline:
    """Retrieve, rerank with a language model, explain (see the module docstring).

    Args:
        config: The stages' settings (defaults: EASE retriever, 20 candidates, calibrated log-likelihood rerank
            with the packaged SmolLM2).
        lm: A language model object to use instead of building one from ``config.lm`` (e.g. one shared by
            several pipelines).

    Example:
        >>> pipe = Pipeline().fit(load_movielens())  # doctest: +SKIP
        >>> pipe.recommend(["1"], k=10).for_user("1")  # doctest: +SKIP
    """

    def __init__(self, config: PipelineConfig | None = None, *, lm: LanguageModel | None = None) -> None:
        self.config = config or PipelineConfig()
        self._lm = lm
        self._data: Dataset | None = None
        self.retriever: Scorer | None = None
        self.reranker: LMReranker | EncoderReranker | None = None
        self.fewshot: FewShotPool | None = None
        self._explainer: Explainer | None = None
        self.loaded_from: Path | None = None
        self.metadata: dict[str, Any] = {}

    @property
    def lm(self) -> LanguageModel:
        """The language model of the rerank and explain stages (built from ``config.lm`` on first use)."""
        if self._lm is None:
            self._lm = self.config.lm.build()
        return self._lm

    @property
    def data(self) -> Dataset:
        """The data the pipeline was fitted on."""
        if self._data is None:
            raise NotFittedError("the pipeline is not fitted: call fit(data) first")
        return self._data

    # -- training -----------------------------------------------------------------------------------------------

    def fit(self, data: Dataset, options: TrainOptions | None = None) -> Self:
        """Fit the retriever on ``data`` (training interactions only) and prepare the other stages."""
        spec = self.config.retriever
        return self._prepare(get_scorer(spec.name, **spec.config).fit(data, options))

    def _prepare(self, retriever: Scorer) -> Self:
        """Take a fitted retriever and prepare the other stages on its data (what ``fit`` and ``load`` share)."""
        data = retriever.data
        self.retriever = retriever
        self._data = data
        self.titles = item_titles(data)
        self._history = _histories(data, self.config.liked_min_value)
        self._fitted_history = _histories(data, None)
        self._explainer = None
        if self.config.rerank is not None and self.config.rerank.method == "encoder":
            self.reranker = EncoderReranker(data, self.config.rerank)
        elif self.config.rerank is not None:
            self.reranker = LMReranker(self.lm, self.config.rerank)
            if self.config.fewshot is not None and self.config.fewshot.shots > 0:
                self.fewshot = FewShotPool(data, self.titles, self.config.fewshot)
        return self

    @classmethod
    def around(cls, retriever: Scorer, *, candidates: int = 20, lm: LanguageModel | None = None) -> Pipeline:
        """A pipeline without a rerank stage around an already fitted scorer (nothing is refitted).

        The evaluation runner ranks every scorer through this, so it measures the served recommend path.
        """
        spec = RetrieverSpec(name=retriever.name, config=retriever.config.model_dump(mode="json"))
        return cls(PipelineConfig(retriever=spec, candidates=candidates, rerank=None), lm=lm)._prepare(retriever)

    @property
    def fitted_at(self) -> str | None:
        """When the retriever was fitted (ISO 8601, UTC; kept through save and load), ``None`` before ``fit``."""
        return self.retriever.fitted_at if self.retriever is not None else None

    def reconfigured(self, config: PipelineConfig, *, lm: LanguageModel | None = None) -> Pipeline:
        """A pipeline with other stage settings (candidates, rerank, explain...) around this one's fitted retriever.

        Nothing is refitted: the HTTP API uses this to serve a saved pipeline with its own stage settings.

        Raises:
            NotFittedError: This pipeline is not fitted.
            ConfigError: ``config`` names another retriever (or retriever config) than the fitted one.

        """
        if self.retriever is None:
            raise NotFittedError("the pipeline is not fitted: call fit(data) first")
        if config.retriever != self.config.retriever:
            raise ConfigError(
                f"the fitted retriever is {self.config.retriever.model_dump()}, not {config.retriever.model_dump()}: "
                "a pipeline can only be reconfigured around the retriever it has. Fix: fit a new pipeline"
            )
        out = Pipeline(config, lm=lm if lm is not None else self._lm)._prepare(self.retriever)
        out.loaded_from, out.metadata = self.loaded_from, dict(self.metadata)
        return out

    # -- saving and loading -------------------------------------------------------------------------------------

    def save(self, path: str | os.PathLike[str], *, metadata: Mapping[str, Any] | None = None) -> Path:
        """Save the fitted pipeline to the folder ``path`` (created; a previous save there is replaced).

        The folder holds ``pipeline.json`` (the :class:`PipelineConfig`, the language model reference: backend,
        its settings and adapter, never weights or API keys; when it was fitted) and ``retriever/`` (the fitted
        retriever, see :meth:`llmrec.models.base.Scorer.save`). :meth:`load` reads it back without a refit.

        Args:
            path: The folder to write. It must be new, empty, or a folder an earlier save wrote.
            metadata: JSON-safe facts to keep with it (e.g. where the training data came from).

        Returns:
            The folder written.

        Raises:
            NotFittedError: The pipeline is not fitted.
            ConfigError: ``path`` is a file or a non-empty folder that is not a saved pipeline.

        """
        if self.retriever is None:
            raise NotFittedError("the pipeline is not fitted: call fit(data) first")
        target = Path(path).expanduser()
        config = self.config.model_dump(mode="json")
        for field in _SECRET_FIELDS:  # keys come from the environment when the pipeline is loaded
            config["lm"]["openai"].pop(field, None)
        lm = config["lm"]
        meta = {
            **new_header(PIPELINE_KIND),
            "config": config,
            "retriever": {"name": self.retriever.name, "folder": RETRIEVER_DIR},
            "lm": {"backend": lm["backend"], "settings": lm[lm["backend"]], "adapter": lm["local"].get("adapter")},
            "fitted_at": self.fitted_at,
            "dataset": self.data.name,
            "metadata": dict(metadata or {}),
        }
        with writing_folder(target, PIPELINE_FILE) as tmp:
            self.retriever.save(tmp / RETRIEVER_DIR)
            write_meta(tmp / PIPELINE_FILE, meta)
        log.info("saved the pipeline (%s, fitted %s) to %s", self.retriever.name, self.fitted_at, target)
        return target

    @classmethod
    def load(cls, path: str | os.PathLike[str], *, lm: LanguageModel | None = None) -> Pipeline:
        """A fitted pipeline read back from a folder :meth:`save` wrote; it recommends without a refit.

        Args:
            path: The saved folder.
            lm: A language model object to use instead of building one from the saved reference.

        Raises:
            ArtifactError: The folder is missing, incomplete or corrupt, or was written by a newer llmrec.

        """
        folder = Path(path).expanduser()
        meta = saved_pipeline_info(folder)
        try:
            config = PipelineConfig.model_validate(meta.get("config", {}))
        except ValidationError as exc:
            raise ArtifactError(f"{folder / PIPELINE_FILE}: invalid pipeline config ({exc})") from exc
        retriever_dir = folder / str(meta.get("retriever", {}).get("folder", RETRIEVER_DIR))
        retriever = Scorer.load(retriever_dir)
        if retriever.name != config.retriever.name:
            raise ArtifactError(
                f"{retriever_dir} holds a {retriever.name} scorer but {folder / PIPELINE_FILE} names "
                f"{config.retriever.name}. Fix: save the pipeline again"
            )
        pipe = cls(config, lm=lm)._prepare(retriever)
        pipe.loaded_from = folder
        pipe.metadata = dict(meta.get("metadata") or {})
        log.info("loaded the pipeline (%s, fitted %s) from %s", retriever.name, pipe.fitted_at, folder)
        return pipe

    # -- inference ----------------------------------------------------------------------------------------------

    def history(self, user_idx: int) -> np.ndarray:
        """Item indices of a known user's history as the language model sees it (liked items, oldest first)."""
        return self._history[user_idx] if 0 <= user_idx < len(self._history) else np.zeros(0, dtype=np.int64)

    def seen(self, user: object) -> list[str]:
        """External ids of every item a known user interacted with in the fitted data (empty when unknown)."""
        uidx = int(self.data.user_vocab.index([user], missing="negative")[0])
        if uidx < 0:
            return []
        return [str(i) for i in self.data.item_vocab.ids[self.data.matrix("binary")[uidx].indices]]

    def recommend(
        self,
        queries: Query | Sequence[Query | object] | np.ndarray,
        k: int = 10,
        *,
        rerank: bool | None = None,
        show_progress: bool = False,
        tie_seed: int | None = None,
    ) -> Recommendations:
        """Top-``k`` items per query, reranked by the language model when configured: llmrec's one recommend path.

        The chat, the HTTP API, the CLI, batch jobs and the evaluation runner all call this. A fitted user as they
        were fitted is scored by the retriever directly; anyone with news since the fit (liked or disliked items,
        a text request) or without a fitted history has that history folded into the retriever
        (:meth:`~llmrec.models.base.Scorer.score_histories`), without a refit. Every row then goes through one
        candidate mask (:func:`~llmrec.models.base.mask_scores`) and, when reranking, the language model sees the
        row's liked history.

        Args:
            queries: :class:`~llmrec.query.Query` objects, or bare external user ids (``Query(user=id)``).
            k: List length; at most ``config.candidates`` (the retriever hands that many to the rerank stage).
            rerank: Override whether the language model reranks (``None`` = as configured).
            show_progress: A progress bar over rows while reranking.
            tie_seed: Break equal retriever scores by a seeded random order per row instead of catalogue order.

        Returns:
            One row per query, labelled by :attr:`Query.label`; rows are padded (index -1) when fewer items
            qualify.

        Raises:
            NotFittedError: The pipeline is not fitted.
            ConfigError: ``k`` is out of range, a query's ``text_scores`` has the wrong length, or reranking was
                asked of a pipeline without a rerank stage.

        """
        if self.retriever is None:
            raise NotFittedError("the pipeline is not fitted: call fit(data) first")
        self._check_k(k)
        batch = self.rerank_scores(queries, rerank=rerank, show_progress=show_progress, tie_seed=tie_seed)
        weight = self.config.rerank.weight if self.config.rerank is not None and batch.lm_scores is not None else 0.0
        return batch.final(k, weight)

    def rerank_scores(
        self,
        queries: Query | Sequence[Query | object] | np.ndarray,
        *,
        rerank: bool | None = None,
        show_progress: bool = False,
        tie_seed: int | None = None,
    ) -> RerankedBatch:
        """Retrieve each query's candidates and, when reranking, score them with the language model.

        :meth:`recommend` is this plus :meth:`RerankedBatch.final`; evaluation uses this step to try several blend
        weights on validation users without asking the language model again.
        """
        if self.retriever is None:
            raise NotFittedError("the pipeline is not fitted: call fit(data) first")
        use_lm = self.config.rerank is not None if rerank is None else rerank
        if use_lm and self.reranker is None:
            raise ConfigError(
                "this pipeline has no rerank stage (config.rerank is None)",
                field="rerank",
                fix="configure PipelineConfig.rerank, or ask without rerank",
            )
        asked = as_queries(queries)
        retrieved, lm_histories = self._retrieve(asked, tie_seed)
        if not use_lm:
            return RerankedBatch(retrieved, None)
        return RerankedBatch(retrieved, self._lm_scores(retrieved, lm_histories, show_progress))

    def warm(self, queries: Query | Sequence[Query | object] | np.ndarray) -> int:
        """Compute each query's user part of the rerank prompt ahead of its requests (a faster first rerank).

        The language model keeps the cache of the prompt up to the candidate list (see
        :meth:`~llmrec.llm.rerank.LMReranker.warm`), so a later :meth:`recommend` for that user computes only the
        candidates. Call it when a user's history changes. With fp32 weights the scores are unchanged; with int8 they
        move with where the pass is cut (see :attr:`~llmrec.llm.rerank.RerankConfig.warm`). Keep
        ``LocalLMConfig.prompt_cache_size`` at least the number of users kept warm at once.

        Returns:
            Prompt tokens cached over all queries (0 with a language model that keeps no cache).

        Raises:
            NotFittedError: The pipeline is not fitted.
            ConfigError: The pipeline has no rerank stage.
        """
        if self.retriever is None:
            raise NotFittedError("the pipeline is not fitted: call fit(data) first")
        if self.reranker is None:
            raise ConfigError(
                "this pipeline has no rerank stage (config.rerank is None), so there is no prompt to warm",
                field="rerank",
                fix="configure PipelineConfig.rerank",
            )
        if isinstance(self.reranker, EncoderReranker):
            return 0  # nothing to compute ahead: a history vector is one weighted mean
        cached = 0
        for q in as_queries(queries):
            liked = self._lm_history(q, self._user_idx(q))
            cached += self.reranker.warm([self.titles[i] for i in liked])
        return cached

    def _user_idx(self, query: Query) -> int:
        """The fitted index of ``query.user``; -1 for an anonymous or unknown user."""
        return -1 if query.user is None else int(self.data.user_vocab.index([query.user], missing="negative")[0])

    def _lm_history(self, query: Query, user_idx: int) -> np.ndarray:
        """The history the rerank reads for a query (indices): what a rerank and a warm share.

        The causal model's prompt shows the liked history; the encoder rerank reads every interaction, because the
        order of what was watched is its signal (see :mod:`llmrec.llm.encoder_rerank`).
        """
        histories = self._fitted_history if isinstance(self.reranker, EncoderReranker) else self._history
        if not query.folds_in:
            return histories[user_idx] if 0 <= user_idx < len(histories) else np.zeros(0, dtype=np.int64)
        return self._history_idx(histories, query, user_idx)

    def _retrieve(
        self, queries: list[Query], tie_seed: int | None
    ) -> tuple[Recommendations, list[tuple[np.ndarray, int]]]:
        """The retriever's top ``candidates`` per query, and each row's ``(liked history, user index)``."""
        assert self.retriever is not None
        data, width = self.data, self.config.candidates
        idx = np.full((len(queries), width), -1, dtype=np.int64)
        vals = np.full((len(queries), width), -np.inf)
        histories: list[tuple[np.ndarray, int]] = []
        for start in range(0, len(queries), _CHUNK):
            chunk = queries[start : start + _CHUNK]
            uidx = data.user_vocab.index([q.user if q.user is not None else "" for q in chunk], missing="negative")
            uidx[[q.user is None for q in chunk]] = -1
            folded = [self._folded(q, int(u)) if q.folds_in else None for q, u in zip(chunk, uidx, strict=True)]
            scores = self._scores(chunk, uidx, folded)
            blocked, allowed = self._mask(chunk, uidx, folded)
            mask_scores(scores, blocked=blocked, allowed=allowed)
            idx[start : start + len(chunk)], vals[start : start + len(chunk)] = top_k(scores, width, tie_seed)
            for q, u in zip(chunk, uidx, strict=True):
                histories.append((self._lm_history(q, int(u)), int(u)))
        labels = np.array([q.label for q in queries], dtype=object)
        return Recommendations(labels, data.item_vocab.ids_of(idx), vals, idx), histories

    def _folded(self, query: Query, user_idx: int) -> np.ndarray:
        """The history folded into the retriever for a query: the fitted one, minus dislikes, plus new likes.

        Folding in a fitted user's whole fitted history reproduces their fitted list, so news changes the list
        only by what it adds or removes (their liked-only history would reshuffle half of it).
        """
        return self._history_idx(self._fitted_history, query, user_idx)

    def _history_idx(self, histories: list[np.ndarray], query: Query, user_idx: int) -> np.ndarray:
        """A user's history from ``histories`` without ``query.disliked``, then ``query.liked`` (indices)."""
        vocab = self.data.item_vocab
        own = histories[user_idx] if 0 <= user_idx < len(histories) else np.zeros(0, dtype=np.int64)
        fresh = vocab.known(query.liked)
        out = np.array(list(dict.fromkeys(np.concatenate([own, fresh]).tolist())), dtype=np.int64)
        if query.disliked:
            out = out[~np.isin(out, vocab.known(query.disliked))]
        return out

    def _scores(self, queries: list[Query], uidx: np.ndarray, folded: list[np.ndarray | None]) -> np.ndarray:
        """All-item retriever scores per query: fitted users directly, the rest by folding their history in."""
        assert self.retriever is not None
        n_items = self.data.n_items
        out = np.empty((len(queries), n_items))
        plain = [row for row, f in enumerate(folded) if f is None]
        if plain:
            out[plain] = self.retriever.score([queries[row].user for row in plain])  # unknown: the fallback
        news = [row for row, f in enumerate(folded) if f is not None]
        if news:
            out[news] = self.retriever.score_histories([folded[row] for row in news])  # type: ignore[misc]
        for row, q in enumerate(queries):
            if q.text_scores is None:
                continue
            if q.text_scores.shape != (n_items,):
                raise ConfigError(
                    f"text_scores must have one score per catalogue item ({n_items}), got {q.text_scores.shape[0]}",
                    field="text_scores",
                    fix="score every item of the fitted catalogue, in index order",
                )
            w = q.text_weight if len(folded[row]) else 1.0  # type: ignore[arg-type]  # cold: the words decide
            out[row] = (1.0 - w) * _standardise(out[row]) + w * _standardise(q.text_scores)
        return out

    def _mask(
        self, queries: list[Query], uidx: np.ndarray, folded: list[np.ndarray | None]
    ) -> tuple[sp.csr_matrix, np.ndarray | None]:
        """Per row: the items never to recommend (sparse) and the allowed items (``None`` = every item)."""
        vocab, n_items = self.data.item_vocab, self.data.n_items
        seen = self.data.matrix("binary")
        rows: list[np.ndarray] = []
        for q, u, f in zip(queries, uidx, folded, strict=True):
            parts = [vocab.known(q.exclude), vocab.known(q.disliked)]
            if q.exclude_seen:  # the fitted items, and a folded history (which holds them and the new likes)
                parts.append(seen[u].indices if u >= 0 else np.zeros(0, dtype=np.int64))
                parts.append(f if f is not None else np.zeros(0, dtype=np.int64))
            rows.append(np.unique(np.concatenate(parts)).astype(np.int64))
        indptr = np.r_[0, np.cumsum([len(r) for r in rows])]
        cols = np.concatenate(rows) if rows else np.zeros(0, dtype=np.int64)
        blocked = sp.csr_matrix((np.ones(len(cols)), cols, indptr), shape=(len(queries), n_items))
        if all(q.candidates is None for q in queries):
            return blocked, None
        allowed = np.ones((len(queries), n_items), dtype=bool)
        masks: dict[tuple[str, ...], np.ndarray] = {}
        for row, q in enumerate(queries):
            if q.candidates is not None:
                if q.candidates not in masks:
                    masks[q.candidates] = vocab.mask(q.candidates)
                allowed[row] = masks[q.candidates]
        return blocked, allowed

    def _lm_scores(
        self, retrieved: Recommendations, histories: Sequence[tuple[np.ndarray, int]], show_progress: bool = False
    ) -> np.ndarray:
        """The language model's score of each retrieved item given each row's ``(history, user index)``."""
        if self.reranker is None:
            raise ConfigError("this pipeline has no rerank stage (config.rerank is None)")
        lm_scores = np.full(retrieved.scores.shape, np.nan)
        for row in _progress(range(len(retrieved)), show_progress, "LM rerank"):
            real = retrieved.item_idx[row] >= 0
            if not real.any():
                continue
            history, user_idx = histories[row]
            if isinstance(self.reranker, EncoderReranker):
                lm_scores[row, real] = self.reranker.score(history, retrieved.item_idx[row, real])
                continue
            demos = self.fewshot.select(history, exclude_user=user_idx) if self.fewshot else []
            titles = [self.titles[i] for i in retrieved.item_idx[row, real]]
            lm_scores[row, real] = self.reranker.score(
                [self.titles[i] for i in history],
                titles,
                demos,
                history_ids=list(self.data.item_vocab.ids_of(history)),  # a CoLLM model reads the items' vectors
                candidate_ids=list(retrieved.items[row, real]),
            )
        return lm_scores

    def liked_history(self, query: Query) -> list[str]:
        """The items the language model and the explanations see for a query (external ids, oldest first).

        A known user's liked history from the fitted data, without ``query.disliked``, then ``query.liked``. An
        unknown or anonymous user starts empty.
        """
        uidx = self._user_idx(query)
        return [str(i) for i in self.data.item_vocab.ids_of(self._history_idx(self._history, query, uidx))]

    def _check_k(self, k: int) -> None:
        if k < 1:
            raise ConfigError(f"k must be >= 1, got {k}", field="k", fix="ask for at least one item")
        if k > self.config.candidates:
            raise ConfigError(
                f"k={k} is more than the {self.config.candidates} candidates the retriever hands on",
                field="k",
                fix="raise config.candidates, or ask for fewer items",
            )

    # -- explanations -------------------------------------------------------------------------------------------

    @property
    def explainer(self) -> Explainer:
        """The explain stage over the fitted data (built on first use: it indexes every catalogue title)."""
        if self._explainer is None:
            lm = self.lm if self.config.explain_with_lm else None
            self._explainer = Explainer(lm, self.data, self.config.explain)
        return self._explainer

    def explain(self, user: object, item_ids: Sequence[object]) -> list[Explanation]:
        """Grounded explanations of ``item_ids`` for ``user`` (an external user id, or a list of item ids).

        Each names the history items and attributes it rests on; text the language model writes that names
        anything outside the evidence is repaired or replaced (see :mod:`llmrec.llm.explain`).
        """
        return self.explainer.explain_many(user, item_ids)

    def stream_explanation(self, user: object, item_id: object) -> ExplanationStream:
        """One explanation as text pieces, released sentence by sentence once each passed the check."""
        return self.explainer.stream(user, item_id)


def _tagged_union(
    title: str,
    description: str,
    tag: str,
    variants: Mapping[str, Mapping[str, type[BaseModel] | JsonSchemaValue]],
    default: str,
    handler: GetJsonSchemaHandler,
) -> JsonSchemaValue:
    """A JSON schema ``oneOf`` with one object per ``tag`` value, each field typed by its real config class.

    ``variants`` maps each tag value to its fields, each a config class or a ready JSON schema.

    The specs keep plain dicts as fields (so ``RetrieverSpec(name="ease", config={...})`` stays easy to write) and
    check them against the config classes at validation; this makes the schema say the same, for editors,
    generated clients and the documentation.
    """
    one_of = []
    for value, fields in variants.items():
        properties: dict[str, Any] = {tag: {"const": value}}
        for field, model in fields.items():
            properties[field] = model if isinstance(model, dict) else handler(model.__pydantic_core_schema__)
        one_of.append(
            {
                "type": "object",
                "title": f"{title} ({value})",
                "properties": properties,
                "required": [] if value == default else [tag],
                "additionalProperties": False,
            }
        )
    return {"title": title, "description": description.strip().splitlines()[0], "oneOf": one_of}


def saved_pipeline_info(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The ``pipeline.json`` of a saved pipeline (config, retriever, LM reference, dataset, fitted_at, metadata).

    Reads only that file (cheap): enough to configure a server before the pipeline itself is loaded.

    Raises:
        ArtifactError: The folder is missing or not a saved pipeline, or was written by a newer llmrec.

    """
    return read_meta(Path(path).expanduser() / PIPELINE_FILE, PIPELINE_KIND)


def item_titles(data: Dataset) -> list[str]:
    """Every item's short display title by index (``item <id>`` when the catalogue has no title)."""
    titles = data.items["title"].tolist() if "title" in data.items else [None] * data.n_items
    out = []
    for ext_id, title in zip(data.item_vocab.ids, titles, strict=True):
        text = short_title(title) if isinstance(title, str) else ""
        out.append(text or f"item {ext_id}")
    return out


def _histories(data: Dataset, min_value: float | None) -> list[np.ndarray]:
    """Per user: item indices in time order; with ``min_value``, only those valued that or more (if any)."""
    order = np.argsort(data.user_idx, kind="stable")  # interactions are time-sorted; stable keeps that order
    users, items, values = data.user_idx[order], data.item_idx[order], data.values[order]
    starts = np.searchsorted(users, np.arange(data.n_users + 1))
    out = []
    for u in range(data.n_users):
        own, vals = items[starts[u] : starts[u + 1]], values[starts[u] : starts[u + 1]]
        if min_value is not None:
            liked = own[np.nan_to_num(vals, nan=-np.inf) >= min_value]
            own = liked if len(liked) else own
        out.append(own.astype(np.int64))
    return out


def _standardise(scores: np.ndarray) -> np.ndarray:
    """Zero-mean unit-variance scores over the finite entries (-inf and NaN stay at the bottom)."""
    finite = np.isfinite(scores)
    if not finite.any():
        return scores
    mean, std = scores[finite].mean(), scores[finite].std()
    return np.where(finite, (scores - mean) / (std if std > 0 else 1.0), -np.inf)


def _progress(rows: range, show: bool, label: str) -> Iterator[int]:
    """Iterate ``rows`` with a rich progress bar when ``show``."""
    if not show:
        yield from rows
        return
    from rich.progress import track

    yield from track(rows, description=label)
