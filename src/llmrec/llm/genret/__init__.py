"""Generative retrieval: the language model *names* the next item, and can only name items that exist.

The module grew into a package; this step only moves it (the parts follow in the next commit).
"""

from llmrec.llm.genret.retriever import (
    Exclusion,
    GenerationStats,
    GenerativeRetriever,
    GenerativeRetrieverConfig,
    IdentifierKind,
    IdTrie,
    ItemIdentifiers,
    SemanticIdConfig,
    SemanticIds,
    SupportsBeamSearch,
    title_identifiers,
)

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
