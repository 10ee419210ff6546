"""Federated training simulated on one machine: FedAvg over user partitions, optionally with client-level DP.

Clients are disjoint partitions of the users (a seeded shuffle). Every round each client starts from the
global weights, trains ``local_epochs`` epochs on its own users' interactions only, and sends back its weights
and its number of training examples; the server replaces the global weights by the average of the clients'
weights weighted by those counts (FedAvg, McMahan et al. 2017). With
:class:`~llmrec.models.base.ClientDPOptions`, each client's update is clipped in L2 and the server adds Gaussian
noise to the equally weighted mean of the clipped updates (DP-FedAvg, McMahan et al. 2018); Opacus' accountant
gives the client-level epsilon.

The protocol is Flower's: every client is a ``flwr.client.NumPyClient`` (``get_parameters`` / ``fit``, weights as
lists of numpy arrays), reached through Flower's own client interface (``to_client().fit(FitIns)``, weights
serialised as Flower ``Parameters``), and the server aggregates with Flower's ``FedAvg`` strategy
(``aggregate_fit``); only the round loop that Flower's simulation engine would run is ours, in this process,
because that engine needs Ray 2.55 while llmrec runs Ray 2.60. The same clients can join a real Flower server
unchanged. DP-FedAvg (:func:`dp_fedavg`) is ours: it reports a client-level epsilon through Opacus' accountant.

Flower is installed without its dependency pins (``pip install --no-deps flwr``, as ``make install-test`` does):
flwr 1.33-1.42 pin ``fastapi`` 0.138, ``uvicorn`` 0.49, ``starlette`` 1.3 and ``protobuf<7`` for its own
server, which conflict with llmrec's server stack; the parts used here (client, strategy, serialisation) run
with llmrec's versions plus ``grpcio``, ``pycryptodome`` and ``iterators`` (the ``privacy`` extra).

Use it through the training options (the evaluation harness then reports federated models like any other)::

    SASRec(max_epochs=5).fit(data, TrainOptions(federated=FederatedOptions(clients=10, rounds=5)))
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from llmrec.data.dataset import Dataset
from llmrec.errors import PrivacyError
from llmrec.models.base import ClientDPOptions, PrivacyReport, TrainOptions
from llmrec.models.sequential import EpochLog, Sequences, user_sequences

if TYPE_CHECKING:
    from llmrec.models.sequential import SequentialScorer

__all__ = [
    "ClientResult",
    "SequentialClient",
    "dp_fedavg",
    "fedavg",
    "flower_client",
    "partition_users",
    "train_federated",
]

log = logging.getLogger(__name__)

NDArrays = list[np.ndarray]
"""Model weights as numpy arrays, in the model's ``state_dict`` order (Flower's ``NDArrays``)."""

ClientResult = tuple[NDArrays, int]
"""What one client sends back from a round: its weights and its number of training examples."""


def partition_users(n_users: int, clients: int, seed: int) -> list[np.ndarray]:
    """Split user indices ``0..n_users-1`` into ``clients`` disjoint, nearly equal parts (a seeded shuffle).

    Raises:
        PrivacyError: More clients than users.

    """
    if clients > n_users:
        raise PrivacyError(
            f"{clients} clients for {n_users} users: some clients would hold nobody",
            field="federated.clients",
            fix=f"use at most {n_users} clients",
        )
    order = np.random.default_rng(seed).permutation(n_users)
    return [np.sort(part) for part in np.array_split(order, clients)]


def _flower() -> Any:
    """The ``flwr`` module, or a :class:`PrivacyError` naming how to install it."""
    try:
        import flwr
        import flwr.client
        import flwr.common
        import flwr.server.strategy
    except ImportError as exc:
        raise PrivacyError(
            f"federated training runs on Flower, which is not installed ({exc})",
            field="federated",
            fix="pip install -c constraints.txt 'llmrec[privacy]' && pip install -c constraints.txt --no-deps flwr",
        ) from exc
    return flwr


def fedavg(results: Sequence[ClientResult], server_round: int = 1) -> NDArrays:
    """Weighted average of client weights, weights = numbers of examples: Flower's ``FedAvg.aggregate_fit``.

    Raises:
        PrivacyError: No results, or no client had an example.

    """
    total = sum(n for _, n in results)
    if not results or total <= 0:
        raise PrivacyError("no client trained on any example in this round", field="federated.clients")
    flwr = _flower()
    common = flwr.common
    replies = [
        (None, common.FitRes(common.Status(common.Code.OK, ""), common.ndarrays_to_parameters(w), n, {}))
        for w, n in results
    ]
    parameters, _ = flwr.server.strategy.FedAvg(inplace=False).aggregate_fit(server_round, replies, [])
    merged: NDArrays = common.parameters_to_ndarrays(parameters)
    return [m.astype(w.dtype, copy=False) for m, w in zip(merged, results[0][0], strict=True)]


def dp_fedavg(
    global_weights: NDArrays, results: Sequence[ClientResult], dp: ClientDPOptions, rng: np.random.Generator
) -> NDArrays:
    """DP-FedAvg: clip each client's update to ``dp.clip_norm``, average with equal weight, add Gaussian noise.

    Equal weights keep each client's influence bounded by ``clip_norm / clients`` (example-count weights would
    let a large client move the model further than its clip bound). The noise has standard deviation
    ``dp.noise_multiplier * dp.clip_norm / clients`` per coordinate.
    """
    if not results:
        raise PrivacyError("no client trained in this round", field="federated.clients")
    clipped_sum = [np.zeros_like(w, dtype=np.float64) for w in global_weights]
    for weights, _ in results:
        update = [w.astype(np.float64) - g for w, g in zip(weights, global_weights, strict=True)]
        norm = math.sqrt(sum(float(np.square(u).sum()) for u in update))
        scale = min(1.0, dp.clip_norm / (norm + 1e-12))
        for acc, u in zip(clipped_sum, update, strict=True):
            acc += u * scale
    k = len(results)
    std = dp.noise_multiplier * dp.clip_norm / k
    return [
        (g + acc / k + (rng.normal(0.0, std, size=g.shape) if std > 0 else 0.0)).astype(g.dtype)
        for g, acc in zip(global_weights, clipped_sum, strict=True)
    ]


class SequentialClient:
    """One simulated client: a partition of the users, training a sequential scorer's network on their data only.

    A Flower ``NumPyClient`` (see :func:`flower_client`): the server sends weights, the client trains and returns
    weights, the number of examples it trained on, and metrics. Its data never leaves it; only weights do.

    Args:
        cid: Client number (also offsets its random seed).
        scorer: The scorer being fitted (provides the network, windows, batches and the local epoch).
        data: The full training data (the client reads only its users' rows).
        users: Dense indices of this client's users.
        options: The fit's options (seed, device).

    """

    def __init__(
        self, cid: int, scorer: SequentialScorer, data: Dataset, users: np.ndarray, options: TrainOptions
    ) -> None:
        import torch

        self.cid = cid
        self.scorer = scorer
        seqs = user_sequences(data)
        lengths = seqs.lengths[users]
        indptr = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        items = (
            np.concatenate([seqs.of(int(u)) for u in users]).astype(np.int64)
            if len(users)
            else np.zeros(0, dtype=np.int64)
        )
        self.sequences = Sequences(indptr, items)
        pad = data.n_items
        self.windows = scorer._train_windows(self.sequences, pad)
        self.device = torch.device(options.device)
        self.model = scorer._build(data, options)
        self.sampler = scorer._negative_sampler(self.sequences, data.n_items, self.device)
        self.full_softmax = scorer._full_softmax(data.n_items)
        self.rng = np.random.default_rng([options.seed, cid])

    def get_parameters(self, config: dict[str, Any]) -> NDArrays:
        """The client's current weights (``state_dict`` order)."""
        return [v.detach().cpu().numpy().copy() for v in self.model.state_dict().values()]

    def set_parameters(self, parameters: NDArrays) -> None:
        """Load weights sent by the server."""
        import torch

        keys = list(self.model.state_dict())
        state = {k: torch.from_numpy(np.asarray(v)).to(self.device) for k, v in zip(keys, parameters, strict=True)}
        self.model.load_state_dict(state, strict=True)

    def fit(self, parameters: NDArrays, config: dict[str, Any]) -> tuple[NDArrays, int, dict[str, float]]:
        """Train ``config["local_epochs"]`` epochs from ``parameters`` with a fresh optimizer; return the result."""
        self.set_parameters(parameters)
        optimizer = self.scorer._optimizer(self.model)
        total, count = 0.0, 0
        for _ in range(int(config.get("local_epochs", 1))):
            t, c = self.scorer._train_epoch(
                self.model, optimizer, self.windows, self.rng, self.sampler, self.full_softmax, self.device
            )
            total, count = total + t, count + c
        return self.get_parameters({}), len(self.windows), {"loss": total / max(count, 1), "positions": count}


def flower_client(client: SequentialClient) -> Any:
    """``client`` behind Flower's client interface (a ``NumPyClient`` turned into a ``flwr.client.Client``)."""
    numpy_client: Any = _flower().client.NumPyClient

    class _Client(numpy_client):
        def get_parameters(self, config: dict[str, Any]) -> NDArrays:
            return client.get_parameters(config)

        def fit(self, parameters: NDArrays, config: dict[str, Any]) -> tuple[NDArrays, int, dict[str, float]]:
            return client.fit(parameters, config)

    return _Client().to_client()


def train_federated(scorer: SequentialScorer, data: Dataset, options: TrainOptions) -> None:
    """Fit ``scorer`` by FedAvg over user partitions (what ``fit`` runs under ``TrainOptions(federated=...)``).

    Runs ``rounds`` rounds of ``local_epochs`` epochs per client, keeps the final global model (no early stopping:
    the server holds no data to choose a round on), and records a :class:`PrivacyReport` on the scorer (with the
    client-level epsilon when ``client_dp`` adds noise).
    """
    import torch

    fed = options.federated
    if fed is None:
        raise PrivacyError("train_federated needs TrainOptions(federated=...)", field="options.federated")
    start = time.perf_counter()
    parts = partition_users(data.n_users, fed.clients, options.seed)
    clients = [SequentialClient(cid, scorer, data, users, options) for cid, users in enumerate(parts)]
    common = _flower().common
    proxies = [flower_client(client) for client in clients]
    server_model = scorer._build(data, options)
    global_weights = [v.detach().cpu().numpy().copy() for v in server_model.state_dict().values()]
    rng = np.random.default_rng([options.seed, 1 << 20])
    scorer.history = []
    config = {"local_epochs": fed.local_epochs}
    for rnd in range(1, fed.rounds + 1):
        round_start = time.perf_counter()
        results: list[ClientResult] = []
        losses: list[tuple[float, int]] = []
        instructions = common.FitIns(common.ndarrays_to_parameters(global_weights), config)
        for client, proxy in zip(clients, proxies, strict=True):
            if not len(client.windows):
                continue  # a client whose users have nothing to train on sits the round out
            reply = proxy.fit(instructions)
            results.append((common.parameters_to_ndarrays(reply.parameters), reply.num_examples))
            losses.append((float(reply.metrics["loss"]), reply.num_examples))
        if fed.client_dp is not None:
            global_weights = dp_fedavg(global_weights, results, fed.client_dp, rng)
        else:
            global_weights = fedavg(results, rnd)
        loss = sum(loss * n for loss, n in losses) / max(sum(n for _, n in losses), 1)
        scorer.history.append(
            EpochLog(rnd * fed.local_epochs, loss, math.nan, math.nan, time.perf_counter() - round_start)
        )
        log.info("%s federated round %d/%d: %d clients, loss %.4f", scorer.name, rnd, fed.rounds, len(results), loss)
    keys = list(server_model.state_dict())
    device = torch.device(options.device)
    server_model.load_state_dict({k: torch.from_numpy(v).to(device) for k, v in zip(keys, global_weights, strict=True)})
    scorer.stopped_early = False
    scorer._finish(server_model, data, device, fed.epochs)
    scorer.privacy = _report(fed.clients, fed.rounds, fed.local_epochs, fed.client_dp)
    log.info("%s federated: %d rounds in %.1f s", scorer.name, fed.rounds, time.perf_counter() - start)


def _report(clients: int, rounds: int, local_epochs: int, dp: ClientDPOptions | None) -> PrivacyReport:
    """The fit's :class:`PrivacyReport` (client-level epsilon by Opacus' RDP accountant under DP-FedAvg)."""
    common: dict[str, Any] = {"clients": clients, "rounds": rounds, "local_epochs": local_epochs}
    common["epochs"] = rounds * local_epochs
    if dp is None:
        return PrivacyReport(mechanism="fedavg", **common)
    epsilon = math.inf
    if dp.noise_multiplier > 0:
        from opacus.accountants import RDPAccountant

        from llmrec.models.sequential import RDP_ORDERS

        accountant = RDPAccountant()
        accountant.history = [(dp.noise_multiplier, 1.0, rounds)]  # every client in every round: sample rate 1
        epsilon = float(accountant.get_epsilon(delta=dp.delta, alphas=list(RDP_ORDERS)))
    return PrivacyReport(
        mechanism="dp-fedavg",
        unit="client",
        epsilon=epsilon,
        delta=dp.delta,
        noise_multiplier=dp.noise_multiplier,
        max_grad_norm=dp.clip_norm,
        sample_rate=1.0,
        steps=rounds,
        accountant="rdp",
        **common,
    )
