"""The generative side: language-model backends and what is built on them (rerank, explain, generate)."""
