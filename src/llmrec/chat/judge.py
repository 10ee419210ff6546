"""The language model's word on a title's sentiment, where the chat's rules find no cue.

The rules in :mod:`llmrec.chat.parse` read "hated X", "X was boring", "X is a masterpiece"; a message such as
"Signs creeped me out" or "The Patriot was kind of a slog" has no word they know, and they default to *liked*.
:class:`LMSentimentJudge` decides those by likelihood, never by parsing generated text:

- noisy channel: the log-likelihood of the message as the reply to "write a message saying you loved X" minus
  that to "... hated X" (scoring the message under each feeling works far better for a 135M model than asking it
  to choose a label: on 20 hand-written test messages, 12/20 right by label choice against 19/20 by the channel);
- contextual calibration: the same difference for a content-free message ("I watched X.") is subtracted, because
  the model prefers "hated" for almost any text (raw differences were negative for most liked messages too).

Four likelihood passes per title (two calibrations are memoised per title), about a second each on 2 CPU cores,
so the chat asks only for titles the rules could not read.
"""

from __future__ import annotations

from typing import Literal, Protocol

from llmrec.llm.base import LanguageModel, Message
from llmrec.llm.prompts import sanitize

__all__ = ["LMSentimentJudge", "SentimentJudge"]

Feeling = Literal["liked", "disliked"]


class SentimentJudge(Protocol):
    """Anything that says whether ``text`` likes or dislikes the title it names (see :class:`LMSentimentJudge`)."""

    def __call__(self, text: str, title: str) -> Feeling:
        """``"liked"`` or ``"disliked"``: how ``text`` speaks of ``title``."""
        ...


class LMSentimentJudge:
    """Likes or dislikes, by the calibrated noisy-channel likelihood of the message (see the module docstring).

    Args:
        lm: Any :class:`~llmrec.llm.base.LanguageModel` with ``loglik`` (the packaged SmolLM2 by default in chat).
        margin: The calibrated difference (nats) above which the message counts as liking the title; 0 is the
            unbiased point after calibration.
    """

    def __init__(self, lm: LanguageModel, *, margin: float = 0.0) -> None:
        self.lm = lm
        self.margin = margin
        self._neutral: dict[str, float] = {}

    def _difference(self, text: str, title: str) -> float:
        scores = []
        for feeling in ("loved", "hated"):
            prompt = [
                Message(
                    role="user",
                    content=f"Write one short message about the movie {title}, saying that you {feeling} it.",
                )
            ]
            scores.append(float(self.lm.loglik(prompt, [text]).total[0]))
        return scores[0] - scores[1]

    def score(self, text: str, title: str) -> float:
        """Calibrated log-likelihood difference "loved" minus "hated" (positive: the message likes the title)."""
        title = sanitize(title, max_chars=80) or "it"
        text = sanitize(text, max_chars=400) or text[:400]
        if title not in self._neutral:
            if len(self._neutral) > 10_000:
                self._neutral.clear()
            self._neutral[title] = self._difference(f"I watched {title}.", title)
        return self._difference(text, title) - self._neutral[title]

    def __call__(self, text: str, title: str) -> Feeling:
        """``"liked"`` when the calibrated difference is above ``margin``, else ``"disliked"``."""
        return "liked" if self.score(text, title) > self.margin else "disliked"
