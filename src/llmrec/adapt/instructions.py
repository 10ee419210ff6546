"""Instruction data from interactions: P5-style multi-task prompts with the reranker's own prompt format.

Every example is a chat prompt (system + user messages) and the assistant reply the model should learn, drawn from
the *training* interactions of a :class:`~llmrec.data.splits.Split` only. Five tasks, several phrasings
(templates) each:

============  ===============================================================================================
task          prompt -> target
============  ===============================================================================================
``next``      the user's liked items so far -> the title of the next item they liked
``direct``    the history and a list of candidates (the liked item + unseen ones) -> the liked candidate
``yesno``     the history and an item the user rated -> "Yes" if the rating is above 3, else "No" (TALLRec)
``rating``    the history with stars -> the stars the user gave the item
``explain``   the history and an item's facts (genres, user tags) -> a one-sentence reason built from them
============  ===============================================================================================

One template of ``next``, ``direct`` and ``yesno`` is *served*: it is the exact prompt and reply format
:class:`~llmrec.llm.rerank.LMReranker` scores at inference (``loglik``, ``listwise`` and ``yesno``), built by the
reranker's own prompt methods, so an adapter tuned on it improves the reranker the pipeline serves. Other
templates rephrase the task (P5's multi-template training); those marked ``held_out`` never appear in training
output and exist to measure zero-shot transfer to unseen phrasings.

Leakage: the builder takes the split, not a bare dataset, and reads ``split.fit_data(stage)`` (train only for the
default ``stage="valid"``); any other data handed in is checked against the split's validation and test targets
and refused with :class:`~llmrec.errors.LeakageError`. Each example's history holds only interactions before
its target, in time order. User-written text (tags, profiles) is scrubbed of personal data before it reaches a
prompt. With ``item_slots`` the served ``yesno`` template marks every shown item title with
:data:`~llmrec.llm.collm.ITEM_SLOT` and the example lists those items' ids (``slot_items``): the training data of
a CoLLM adapter, in the exact format the reranker sends a CoLLM model. Tags in MovieLens' items table are
aggregated over all time (they carry no per-tag time there), so the ``explain`` task sees item facts as the
catalogue has them now, like the explain stage at serving time.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from llmrec.data.dataset import Dataset
from llmrec.data.splits import Split, Stage
from llmrec.errors import ConfigError, DataProblem, DataValidationError
from llmrec.llm.base import LogLik, Message, Prompt
from llmrec.llm.collm import ITEM_SLOT
from llmrec.llm.prompts import DATA_NOTICE, data_block, sanitize, short_title
from llmrec.llm.rerank import LETTERS, LMReranker, RerankConfig
from llmrec.text.pii import scrub

__all__ = [
    "TASKS",
    "TEMPLATES",
    "InstructionConfig",
    "InstructionExample",
    "Task",
    "Template",
    "build_eval_examples",
    "build_instructions",
    "read_jsonl",
    "write_jsonl",
]

Task = Literal["next", "direct", "yesno", "rating", "explain"]
TASKS: tuple[Task, ...] = ("next", "direct", "yesno", "rating", "explain")


class InstructionConfig(BaseModel):
    """What instruction data to build.

    Attributes:
        tasks: Which tasks to draw examples from (examples are spread evenly over them).
        examples: Total number of examples (fewer when the data has fewer eligible events).
        held_out: ``False``: only training templates; ``True``: only the held-out templates (zero-shot tests).
        templates: Only these template ids (e.g. ``("yesno-0",)``: the served format alone); ``None`` = every
            template of the set ``held_out`` picks.
        history: Most recent items shown in a prompt's history (the reranker's ``history``).
        min_history: Events a user needs before a target for it to become an example.
        candidates: Candidates listed by the ``direct`` task (the liked item + unseen ones), at most 26.
        liked_min_value: Interactions with ``value >= liked_min_value`` are "liked": they make up histories and
            ``next``/``direct``/``explain`` targets (the pipeline's ``liked_min_value``).
        label_threshold: ``yesno`` label: 1 when ``value > label_threshold`` (TALLRec's rating > 3).
        since: Only targets with a timestamp strictly after this (seconds) are drawn: for incremental training on
            what arrived since the last run. Histories may still reach back before it.
        item_noun: What items are called ("movie", "book", ...); the reranker's ``item_noun``.
        item_slots: Mark item titles for CoLLM soft tokens in the served ``yesno`` template (``yesno-0``): each
            shown history title and the target title are followed by :data:`~llmrec.llm.collm.ITEM_SLOT`, and
            :attr:`InstructionExample.slot_items` names the items. Other templates stay text only.
        seed: Seed of every random draw: the same split, config and seed give the same examples.

    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    tasks: tuple[Task, ...] = TASKS
    examples: int = Field(default=1000, ge=1, le=1_000_000)
    held_out: bool = False
    templates: tuple[str, ...] | None = None
    history: int = Field(default=10, ge=1, le=100)
    min_history: int = Field(default=2, ge=1)
    candidates: int = Field(default=10, ge=2, le=len(LETTERS))
    liked_min_value: float = 4.0
    label_threshold: float = 3.0
    since: int | None = None
    item_noun: str = Field(default="movie", min_length=1, max_length=30)
    item_slots: bool = False
    seed: int = 0


@dataclass(frozen=True)
class InstructionExample:
    """One training example: chat messages and the assistant reply to learn.

    Attributes:
        messages: The prompt (system and user turns), in the reranker's chat format.
        target: The reply (scored, at inference, followed by the end-of-turn token).
        task: One of :data:`TASKS`.
        template: Id of the template that phrased it (e.g. ``"yesno-0"``).
        user_id: External id of the user the example is about.
        item_id: External id of the target event's item.
        timestamp: Time of the target event (seconds); histories hold only earlier events.
        label: ``yesno``: 1 (liked) or 0; ``rating``: the stars; ``direct``: the target's position in the list;
            ``None`` otherwise.
        slot_items: External ids of the items whose :data:`~llmrec.llm.collm.ITEM_SLOT` markers the messages and
            then the target hold, in order (empty unless built with ``item_slots``).

    """

    messages: tuple[Message, ...]
    target: str
    task: str
    template: str
    user_id: str
    item_id: str
    timestamp: int
    label: float | None = None
    slot_items: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (the JSONL line; ``slot_items`` only when there are any)."""
        out: dict[str, Any] = {
            "messages": [dict(m) for m in self.messages],
            "target": self.target,
            "task": self.task,
            "template": self.template,
            "user_id": self.user_id,
            "item_id": self.item_id,
            "timestamp": self.timestamp,
            "label": self.label,
        }
        if self.slot_items:
            out["slot_items"] = list(self.slot_items)
        return out

    @classmethod
    def from_dict(cls, row: dict[str, Any]) -> InstructionExample:
        """The example a :meth:`to_dict` dict describes.

        Raises:
            ValueError: A field is missing or has the wrong type (the message names it).
        """
        for name, kind in (("messages", list), ("target", str), ("task", str), ("template", str)):
            if not isinstance(row.get(name), kind):
                raise ValueError(f"field '{name}' must be a {kind.__name__}")
        messages: list[Message] = []
        for m in row["messages"]:
            if not isinstance(m, dict) or m.get("role") not in ("system", "user", "assistant"):
                raise ValueError("field 'messages' must hold {role: system|user|assistant, content: str} objects")
            if not isinstance(m.get("content"), str):
                raise ValueError("field 'messages' has a message without string content")
            messages.append(Message(role=m["role"], content=m["content"]))
        label = row.get("label")
        if label is not None and not isinstance(label, int | float):
            raise ValueError("field 'label' must be a number or null")
        slot_items = row.get("slot_items", [])
        if not isinstance(slot_items, list):
            raise ValueError("field 'slot_items' must be a list of item ids")
        return cls(
            messages=tuple(messages),
            target=row["target"],
            task=row["task"],
            template=row["template"],
            user_id=str(row.get("user_id", "")),
            item_id=str(row.get("item_id", "")),
            timestamp=int(row.get("timestamp", 0)),
            label=None if label is None else float(label),
            slot_items=tuple(str(i) for i in slot_items),
        )


# ----------------------------------------------------------------------------------------------------------------
# Templates
# ----------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Case:
    """What a template needs to phrase one example (titles already cleaned)."""

    history: list[str]  # liked titles before the target, oldest first
    history_ids: list[str]  # their external item ids
    item_id: str  # the target item's external id
    rated: list[tuple[str, float]]  # (title, stars) before the target, oldest first
    title: str  # the target item's title
    value: float  # the target event's value
    candidates: list[str]  # direct: the listed candidates (target included)
    answer: int  # direct: the target's position in candidates
    facts: list[str]  # explain: the item's fact lines
    reason: str  # explain: the reply built from the facts
    profile: str  # scrubbed user profile ("" when none)


@dataclass(frozen=True)
class Template:
    """One phrasing of a task.

    Attributes:
        id: ``"<task>-<n>"``.
        task: The task it phrases.
        held_out: Never used for training output; for zero-shot transfer tests.
        served: The exact prompt format the reranker scores at inference.
        render: ``(case, builder) -> (messages, target)``.

    """

    id: str
    task: Task
    held_out: bool
    served: bool
    render: Callable[[_Case, _Builder], tuple[list[Message], str]] = field(repr=False)


class _NoLM:
    """Stands in for a language model where only the reranker's prompt methods are used (they never call it)."""

    model_id = "none"

    def loglik(self, prompt: Prompt, continuations: Sequence[str]) -> LogLik:
        raise ConfigError("the instruction builder uses the reranker's prompts only; it has no language model")

    def generate(self, prompt: Prompt, **kwargs: Any) -> str:
        raise ConfigError("the instruction builder uses the reranker's prompts only; it has no language model")

    def stream(self, prompt: Prompt, **kwargs: Any) -> Iterator[str]:
        raise ConfigError("the instruction builder uses the reranker's prompts only; it has no language model")


def _yes_no(case: _Case, threshold: float) -> str:
    return "Yes" if case.value > threshold else "No"


def _ask_history(b: _Builder, case: _Case) -> str:
    shown = [f"- {t}" for t in case.history[-b.config.history :]] or ["- (nothing yet)"]
    about = f"About the user: {case.profile}\n" if case.profile else ""
    return f"{about}The user enjoyed these {b.noun}s, most recent last:\n{data_block('history', shown)}\n"


def _system(b: _Builder) -> Message:
    return {"role": "system", "content": f"You recommend {b.noun}s. {DATA_NOTICE}"}


def _next_served(case: _Case, b: _Builder) -> tuple[list[Message], str]:
    return b.reranker("loglik").prompt(case.history), case.title


def _next_1(case: _Case, b: _Builder) -> tuple[list[Message], str]:
    question = f"Which {b.noun} will the user watch next? Reply with the title only."
    return [_system(b), {"role": "user", "content": _ask_history(b, case) + question}], case.title


def _next_2(case: _Case, b: _Builder) -> tuple[list[Message], str]:
    question = f"Predict the user's next favourite {b.noun}. Give just its title."
    return [_system(b), {"role": "user", "content": _ask_history(b, case) + question}], case.title


def _direct_served(case: _Case, b: _Builder) -> tuple[list[Message], str]:
    return b.reranker("listwise").listwise_prompt(case.history, case.candidates), LETTERS[case.answer]


def _direct_1(case: _Case, b: _Builder) -> tuple[list[Message], str]:
    listed = [f"- {c}" for c in case.candidates]
    question = (
        f"Choose the {b.noun} from the candidates that the user will enjoy.\n{data_block('candidates', listed)}\n"
        "Reply with the title only."
    )
    return [_system(b), {"role": "user", "content": _ask_history(b, case) + question}], case.title


def _direct_2(case: _Case, b: _Builder) -> tuple[list[Message], str]:
    listed = [f"{LETTERS[i]}) {c}" for i, c in enumerate(case.candidates)]
    question = f"One of these {b.noun}s is a good pick for the user:\n{data_block('candidates', listed)}\nWhich letter?"
    return [_system(b), {"role": "user", "content": _ask_history(b, case) + question}], LETTERS[case.answer]


def _yesno_served(case: _Case, b: _Builder) -> tuple[list[Message], str]:
    slot = ITEM_SLOT if b.config.item_slots else ""
    messages = b.reranker("yesno").prompt(case.history, slot=slot)
    return messages, f"{case.title}{slot} - {_yes_no(case, b.config.label_threshold)}"


def _yesno_1(case: _Case, b: _Builder) -> tuple[list[Message], str]:
    question = f"Will the user like this {b.noun}?\n{data_block('item', [case.title])}\nAnswer Yes or No."
    content = _ask_history(b, case) + question
    return [_system(b), {"role": "user", "content": content}], _yes_no(case, b.config.label_threshold)


def _yesno_2(case: _Case, b: _Builder) -> tuple[list[Message], str]:
    question = f"Given these tastes, would the user enjoy the {b.noun} below?\n{data_block('item', [case.title])}\n"
    content = _ask_history(b, case) + question + "Reply Yes or No."
    return [_system(b), {"role": "user", "content": content}], _yes_no(case, b.config.label_threshold)


def _rated_block(b: _Builder, case: _Case) -> str:
    shown = [f"- {t}: {v:.1f}" for t, v in case.rated[-b.config.history :]] or ["- (nothing yet)"]
    about = f"About the user: {case.profile}\n" if case.profile else ""
    return f"{about}The user's ratings (stars out of 5), most recent last:\n{data_block('history', shown)}\n"


def _rating_0(case: _Case, b: _Builder) -> tuple[list[Message], str]:
    question = (
        f"How many stars will the user give this {b.noun}?\n{data_block('item', [case.title])}\n"
        "Reply with a number from 0.5 to 5."
    )
    return [_system(b), {"role": "user", "content": _rated_block(b, case) + question}], f"{case.value:.1f}"


def _rating_1(case: _Case, b: _Builder) -> tuple[list[Message], str]:
    question = f"Predict the user's star rating of:\n{data_block('item', [case.title])}\nAnswer with the number only."
    return [_system(b), {"role": "user", "content": _rated_block(b, case) + question}], f"{case.value:.1f}"


def _explain_0(case: _Case, b: _Builder) -> tuple[list[Message], str]:
    question = (
        f"Facts about a {b.noun} we recommend:\n{data_block('evidence', case.facts)}\n"
        "In one sentence, using only these facts, say why the user will enjoy it."
    )
    return [_system(b), {"role": "user", "content": _ask_history(b, case) + question}], case.reason


def _explain_1(case: _Case, b: _Builder) -> tuple[list[Message], str]:
    question = f"Explain briefly, from the evidence only, why this {b.noun} suits the user:\n"
    content = _ask_history(b, case) + question + data_block("evidence", case.facts)
    return [_system(b), {"role": "user", "content": content}], case.reason


TEMPLATES: tuple[Template, ...] = (
    Template("next-0", "next", held_out=False, served=True, render=_next_served),
    Template("next-1", "next", held_out=False, served=False, render=_next_1),
    Template("next-2", "next", held_out=True, served=False, render=_next_2),
    Template("direct-0", "direct", held_out=False, served=True, render=_direct_served),
    Template("direct-1", "direct", held_out=False, served=False, render=_direct_1),
    Template("direct-2", "direct", held_out=True, served=False, render=_direct_2),
    Template("yesno-0", "yesno", held_out=False, served=True, render=_yesno_served),
    Template("yesno-1", "yesno", held_out=False, served=False, render=_yesno_1),
    Template("yesno-2", "yesno", held_out=True, served=False, render=_yesno_2),
    Template("rating-0", "rating", held_out=False, served=False, render=_rating_0),
    Template("rating-1", "rating", held_out=True, served=False, render=_rating_1),
    Template("explain-0", "explain", held_out=False, served=False, render=_explain_0),
    Template("explain-1", "explain", held_out=True, served=False, render=_explain_1),
)
"""Every template; ``held_out`` ones are only built with ``InstructionConfig(held_out=True)``."""


# ----------------------------------------------------------------------------------------------------------------
# The builder
# ----------------------------------------------------------------------------------------------------------------


def _split_field(value: object) -> list[str]:
    if not isinstance(value, str) or not value.strip():
        return []
    return [part.strip() for part in value.split("|") if part.strip()]


class _Builder:
    """Per-user time-ordered events of the fit data, item texts, and the draws (one build call)."""

    def __init__(self, data: Dataset, config: InstructionConfig) -> None:
        self.config = config
        self.noun = config.item_noun
        self.data = data
        self._rerankers: dict[str, LMReranker] = {}
        items = data.items
        titles = items["title"].tolist() if "title" in items else [None] * data.n_items
        self.titles = [
            (short_title(t) if isinstance(t, str) else "") or f"item {ext}"
            for ext, t in zip(data.item_vocab.ids, titles, strict=True)
        ]
        self.genres = [_split_field(g) for g in (items["genres"] if "genres" in items else [None] * data.n_items)]
        # User tags are user-written text: scrubbed of personal data, then sanitized like any data-block text.
        self.tags = [
            [sanitize(scrub(t).text, 40) for t in _split_field(raw)][:5]
            for raw in (items["tags"] if "tags" in items else [None] * data.n_items)
        ]
        profiles = data.users["profile"].tolist() if "profile" in data.users else [""] * data.n_users
        self.profiles = [sanitize(scrub(p).text, 200) if isinstance(p, str) and p.strip() else "" for p in profiles]
        order = np.argsort(data.user_idx, kind="stable")  # data is time-sorted; stable keeps time order per user
        self.users, self.items = data.user_idx[order], data.item_idx[order]
        self.values, self.times = data.values[order], data.timestamps[order]
        self.starts = np.searchsorted(self.users, np.arange(data.n_users + 1))
        self.liked = np.nan_to_num(self.values, nan=-np.inf) >= config.liked_min_value
        self.catalogue = np.unique(data.item_idx)  # items anybody interacted with: the negatives' pool

    def reranker(self, method: Literal["loglik", "yesno", "listwise"]) -> LMReranker:
        if method not in self._rerankers:
            config = RerankConfig(method=method, history=self.config.history, item_noun=self.noun)
            self._rerankers[method] = LMReranker(_NoLM(), config)
        return self._rerankers[method]

    def eligible(self, task: Task) -> np.ndarray:
        """Positions (into the per-user arrays) of the events that can be ``task``'s target."""
        n = len(self.users)
        local = np.arange(n) - self.starts[self.users]  # events of the same user before this one
        liked_before = np.zeros(n, dtype=np.int64)
        for u in np.unique(self.users):
            s, e = self.starts[u], self.starts[u + 1]
            liked_before[s:e] = np.concatenate([[0], np.cumsum(self.liked[s:e])[:-1]])
        need = self.config.min_history
        if task in ("next", "direct"):
            ok = self.liked & (liked_before >= need)
        elif task == "yesno":
            ok = np.isfinite(self.values) & (liked_before >= need)
        elif task == "rating":
            ok = np.isfinite(self.values) & (local >= need)
        else:
            has_facts = np.array([bool(self.genres[i] or self.tags[i]) for i in self.items], dtype=bool)
            ok = self.liked & (liked_before >= need) & has_facts
        if self.config.since is not None:
            ok &= self.times > self.config.since
        return np.flatnonzero(ok)

    def case(self, pos: int, task: Task, rng: np.random.Generator) -> _Case:
        """The case of the event at ``pos``: its history is the same user's events before it."""
        u = int(self.users[pos])
        return self.case_for(u, pos, int(self.items[pos]), float(self.values[pos]), task, rng)

    def case_for(self, u: int, stop: int, target: int, value: float, task: Task, rng: np.random.Generator) -> _Case:
        """The case of user ``u`` and item ``target``, with the user's events before position ``stop`` as history."""
        s = int(self.starts[u])
        before = slice(s, stop)
        items, liked = self.items[before], self.liked[before]
        history = [self.titles[i] for i in items[liked]]
        history_ids = [self.data.item_vocab.id(int(i)) for i in items[liked]]
        rated = [(self.titles[i], float(v)) for i, v in zip(items, self.values[before], strict=True)]
        title = self.titles[target]
        candidates: list[str] = []
        answer = 0
        if task == "direct":
            seen = {*self.items[s : self.starts[u + 1]].tolist(), target}  # the user's own items never negatives
            pool = self.catalogue[~np.isin(self.catalogue, list(seen))]
            n_neg = min(self.config.candidates - 1, len(pool))
            negatives = rng.choice(pool, size=n_neg, replace=False) if n_neg else np.zeros(0, dtype=np.int64)
            listed = [target, *(int(i) for i in negatives)]
            order = rng.permutation(len(listed))
            candidates = [self.titles[listed[j]] for j in order]
            answer = int(np.flatnonzero(order == 0)[0])
        facts: list[str] = []
        reason = ""
        if task == "explain":
            genres, tags = self.genres[target], self.tags[target]
            facts = [f"title: {title}"]
            if genres:
                facts.append("genres: " + ", ".join(genres))
            if tags:
                facts.append("tags: " + ", ".join(tags))
            reason = self._reason(title, genres, tags, items[liked])
        return _Case(
            history=history,
            history_ids=history_ids,
            item_id=self.data.item_vocab.id(target),
            rated=rated,
            title=title,
            value=value,
            candidates=candidates,
            answer=answer,
            facts=facts,
            reason=reason,
            profile=self.profiles[u],
        )

    def _reason(self, title: str, genres: list[str], tags: list[str], history: np.ndarray) -> str:
        """A one-sentence reason from the item's facts, tied to the most recent history item sharing a genre."""
        parts = []
        if genres:
            parts.append(f"it is {' and '.join(g.lower() for g in genres[:2])}")
        if tags:
            parts.append(f"people describe it as {', '.join(tags[:2])}")
        reason = f"{title} suits the user because {' and '.join(parts)}"
        for i in history[::-1][: self.config.history]:
            if genres and set(self.genres[int(i)]) & set(genres):
                return f"{reason}, like {self.titles[int(i)]}, which they enjoyed."
        return reason + "."


def _check_no_leak(split: Split, data: Dataset, stage: Stage) -> None:
    """Refuse ``data`` holding a ``stage`` target (or, before test, a test target) or anything after one."""
    stages: tuple[Stage, ...] = ("valid", "test") if stage == "valid" else ("test",)
    for s in stages:
        split.check(data, s)


def build_instructions(
    split: Split,
    config: InstructionConfig | None = None,
    *,
    stage: Stage = "valid",
    data: Dataset | None = None,
) -> list[InstructionExample]:
    """Instruction examples from the interactions a model may learn from before ``stage``.

    Args:
        split: The split the tuned model will be evaluated on (it proves which events are held out).
        config: Tasks, size, templates and seed.
        stage: ``"valid"`` (default): learn from ``split.train`` only; ``"test"``: from train + validation (the
            final model, evaluated on test).
        data: Interactions to build from instead of ``split.fit_data(stage)`` (e.g. new feedback that arrived
            since the last run); they must share the split's vocabularies and are checked against its targets.

    Returns:
        Examples in a seeded random order.

    Raises:
        LeakageError: ``data`` contains a validation or test target of ``split`` (or, for ``stage="test"``, a test
            target), or events after one: the tuned model would have seen what it is scored on.
        ConfigError: A task name is unknown, ``data`` does not come from the split's dataset, or no event is
            eligible (the message says which setting to lower).
    """
    config = config or InstructionConfig()
    unknown = [t for t in config.tasks if t not in TASKS]
    if unknown or not config.tasks:
        raise ConfigError(f"tasks must be among {', '.join(TASKS)}, got {list(config.tasks)}")
    ids = {t.id for t in TEMPLATES}
    if config.templates is not None and not set(config.templates) <= ids:
        raise ConfigError(f"unknown template(s) {sorted(set(config.templates) - ids)}; known: {', '.join(sorted(ids))}")
    if data is None:
        data = split.fit_data(stage)
    elif data.user_vocab is not split.train.user_vocab or data.item_vocab is not split.train.item_vocab:
        raise ConfigError("data must come from the split's dataset (Dataset.subset of it), so ids line up")
    _check_no_leak(split, data, stage)
    builder = _Builder(data, config)
    rng = np.random.default_rng(config.seed)
    tasks = list(dict.fromkeys(config.tasks))
    per_task = [
        config.examples // len(tasks) + (1 if i < config.examples % len(tasks) else 0) for i in range(len(tasks))
    ]
    examples: list[InstructionExample] = []
    for task, n in zip(tasks, per_task, strict=True):
        templates = [
            t
            for t in TEMPLATES
            if t.task == task
            and (t.id in config.templates if config.templates is not None else t.held_out == config.held_out)
        ]
        pool = builder.eligible(task)
        if n == 0 or not templates or not len(pool):
            continue
        chosen = np.sort(rng.choice(pool, size=min(n, len(pool)), replace=False))
        for pos in chosen:
            template = templates[int(rng.integers(len(templates)))]
            case = builder.case(int(pos), task, rng)
            messages, target = template.render(case, builder)
            examples.append(
                InstructionExample(
                    messages=tuple(messages),
                    target=target,
                    task=task,
                    template=template.id,
                    user_id=str(data.user_vocab.id(int(builder.users[pos]))),
                    item_id=str(data.item_vocab.id(int(builder.items[pos]))),
                    timestamp=int(builder.times[pos]),
                    label=_label(task, case, config),
                    slot_items=_slot_items(template, case, config),
                )
            )
    if not examples:
        raise ConfigError(
            f"no event is eligible for tasks {tasks}: lower min_history (now {config.min_history}), "
            f"liked_min_value (now {config.liked_min_value}) or since, or give more data"
        )
    order = rng.permutation(len(examples))
    return [examples[i] for i in order]


def _slot_items(template: Template, case: _Case, config: InstructionConfig) -> tuple[str, ...]:
    """Ids of the items the rendered example marked with slots: the shown history, then the target."""
    if not (config.item_slots and template.render is _yesno_served):
        return ()
    shown = case.history_ids[-config.history :] if case.history else []
    return (*shown, case.item_id)


def _label(task: Task, case: _Case, config: InstructionConfig) -> float | None:
    if task == "yesno":
        return 1.0 if case.value > config.label_threshold else 0.0
    if task == "rating":
        return case.value
    if task == "direct":
        return float(case.answer)
    return None


def build_eval_examples(
    split: Split,
    config: InstructionConfig | None = None,
    *,
    stage: Stage = "test",
    template: str | None = None,
) -> list[InstructionExample]:
    """Examples whose targets are ``stage``'s held-out events, for measuring a model (never for training).

    Each target event of ``split.targets(stage)`` (seeded sample of ``config.examples``, for the first task in
    ``config.tasks``) gets a prompt whose history comes from ``split.fit_data(stage)`` only: the user's fit events up
    to the target's time, none of the other held-out events. This is the TALLRec evaluation for ``yesno``
    (label = rating > 3) and the held-out next item for ``next``/``direct``.

    Args:
        split: The split.
        config: Task (the first of ``tasks``), sample size, history, seed; ``held_out`` picks the template set.
        stage: Whose targets: ``"test"`` (default) or ``"valid"``.
        template: A template id of that task (default: the served one, else the first of the set).

    Raises:
        ConfigError: ``template`` is not one of the task's templates, or no target has enough history.
    """
    config = config or InstructionConfig()
    task = config.tasks[0]
    choices = [
        t for t in TEMPLATES if t.task == task and (t.id == template if template else t.held_out == config.held_out)
    ]
    if not choices:
        known = ", ".join(t.id for t in TEMPLATES if t.task == task)
        raise ConfigError(f"template {template!r} is not a {task} template; choose one of {known}")
    chosen = next((t for t in choices if t.served), choices[0])
    fit, targets = split.fit_data(stage), split.targets(stage)
    builder = _Builder(fit, config)
    rng = np.random.default_rng(config.seed)
    rows: list[int] = []
    for j in range(len(targets)):
        u = int(targets.user_idx[j])
        s, e = int(builder.starts[u]), int(builder.starts[u + 1])
        stop = s + int(np.searchsorted(builder.times[s:e], targets.timestamps[j], side="right"))
        need_liked = task != "rating"
        enough = builder.liked[s:stop].sum() if need_liked else stop - s
        if enough >= config.min_history and np.isfinite(targets.values[j]):
            if task in ("next", "direct", "explain") and not targets.values[j] >= config.liked_min_value:
                continue
            rows.append(j)
    if not rows:
        raise ConfigError(f"no {stage} target has {config.min_history} earlier events: lower min_history")
    picked = np.sort(rng.choice(np.array(rows), size=min(config.examples, len(rows)), replace=False))
    out = []
    for j in picked:
        u = int(targets.user_idx[j])
        s, e = int(builder.starts[u]), int(builder.starts[u + 1])
        stop = s + int(np.searchsorted(builder.times[s:e], targets.timestamps[j], side="right"))
        case = builder.case_for(u, stop, int(targets.item_idx[j]), float(targets.values[j]), task, rng)
        messages, target = chosen.render(case, builder)
        out.append(
            InstructionExample(
                messages=tuple(messages),
                target=target,
                task=task,
                template=chosen.id,
                user_id=str(fit.user_vocab.id(u)),
                item_id=str(fit.item_vocab.id(int(targets.item_idx[j]))),
                timestamp=int(targets.timestamps[j]),
                label=_label(task, case, config),
                slot_items=_slot_items(chosen, case, config),
            )
        )
    return out


# ----------------------------------------------------------------------------------------------------------------
# JSONL
# ----------------------------------------------------------------------------------------------------------------


def write_jsonl(examples: Iterable[InstructionExample], path: str | Path) -> int:
    """Write one example per line (UTF-8 JSON); returns how many. The parent folder is created."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    count = 0
    with path.open("w", encoding="utf-8") as out:
        for example in examples:
            out.write(json.dumps(example.to_dict(), ensure_ascii=False) + "\n")
            count += 1
    return count


def read_jsonl(path: str | Path) -> list[InstructionExample]:
    """The examples of a file written by :func:`write_jsonl` (blank lines skipped).

    Raises:
        DataValidationError: The file is missing, or lines are not JSON objects of the example's shape (every bad
            line is listed with its number and field).
    """
    path = Path(path)
    if not path.is_file():
        fix = "give a JSONL file written by write_jsonl / llmrec tune"
        raise DataValidationError([DataProblem(str(path), None, None, "file not found", fix)])
    examples: list[InstructionExample] = []
    problems: list[DataProblem] = []
    with path.open(encoding="utf-8") as lines:
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                if not isinstance(row, dict):
                    raise ValueError("field 'messages' missing: the line is not a JSON object")
                examples.append(InstructionExample.from_dict(row))
            except (ValueError, TypeError) as exc:
                message = str(exc)
                name = message.split("'")[1] if message.startswith("field '") else None
                fix = "each line must be an object with messages, target, task and template"
                problems.append(DataProblem(str(path), number, name, message, fix))
    if problems:
        raise DataValidationError(problems)
    return examples
