"""The package's layers: shared concepts (the catalogue, titles, text matching) sit below the language model.

Chat parsing, dialogue evaluation and hard filters read the catalogue; none of them should drag in the
language-model layer (or torch) to do it, so each is imported in a fresh interpreter and its modules inspected.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from llmrec.catalogue import Catalogue, CatalogueConfig
from llmrec.data.registry import load_named
from llmrec.llm.explain import ExplainConfig


@pytest.mark.parametrize(
    "module",
    ["llmrec.catalogue", "llmrec.chat.parse", "llmrec.chat.link", "llmrec.eval.dialogue", "llmrec.data.filters"],
)
def test_module_does_not_import_the_language_model_layer(module: str) -> None:
    code = f"import sys, {module}; print(sorted(m for m in sys.modules if m.startswith('llmrec.llm') or m == 'torch'))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_explain_config_drives_the_catalogue_it_builds() -> None:
    data = load_named("movielens-small", prefer_store=False)
    strict = Catalogue.of(data, ExplainConfig(max_tag_words=1))
    default = Catalogue.of(data, CatalogueConfig())
    assert strict is not default  # other tag settings, another catalogue
    assert Catalogue.of(data) is default  # the default settings are shared by the chat and the explainer
    tags = lambda cat: sum(len(cat.tags(i)) for i in range(len(cat)))  # noqa: E731
    assert tags(strict) < tags(default)
