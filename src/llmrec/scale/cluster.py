"""A real multi-node Ray cluster on this machine, on loopback: for tests and benchmarks, stopped exactly.

:class:`LocalCluster` runs ``ray start --head`` and then ``ray start --address`` for each further node, each as
its own ``--block`` child process in its own session, with its own temporary folder and its own free ports, so
several clusters (other test runs, other users' Ray) can share the machine. ``stop`` signals exactly those
process groups -- never ``ray stop``, which kills every Ray process on the machine by name.

Token authentication (on by default since Ray 2.5x) stays on: one random token goes to every node and to the
drivers through ``RAY_AUTH_MODE=token`` and ``RAY_AUTH_TOKEN`` in :meth:`LocalCluster.env`; nothing is written to
the home folder. Every node binds ``127.0.0.1`` and runs no dashboard.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import Self

from llmrec.errors import ConfigError

__all__ = ["LocalCluster"]

log = logging.getLogger(__name__)


def _free_ports(n: int) -> list[int]:
    """``n`` distinct TCP ports free on loopback right now."""
    sockets, ports = [], []
    try:
        for _ in range(n):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind(("127.0.0.1", 0))
            sockets.append(sock)
            ports.append(int(sock.getsockname()[1]))
    finally:
        for sock in sockets:
            sock.close()
    return ports


def _ray_cli() -> str:
    """The ``ray`` command of this interpreter's environment."""
    candidate = Path(sys.executable).with_name("ray")
    if candidate.is_file():
        return str(candidate)
    found = shutil.which("ray")
    if found is None:
        raise ConfigError("the `ray` command is not installed", fix="pip install -c constraints.txt 'llmrec[scale]'")
    return found


class LocalCluster:
    """A head node plus ``nodes - 1`` worker nodes on loopback, started by :meth:`start`, stopped by :meth:`stop`.

    Args:
        nodes: Nodes in all (the head included).
        cpus_per_node: Logical CPUs each node offers Ray.
        object_store_mb: Object store size of each node.
        timeout_s: How long to wait for the nodes to register.
        env: Extra environment for the nodes (e.g. ``PYTHONPATH`` so their workers import this llmrec).

    Example:
        >>> with LocalCluster(nodes=2) as cluster:  # doctest: +SKIP
        ...     subprocess.run(["llmrec", "batch", "recommend", "--address", cluster.address, ...],
        ...                    env=cluster.env(), check=True)

    """

    def __init__(
        self,
        nodes: int = 2,
        *,
        cpus_per_node: int = 1,
        object_store_mb: int = 128,
        timeout_s: float = 120.0,
        env: dict[str, str] | None = None,
    ) -> None:
        if nodes < 1:
            raise ConfigError(f"a cluster needs at least one node, got {nodes}", field="nodes")
        self.nodes = nodes
        self.cpus_per_node = cpus_per_node
        self.object_store_mb = object_store_mb
        self.timeout_s = timeout_s
        self.extra_env = dict(env or {})
        self.token = secrets.token_hex(32)
        self.port = 0
        self._procs: list[subprocess.Popen[bytes]] = []
        self._tmp: tempfile.TemporaryDirectory[str] | None = None

    @staticmethod
    def node_ip(index: int) -> str:
        """The loopback address node ``index`` registers on: ``127.0.0.2`` for the head, then ``127.0.0.3``...

        Ray replaces ``127.0.0.1`` (and ``localhost``) by the machine's network address, so each node gets its own
        other address of the loopback network (all of 127/8 is loopback on Linux): traffic never leaves the
        machine, and the nodes are told apart by address as separate hosts would be.
        """
        return f"127.0.0.{2 + index}"

    @property
    def address(self) -> str:
        """``HOST:PORT`` of the head (what ``ray.init(address=...)`` and ``--address`` take)."""
        return f"{self.node_ip(0)}:{self.port}"

    @property
    def temp_dir(self) -> Path | None:
        """The cluster's own temporary folder (every node's sessions, sockets and logs), while it runs."""
        return Path(self._tmp.name) if self._tmp is not None else None

    @property
    def pids(self) -> list[int]:
        """Process ids of the ``ray start --block`` processes (each leads its own process group)."""
        return [p.pid for p in self._procs]

    def env(self) -> dict[str, str]:
        """The environment a driver (or node) needs: this process's, plus the cluster's token and extras."""
        out = {**os.environ, **self.extra_env, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": self.token}
        out.pop("RAY_AUTH_TOKEN_PATH", None)
        out.pop("RAY_ADDRESS", None)
        out["RAY_USAGE_STATS_ENABLED"] = "0"
        return out

    def _start_node(self, index: int, args: list[str]) -> None:
        assert self._tmp is not None
        ports = _free_ports(7)
        command = [
            _ray_cli(),
            "start",
            *args,
            "--block",
            f"--node-ip-address={self.node_ip(index)}",
            f"--num-cpus={self.cpus_per_node}",
            "--num-gpus=0",
            f"--object-store-memory={self.object_store_mb * 1024 * 1024}",
            f"--temp-dir={Path(self._tmp.name) / f'node{index}'}",
            f"--node-manager-port={ports[0]}",
            f"--object-manager-port={ports[1]}",
            f"--dashboard-agent-listen-port={ports[2]}",
            f"--dashboard-agent-grpc-port={ports[3]}",
            f"--runtime-env-agent-port={ports[4]}",
            f"--metrics-export-port={ports[5]}",
            "--disable-usage-stats",
        ]
        log_file = open(Path(self._tmp.name) / f"node{index}.log", "wb")  # noqa: SIM115 -- lives as long as the node
        proc = subprocess.Popen(
            command, env=self.env(), stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True
        )
        self._procs.append(proc)

    def start(self) -> Self:
        """Start the head, then the other nodes, and wait until all of them have registered.

        Raises:
            ConfigError: A node exited or the cluster did not form within ``timeout_s`` (everything started is
                stopped again; the message holds the nodes' last log lines).

        """
        self._tmp = tempfile.TemporaryDirectory(prefix="llmrec-ray-")
        (self.port,) = _free_ports(1)
        try:
            self._start_node(0, ["--head", f"--port={self.port}", "--include-dashboard=false"])
            self._wait(1)
            for index in range(1, self.nodes):
                self._start_node(index, [f"--address={self.address}"])
            self._wait(self.nodes)
        except BaseException:
            self.stop()
            raise
        return self

    def alive_nodes(self, timeout_s: float = 60.0) -> list[dict[str, object]]:
        """The cluster's alive nodes (``NodeID``, ``NodeManagerAddress``, ``Resources``...) as ``ray.nodes()`` gives
        them, asked from a separate driver process (this process may hold a Ray session of its own).
        """  # noqa: D205
        import json

        script = (
            "import json, ray, sys; ray.init(address=sys.argv[1], logging_level='ERROR'); "
            "print(json.dumps([{k: n[k] for k in ('NodeID', 'NodeManagerAddress', 'Resources')} "
            "for n in ray.nodes() if n['Alive']]))"
        )
        try:
            probe = subprocess.run(
                [sys.executable, "-c", script, self.address],
                env=self.env(),
                capture_output=True,
                timeout=timeout_s,
                check=False,
            )
        except subprocess.TimeoutExpired:
            return []
        lines = probe.stdout.decode(errors="replace").strip().splitlines()
        if probe.returncode != 0 or not lines:
            return []
        try:
            nodes = json.loads(lines[-1])
        except ValueError:
            return []
        return list(nodes) if isinstance(nodes, list) else []

    def _wait(self, count: int) -> None:
        deadline = time.monotonic() + self.timeout_s
        while time.monotonic() < deadline:
            for proc in self._procs:
                if proc.poll() is not None:
                    raise ConfigError(f"a Ray node exited with status {proc.returncode}: {self._tail()}")
            if len(self.alive_nodes(timeout_s=max(5.0, deadline - time.monotonic()))) >= count:
                return
            time.sleep(1.0)
        raise ConfigError(f"the Ray cluster did not reach {count} node(s) in {self.timeout_s:.0f} s: {self._tail()}")

    def _tail(self) -> str:
        if self._tmp is None:
            return ""
        parts = []
        for path in sorted(Path(self._tmp.name).glob("node*.log")):
            lines = path.read_text(errors="replace").strip().splitlines()[-5:]
            parts.append(f"{path.name}: " + " | ".join(lines))
        return "; ".join(parts)

    def stop(self, timeout_s: float = 5.0) -> None:
        """Stop exactly the nodes this object started: SIGTERM to each one's process group, SIGKILL after a wait."""
        for proc in reversed(self._procs):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        for proc in reversed(self._procs):
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
        # Workers a raylet forked may outlive it for a moment: they are in the node's process group too.
        for proc in self._procs:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
        self._procs.clear()
        if self._tmp is not None:
            with contextlib.suppress(OSError):
                self._tmp.cleanup()
            self._tmp = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
