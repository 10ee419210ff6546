"""Batch embedding on Ray: a catalogue's texts through the embedding cache, the missing ones on an actor pool.

The driver does exactly what :class:`~llmrec.encode.cache.CachedEncoder` does in one process -- hash every text,
look them all up in the store's embedding cache in bulk, split the distinct missing texts, in order of first
appearance, into chunks of ``chunk_size`` -- but the chunks are embedded by Ray Data ``map_batches`` on an actor
pool, each actor loading the :class:`~llmrec.encode.encoder.TextEncoder` once. New vectors are written to the cache
by the driver in one transaction (workers never touch the database, so nodes need no route to it).

Exactly one process's result: a transformer's output for a text depends, in the last bits, on the other texts
padded into its forward pass, so each chunk is one indivisible Ray Data row and is embedded by one
``encode`` call, as ``CachedEncoder(encoder, cache, chunk_size=chunk_size).encode(texts)`` embeds it. The vectors
(and the cache rows) are then bit for bit the same, whichever actor or node embedded which chunk.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from llmrec.encode.cache import EmbeddingCache, text_hash
from llmrec.encode.encoder import TextEncoder, TextEncoderConfig
from llmrec.errors import ConfigError, StoreError
from llmrec.scale._ray import RayOptions, ray_session

__all__ = ["BatchEmbedReport", "batch_embed"]

log = logging.getLogger(__name__)


@dataclass
class BatchEmbedReport:
    """What a batch embedding run did.

    Attributes:
        model_id: The encoder's cache key (model and settings).
        texts: Texts asked for.
        unique: Distinct texts among them.
        hits: Distinct texts already in the cache.
        embedded: Distinct texts embedded by the pool (and now cached).
        workers: Actors in the pool.
        nodes: Distinct Ray nodes that embedded a chunk (0 when nothing was missing).
        seconds: Wall time of the run.

    """

    model_id: str
    texts: int
    unique: int
    hits: int
    embedded: int
    workers: int
    nodes: int
    seconds: float
    node_ids: list[str] = field(default_factory=list)

    @property
    def texts_per_s(self) -> float:
        """Embedded texts per second (cache hits excluded)."""
        return self.embedded / self.seconds if self.seconds > 0 else float("inf")


class _EmbedWorker:
    """One actor of the pool: the encoder loaded once, then one chunk per call."""

    def __init__(self, config: dict[str, Any], threads: int) -> None:
        import ray

        settings = TextEncoderConfig.model_validate({**config, "threads": threads})
        self.encoder = TextEncoder(settings)
        self.encoder.model  # noqa: B018 -- load now, once per actor, not inside the first batch
        self.node = ray.get_runtime_context().get_node_id()

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        chunks, positions, vectors = [], [], []
        for chunk, texts in zip(batch["chunk"], batch["texts"], strict=True):
            out = np.asarray(self.encoder.encode([str(t) for t in texts]), dtype=np.float32)
            chunks.append(np.full(len(out), int(chunk), dtype=np.int64))
            positions.append(np.arange(len(out), dtype=np.int64))
            vectors.append(out)
        return {
            "chunk": np.concatenate(chunks),
            "position": np.concatenate(positions),
            "vector": np.concatenate(vectors),
            "node": np.full(sum(len(c) for c in chunks), self.node, dtype=object),
        }


def batch_embed(
    texts: Sequence[str],
    cache: EmbeddingCache,
    *,
    encoder: TextEncoderConfig | None = None,
    chunk_size: int = 256,
    options: RayOptions | None = None,
    show_progress: bool = False,
) -> tuple[np.ndarray, BatchEmbedReport]:
    """Embed ``texts`` through ``cache``, the missing ones on a Ray actor pool.

    Args:
        texts: The texts (e.g. :func:`llmrec.text.build.item_texts` of a catalogue); repeats are embedded once.
        cache: The embedding cache (the store's, to share vectors with every process using that database).
        encoder: The encoder's settings (default: the packaged all-MiniLM-L6-v2).
        chunk_size: Texts per ``encode`` call, the unit of work of one actor call.
        options: Where and how wide to run (default: a private local Ray, two actors).
        show_progress: A progress bar over the missing texts.

    Returns:
        ``(vectors, report)``: ``(len(texts), dim)`` float32 vectors in input order, equal bit for bit to
        ``CachedEncoder(TextEncoder(encoder), cache, chunk_size=chunk_size).encode(texts)``; and the counts.

    Raises:
        ConfigError: A bad argument, Ray missing, or the cluster unreachable.
        StoreError: The cache's database cannot be read or written (nothing new is stored then).

    """
    if chunk_size < 1:
        raise ConfigError(f"chunk_size must be >= 1, got {chunk_size}", field="chunk_size")
    options = options or RayOptions()
    settings = encoder or TextEncoderConfig()
    model_id = TextEncoder(settings).model_id
    start = time.perf_counter()
    texts = [str(t) for t in texts]
    keys = [text_hash(t) for t in texts]
    first: dict[str, int] = {}
    for position, key in enumerate(keys):
        first.setdefault(key, position)
    found = cache.get(model_id, list(first))
    missing = [key for key in first if key not in found]
    nodes: set[str] = set()
    if missing:
        chunks = [missing[i : i + chunk_size] for i in range(0, len(missing), chunk_size)]
        new = _embed_chunks(chunks, [[texts[first[k]] for k in chunk] for chunk in chunks], settings, options,
                            nodes, show_progress)  # fmt: skip
        cache.put(model_id, new)
        found.update(new)
    seconds = time.perf_counter() - start
    report = BatchEmbedReport(
        model_id=model_id,
        texts=len(texts),
        unique=len(first),
        hits=len(first) - len(missing),
        embedded=len(missing),
        workers=options.workers,
        nodes=len(nodes),
        seconds=seconds,
        node_ids=sorted(nodes),
    )
    log.info(
        "batch embed: %d texts, %d embedded on %d node(s) in %.1f s", len(texts), len(missing), len(nodes), seconds
    )
    if not texts:
        return np.zeros((0, 0), dtype=np.float32), report
    dims = {len(v) for v in found.values()}
    if len(dims) != 1:
        raise StoreError(
            f"the embedding cache holds vectors of sizes {sorted(dims)} for model {model_id}",
            fix=f"clear it (EmbeddingCache.clear({model_id!r}))",
        )
    return np.stack([found[key] for key in keys]).astype(np.float32, copy=False), report


def _embed_chunks(
    keys: list[list[str]],
    texts: list[list[str]],
    settings: TextEncoderConfig,
    options: RayOptions,
    nodes: set[str],
    show_progress: bool,
) -> dict[str, np.ndarray]:
    """``{text_hash: vector}`` of every chunk, embedded by Ray Data ``map_batches`` on an actor pool."""
    from llmrec.progress import progress

    total = sum(len(c) for c in texts)
    vectors: dict[str, np.ndarray] = {}
    with ray_session(options) as ray:
        import ray.data

        context = ray.data.DataContext.get_current()
        context.enable_progress_bars = False
        context.verbose_progress = False
        # Start work once every actor has loaded the encoder: chunks then spread over the whole pool (by default
        # the first actor up would take them all while the others still load). Bounded: a pool that cannot be
        # placed fails instead of waiting forever.
        context.wait_for_min_actors_s = 600
        rows = [{"chunk": i, "texts": chunk} for i, chunk in enumerate(texts)]
        dataset = ray.data.from_items(rows, override_num_blocks=len(rows)).map_batches(
            _EmbedWorker,
            fn_constructor_kwargs={
                "config": settings.model_dump(mode="json"),
                "threads": options.threads_per_worker,
            },
            batch_size=1,  # one chunk per encode call: the chunk is the unit that fixes the vectors' last bits
            batch_format="numpy",
            compute=ray.data.ActorPoolStrategy(size=options.workers),
            num_cpus=options.cpus_per_worker,
        )
        with progress(show_progress, f"embedding {total} new text(s)", total) as advance:
            for batch in dataset.iter_batches(batch_format="numpy", batch_size=None):
                for chunk, position, vector, node in zip(
                    batch["chunk"], batch["position"], batch["vector"], batch["node"], strict=True
                ):
                    vectors[keys[int(chunk)][int(position)]] = np.asarray(vector, dtype=np.float32)
                    nodes.add(str(node))
                advance(len(batch["chunk"]))
    if len(vectors) != total:
        raise StoreError(f"the embedding pool returned {len(vectors)} vectors for {total} texts")
    return vectors
