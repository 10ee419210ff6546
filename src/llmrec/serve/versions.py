"""Published model versions: fitted pipelines saved in an artifact folder and registered in the store.

Every worker serving a dataset (processes on one machine, or nodes sharing a folder and a PostgreSQL database)
reads the same versions, so one refit reaches them all:

* :meth:`ArtifactFolder.publish` saves the snapshot's fitted pipelines (``Pipeline.save``: npz + JSON, no pickle)
  into a hidden temporary folder, renames it to ``<dataset>/v<number>`` and only then registers the number in the
  store (``model_versions``, unique per dataset). A reader never sees a half-written version; if two publishers
  race for a number, the store's unique key lets one win and the other takes the next number.
* :meth:`ArtifactFolder.load` reads a version back as a :class:`~llmrec.serve.snapshot.Snapshot` (loaded, not
  fitted): the data it was fitted on, its markers, and its pipelines.
* :meth:`ArtifactFolder.prune` keeps the newest ``keep`` versions and drops older ones, and every older version
  made before a user's deletion (its folder still holds that user's data), from the store and then the folder.

Layout: ``<artifacts>/<dataset slug>/v000003/<retriever>/`` is a saved pipeline (``llmrec serve --model`` reads it
too), with ``store_marker`` and the audit mark (``audit_marker``, ``audit_gaps``) in its metadata.
"""

from __future__ import annotations

import hashlib
import logging
import re
import shutil
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

from llmrec.data.store import ModelVersion, Store
from llmrec.data.store.versions import worker_name
from llmrec.errors import ArtifactError, ConflictError
from llmrec.pipeline import Pipeline
from llmrec.serve.snapshot import Snapshot

__all__ = ["ArtifactFolder"]

log = logging.getLogger(__name__)


def _slug(dataset: str) -> str:
    """A folder name for ``dataset``: its safe characters and a short hash (two names never share a folder)."""
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", dataset).strip("._")[:60] or "dataset"
    return f"{safe}-{hashlib.sha256(dataset.encode()).hexdigest()[:8]}"


def _fitted_at(pipe: Pipeline, default: datetime) -> datetime:
    """When ``pipe`` was fitted (UTC), as saved; ``default`` when it does not say."""
    if not pipe.fitted_at:
        return default
    fitted = datetime.fromisoformat(pipe.fitted_at)
    return fitted.replace(tzinfo=UTC) if fitted.tzinfo is None else fitted


class ArtifactFolder:
    """The published versions of one dataset's fitted pipelines (see the module docstring).

    Args:
        root: The artifact folder every worker of the dataset reads (created when missing).
        store: The store registering the versions.
        dataset: The dataset served.
        keep: Versions kept by :meth:`prune` (at least 1).

    """

    def __init__(self, root: str | Path, store: Store, dataset: str, *, keep: int = 3) -> None:
        self.root = Path(root).expanduser()
        self.store = store
        self.dataset = dataset
        self.keep = max(1, int(keep))
        self.folder = self.root / _slug(dataset)

    def publish(self, snap: Snapshot) -> ModelVersion:
        """Save the snapshot's fitted retrievers as the next version, register it, set ``snap.version``, prune.

        One folder per retriever (the first pipeline fitted with it; the LM rerank is a setting around it, so a
        reranking pipeline is rebuilt from the same saved retriever).

        Raises:
            ArtifactError: Nothing could be saved (no fitted pipeline, or the folder is not writable).
            ConflictError: No free version number was found (another publisher kept taking them).

        """
        pipelines: dict[str, Pipeline] = {}
        for (name, _rerank), pipe in snap.pipelines.items():
            pipelines.setdefault(name, pipe)
        if not pipelines:
            raise ArtifactError(f"nothing to publish for {self.dataset!r}: no pipeline is fitted")
        tmp = self.folder / f".tmp-{uuid.uuid4().hex}"
        meta = {
            "store_marker": snap.marker,
            "audit_marker": snap.audit.marker,
            "audit_gaps": list(snap.audit.gaps),
            "dataset": self.dataset,
        }
        try:
            try:
                for name, pipe in pipelines.items():
                    pipe.save(tmp / name, metadata=meta)
            except OSError as exc:
                raise ArtifactError(
                    f"cannot write the model version into {self.folder}: {exc.strerror or exc}. "
                    "Fix: make the artifact folder (ServeConfig.artifacts, --artifacts) writable by every worker"
                ) from exc
            version = self._register(tmp, snap, list(pipelines))
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        snap.version = version.version
        snap.loaded_at = _fitted_at(next(iter(pipelines.values())), snap.loaded_at)  # as every loader reads it
        log.info("published model version %d of %s (%s)", version.version, self.dataset, ", ".join(pipelines))
        self.prune()
        return version

    def _register(self, tmp: Path, snap: Snapshot, retrievers: list[str]) -> ModelVersion:
        latest = self.store.latest_model_version(self.dataset)
        number = (latest.version if latest is not None else 0) + 1
        for _ in range(1000):
            final = self.folder / f"v{number:06d}"
            if final.exists():  # left by a publisher that died before registering it: never reuse a folder
                number += 1
                continue
            tmp.rename(final)  # atomic: the folder is complete before any worker can learn its number
            version = self.store.add_model_version(
                self.dataset,
                number,
                final.relative_to(self.root).as_posix(),
                store_marker=snap.marker,
                audit=snap.audit,
                retrievers=retrievers,
                created_by=worker_name(),
            )
            if version is not None:
                return version
            final.rename(tmp)  # the number was taken meanwhile: take the next one
            number += 1
        raise ConflictError(
            f"no free model version number for {self.dataset!r} in {self.folder}. "
            "Fix: remove stale v* folders that the store does not list, and refit again"
        )

    def load(self, version: ModelVersion) -> Snapshot:
        """The snapshot of a published version: its data and pipelines loaded from the folder, nothing fitted.

        Raises:
            ArtifactError: The folder is missing or corrupt (not shared with this worker, or pruned meanwhile).

        """
        folder = self.root / version.path
        if not folder.is_dir():
            raise ArtifactError(
                f"model version {version.version} of {self.dataset!r} is registered, but its folder {folder} is "
                "missing here. Fix: give every worker the same artifact folder (a shared folder across nodes)"
            )
        pipes = [Pipeline.load(folder / name) for name in version.retrievers]
        if not pipes:
            raise ArtifactError(f"model version {version.version} of {self.dataset!r} holds no pipeline")
        first = pipes[0]
        return Snapshot(
            first.data,
            version.store_marker,
            _fitted_at(first, version.created_at),
            saved=tuple(pipes),
            version=version.version,
            audit=version.audit,
        )

    def prune(self) -> list[int]:
        """Remove old versions: beyond the newest ``keep``, and older ones made before a user's deletion.

        The newest version always stays. Rows go first, then folders, so no worker is sent to a missing folder by a
        fresh poll (one already loading a pruned version fails that load and keeps serving what it has).

        Returns:
            The version numbers removed.

        """
        self._remove_stale_temporaries()
        versions = self.store.model_versions(self.dataset)
        if len(versions) <= 1:
            return []
        newest, older = versions[0], versions[1:]
        drop = {v.version for v in older[self.keep - 1 :]}
        kept_old = [v for v in older if v.version not in drop]
        if kept_old:
            deletions = self.store.deletions_after(self.dataset, min(v.audit.low for v in kept_old))
            drop |= {v.version for v in kept_old if any(not v.audit.covers(d.id) for d in deletions)}
        if not drop:
            return []
        self.store.delete_model_versions(self.dataset, drop)
        for v in versions:
            if v.version in drop and v.version != newest.version:
                shutil.rmtree(self.root / v.path, ignore_errors=True)
        log.info("removed model versions %s of %s", sorted(drop), self.dataset)
        return sorted(drop)

    def _remove_stale_temporaries(self, older_than_s: float = 3600.0) -> None:
        """Remove half-written versions left by publishers that died (``.tmp-*`` untouched for an hour)."""
        if not self.folder.is_dir():
            return
        now = time.time()
        for tmp in self.folder.glob(".tmp-*"):
            try:
                if now - tmp.stat().st_mtime > older_than_s:
                    shutil.rmtree(tmp, ignore_errors=True)
            except OSError:  # removed by another worker meanwhile
                continue
