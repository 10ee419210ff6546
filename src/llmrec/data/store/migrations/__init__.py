"""Alembic environment of the llmrec store (a package so that installers always ship it)."""
