"""Alembic revisions of the llmrec store schema."""
