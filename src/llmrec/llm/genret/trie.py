"""Constrained decoding: a prefix trie over the identifiers' tokens, and what a model must offer to decode along it.

Each identifier's tokens are followed by the end-of-turn token, so "Alien" ends cleanly even though "Aliens" goes
on; at each step a beam may only take a token that continues some identifier, so every finished sequence is a
real item. The items a user has already seen are removed per request without rebuilding the trie: leaves are
stored in sorted order, each node covers a contiguous range of leaves, and a node is offered only while its range
holds a leaf that is not excluded (:class:`Exclusion`). :class:`SupportsBeamSearch` is the token-level control a
model needs for this (:class:`~llmrec.llm.local.LocalLM` has it).
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import numpy as np

from llmrec.errors import ConfigError
from llmrec.llm.base import Prompt

if TYPE_CHECKING:
    from llmrec.llm.local import BeamHypothesis

__all__ = ["Exclusion", "IdTrie", "SupportsBeamSearch"]


@dataclass(frozen=True)
class Exclusion:
    """Leaves taken out of an :class:`IdTrie` for one request (sorted leaf positions; the trie is untouched)."""

    positions: list[int]

    def count(self, lo: int, hi: int) -> int:
        """Excluded leaves among positions ``lo .. hi - 1``."""
        return bisect.bisect_left(self.positions, hi) - bisect.bisect_left(self.positions, lo)


class IdTrie:
    """Prefix trie over token sequences, each closed by ``end_id``; leaves can be excluded per request.

    Leaves (one per sequence) are numbered in lexicographic order of their tokens, so every node covers a
    contiguous range of leaf positions. Excluding items is then a sorted list of positions, and a node is alive
    while its range holds more leaves than excluded ones: two binary searches, no rebuild, no per-request copy.

    Args:
        sequences: Token ids per item (item ``i`` = ``sequences[i]``), without ``end_id``; all distinct and none
            containing ``end_id``.
        end_id: The token that ends every sequence (the model's end-of-turn token).
    """

    def __init__(self, sequences: Sequence[Sequence[int]], end_id: int) -> None:
        full = [(*map(int, s), int(end_id)) for s in sequences]
        if any(end_id in s[:-1] for s in full):
            raise ConfigError("an identifier contains the end-of-turn token")
        if len(set(full)) != len(full):
            raise ConfigError("identifiers must have distinct token sequences")
        self.end_id = int(end_id)
        order = sorted(range(len(full)), key=full.__getitem__)
        self._item_at = np.array(order, dtype=np.int64)
        self._position = np.empty(len(full), dtype=np.int64)
        self._position[self._item_at] = np.arange(len(full))
        self._children: list[dict[int, int]] = [{}]
        self._lo: list[int] = [0]
        self._hi: list[int] = [len(full)]
        self._leaf: list[int] = [-1]
        for position, item in enumerate(order):
            node = 0
            for token in full[item]:
                child = self._children[node].get(token)
                if child is None:
                    child = len(self._children)
                    self._children[node][token] = child
                    self._children.append({})
                    self._lo.append(position)
                    self._hi.append(position + 1)
                    self._leaf.append(-1)
                else:
                    self._hi[child] = position + 1
                node = child
            self._leaf[node] = item

    def __len__(self) -> int:
        return len(self._item_at)

    @property
    def n_nodes(self) -> int:
        """Nodes in the trie, the root included."""
        return len(self._children)

    def exclude(self, items: Iterable[int]) -> Exclusion:
        """An :class:`Exclusion` of these item indices (out-of-range ones are an error)."""
        idx = np.fromiter((int(i) for i in items), dtype=np.int64)
        if len(idx) and (idx.min() < 0 or idx.max() >= len(self)):
            raise ConfigError(f"excluded item indices must be in 0..{len(self) - 1}")
        return Exclusion(sorted(set(self._position[idx].tolist())))

    def available(self, exclusion: Exclusion | None = None) -> int:
        """Leaves not excluded."""
        return len(self) - (len(exclusion.positions) if exclusion else 0)

    def _alive(self, node: int, exclusion: Exclusion | None) -> bool:
        size = self._hi[node] - self._lo[node]
        return size > (exclusion.count(self._lo[node], self._hi[node]) if exclusion else 0)

    def node(self, prefix: Sequence[int]) -> int | None:
        """Node reached by ``prefix`` from the root (``None`` when it leaves the trie)."""
        node = 0
        for token in prefix:
            child = self._children[node].get(int(token))
            if child is None:
                return None
            node = child
        return node

    def allowed(self, prefix: Sequence[int], exclusion: Exclusion | None = None) -> list[int]:
        """Tokens that continue ``prefix`` towards at least one leaf that is not excluded (sorted; may be empty)."""
        node = self.node(prefix)
        if node is None:
            return []
        return sorted(t for t, child in self._children[node].items() if self._alive(child, exclusion))

    def is_excluded(self, item: int, exclusion: Exclusion | None) -> bool:
        """Whether item index ``item`` is one of the leaves ``exclusion`` takes out."""
        if exclusion is None:
            return False
        position = int(self._position[item])
        return exclusion.count(position, position + 1) > 0

    def item(self, path: Sequence[int]) -> int | None:
        """Item index of a complete path (identifier tokens + ``end_id``); ``None`` for anything else."""
        node = self.node(path)
        return None if node is None or self._leaf[node] < 0 else self._leaf[node]


@runtime_checkable
class SupportsBeamSearch(Protocol):
    """What generative retrieval needs from a language model: token-level control (LocalLM has it)."""

    @property
    def model_id(self) -> str:
        """Name of the weights."""
        ...

    @property
    def end_of_turn_text(self) -> str:
        """Text of the end-of-turn token."""
        ...

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text``."""
        ...

    def decode(self, token_ids: Sequence[int]) -> str:
        """Text of token ids (special tokens kept, so a stray one never looks like an identifier)."""
        ...

    def beam_search(
        self,
        prompt: Prompt,
        allowed: Callable[[list[int]], Sequence[int]],
        *,
        num_beams: int = 5,
        num_return: int | None = None,
        max_new_tokens: int = 32,
    ) -> list[BeamHypothesis]:
        """Constrained beam search (see :meth:`llmrec.llm.local.LocalLM.beam_search`)."""
        ...
