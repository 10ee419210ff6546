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

The parts, each importable from here as before:

- :mod:`~llmrec.llm.genret.semantic`: :class:`SemanticIdConfig`, :class:`SemanticIds` (residual k-means codes).
- :mod:`~llmrec.llm.genret.identifiers`: :func:`title_identifiers`, :class:`ItemIdentifiers`,
  :data:`IdentifierKind` (item <-> identifier text <-> tokens).
- :mod:`~llmrec.llm.genret.trie`: :class:`IdTrie`, :class:`Exclusion`, :class:`SupportsBeamSearch` (constrained
  decoding).
- :mod:`~llmrec.llm.genret.retriever`: :class:`GenerativeRetriever`, :class:`GenerativeRetrieverConfig`,
  :class:`GenerationStats` (the retriever itself).
"""

from llmrec.llm.genret.identifiers import IdentifierKind, ItemIdentifiers, title_identifiers
from llmrec.llm.genret.retriever import GenerationStats, GenerativeRetriever, GenerativeRetrieverConfig
from llmrec.llm.genret.semantic import SemanticIdConfig, SemanticIds
from llmrec.llm.genret.trie import Exclusion, IdTrie, SupportsBeamSearch

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
