"""``python -m llmrec.cli``: the same as the ``llmrec`` command."""

from llmrec.cli import app

app()
