"""Conversational recommendation evaluation on ReDial: samples from recommender turns, Recall@k of a ranker.

The protocol (as in CRSLab and UniCRS, with the standardized variant of the recent re-evaluations):

* Every message by the recommender (the ReDial *respondent*) that mentions at least one movie with a MovieLens
  match gives one **sample per mapped movie** it mentions; the sample's context is every earlier message of the
  dialogue. Mentions of movies without a MovieLens match are dropped (and counted).
* A ranker sees the context only, never the turn itself nor what follows; in particular the post-chat
  questionnaire (``initiatorQuestions``/``respondentQuestions``: suggested/seen/liked) is filled after the
  dialogue and is never used.
* Recall@k = share of samples whose target is in the ranker's top ``k`` over the whole MovieLens catalogue.
* Two variants:

  - ``excluded`` (standardized): items mentioned earlier in the dialogue are removed from the ranking, and
    targets that were already mentioned earlier ("repetition" samples, which no system can find once mentions
    are excluded, and which reward repeating the conversation back) are not scored.
  - ``included``: nothing is removed and every sample is scored, repeated targets included (the original
    CRSLab/UniCRS numbers are computed this way, so they are inflated by repetitions).

The ranker is any callable ``(sample, exclude) -> item ids, best first``; the evaluation removes context items
from lists returned for the ``excluded`` variant itself, so a ranker can never score by repeating the dialogue.
:func:`dialogue_states` turns a context into the :class:`~llmrec.chat.state.DialogueState` the conversational
recommender would hold after reading it, so its served ``recommend`` path can be evaluated as is.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

import numpy as np

from llmrec.chat.parse import parse_turn
from llmrec.chat.state import DialogueState, StateUpdate
from llmrec.data.redial import MENTION_PATTERN, Dialogue, Message
from llmrec.progress import ProgressCallback

if TYPE_CHECKING:
    from llmrec.catalogue import Catalogue

__all__ = [
    "VARIANTS",
    "CRSSample",
    "Ranker",
    "RankerResult",
    "SampleSet",
    "build_samples",
    "dialogue_states",
    "evaluate_ranker",
    "recall_at",
    "render_message",
]

Variant = Literal["excluded", "included"]
VARIANTS: tuple[Variant, ...] = ("excluded", "included")
"""The two reporting variants (see the module docstring); ``excluded`` is the standardized one."""


@dataclass(frozen=True)
class CRSSample:
    """One evaluation sample: a recommender turn's mentioned movie, to be found from the dialogue before it.

    Attributes:
        dialogue: The conversation the sample comes from.
        position: Index of the recommender message in ``dialogue.messages``; the context is
            ``dialogue.messages[:position]``.
        target: MovieLens item id of the movie the recommender mentioned.
        context_items: MovieLens item ids mentioned in the context (by either participant), in order of first
            mention.
        seeker_items: The subset of ``context_items`` the seeker mentioned.

    """

    dialogue: Dialogue
    position: int
    target: str
    context_items: tuple[str, ...]
    seeker_items: tuple[str, ...]

    @property
    def context(self) -> tuple[Message, ...]:
        """The messages before the recommender's turn."""
        return self.dialogue.messages[: self.position]

    @property
    def repeated(self) -> bool:
        """Whether the target was already mentioned in the context (a repetition, not a new recommendation)."""
        return self.target in self.context_items


@dataclass
class SampleSet:
    """The samples of a set of dialogues and what was dropped while building them.

    Attributes:
        samples: One per (recommender turn, mapped movie), in dialogue order.
        n_dialogues: Dialogues read.
        n_turns: Recommender turns that gave at least one sample.
        n_targets_unmapped: Movie mentions in recommender turns dropped for lack of a MovieLens match (each
            distinct movie of a turn counted once).
        n_targets_unknown: Mapped targets dropped because the MovieLens id is not in the catalogue (0 with the
            shared mapping and the bundled MovieLens).

    """

    samples: list[CRSSample] = field(default_factory=list)
    n_dialogues: int = 0
    n_turns: int = 0
    n_targets_unmapped: int = 0
    n_targets_unknown: int = 0

    @property
    def n_repeated(self) -> int:
        """Samples whose target was already mentioned earlier in the dialogue."""
        return sum(s.repeated for s in self.samples)

    def summary(self) -> dict[str, int]:
        """Counts for reports."""
        return {
            "n_dialogues": self.n_dialogues,
            "n_recommender_turns": self.n_turns,
            "n_samples": len(self.samples),
            "n_samples_repeated": self.n_repeated,
            "n_samples_new": len(self.samples) - self.n_repeated,
            "n_targets_dropped_unmapped": self.n_targets_unmapped,
            "n_targets_dropped_not_in_catalogue": self.n_targets_unknown,
        }


def build_samples(
    dialogues: Iterable[Dialogue], mapping: dict[str, str], catalogue_ids: Iterable[str] | None = None
) -> SampleSet:
    """Evaluation samples from recommender turns (see the module docstring).

    Args:
        dialogues: ReDial dialogues (e.g. :func:`llmrec.data.redial.load_redial`).
        mapping: ReDial movie id -> MovieLens item id (:func:`llmrec.data.redial.load_redial_mapping`).
        catalogue_ids: Item ids of the catalogue rankers rank; mapped targets outside it are dropped and
            counted (no check when ``None``).

    Returns:
        The samples and the drop counts.

    """
    known = set(catalogue_ids) if catalogue_ids is not None else None
    out = SampleSet()
    for dialogue in dialogues:
        out.n_dialogues += 1
        context: list[str] = []
        seeker: list[str] = []
        for position, message in enumerate(dialogue.messages):
            redial_ids = list(dict.fromkeys(message.mentions))
            if dialogue.role(message) == "respondent" and redial_ids:
                targets: list[str] = []
                for movie in redial_ids:
                    item = mapping.get(movie)
                    if item is None:
                        out.n_targets_unmapped += 1
                    elif known is not None and item not in known:
                        out.n_targets_unknown += 1
                    elif item not in targets:
                        targets.append(item)
                for item in targets:
                    out.samples.append(CRSSample(dialogue, position, item, tuple(context), tuple(seeker)))
                out.n_turns += bool(targets)
            for movie in redial_ids:
                item = mapping.get(movie)
                if item is None or item in context:
                    continue
                context.append(item)
                if dialogue.role(message) == "initiator":
                    seeker.append(item)
    return out


def render_message(message: Message, dialogue: Dialogue, titles: dict[str, str] | None = None) -> str:
    """The message as a person would read it: each ``@<movieId>`` replaced by the movie's name.

    Args:
        message: A message of ``dialogue``.
        dialogue: Its conversation (for the names in ``movie_mentions``).
        titles: ReDial movie id -> the name to write instead (e.g. the matched catalogue title, so title
            recognition finds exactly that item); ``movie_mentions`` names the rest.

    """

    def name(match: object) -> str:
        movie = match.group(1)  # type: ignore[attr-defined]
        if titles is not None and movie in titles:
            return titles[movie]
        return dialogue.movie_mentions.get(movie) or "that movie"

    return MENTION_PATTERN.sub(name, message.text)


def dialogue_states(
    dialogue: Dialogue,
    catalogue: Catalogue,
    mapping: dict[str, str],
    *,
    popularity: np.ndarray | None = None,
    newest_year: int | None = None,
) -> list[DialogueState]:
    """The conversational recommender's state after each prefix of a dialogue: ``states[i]`` has read ``i`` messages.

    Each message is read the way :meth:`llmrec.chat.ConversationalRecommender.turn` reads a user turn
    (:func:`~llmrec.chat.parse.parse_turn` over the text with movie mentions written as catalogue titles, then
    :meth:`DialogueState.apply`), without recommending in between. The seeker's messages give likes, dislikes,
    genre and year constraints and the text query; the recommender's messages only contribute the movies they
    name (their genre talk is a question, not the seeker's wish). A mapped mention that title matching missed is
    added as liked, unless the same message disliked or rejected it.

    Args:
        dialogue: The conversation.
        catalogue: The recommender's catalogue (MovieLens).
        mapping: ReDial movie id -> MovieLens item id.
        popularity: Interactions per item (chooses among same-titled items, as the chat does).
        newest_year: The catalogue's newest year ("recent").

    Returns:
        ``len(dialogue.messages) + 1`` states.

    """
    titles: dict[str, str] = {}
    vocab = {str(item_id): idx for idx, item_id in enumerate(catalogue.item_ids)}
    for movie in dialogue.movie_mentions:
        idx = vocab.get(mapping.get(movie, ""))
        if idx is not None and catalogue.title(idx):
            titles[movie] = catalogue.title(idx)
    state = DialogueState()
    states = [state]
    for message in dialogue.messages:
        parsed = parse_turn(
            render_message(message, dialogue, titles),
            catalogue,
            popularity=popularity,
            newest_year=newest_year,
        )
        update = parsed.update if parsed.intent == "recommend" else StateUpdate()
        if dialogue.role(message) == "respondent":
            update = StateUpdate(liked=update.liked, disliked=update.disliked, seen=update.seen)
        named = set(update.liked + update.disliked + update.seen + update.rejected)
        extra = [mapping[m] for m in dict.fromkeys(message.mentions) if m in mapping and mapping[m] in vocab]
        extra = [item for item in extra if item not in named]
        if extra:
            update = update.model_copy(update={"liked": list(update.liked) + extra})
        state = state.apply(update)
        state.turns += 1
        states.append(state)
    return states


Ranker = Callable[[CRSSample, bool], Sequence[str]]
"""``ranker(sample, exclude)``: item ids best first, from the sample's context only; ``exclude`` asks it to leave
out the context's items (the evaluation removes any it returns anyway)."""


@dataclass
class RankerResult:
    """One ranker's Recall@k per variant.

    Attributes:
        metrics: ``{"excluded": {"recall@10": ...}, "included": {...}}``; a variant the ranker cannot serve is
            absent.
        n_samples: Samples scored per variant.
        ms_per_sample: Mean wall time of one ranker call per variant.
        hits: Per variant, the rank (0-based) of each scored sample's target, ``-1`` when not in the list.

    """

    metrics: dict[str, dict[str, float]] = field(default_factory=dict)
    n_samples: dict[str, int] = field(default_factory=dict)
    ms_per_sample: dict[str, float] = field(default_factory=dict)
    hits: dict[str, np.ndarray] = field(default_factory=dict)


def recall_at(ranks: np.ndarray, ks: Sequence[int]) -> dict[str, float]:
    """``{"recall@k": share of samples with 0 <= rank < k}`` (one target per sample, so Recall@k = HR@k).

    Args:
        ranks: 0-based rank of each sample's target, ``-1`` when it is not in the list.
        ks: Cut-offs.

    """
    ranks = np.asarray(ranks, dtype=np.int64)
    if len(ranks) == 0:
        return {f"recall@{k}": float("nan") for k in ks}
    return {f"recall@{k}": float(np.mean((ranks >= 0) & (ranks < k))) for k in ks}


def _rank(items: Sequence[str], target: str, blocked: frozenset[str], width: int) -> int:
    kept = [i for i in items if i not in blocked] if blocked else list(items)
    kept = list(dict.fromkeys(kept))[:width]
    try:
        return kept.index(target)
    except ValueError:
        return -1


def evaluate_ranker(
    samples: Sequence[CRSSample],
    ranker: Ranker,
    ks: Sequence[int] = (1, 10, 50),
    variants: Sequence[Variant] = VARIANTS,
    *,
    on_progress: ProgressCallback | None = None,
) -> RankerResult:
    """Recall@k of ``ranker`` on ``samples`` in each variant (see the module docstring).

    Args:
        samples: From :func:`build_samples`.
        ranker: See :data:`Ranker`; it must return at least ``max(ks)`` items where it can.
        ks: Cut-offs.
        variants: Which variants to score (``excluded`` skips repeated targets and removes context items).
        on_progress: Called after each sample scored with the samples done and in all, over every variant
            (a sample scored in two variants counts twice), and the variant's own count ("excluded: 12/340
            samples").

    Returns:
        Metrics, sample counts, timing and per-sample ranks.

    """
    width = max(ks)
    out = RankerResult()
    scored = [(variant, [s for s in samples if not (variant == "excluded" and s.repeated)]) for variant in variants]
    total = sum(len(chosen) for _, chosen in scored)
    done = 0
    for variant, chosen in scored:
        exclude = variant == "excluded"
        ranks = np.full(len(chosen), -1, dtype=np.int64)
        spent = 0.0
        for n, sample in enumerate(chosen):
            start = time.perf_counter()
            items = [str(i) for i in ranker(sample, exclude)]
            spent += time.perf_counter() - start
            blocked = frozenset(sample.context_items) if exclude else frozenset()
            ranks[n] = _rank(items, sample.target, blocked, width)
            done += 1
            if on_progress is not None:
                on_progress(done, total, f"{variant}: {n + 1}/{len(chosen)} samples")
        out.metrics[variant] = recall_at(ranks, ks)
        out.n_samples[variant] = len(chosen)
        out.ms_per_sample[variant] = 1000.0 * spent / max(len(chosen), 1)
        out.hits[variant] = ranks
    return out
