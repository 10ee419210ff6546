"""Batch recommendation on Ray: top-k for every user, written to Parquet and to the store.

The fitted model is the folder :meth:`Pipeline.save <llmrec.pipeline.Pipeline.save>` (``llmrec train --out``) or
:meth:`Scorer.save <llmrec.models.base.Scorer.save>` wrote. Its files go into Ray's object store once; each actor of
a :class:`ray.util.ActorPool` writes them to a private temporary folder and loads the model from there once, so
nodes need no shared file system and the model is never pickled. Users go out in batches (``batch_size``, about
200 as LensKit's batch inference does); the pool keeps one batch in flight per actor (Ray's own backpressure) and
hands results back in input order, so a million users never sit in the driver's memory twice.

Results are exactly those of one process: each batch is answered by the library's own
:meth:`Pipeline.recommend <llmrec.pipeline.Pipeline.recommend>` (or :meth:`Scorer.recommend`), whose lists do not
depend on which other users share the batch. The driver appends each batch to a Parquet file (``user_id, rank,
item_id, score``) as it arrives; the store's ``recommendations`` table is then filled from that file in one
transaction (constant memory; an earlier run of the same name is replaced, or left as it was on failure).
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from llmrec.data.artifacts import load_arrays
from llmrec.errors import ArtifactError, ConfigError
from llmrec.scale._ray import RayOptions, ray_session

if TYPE_CHECKING:
    from llmrec.data.store import Store
    from llmrec.models.base import Recommendations, Scorer
    from llmrec.pipeline import Pipeline

__all__ = [
    "BatchRecommendReport",
    "batch_recommend",
    "load_model",
    "model_users",
    "pack_folder",
    "recommend_with",
]

log = logging.getLogger(__name__)

_COLUMNS = ("user_id", "rank", "item_id", "score")


@dataclass
class BatchRecommendReport:
    """What a batch recommendation run did.

    Attributes:
        users: Users answered.
        rows: List slots written (padded slots, when fewer than k items qualify, are left out).
        k: List length asked for.
        workers: Actors in the pool.
        nodes: Distinct Ray nodes the actors ran on.
        seconds: Wall time from the first batch sent to the last result written (model loading included).
        parquet: The Parquet file written, if any.
        run: The store run name written, if any.

    """

    users: int
    rows: int
    k: int
    workers: int
    nodes: int
    seconds: float
    parquet: Path | None = None
    run: str | None = None
    node_ids: list[str] = field(default_factory=list)

    @property
    def users_per_s(self) -> float:
        """Throughput over the whole run."""
        return self.users / self.seconds if self.seconds > 0 else float("inf")


def pack_folder(folder: str | os.PathLike[str]) -> dict[str, bytes]:
    """Every file under ``folder`` by relative POSIX path: a saved model as plain bytes for Ray's object store.

    Raises:
        ArtifactError: ``folder`` is not a folder.

    """
    root = Path(folder).expanduser()
    if not root.is_dir():
        raise ArtifactError(f"{root} is not a folder", field="model", fix="pass the folder `llmrec train --out` wrote")
    return {path.relative_to(root).as_posix(): path.read_bytes() for path in sorted(root.rglob("*")) if path.is_file()}


def _unpack(files: dict[str, bytes], folder: Path) -> None:
    for name, blob in files.items():
        target = folder / name
        if not target.resolve().is_relative_to(folder.resolve()):
            raise ArtifactError(f"refusing to write {name!r} outside {folder}")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(blob)


def _kind(folder: Path) -> str:
    """``"pipeline"`` or ``"scorer"``: what was saved in ``folder``."""
    if (folder / "pipeline.json").is_file():
        return "pipeline"
    if (folder / "scorer.json").is_file():
        return "scorer"
    raise ArtifactError(
        f"{folder} holds neither a saved pipeline (pipeline.json) nor a saved scorer (scorer.json)",
        field="model",
        fix="pass a folder `llmrec train --out DIR`, Pipeline.save or Scorer.save wrote",
    )


def load_model(folder: str | os.PathLike[str]) -> Pipeline | Scorer:
    """The saved pipeline or scorer in ``folder``, through the library's own loaders (no refit)."""
    root = Path(folder).expanduser()
    if _kind(root) == "pipeline":
        from llmrec.pipeline import Pipeline

        return Pipeline.load(root)
    from llmrec.models.base import Scorer

    return Scorer.load(root)


def model_users(folder: str | os.PathLike[str]) -> np.ndarray:
    """External ids of every user the saved model knows, in its vocabulary order (read without loading it)."""
    root = Path(folder).expanduser()
    data = root / ("retriever/dataset" if _kind(root) == "pipeline" else "dataset")
    vocab = load_arrays(data / "vocab.npz")
    if "user_ids" not in vocab:
        raise ArtifactError(f"{data / 'vocab.npz'} has no user ids", fix="save the model again")
    return np.asarray(vocab["user_ids"].astype(str), dtype=object)


def as_pipeline(model: Pipeline | Scorer, k: int) -> Pipeline:
    """``model`` itself when a pipeline, else a pipeline without a rerank stage around the fitted scorer."""
    from llmrec.pipeline import Pipeline

    return model if isinstance(model, Pipeline) else Pipeline.around(model, candidates=k)


def recommend_with(
    model: Pipeline | Scorer,
    users: Sequence[str] | np.ndarray,
    k: int,
    *,
    exclude_seen: bool = True,
    rerank: bool = False,
) -> Recommendations:
    """Top-``k`` lists from a loaded model through :meth:`Pipeline.recommend`, llmrec's one recommend path (the
    retrieval stage, or with ``rerank`` the pipeline's language-model rerank of its candidates) -- what every
    actor runs, and what one process runs to check them. Pass a pipeline (:func:`as_pipeline`) when calling
    repeatedly: wrapping a scorer indexes every user's history.
    """  # noqa: D205
    from llmrec.query import Query

    pipe = as_pipeline(model, k)
    return pipe.recommend([Query(user=str(u), exclude_seen=exclude_seen) for u in users], k, rerank=rerank)


class _RecommendWorker:
    """One actor: the model loaded once from the packed folder, then batches of users answered."""

    def __init__(self, files: dict[str, bytes], k: int, exclude_seen: bool, threads: int, rerank: bool) -> None:
        import ray
        from threadpoolctl import threadpool_limits

        self._limits = threadpool_limits(limits=threads)  # kept for the actor's life
        # The loaders read every array and table into memory, so the copy is removed at once (an actor is
        # killed, not closed, at the end of a job: nothing would remove it later).
        with tempfile.TemporaryDirectory(prefix="llmrec-model-") as tmp:
            _unpack(files, Path(tmp))
            self.model = as_pipeline(load_model(tmp), k)
        self.k = k
        self.exclude_seen = exclude_seen
        self.rerank = rerank  # the pipeline's language model loads on the first batch, once per actor
        self.node = ray.get_runtime_context().get_node_id()

    def run(self, users: list[str]) -> tuple[dict[str, np.ndarray], str, int]:
        """The lists of ``users`` as columns, this actor's node, and the number of users answered."""
        recs = recommend_with(self.model, users, self.k, exclude_seen=self.exclude_seen, rerank=self.rerank)
        frame = recs.to_frame()
        return {c: frame[c].to_numpy() for c in _COLUMNS}, self.node, len(users)


def _batches(users: np.ndarray, size: int) -> Iterator[list[str]]:
    for start in range(0, len(users), size):
        yield [str(u) for u in users[start : start + size]]


def _arrow_table(columns: dict[str, np.ndarray]) -> Any:
    import pyarrow as pa

    return pa.table(
        {
            "user_id": pa.array(columns["user_id"].astype(str), pa.string()),
            "rank": pa.array(columns["rank"].astype(np.int64), pa.int64()),
            "item_id": pa.array(columns["item_id"].astype(str), pa.string()),
            "score": pa.array(columns["score"].astype(np.float64), pa.float64()),
        }
    )


def _parquet_frames(path: Path, rows: int = 50_000) -> Iterator[pd.DataFrame]:
    import pyarrow.parquet as pq

    for batch in pq.ParquetFile(path).iter_batches(batch_size=rows):
        yield batch.to_pandas()


def batch_recommend(
    model: str | os.PathLike[str],
    *,
    users: Sequence[str] | np.ndarray | None = None,
    k: int = 10,
    exclude_seen: bool = True,
    batch_size: int = 200,
    out: str | os.PathLike[str] | None = None,
    store: Store | None = None,
    run: str | None = None,
    options: RayOptions | None = None,
    show_progress: bool = False,
    rerank: bool = False,
) -> BatchRecommendReport:
    """Top-``k`` for every user (or ``users``) of a saved model, on a Ray actor pool.

    A saved pipeline answers with its retrieval stage (``Pipeline.recommend(..., rerank=False)``), or with
    ``rerank`` with its language-model rerank of the retrieved candidates (the model loaded once per actor;
    size ``cpus_per_worker`` for it). The folder's bytes travel once through Ray's object store, so it should fit
    in the object store and in each actor's memory (see :attr:`Scorer.memory_bound <llmrec.models.base.Scorer>`).

    Args:
        model: The saved pipeline or scorer folder.
        users: External user ids (default: every user the model was fitted on, in vocabulary order).
        k: List length.
        exclude_seen: Leave out items each user interacted with in the training data.
        batch_size: Users per task.
        out: Parquet file to write (``user_id, rank, item_id, score``, users in input order, best first).
        store: Also store the lists in this store's ``recommendations`` table, as run ``run``.
        run: The run's name in the store (default: the model folder's name).
        options: Where and how wide to run (default: a private local Ray, two actors).
        show_progress: A progress bar over users.
        rerank: Rerank each list with the saved pipeline's language model.

    Returns:
        Counts, timing, and the nodes used.

    Raises:
        ArtifactError: ``model`` is not a saved pipeline or scorer.
        ConfigError: A bad argument, Ray missing, or the cluster unreachable.

    """
    options = options or RayOptions()
    if k < 1:
        raise ConfigError(f"k must be >= 1, got {k}", field="k")
    if batch_size < 1:
        raise ConfigError(f"batch_size must be >= 1, got {batch_size}", field="batch_size")
    folder = Path(model).expanduser()
    if _kind(folder) != "pipeline" and rerank:
        raise ConfigError(
            f"{folder} is a saved scorer, which has no language model to rerank with",
            field="model",
            fix="save a pipeline with a language model (llmrec train --out DIR) and pass that folder",
        )
    wanted = model_users(folder) if users is None else np.asarray([str(u) for u in users], dtype=object)
    if store is not None and run is None:
        run = folder.name
    target = Path(out).expanduser() if out is not None else None
    with tempfile.TemporaryDirectory(prefix="llmrec-batch-") as scratch:
        parquet = target or Path(scratch) / "recommendations.parquet"
        rows, nodes, seconds = _run_pool(
            folder, wanted, k, exclude_seen, batch_size, parquet, options, show_progress, rerank
        )
        if store is not None and run is not None:
            dataset = _dataset_name(folder)
            store.replace_recommendations(run, dataset, _parquet_frames(parquet))
    report = BatchRecommendReport(
        users=len(wanted),
        rows=rows,
        k=k,
        workers=options.workers,
        nodes=len(nodes),
        seconds=seconds,
        parquet=target,
        run=run if store is not None else None,
        node_ids=sorted(nodes),
    )
    log.info("batch recommend: %d users, %d rows, %.1f s on %d node(s)", report.users, rows, seconds, len(nodes))
    return report


def _dataset_name(folder: Path) -> str:
    from llmrec.data.artifacts import read_meta

    data = folder / ("retriever/dataset" if _kind(folder) == "pipeline" else "dataset")
    return str(read_meta(data / "dataset.json", "llmrec-dataset").get("name", "dataset"))


def _run_pool(
    folder: Path,
    users: np.ndarray,
    k: int,
    exclude_seen: bool,
    batch_size: int,
    parquet: Path,
    options: RayOptions,
    show_progress: bool,
    rerank: bool = False,
) -> tuple[int, set[str], float]:
    """Send the batches through the actor pool and append each result to ``parquet``; (rows, nodes, seconds)."""
    import pyarrow.parquet as pq

    from llmrec.progress import progress

    files = pack_folder(folder)
    parquet.parent.mkdir(parents=True, exist_ok=True)
    rows = 0
    nodes: set[str] = set()
    with ray_session(options) as ray:
        from ray.util import ActorPool

        start = time.perf_counter()
        files_ref = ray.put(files)
        del files
        remote = ray.remote(_RecommendWorker).options(
            num_cpus=options.cpus_per_worker, scheduling_strategy="SPREAD" if options.spread else "DEFAULT"
        )
        actors = [
            remote.remote(files_ref, k, exclude_seen, options.threads_per_worker, rerank)
            for _ in range(options.workers)
        ]
        pool = ActorPool(actors)
        writer: Any = None
        try:
            doing = "reranking" if rerank else "recommending"
            with progress(show_progress, f"{doing} for {len(users)} users", len(users)) as advance:
                # ActorPool.map takes any iterable (a generator keeps only the batches in flight in memory).
                batches: Any = _batches(users, batch_size)
                results = pool.map(lambda actor, batch: actor.run.remote(batch), batches)
                for columns, node, answered in results:
                    table = _arrow_table(columns)
                    if writer is None:
                        writer = pq.ParquetWriter(parquet, table.schema)
                    writer.write_table(table)
                    rows += table.num_rows
                    nodes.add(node)
                    advance(answered)
            if writer is None:  # no users: an empty file with the right columns
                writer = pq.ParquetWriter(parquet, _arrow_table({c: np.array([]) for c in _COLUMNS}).schema)
        finally:
            if writer is not None:
                writer.close()
            for actor in actors:
                ray.kill(actor)
        seconds = time.perf_counter() - start
    return rows, nodes, seconds
