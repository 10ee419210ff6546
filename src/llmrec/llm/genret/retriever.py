"""Generative retrieval: the language model *names* the next item, and can only name items that exist.

Every catalogue item gets an identifier the model can write: its title (zero-shot, because the model has read
about films and books) or a *semantic id*, a short code such as ``"a12 b3 c7 d0"`` made by residual k-means over
the item's text embedding, so items with similar text share a code prefix (the TIGER / GPT-2 + SVD
sub-identifier idea: a model learns a code's parts, and near neighbours sit close in the code space).

Decoding is a constrained beam search over a prefix trie of the identifiers' token ids (each followed by the
end-of-turn token, so "Alien" ends cleanly even though "Aliens" goes on): at each step a beam may only take a
token that continues some identifier, so every finished sequence is a real item. The items a user has already
seen are removed per request without rebuilding the trie: leaves are stored in sorted order, each trie node covers
a contiguous range of leaves, and a node is offered only while its range holds a leaf that is not excluded.

Validity is not assumed: :class:`GenerativeRetriever` decodes every generated sequence back to text and looks it
up among the identifiers, and keeps the counts (:attr:`GenerativeRetriever.valid_ratio`), so a broken constraint
would show up as a ratio below 1.

The OpenAI-compatible HTTP backend cannot restrict tokens step by step, so generative retrieval needs a local
model (:class:`~llmrec.llm.local.LocalLM`); other backends raise :class:`~llmrec.errors.ConfigError`.
"""

from __future__ import annotations

import bisect
import json
import logging
import re
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol, Self, runtime_checkable

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from llmrec.config import config_from
from llmrec.data.dataset import Dataset
from llmrec.errors import ConfigError, NotFittedError
from llmrec.llm.base import Message, Prompt
from llmrec.llm.prompts import DATA_NOTICE, data_block, sanitize, short_title
from llmrec.models.base import Recommendations, TrainOptions, top_k
from llmrec.text.build import ItemTextConfig, item_texts

if TYPE_CHECKING:
    from llmrec.encode.cache import SupportsEncode
    from llmrec.llm.local import BeamHypothesis

__all__ = [
    "Exclusion",
    "GenerationStats",
    "GenerativeRetriever",
    "GenerativeRetrieverConfig",
    "IdTrie",
    "IdentifierKind",
    "ItemIdentifiers",
    "SemanticIdConfig",
    "SemanticIds",
    "SupportsBeamSearch",
    "title_identifiers",
]

logger = logging.getLogger(__name__)

IdentifierKind = Literal["title", "semantic"]
"""How items are named: ``title`` (short title, zero-shot) or ``semantic`` (residual k-means code)."""

_LETTERS = "abcdefghijklmnopqrstuvwxyz"
_SEMANTIC_FILE = "semantic_ids"
_FORMAT_VERSION = 1


# --------------------------------------------------------------------------------------------------------------
# Semantic ids: residual k-means codes
# --------------------------------------------------------------------------------------------------------------


class SemanticIdConfig(BaseModel):
    """Shape of the semantic ids.

    Attributes:
        levels: Number of k-means levels (each quantises what the levels before it left over). More levels make
            finer groups and longer ids.
        codebook_size: Clusters per level (fewer when there are fewer distinct vectors). Codes below 10 are one
            token each with the default model's tokenizer, so small codebooks give shorter ids.
        iterations: Most Lloyd iterations per level (it stops earlier when assignments stop changing).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    levels: int = Field(default=3, ge=1, le=len(_LETTERS) - 1)
    codebook_size: int = Field(default=16, ge=2, le=4096)
    iterations: int = Field(default=25, ge=1, le=1000)


def _kmeans(x: np.ndarray, k: int, iterations: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Centroids ``(k', d)`` and labels ``(n,)`` of ``x`` (k-means++ start, Lloyd steps; deterministic given rng).

    ``k'`` is ``k`` capped at the number of distinct rows, so no cluster starts empty; a cluster that empties
    during the iterations takes the point farthest from its own centroid.
    """
    n = len(x)
    k = min(k, len(np.unique(x, axis=0)))
    sq = np.einsum("ij,ij->i", x, x)
    centroids = np.empty((k, x.shape[1]), dtype=np.float64)
    centroids[0] = x[rng.integers(n)]
    nearest = np.maximum(sq - 2 * x @ centroids[0] + centroids[0] @ centroids[0], 0.0)
    for c in range(1, k):
        total = nearest.sum()
        pick = int(rng.choice(n, p=nearest / total)) if total > 0 else int(np.argmax(nearest))
        centroids[c] = x[pick]
        nearest = np.minimum(nearest, np.maximum(sq - 2 * x @ centroids[c] + centroids[c] @ centroids[c], 0.0))
    labels = np.full(n, -1, dtype=np.int64)
    for _ in range(iterations):
        dist = sq[:, None] - 2 * x @ centroids.T + np.einsum("ij,ij->i", centroids, centroids)[None, :]
        new = np.argmin(dist, axis=1)
        if np.array_equal(new, labels):
            break
        labels = new
        counts = np.bincount(labels, minlength=k)
        sums = np.zeros_like(centroids)
        np.add.at(sums, labels, x)
        filled = counts > 0
        centroids[filled] = sums[filled] / counts[filled, None]
        for c in np.flatnonzero(~filled).tolist():
            own = np.einsum("ij,ij->i", x - centroids[labels], x - centroids[labels])
            far = int(np.argmax(own))
            centroids[c], labels[far] = x[far], c
    return centroids, labels


class SemanticIds:
    """Residual k-means codes of item embeddings, with a last level that makes every id unique.

    Level 1 clusters the embeddings; level 2 clusters what is left after subtracting each item's level-1
    centroid; and so on. Items whose vectors are close get the same first codes. A final level numbers the
    items that still share every code (0, 1, ... in item order), so the id is a key. Rendered as text, level
    ``j`` is a letter (``a``, ``b``, ...) and the code: ``"a12 b3 c7 d0"``; that form never reads like a title,
    and the model's tokenizer splits it into a few short tokens.

    Args:
        config: Levels and codebook size; or pass its fields as keyword arguments.

    Example:
        >>> ids = SemanticIds(levels=2, codebook_size=4).fit(np.eye(6, 8), seed=0)  # doctest: +SKIP
        >>> ids.string(0)  # doctest: +SKIP
        'a1 b0 c0'
    """

    def __init__(self, config: SemanticIdConfig | None = None, **kwargs: Any) -> None:
        self.config = config_from(SemanticIdConfig, config, kwargs)
        self._codes: np.ndarray | None = None
        self._codebooks: list[np.ndarray] = []

    def __repr__(self) -> str:
        fitted = "unfitted" if self._codes is None else f"{len(self)} items"
        return f"SemanticIds(levels={self.config.levels}, codebook_size={self.config.codebook_size}, {fitted})"

    def __len__(self) -> int:
        return 0 if self._codes is None else len(self._codes)

    def fit(self, embeddings: np.ndarray, *, seed: int = 42) -> Self:
        """Learn the codebooks from ``embeddings`` ``(n_items, dim)`` (row ``i`` = item ``i``) and code every item.

        The same embeddings and seed always give the same codes.
        """
        x = np.asarray(embeddings, dtype=np.float64)
        if x.ndim != 2 or len(x) == 0:
            raise ConfigError(f"embeddings must be a non-empty 2-D array, got shape {x.shape}")
        if not np.isfinite(x).all():
            raise ConfigError("embeddings contain NaN or infinite values")
        rng = np.random.default_rng(seed)
        residual = x.copy()
        levels = []
        self._codebooks = []
        for _ in range(self.config.levels):
            centroids, labels = _kmeans(residual, self.config.codebook_size, self.config.iterations, rng)
            self._codebooks.append(centroids.astype(np.float32))
            levels.append(labels)
            residual -= centroids[labels]
        codes = np.stack(levels, axis=1)
        seen: Counter[tuple[int, ...]] = Counter()
        last = np.empty(len(x), dtype=np.int64)
        for i, row in enumerate(map(tuple, codes.tolist())):
            last[i] = seen[row]
            seen[row] += 1
        self._codes = np.concatenate([codes, last[:, None]], axis=1).astype(np.int32)
        return self

    @property
    def codes(self) -> np.ndarray:
        """Codes ``(n_items, levels + 1)`` int32; the last column is the disambiguation level."""
        if self._codes is None:
            raise NotFittedError("SemanticIds is not fitted: call fit(embeddings) or SemanticIds.load(path)")
        return self._codes

    @property
    def codebooks(self) -> list[np.ndarray]:
        """Centroids of each k-means level, ``(clusters, dim)`` float32."""
        self.codes  # noqa: B018 - raises when unfitted
        return list(self._codebooks)

    @staticmethod
    def render(code: Sequence[int]) -> str:
        """The text form of one code row: ``(12, 3, 7, 0)`` -> ``"a12 b3 c7 d0"``."""
        return " ".join(f"{_LETTERS[j]}{int(c)}" for j, c in enumerate(code))

    @staticmethod
    def parse(text: str) -> tuple[int, ...] | None:
        """The code row of a text form made by :meth:`render`; ``None`` when ``text`` is not one."""
        parts = text.split(" ")
        if not parts or len(parts) > len(_LETTERS):
            return None
        out = []
        for j, part in enumerate(parts):
            if not re.fullmatch(rf"{_LETTERS[j]}(0|[1-9][0-9]*)", part):
                return None
            out.append(int(part[1:]))
        return tuple(out)

    def string(self, item: int) -> str:
        """The id of item ``item`` as text."""
        return self.render(self.codes[item].tolist())

    def strings(self) -> list[str]:
        """Every item's id as text, in item order (all distinct)."""
        return [self.render(row) for row in self.codes.tolist()]

    def save(self, path: str | Path) -> Path:
        """Write ``semantic_ids.json`` (config, shapes) and ``semantic_ids.npz`` (codes, codebooks) into ``path``.

        No pickle: the arrays are plain npz and :meth:`load` reads them with ``allow_pickle=False``.
        """
        folder = Path(path)
        folder.mkdir(parents=True, exist_ok=True)
        codes = self.codes
        arrays = {"codes": codes, **{f"codebook_{j}": c for j, c in enumerate(self._codebooks)}}
        np.savez(folder / f"{_SEMANTIC_FILE}.npz", allow_pickle=False, **arrays)
        meta = {
            "format_version": _FORMAT_VERSION,
            "config": self.config.model_dump(),
            "n_items": int(codes.shape[0]),
            "dim": int(self._codebooks[0].shape[1]),
        }
        (folder / f"{_SEMANTIC_FILE}.json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
        return folder

    @classmethod
    def load(cls, path: str | Path) -> SemanticIds:
        """Read what :meth:`save` wrote.

        Raises:
            ConfigError: Files are missing, of another format version, or disagree with each other.
        """
        folder = Path(path)
        meta_file, array_file = folder / f"{_SEMANTIC_FILE}.json", folder / f"{_SEMANTIC_FILE}.npz"
        if not meta_file.is_file() or not array_file.is_file():
            raise ConfigError(f"{folder} has no {meta_file.name} and {array_file.name}: save SemanticIds there first")
        meta = json.loads(meta_file.read_text(encoding="utf-8"))
        if meta.get("format_version") != _FORMAT_VERSION:
            raise ConfigError(f"{meta_file}: format_version {meta.get('format_version')} is not {_FORMAT_VERSION}")
        out = cls(SemanticIdConfig(**meta["config"]))
        with np.load(array_file, allow_pickle=False) as arrays:
            codes = arrays["codes"].astype(np.int32)
            books = [arrays[f"codebook_{j}"].astype(np.float32) for j in range(out.config.levels)]
        if codes.shape != (meta["n_items"], out.config.levels + 1) or any(b.shape[1] != meta["dim"] for b in books):
            raise ConfigError(f"{array_file} does not match {meta_file} (shapes differ): save again")
        out._codes, out._codebooks = codes, books
        return out


# --------------------------------------------------------------------------------------------------------------
# Identifiers and the prefix trie
# --------------------------------------------------------------------------------------------------------------


def title_identifiers(data: Dataset, *, max_chars: int = 60) -> list[str]:
    """Each item's short title (see :func:`~llmrec.llm.prompts.short_title`), made unique.

    Titles shared by several items get their year ("Hamlet (1990)", "Hamlet (1996)"); any that still clash, or
    have no year, are numbered ("Hamlet #2"). An item without a title is named by its id ("item 123").

    Args:
        data: The dataset (its items table, in item index order).
        max_chars: Longest title kept (longer ones are cut at a word boundary by sanitize).
    """
    titles = data.items["title"].tolist() if "title" in data.items else [""] * data.n_items
    years = data.items["year"].tolist() if "year" in data.items else [None] * data.n_items
    ids = data.item_vocab.ids
    names = []
    for item_id, title in zip(ids, titles, strict=True):
        short = sanitize(short_title(title), max_chars=max_chars)
        names.append(short or f"item {sanitize(item_id, max_chars=40)}")
    counts = Counter(names)
    for i, name in enumerate(names):
        if counts[name] > 1:
            year = _year_of(years[i], titles[i])
            names[i] = f"{name} ({year})" if year else name
    counts = Counter(names)
    taken = set(counts)
    numbered: Counter[str] = Counter()
    for i, name in enumerate(names):
        if counts[name] > 1:
            numbered[name] += 1
            if numbered[name] > 1:  # the first keeps the plain name
                n = numbered[name]
                while f"{name} #{n}" in taken:
                    n += 1
                names[i] = f"{name} #{n}"
                taken.add(names[i])
    return names


def _year_of(year: object, title: object) -> str:
    """A four-digit year from the items table's ``year`` or from a "(1995)" at the end of the title."""
    try:
        if year is not None and not (isinstance(year, float) and np.isnan(year)) and str(year).strip():
            return str(int(year))  # type: ignore[call-overload]
    except (TypeError, ValueError):
        pass
    match = re.search(r"\((\d{4})\)\s*$", str(title or ""))
    return match.group(1) if match else ""


@dataclass(frozen=True)
class ItemIdentifiers:
    """Item index <-> identifier text <-> token ids.

    Attributes:
        kind: ``title`` or ``semantic``.
        strings: Identifier text per item index (all distinct).
        token_ids: Tokens of each identifier as the model writes it as a reply (no end-of-turn token).
        end_id: The end-of-turn token id that closes every identifier.
    """

    kind: IdentifierKind
    strings: list[str]
    token_ids: list[list[int]]
    end_id: int
    _lookup: dict[str, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        lookup = {s: i for i, s in enumerate(self.strings)}
        if len(lookup) != len(self.strings):
            dup = [s for s, c in Counter(self.strings).items() if c > 1][:3]
            raise ConfigError(f"identifiers must be unique, these repeat: {dup}")
        object.__setattr__(self, "_lookup", lookup)

    @classmethod
    def build(cls, kind: IdentifierKind, strings: Sequence[str], lm: SupportsBeamSearch) -> ItemIdentifiers:
        """Tokenize ``strings`` with ``lm``'s tokenizer.

        An identifier whose tokens decode to different text (a tokenizer that normalises) is replaced by the
        decoded text, so what the model writes can always be looked up exactly.

        Raises:
            ConfigError: ``lm`` has no end-of-turn token, or two identifiers coincide.
        """
        end = lm.encode(lm.end_of_turn_text) if lm.end_of_turn_text else []
        if len(end) != 1:
            raise ConfigError(f"{lm.model_id} has no single end-of-turn token: identifiers cannot be closed")
        tokens = [lm.encode(s) for s in strings]
        texts = []
        for s, t in zip(strings, tokens, strict=True):
            if not t:
                raise ConfigError("an identifier is empty: every item needs a non-empty name")
            decoded = lm.decode(t)
            if decoded != s:
                logger.debug("identifier %r decodes as %r; using the decoded text", s, decoded)
            texts.append(decoded)
        return cls(kind, texts, tokens, end[0])

    def __len__(self) -> int:
        return len(self.strings)

    def index_of(self, text: str) -> int | None:
        """Item index named by ``text`` exactly; ``None`` when no item has that identifier."""
        return self._lookup.get(text)

    @property
    def max_tokens(self) -> int:
        """Tokens of the longest identifier (without the end-of-turn token)."""
        return max((len(t) for t in self.token_ids), default=0)


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


# --------------------------------------------------------------------------------------------------------------
# The retriever
# --------------------------------------------------------------------------------------------------------------


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


class GenerativeRetrieverConfig(BaseModel):
    """Settings of :class:`GenerativeRetriever`.

    Attributes:
        identifier: ``title`` (zero-shot: the model knows titles) or ``semantic`` (residual k-means codes over
            item text embeddings; useful zero-shot only as far as the history's codes hint at the next one, and
            the form a fine-tuned model learns).
        semantic: Shape of the semantic ids.
        item_text: How item texts are built for the semantic ids' embeddings (``None`` = the default).
        num_beams: Beams of the search; at least ``k`` are used, since each beam yields at most one item.
        history: Most recent items of the user shown in the prompt.
        max_title_chars: Longest title (as identifier and in the prompt).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    identifier: IdentifierKind = "title"
    semantic: SemanticIdConfig = SemanticIdConfig()
    item_text: ItemTextConfig | None = None
    num_beams: int = Field(default=10, ge=1, le=256)
    history: int = Field(default=10, ge=1, le=200)
    max_title_chars: int = Field(default=60, ge=8, le=300)


@dataclass
class GenerationStats:
    """Counts of what the beam search produced, checked by decoding each sequence to text.

    Attributes:
        generated: Finished sequences the search returned.
        valid: Sequences whose decoded text is exactly some catalogue item's identifier (and ended properly).
        excluded: Valid sequences naming an item the request excluded (the trie should make this 0).
    """

    generated: int = 0
    valid: int = 0
    excluded: int = 0

    @property
    def valid_ratio(self) -> float:
        """``valid / generated`` (NaN before anything was generated)."""
        return self.valid / self.generated if self.generated else float("nan")


_SYSTEM = f"You are a recommender system. {DATA_NOTICE}"


class GenerativeRetriever:
    """Next-K recommendation by constrained generation: the model writes item identifiers, best beams first.

    ``recommend`` takes and returns external ids, in the shape of :meth:`llmrec.models.base.Scorer.recommend`;
    scores are the sequence log-probabilities of the identifiers (higher is better). Users unknown to the
    training data, or without history, get the training popularity ranking (scored by the log of each item's
    popularity share), as scorers do.

    Args:
        lm: A model with token-level control (:class:`~llmrec.llm.local.LocalLM`).
        config: Settings; or pass its fields as keyword arguments.
        encoder: Text encoder for the semantic ids (``None`` = the default TextEncoder behind an in-memory cache).
        semantic_ids: Ready semantic ids (e.g. :meth:`SemanticIds.load`) to use instead of fitting new ones.

    Raises:
        ConfigError: ``lm`` cannot constrain generation (the OpenAI HTTP backend), or the config is invalid.
    """

    name = "genret"

    def __init__(
        self,
        lm: Any,
        config: GenerativeRetrieverConfig | None = None,
        *,
        encoder: SupportsEncode | None = None,
        semantic_ids: SemanticIds | None = None,
        **kwargs: Any,
    ) -> None:
        if not isinstance(lm, SupportsBeamSearch):
            raise ConfigError(
                f"generative retrieval needs a local model (LocalLM): {type(lm).__name__} gives no token-level "
                "control over generation, so replies cannot be restricted to catalogue items. Use LocalLM (any "
                "local transformers checkpoint or GGUF), or rank candidates by likelihood with the reranker"
            )
        self.lm = lm
        self.config = config_from(GenerativeRetrieverConfig, config, kwargs)
        self.encoder = encoder
        self._given_semantic = semantic_ids
        self.semantic_ids: SemanticIds | None = None
        self._data: Dataset | None = None
        self._identifiers: ItemIdentifiers | None = None
        self._trie: IdTrie | None = None
        self.stats = GenerationStats()

    def __repr__(self) -> str:
        return f"GenerativeRetriever({self.lm.model_id!r}, identifier={self.config.identifier!r})"

    # -- training ---------------------------------------------------------------------------------------------

    def fit(self, data: Dataset, options: TrainOptions | None = None) -> Self:
        """Name every item, build the trie, and keep each user's recent history (from ``data`` only)."""
        options = options or TrainOptions()
        if len(data) == 0:
            raise ConfigError("cannot fit genret on an empty dataset")
        if self.config.identifier == "semantic":
            self.semantic_ids = self._semantic(data, options)
            strings = self.semantic_ids.strings()
        else:
            strings = title_identifiers(data, max_chars=self.config.max_title_chars)
        self._identifiers = ItemIdentifiers.build(self.config.identifier, strings, self.lm)
        self._trie = IdTrie(self._identifiers.token_ids, self._identifiers.end_id)
        self._titles = title_identifiers(data, max_chars=self.config.max_title_chars)
        self._seen = data.matrix("binary")
        popularity = data.item_popularity.astype(np.float64) + 1.0
        self._fallback = np.log(popularity / popularity.sum())
        self._history = self._recent(data)
        self._data = data
        return self

    def _semantic(self, data: Dataset, options: TrainOptions) -> SemanticIds:
        if self._given_semantic is not None:
            if len(self._given_semantic) != data.n_items:
                raise ConfigError(
                    f"the given semantic ids cover {len(self._given_semantic)} items, the dataset has {data.n_items}"
                )
            return self._given_semantic
        encoder = self.encoder
        if encoder is None:
            from llmrec.encode.cache import CachedEncoder, memory_cache
            from llmrec.encode.encoder import TextEncoder

            encoder = self.encoder = CachedEncoder(TextEncoder(), memory_cache())
        texts = item_texts(data, self.config.item_text)
        vectors = encoder.encode(texts, show_progress=options.show_progress)
        return SemanticIds(self.config.semantic).fit(vectors, seed=options.seed)

    def _recent(self, data: Dataset) -> list[list[int]]:
        """Per user index: up to ``history`` most recent distinct items, oldest first (interactions are time-sorted)."""
        recent: list[list[int]] = [[] for _ in range(data.n_users)]
        for u, i in zip(data.user_idx[::-1].tolist(), data.item_idx[::-1].tolist(), strict=True):
            row = recent[u]
            if len(row) < self.config.history and i not in row:
                row.append(i)
        return [row[::-1] for row in recent]

    @property
    def data(self) -> Dataset:
        """The training dataset (raises :class:`NotFittedError` before ``fit``)."""
        if self._data is None:
            raise NotFittedError("genret is not fitted: call fit(dataset) first")
        return self._data

    @property
    def identifiers(self) -> ItemIdentifiers:
        """Every item's identifier (raises :class:`NotFittedError` before ``fit``)."""
        if self._identifiers is None:
            raise NotFittedError("genret is not fitted: call fit(dataset) first")
        return self._identifiers

    @property
    def trie(self) -> IdTrie:
        """The prefix trie over the identifiers (raises :class:`NotFittedError` before ``fit``)."""
        if self._trie is None:
            raise NotFittedError("genret is not fitted: call fit(dataset) first")
        return self._trie

    # -- inference --------------------------------------------------------------------------------------------

    def prompt(self, user: object) -> list[Message]:
        """The chat messages sent for ``user`` (their recent items inside a ``<history>`` data block)."""
        uidx = int(self.data.user_vocab.index([str(user)])[0])
        return self._prompt(self._history[uidx])

    def _prompt(self, history: Sequence[int]) -> list[Message]:
        if self.config.identifier == "semantic":
            lines = [f"{self.identifiers.strings[i]}: {self._titles[i]}" for i in history]
            example = self.identifiers.strings[history[-1]] if history else self.identifiers.strings[0]
            ask = (
                "Each line is an item this user chose (identifier: title), oldest first. Name the one item they "
                f"will choose next. Reply with its identifier only, written like {example}."
            )
        else:
            lines = [self._titles[i] for i in history]
            ask = "These are the items this user chose, oldest first. Name the one item they will choose next. "
            ask += "Reply with its title only."
        return [
            {"role": "system", "content": _SYSTEM},
            {"role": "user", "content": f"{data_block('history', lines)}\n{ask}"},
        ]

    def generate(self, history: Sequence[int], k: int, exclude: Iterable[int] = ()) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` item indices and their sequence log-probs for a history of item indices (best first).

        Every generated sequence is decoded and looked up, and :attr:`stats` counts the outcome; fewer than ``k``
        items come back only when fewer than ``k`` items are not excluded.
        """
        exclusion = self.trie.exclude(exclude)
        available = self.trie.available(exclusion)
        if available == 0 or k < 1:
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float64)
        beams = min(max(self.config.num_beams, k), available)
        end = self.identifiers.end_id

        def allowed(prefix: list[int]) -> list[int]:
            return self.trie.allowed(prefix, exclusion) or [end]  # a dead beam (already -inf) just ends

        hypotheses = self.lm.beam_search(
            self._prompt(history), allowed, num_beams=beams, max_new_tokens=self.identifiers.max_tokens + 1
        )
        items: list[int] = []
        scores: list[float] = []
        for h in hypotheses:
            self.stats.generated += 1
            item = self.identifiers.index_of(self.lm.decode(h.token_ids)) if h.ended else None
            if item is None:
                continue
            self.stats.valid += 1
            if self.trie.is_excluded(item, exclusion):
                self.stats.excluded += 1
                continue
            if item not in items:
                items.append(item)
                scores.append(h.logprob)
        order = sorted(range(len(items)), key=lambda j: (-scores[j], items[j]))[:k]
        return np.array([items[j] for j in order], dtype=np.int64), np.array([scores[j] for j in order])

    def recommend(
        self,
        users: Sequence[object] | np.ndarray,
        k: int = 10,
        exclude_seen: bool = True,
        *,
        show_progress: bool = False,
    ) -> Recommendations:
        """Top-``k`` items per user, generated by the model (see the class docstring for unknown users).

        Args:
            users: External user ids.
            k: List length (rows are padded with ``None`` / ``-inf`` when fewer items qualify).
            exclude_seen: Never generate items the user interacted with in the training data.
            show_progress: A progress bar over users.
        """
        if k < 1:
            raise ConfigError(f"k must be >= 1, got {k}")
        data = self.data
        users_arr = np.array([str(u) for u in users], dtype=object)
        uidx = data.user_vocab.index(users_arr, missing="negative")
        idx = np.full((len(users_arr), k), -1, dtype=np.int64)
        vals = np.full((len(users_arr), k), -np.inf, dtype=np.float64)
        from llmrec.progress import progress

        with progress(show_progress, "generating recommendations", len(users_arr)) as advance:
            for row, u in enumerate(uidx.tolist()):
                seen: np.ndarray | list[int] = (
                    self._seen.indices[self._seen.indptr[u] : self._seen.indptr[u + 1]] if u >= 0 else []
                )
                if u < 0 or not self._history[u]:
                    fallback = self._fallback.copy()[None, :]
                    if exclude_seen and len(seen):
                        fallback[0, seen] = -np.inf
                    top_idx, top_vals = top_k(fallback, k)
                    idx[row], vals[row] = top_idx[0], top_vals[0]
                else:
                    got_idx, got_vals = self.generate(self._history[u], k, seen if exclude_seen else ())
                    idx[row, : len(got_idx)], vals[row, : len(got_vals)] = got_idx, got_vals
                advance(1)
        return Recommendations(users_arr, data.item_vocab.ids_of(idx), vals, idx)

    @property
    def valid_ratio(self) -> float:
        """Share of generated sequences that decode to a catalogue item's identifier (NaN before any)."""
        return self.stats.valid_ratio

    def reset_stats(self) -> None:
        """Start counting :attr:`stats` afresh."""
        self.stats = GenerationStats()
