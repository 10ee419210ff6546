"""What one HTTP API instance serves and how: the dataset, the default pipeline, the choices a request may make.

Deployment secrets and limits (admin key, request size) come from :class:`~llmrec.config.Settings` by default
(``LLMREC_ADMIN_KEY``, ``LLMREC_MAX_REQUEST_BYTES``); everything about recommendations is a pipeline setting.
"""

from __future__ import annotations

import os
from typing import Any, Self

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, model_validator

from llmrec.chat.recommender import ChatConfig
from llmrec.config import Settings, get_settings
from llmrec.errors import ArtifactError
from llmrec.feedback import DEFAULT_RATING_RANGE
from llmrec.llm.rerank import RerankConfig
from llmrec.pipeline import PipelineConfig, saved_pipeline_info

__all__ = ["ServeConfig"]


def _default_pipeline() -> PipelineConfig:
    # Retriever only, template explanations: answers in milliseconds; a request may still ask for the LM rerank.
    return PipelineConfig(rerank=None, explain_with_lm=False)


class ServeConfig(BaseModel):
    """Settings of one API instance.

    Attributes:
        dataset: The store dataset served (``movielens-small`` is ingested from the bundled copy when missing).
        pipeline: The default pipeline. Its retriever is used when a request names none; its other stages
            (candidates, LM, explain settings) apply to every pipeline the service builds.
        retrievers: Retriever names a request may choose (each is fitted on first use, so the list bounds the
            memory and time a client can make the server spend).
        rerank: The LM rerank stage used when a request asks for it (``rerank=true``) and the default pipeline
            has none.
        chat: Settings of chat sessions (``/v1/chat``); the LM rerank is off by default, so a turn answers in
            milliseconds on a CPU.
        chat_text_search: Let chat descriptions ("a heist set in Europe") steer through the text encoder (the
            first chat turn embeds the catalogue; vectors are cached in the store).
        max_k: Longest list a request may ask for without rerank (with rerank: ``pipeline.candidates``).
        rating_range: Inclusive range of a ``rating`` feedback value (the dataset's scale), for the feedback
            route and chat feedback alike.
        admin_key: The admin key; ``None`` disables admin access (only user keys work).
        max_request_bytes: Largest accepted request body.
        seed: Seed of every fit.
        threads: Worker threads for blocking requests (database reads, fits, model calls); ``None``: four per CPU
            core, at least 8. Sized to the machine rather than anyio's fixed 40, so a burst of slow requests cannot
            start dozens of model computations that fight over the cores.
        rate_limit_per_minute: Requests a key (or, without a key, a client address) may make per minute, with
            bursts up to ``rate_limit_burst``; more answer 429 with ``Retry-After``. ``None`` (default): no limit.
        rate_limit_burst: Requests a key may make at once before the per-minute rate applies (``None``: a tenth
            of the per-minute rate, at least 1).
        model: A saved pipeline folder (``llmrec train --out DIR``, :meth:`~llmrec.pipeline.Pipeline.save`): the
            default retriever is loaded from it instead of fitted, and the dataset is the one it was fitted on
            until the next refit. ``pipeline.retriever`` must be the saved one (:meth:`for_model` sees to it).
        artifacts: The artifact folder of published model versions, shared by every worker serving the dataset
            (one folder on one machine; a shared folder across nodes). A refit then saves its pipelines there as a
            new version and registers it in the store; every worker polls the store and switches to the newest
            version by loading it (no refit), and a worker starting later loads it too. ``None``: pipelines live
            in this process only (one worker).
        version_poll_s: Least seconds between two checks of the store for a newer version (a check is one indexed
            read made by a request; loading the version runs in the background, requests keep the old one).
        keep_versions: Published versions kept (older ones, and any made before a user's deletion, are removed
            from the store and the folder after each publish).
        max_inflight: Requests at work at once (``None``: twice the thread pool, at least 16); one that cannot
            start within ``queue_timeout_s`` is answered 503 with ``Retry-After`` instead of queueing unbounded.
        queue_timeout_s: Longest wait for a free slot.
        request_timeout_s: Longest time to the start of an answer; later, the client gets a 504 (the work runs on
            and keeps its slot until it ends, see :mod:`llmrec.serve.admission`). Five minutes by default: the
            first chat after a start or refit builds the text index of the whole catalogue, which takes minutes
            on a small CPU.

    """

    model_config = ConfigDict(extra="forbid")

    dataset: str = "movielens-small"
    pipeline: PipelineConfig = Field(default_factory=_default_pipeline)
    retrievers: tuple[str, ...] = ("popular", "itemknn", "ease", "als", "bpr")
    rerank: RerankConfig = Field(default_factory=RerankConfig)
    chat: ChatConfig = Field(default_factory=lambda: ChatConfig(rerank=False))
    chat_text_search: bool = True
    max_k: int = Field(default=100, ge=1, le=1000)
    rating_range: tuple[float, float] = DEFAULT_RATING_RANGE
    admin_key: SecretStr | None = None
    max_request_bytes: int = Field(default=1_048_576, ge=1)
    seed: int = 42
    threads: int | None = Field(default=None, ge=1, le=1024)
    rate_limit_per_minute: int | None = Field(default=None, ge=1)
    rate_limit_burst: int | None = Field(default=None, ge=1)
    model: str | None = None
    artifacts: str | None = None
    version_poll_s: float = Field(default=1.0, ge=0.0, le=3600.0)
    keep_versions: int = Field(default=3, ge=1, le=1000)

    max_inflight: int | None = Field(default=None, ge=1, le=100_000)
    queue_timeout_s: float = Field(default=10.0, gt=0.0, le=3600.0)
    request_timeout_s: float = Field(default=300.0, gt=0.0, le=86_400.0)

    def inflight_limit(self) -> int:
        """Requests at work at once (``max_inflight``, or twice the thread pool, at least 16)."""
        return self.max_inflight or max(16, 2 * self.worker_threads())

    def worker_threads(self) -> int:
        """The size of the thread pool that runs blocking requests (``threads``, or four per core, at least 8)."""
        return self.threads or max(8, 4 * (os.cpu_count() or 1))

    @model_validator(mode="after")
    def _default_retriever_allowed(self) -> Self:
        if self.pipeline.retriever.name not in self.retrievers:
            self.retrievers = (self.pipeline.retriever.name, *self.retrievers)
        low, high = self.rating_range
        if low > high:
            raise ValueError(f"rating_range must be (low, high) with low <= high, got {self.rating_range}")
        return self

    @classmethod
    def from_settings(cls, settings: Settings | None = None, **overrides: object) -> ServeConfig:
        """A config taking the admin key and request size limit from ``settings`` (the process's by default)."""
        settings = settings or get_settings()
        values: dict[str, object] = {"admin_key": settings.admin_key, "max_request_bytes": settings.max_request_bytes}
        values.update(overrides)
        return cls.model_validate(values)

    @classmethod
    def for_model(cls, path: str | os.PathLike[str], settings: Settings | None = None, **overrides: Any) -> ServeConfig:
        """A config that serves the pipeline saved in ``path`` (its dataset, retriever and language model).

        Reads only the folder's ``pipeline.json``; the service loads the retriever itself on first use. The
        served pipeline keeps the API's defaults (no LM rerank unless asked for, template explanations); other
        settings can be given as ``overrides`` (``pipeline`` replaces the saved stage settings, not its retriever).

        Raises:
            ArtifactError: ``path`` is not a saved pipeline (missing, corrupt, or from a newer llmrec).

        """
        info = saved_pipeline_info(path)
        try:
            saved = PipelineConfig.model_validate(info.get("config", {}))
        except ValidationError as exc:
            raise ArtifactError(f"{path}: invalid saved pipeline config ({exc})") from exc
        pipeline = overrides.pop("pipeline", None)
        if pipeline is None:
            pipeline = saved.model_copy(update={"rerank": None, "explain_with_lm": False})
        else:
            pipeline = PipelineConfig.model_validate(pipeline).model_copy(update={"retriever": saved.retriever})
        overrides.setdefault("dataset", info.get("dataset") or "movielens-small")
        return cls.from_settings(settings, pipeline=pipeline, model=str(path), **overrides)
