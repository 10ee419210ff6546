"""The :class:`Explainer` facade and the grounding metrics over finished explanations.

:class:`Explainer` ties one dataset's catalogue, the users' histories, evidence retrieval and (optionally) a
language model together, which is what the pipeline, the chat recommender and the API use.
:func:`grounding_rate` and :func:`raw_grounding_rate` re-run or read the check over many explanations for the
benchmarks. Both sit on top of the package, so nothing else here imports this module.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

import numpy as np

from llmrec.catalogue import Catalogue
from llmrec.llm.base import LanguageModel
from llmrec.llm.explain.check import CheckResult, Explanation, check
from llmrec.llm.explain.config import _DEFAULT_CONFIG, ExplainConfig
from llmrec.llm.explain.evidence import Evidence, History, build_evidence
from llmrec.llm.explain.generate import ExplanationStream, stream_explanation

if TYPE_CHECKING:
    from llmrec.data.dataset import Dataset


class Explainer:
    """Grounded explanations of recommendations for the users and items of one dataset.

    Args:
        lm: Any :class:`~llmrec.llm.base.LanguageModel` (local or OpenAI-compatible HTTP) to phrase the
            evidence; ``None`` gives template explanations only (fast, no model).
        data: The dataset: its catalogue is the evidence store and its interactions are the users' histories
            (pass the training split when evaluating, so no explanation cites a test item).
        config: Settings; :class:`ExplainConfig` defaults when ``None``.
        item_vectors: Optional item embeddings ``(n_items, d)`` to link similar history items.
    """

    def __init__(
        self,
        lm: LanguageModel | None,
        data: Dataset,
        config: ExplainConfig | None = None,
        *,
        item_vectors: np.ndarray | None = None,
    ) -> None:
        self.lm = lm
        self.data = data
        self.config = config or _DEFAULT_CONFIG
        self.item_vectors = item_vectors
        self._catalogue: Catalogue | None = None

    @property
    def catalogue(self) -> Catalogue:
        """The catalogue (built on first use, shared with other explainers of the same items table)."""
        if self._catalogue is None:
            self._catalogue = Catalogue.of(self.data, self.config)
        return self._catalogue

    def history(self, user: object) -> History:
        """The history meant by ``user``: a :class:`History`, a sequence of external item ids, or a user id.

        Raises:
            UnknownIdError: The user or an item id is unknown.
        """
        if isinstance(user, History):
            return user
        if isinstance(user, Sequence | np.ndarray) and not isinstance(user, str | bytes):
            return History.from_ids(self.data, list(user))
        return History.of_user(self.data, user)

    def evidence(self, user: object, item_id: object) -> Evidence:
        """The evidence for explaining item ``item_id`` to ``user`` (see :meth:`history` for ``user``).

        Raises:
            UnknownIdError: The user or an item id is unknown.
        """
        candidate = int(self.data.item_vocab.index([item_id])[0])
        return build_evidence(
            self.history(user),
            candidate,
            self.data,
            config=self.config,
            item_vectors=self.item_vectors,
            catalogue=self.catalogue,
        )

    def explain(self, user: object, item_id: object) -> Explanation:
        """A grounded explanation of why ``item_id`` suits ``user`` (a user id, item ids, or a History).

        Raises:
            UnknownIdError: The user or an item id is unknown.
        """
        return self.stream(user, item_id).explanation

    def explain_many(self, user: object, item_ids: Iterable[object]) -> list[Explanation]:
        """Explanations of several items for one user (the history is looked up once).

        Raises:
            UnknownIdError: The user or an item id is unknown.
        """
        history = self.history(user)
        return [self.explain(history, item) for item in item_ids]

    def stream(self, user: object, item_id: object) -> ExplanationStream:
        """The explanation as checked sentences, released as the model writes them (see stream_explanation).

        Raises:
            UnknownIdError: The user or an item id is unknown.
        """
        evidence = self.evidence(user, item_id)
        return stream_explanation(self.lm, evidence, self.catalogue, config=self.config)

    def check(self, text: str, evidence: Evidence) -> CheckResult:
        """:func:`check` against this explainer's catalogue and config."""
        return check(text, evidence, self.catalogue, config=self.config)


def grounding_rate(explanations: Sequence[Explanation], catalogue: Catalogue) -> float:
    """Share of explanations whose final text passes the faithfulness check against its own evidence.

    The check is run again here (not read from ``grounded``), so a benchmark measures it independently.
    Explanations without evidence count as not grounded. ``nan`` for an empty list.
    """
    if not explanations:
        return float("nan")
    passed = sum(1 for e in explanations if e.evidence is not None and check(e.text, e.evidence, catalogue).ok)
    return passed / len(explanations)


def raw_grounding_rate(explanations: Sequence[Explanation]) -> float:
    """Share of model-written explanations whose raw model text passed the check without repair.

    Template-only explanations (no model) are not counted; ``nan`` when there are none.
    """
    raw = [e.raw_grounded for e in explanations if e.raw_grounded is not None]
    return sum(raw) / len(raw) if raw else float("nan")
