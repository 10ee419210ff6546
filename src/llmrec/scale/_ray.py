"""Connecting to Ray: a local single-machine cluster by default, or an existing one by address.

Ray is an optional dependency (the ``scale`` extra): it is imported here, on first use, so ``import llmrec`` stays
cheap and a missing install is a :class:`~llmrec.errors.ConfigError` that names the fix.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from types import ModuleType
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from llmrec.errors import ConfigError

__all__ = ["RayOptions", "import_ray", "ray_session"]

log = logging.getLogger(__name__)

_INSTALL = "pip install -c constraints.txt 'llmrec[scale]'"


class RayOptions(BaseModel):
    """Where and how wide a batch job runs.

    Attributes:
        address: A running cluster (``"auto"``, ``"HOST:PORT"``, ``"ray://..."``); ``None`` starts a private local
            Ray on this machine (loopback only, no dashboard), stopped again when the job ends.
        workers: Actors in the pool; each loads the model once.
        cpus_per_worker: Logical CPUs Ray reserves per actor (fractional values share a core; leave room for
            Ray Data's own tasks, or a small cluster can stall with every CPU held by idle actors).
        threads_per_worker: BLAS / torch threads inside each actor (1 avoids oversubscribing the cores).
        local_cpus: Logical CPUs of the private local Ray (default: enough for the pool plus one, at least the
            machine's cores).
        spread: Place actors on different nodes where possible (Ray's ``SPREAD`` scheduling).

    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    address: str | None = None
    workers: int = Field(default=2, ge=1)
    cpus_per_worker: float = Field(default=1.0, gt=0.0)
    threads_per_worker: int = Field(default=1, ge=1)
    local_cpus: int | None = Field(default=None, ge=1)
    spread: bool = True


def import_ray() -> ModuleType:
    """The ``ray`` module, or a :class:`ConfigError` naming the extra that installs it."""
    try:
        import ray
    except ImportError as exc:
        raise ConfigError("Ray is not installed, so batch jobs cannot run", fix=_INSTALL) from exc
    return ray


@contextlib.contextmanager
def ray_session(options: RayOptions) -> Iterator[ModuleType]:
    """Ray, initialised for one batch job: reuse a session already open in this process, else open one.

    A session this function opens is shut down when the block ends (a local Ray stops with it; a cluster keeps
    running). The local one binds to loopback and starts no dashboard: nothing is reachable from outside.

    Raises:
        ConfigError: Ray is missing, or the cluster at ``options.address`` cannot be reached.

    """
    ray = import_ray()
    if ray.is_initialized():
        yield ray
        return
    kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False, "logging_level": logging.WARNING}
    if options.address is None:
        needed = int(options.workers * options.cpus_per_worker + 0.999) + 1
        kwargs["num_cpus"] = options.local_cpus or max(needed, os.cpu_count() or 1)
        kwargs["_node_ip_address"] = "127.0.0.1"
    else:
        kwargs["address"] = options.address
    try:
        ray.init(**kwargs)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        where = options.address or "a local Ray"
        raise ConfigError(
            f"could not start or reach {where}: {exc}",
            field="address",
            fix="start the cluster first (ray start --head), pass its address, or leave the address out to run locally",
        ) from exc
    log.info("ray: %s", ray.cluster_resources())
    try:
        yield ray
    finally:
        ray.shutdown()
