"""The ``llmrec`` command line: demo, train, recommend, chat, ingest, evaluate, report, datasets, serve, tune, synth.

``llmrec batch recommend|embed`` runs the batch jobs of :mod:`llmrec.scale` on Ray.

Every command catches :class:`~llmrec.errors.LlmrecError` and prints its message (which names the file, line,
field and fix) instead of a traceback, exiting with status 2.
"""

# Each module registers its commands; `llmrec --help` lists them in the order they are first imported.
# isort: off
from llmrec.cli import models, serving, evaluation, data, tune, batch  # noqa: F401

# isort: on
from llmrec.cli.common import app, main
from llmrec.cli.tables import comparisons_table, metrics_table

__all__ = ["app", "comparisons_table", "main", "metrics_table"]
