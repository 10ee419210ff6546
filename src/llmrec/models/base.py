"""The Scorer shape every discriminative and collaborative-filtering model follows.

``__init__`` stores the configuration only; ``fit`` learns from a :class:`~llmrec.data.dataset.Dataset`;
``score`` and ``recommend`` are side-effect free. Subclasses implement ``_fit`` and ``_score`` on dense
indices; this base class handles external ids, unknown users and items, exclusion of seen items, candidate
sets, batching and top-k selection, so every model behaves the same at the edges.

A fitted scorer is saved with :meth:`Scorer.save` and read back with :meth:`Scorer.load`, without pickle: a folder
with ``scorer.json`` (name, config, format and llmrec versions), ``arrays.npz`` (the scorer's own fitted state,
from :meth:`Scorer._state`) and ``dataset/`` (vocabularies and training data, see :mod:`llmrec.data.artifacts`).
Subclasses contribute only their fitted state through ``_state`` / ``_set_state`` (and ``_save_extra`` /
``_load_extra`` for files that are not plain arrays, such as torch weights or a fusion's members).
"""

from __future__ import annotations

import logging
import math
import os
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar, Literal, Self

import numpy as np
import pandas as pd
import scipy.sparse as sp
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from llmrec.data.artifacts import (
    load_arrays,
    load_dataset,
    new_header,
    read_meta,
    save_arrays,
    save_dataset,
    write_meta,
    writing_folder,
)
from llmrec.data.dataset import Dataset
from llmrec.errors import ArtifactError, ConfigError, NotFittedError, PrivacyError

__all__ = [
    "ClientDPOptions",
    "DPOptions",
    "FederatedOptions",
    "PrivacyReport",
    "Recommendations",
    "Scorer",
    "ScorerConfig",
    "TrainOptions",
    "mask_scores",
    "top_k",
]

log = logging.getLogger(__name__)

SCORER_FILE = "scorer.json"
"""The file that makes a folder a saved scorer (name, config, versions, when it was fitted)."""
SCORER_KIND = "llmrec-scorer"
ARRAYS_FILE = "arrays.npz"
DATASET_DIR = "dataset"


class DPOptions(BaseModel):
    """Differentially private training (DP-SGD, Abadi et al. 2016) with Opacus: clip and noise every step.

    The privacy unit is the **user**: each user contributes one training example (their most recent window of
    items), every step draws users by Poisson sampling (each with probability ``batch_size / n_users``, as
    Opacus' accounting assumes), each user's gradient is clipped to ``max_grad_norm`` and Gaussian noise of
    standard deviation ``noise_multiplier * max_grad_norm`` is added to their sum. Training runs a fixed number of
    epochs without early stopping (choosing an epoch on held-out items of the same users would spend budget that
    is not accounted for). Give exactly one of ``epsilon`` (the noise is then calibrated to spend at most that
    budget over the whole fit) or ``noise_multiplier`` (the budget is whatever that noise gives).

    Attributes:
        epsilon: Target privacy budget over the whole fit (> 0).
        delta: Target delta, in (0, 1); keep it below 1 / number of users.
        max_grad_norm: Per-user clipping bound of the gradient's L2 norm (> 0).
        noise_multiplier: Noise standard deviation over ``max_grad_norm`` (>= 0; 0 = clipping only, no privacy).
        accountant: Opacus accountant that converts noise, sampling rate and steps into epsilon.

    Raises:
        PrivacyError: A value is out of range, or both or neither of ``epsilon`` and ``noise_multiplier`` given
            (raised as such, not as a pydantic ``ValidationError``, so callers catch one llmrec error type).

    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    epsilon: float | None = None
    delta: float = 1e-5
    max_grad_norm: float = 1.0
    noise_multiplier: float | None = None
    accountant: Literal["rdp", "prv"] = "rdp"

    @model_validator(mode="after")
    def _check(self) -> Self:
        if (self.epsilon is None) == (self.noise_multiplier is None):
            raise PrivacyError(
                "DP training needs exactly one of epsilon and noise_multiplier",
                field="dp.epsilon",
                fix="give a target budget (DPOptions(epsilon=3.0)) or a noise level (noise_multiplier=1.0), not both",
            )
        if self.epsilon is not None and not (math.isfinite(self.epsilon) and self.epsilon > 0):
            raise PrivacyError(
                f"epsilon must be a finite number > 0, got {self.epsilon}", field="dp.epsilon", fix="use e.g. 1, 3 or 8"
            )
        if not 0.0 < self.delta < 1.0:
            raise PrivacyError(
                f"delta must be in (0, 1), got {self.delta}", field="dp.delta", fix="use less than 1 / number of users"
            )
        if not (math.isfinite(self.max_grad_norm) and self.max_grad_norm > 0):
            raise PrivacyError(
                f"max_grad_norm must be a finite number > 0, got {self.max_grad_norm}",
                field="dp.max_grad_norm",
                fix="use a clipping bound such as 1.0",
            )
        if self.noise_multiplier is not None and not (
            math.isfinite(self.noise_multiplier) and self.noise_multiplier >= 0
        ):
            raise PrivacyError(
                f"noise_multiplier must be a finite number >= 0, got {self.noise_multiplier}",
                field="dp.noise_multiplier",
                fix="use a noise level such as 1.0 (or give epsilon instead)",
            )
        return self


class ClientDPOptions(BaseModel):
    """Client-level DP for federated averaging (DP-FedAvg, McMahan et al. 2018): clip updates, noise their mean.

    Each client's update (its weights minus the round's global weights) is clipped to ``clip_norm`` in L2; the
    server averages the clipped updates with equal weight and adds Gaussian noise of standard deviation
    ``noise_multiplier * clip_norm / clients``. The budget is accounted per client with Opacus' accountant
    (every client takes part in every round: sampling rate 1), so it protects a whole user partition.

    Raises:
        PrivacyError: ``clip_norm`` not > 0 or ``noise_multiplier`` negative.

    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    clip_norm: float = 1.0
    noise_multiplier: float = 0.0
    delta: float = 1e-5

    @model_validator(mode="after")
    def _check(self) -> Self:
        if not (math.isfinite(self.clip_norm) and self.clip_norm > 0):
            raise PrivacyError(f"clip_norm must be > 0, got {self.clip_norm}", field="client_dp.clip_norm")
        if not (math.isfinite(self.noise_multiplier) and self.noise_multiplier >= 0):
            raise PrivacyError(
                f"noise_multiplier must be >= 0, got {self.noise_multiplier}", field="client_dp.noise_multiplier"
            )
        if not 0.0 < self.delta < 1.0:
            raise PrivacyError(f"delta must be in (0, 1), got {self.delta}", field="client_dp.delta")
        return self


class FederatedOptions(BaseModel):
    """Federated training simulated on one machine (FedAvg, McMahan et al. 2017; see :mod:`llmrec.privacy.federated`).

    Users are split into ``clients`` disjoint partitions (a seeded shuffle); every round each client trains
    ``local_epochs`` epochs on its own users' data starting from the global weights, and the server replaces the
    global weights by the clients' average weighted by their number of training examples. ``rounds *
    local_epochs`` epochs in all, so a centralised fit of that many epochs is the fair comparison.

    Attributes:
        clients: Number of user partitions (>= 1).
        rounds: Communication rounds (>= 1).
        local_epochs: Epochs each client trains per round (>= 1).
        client_dp: Clip each client's update and noise the average (client-level DP); ``None`` = plain FedAvg.

    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    clients: int = 10
    rounds: int = 5
    local_epochs: int = 1
    client_dp: ClientDPOptions | None = None

    @model_validator(mode="after")
    def _check(self) -> Self:
        for name in ("clients", "rounds", "local_epochs"):
            if getattr(self, name) < 1:
                raise PrivacyError(f"{name} must be >= 1, got {getattr(self, name)}", field=f"federated.{name}")
        return self

    @property
    def epochs(self) -> int:
        """Epochs over the data in all: ``rounds * local_epochs``."""
        return self.rounds * self.local_epochs


class PrivacyReport(BaseModel):
    """What a private or federated fit guarantees and spent, kept on the fitted scorer (:attr:`Scorer.privacy`).

    The evaluation harness copies it into every result row of the model (``ModelResult.privacy``).

    Attributes:
        mechanism: ``"dp-sgd"``, ``"fedavg"`` or ``"dp-fedavg"``.
        unit: What one (epsilon, delta) protects: ``"user"`` (DP-SGD) or ``"client"`` (DP-FedAvg, a partition).
        epsilon: Budget spent over the whole fit (``None`` without DP; ``inf`` with clipping but no noise).
        delta: The delta of ``epsilon``.
        target_epsilon: The budget asked for, when one was.
        noise_multiplier: Noise standard deviation over the clipping bound.
        max_grad_norm: Clipping bound (per user gradient, or per client update).
        sample_rate: Chance of each user (client) taking part in a step (round).
        steps: Noisy steps (rounds) taken.
        epochs: Epochs over the data.
        accountant: Opacus accountant used.
        clients: Federated clients; ``rounds`` and ``local_epochs`` likewise.

    """

    model_config = ConfigDict(extra="forbid")

    mechanism: Literal["dp-sgd", "fedavg", "dp-fedavg"]
    unit: Literal["user", "client"] | None = None
    epsilon: float | None = None
    delta: float | None = None
    target_epsilon: float | None = None
    noise_multiplier: float | None = None
    max_grad_norm: float | None = None
    sample_rate: float | None = None
    steps: int | None = None
    epochs: int | None = None
    accountant: str | None = None
    clients: int | None = None
    rounds: int | None = None
    local_epochs: int | None = None


class TrainOptions(BaseModel):
    """Run-time options of a training call (never stored in globals).

    Attributes:
        seed: Random seed; the same seed and data give the same model.
        threads: CPU threads for BLAS and native code (``None`` = library default).
        device: Torch device for models that use torch.
        show_progress: Show progress bars on long steps.
        dp: Train with differential privacy (DP-SGD, :class:`DPOptions`); only scorers with
            :attr:`Scorer.supports_dp` can, the others raise :class:`~llmrec.errors.PrivacyError`.
        federated: Train federated over user partitions (:class:`FederatedOptions`); only scorers with
            :attr:`Scorer.supports_federated` can.

    """

    model_config = ConfigDict(extra="forbid")

    seed: int = 42
    threads: int | None = Field(default=None, ge=1)
    device: str = "cpu"
    show_progress: bool = False
    dp: DPOptions | None = None
    federated: FederatedOptions | None = None


class ScorerConfig(BaseModel):
    """Base of every scorer's configuration (unknown fields are an error, not silently ignored)."""

    model_config = ConfigDict(extra="forbid", frozen=True)


@dataclass(frozen=True)
class Recommendations:
    """Top-k lists for a batch of users.

    Attributes:
        users: External user ids, shape ``(n,)``.
        items: External item ids, shape ``(n, k)``; ``None`` where fewer than k items could be recommended.
        scores: Scores, shape ``(n, k)``, descending per row; ``-inf`` in padded slots.
        item_idx: Dense item indices, shape ``(n, k)``; -1 in padded slots.

    """

    users: np.ndarray
    items: np.ndarray
    scores: np.ndarray
    item_idx: np.ndarray

    def __len__(self) -> int:
        return len(self.users)

    def to_frame(self) -> pd.DataFrame:
        """Long frame ``user_id, rank, item_id, score`` (padded slots dropped)."""
        n, k = self.item_idx.shape
        frame = pd.DataFrame(
            {
                "user_id": np.repeat(self.users, k),
                "rank": np.tile(np.arange(1, k + 1), n),
                "item_id": self.items.ravel(),
                "score": self.scores.ravel(),
            }
        )
        return frame[self.item_idx.ravel() >= 0].reset_index(drop=True)

    def for_user(self, user: object) -> list[tuple[str, float]]:
        """``[(item_id, score), ...]`` of one user, best first."""
        rows = np.flatnonzero(self.users == str(user))
        if not len(rows):
            raise KeyError(f"user {user!r} is not in these recommendations")
        r = rows[0]
        return [
            (str(i), float(s))
            for i, s, x in zip(self.items[r], self.scores[r], self.item_idx[r], strict=True)
            if x >= 0
        ]


def top_k(scores: np.ndarray, k: int, tie_seed: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Indices and values of the ``k`` largest finite scores per row, best first (-1 / -inf padding).

    Ties are broken deterministically (the same scores always give the same lists): by the lower column index,
    or, with ``tie_seed``, by a random order of the columns drawn per row from that seed. Catalogue order is not
    knowledge a model has, so an evaluation where ties are the norm (cold items: a model that learns only from
    interactions scores them all alike) must not credit it with that order (issue 16).
    """
    n, m = scores.shape
    k_eff = min(k, m)
    clean = np.where(np.isnan(scores), -np.inf, scores)
    if tie_seed is not None:
        draw = np.random.default_rng(tie_seed).random((n, m))
        part = np.lexsort((draw, -clean), axis=1)[:, :k_eff]
        vals = np.take_along_axis(clean, part, axis=1)
        return _padded(np.where(np.isfinite(vals), part, -1), vals, k)
    if k_eff < m:
        part = np.argpartition(-clean, k_eff - 1, axis=1)[:, :k_eff]
        # argpartition picks arbitrarily among items tied at the cut: take the lowest indices there instead, so a
        # list of k is always the head of the list of k + 1 (and the same scores always give the same items).
        cut = np.take_along_axis(clean, part, axis=1).min(axis=1)
        crossing = np.flatnonzero(
            (clean == cut[:, None]).sum(axis=1) > (np.take_along_axis(clean, part, axis=1) == cut[:, None]).sum(axis=1)
        )
        for row in crossing:
            above = np.flatnonzero(clean[row] > cut[row])
            tied = np.flatnonzero(clean[row] == cut[row])[: k_eff - len(above)]
            part[row] = np.concatenate([above, tied])
    else:
        part = np.tile(np.arange(m), (n, 1))
    vals = np.take_along_axis(clean, part, axis=1)
    order = np.lexsort((part, -vals), axis=1)
    idx = np.take_along_axis(part, order, axis=1)
    vals = np.take_along_axis(vals, order, axis=1)
    return _padded(np.where(np.isfinite(vals), idx, -1), vals, k)


def mask_scores(
    scores: np.ndarray, *, blocked: sp.csr_matrix | None = None, allowed: np.ndarray | None = None
) -> np.ndarray:
    """Set to -inf, in place, the score of every item a row may not recommend; return ``scores``.

    This is the one candidate mask of llmrec: :meth:`Scorer.recommend` and
    :meth:`llmrec.pipeline.Pipeline.recommend` both rank through it, so an excluded item can never come back on
    one path and not the other.

    Args:
        scores: ``(rows, n_items)`` scores.
        blocked: ``(rows, n_items)`` sparse; a stored non-zero entry means never (seen, disliked, excluded).
        allowed: Boolean ``(n_items,)`` shared by every row, or ``(rows, n_items)``: only these may be recommended.

    """
    if allowed is not None:
        scores[~np.broadcast_to(allowed, scores.shape)] = -np.inf
    if blocked is not None:
        coo = sp.coo_matrix(blocked)
        hit = coo.data != 0
        scores[coo.row[hit], coo.col[hit]] = -np.inf
    return scores


def _padded(idx: np.ndarray, vals: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """``(idx, vals)`` widened to ``k`` columns with -1 / -inf (a catalogue smaller than ``k``), as int64 / float64."""
    short = k - idx.shape[1]
    if short > 0:
        idx = np.hstack([idx, np.full((idx.shape[0], short), -1)])
        vals = np.hstack([vals, np.full((vals.shape[0], short), -np.inf)])
    return idx.astype(np.int64), vals.astype(np.float64)


class Scorer(ABC):
    """A model that scores (user, item) pairs; higher means more relevant.

    Subclasses set ``name`` and ``config_class`` and implement :meth:`_fit` and :meth:`_score`.

    Unknown users (not in the vocabulary, or in it without a single training interaction) get the popularity
    ranking of the training data, so a brand-new user still gets sensible recommendations. Unknown items score
    NaN in :meth:`score` and are never recommended.

    Args:
        config: The scorer's config object; or pass its fields as keyword arguments.

    """

    name: ClassVar[str]
    config_class: ClassVar[type[ScorerConfig]] = ScorerConfig
    tuning_grid: ClassVar[dict[str, list[Any]]] = {}
    """Small grid of config values the evaluation harness searches on validation (empty: nothing to tune)."""
    batch_size: ClassVar[int] = 1024
    stochastic: ClassVar[bool] = False
    """Whether the fitted model depends on ``TrainOptions.seed``; the harness then fits it once per seed."""
    memory_bound: ClassVar[str] = ""
    """How the scorer's memory grows with users ``U``, items ``I`` and interactions ``N`` (fit, fitted state, and
    scoring: every scorer also holds the ``(batch_size, I)`` float64 scores of one batch). Every registered scorer
    states it (the contract test checks), so a team can tell which model fits its catalogue before fitting it.
    """

    supports_dp: ClassVar[bool] = False
    """Whether ``fit`` honours ``TrainOptions.dp`` (DP-SGD); the others refuse it with a :class:`PrivacyError`."""
    supports_federated: ClassVar[bool] = False
    """Whether ``fit`` honours ``TrainOptions.federated``."""

    def __init__(self, config: ScorerConfig | None = None, **kwargs: Any) -> None:
        if config is not None and kwargs:
            raise ConfigError("pass either a config object or keyword arguments, not both")
        if config is None:
            try:
                config = self.config_class(**kwargs)
            except Exception as exc:  # pydantic ValidationError -> our error, naming the fields
                raise ConfigError(f"invalid {type(self).__name__} config: {exc}") from exc
        elif not isinstance(config, self.config_class):
            raise ConfigError(
                f"{type(self).__name__} needs a {self.config_class.__name__}, got {type(config).__name__}"
            )
        self.config = config
        self._data: Dataset | None = None
        self._fitted_at: str | None = None
        self.privacy: PrivacyReport | None = None
        """What a private or federated fit guaranteed and spent (``None``: an ordinary fit, no guarantee)."""

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v!r}" for k, v in self.config.model_dump().items())
        return f"{type(self).__name__}({fields})"

    def depends_on_seed(self) -> bool:
        """Whether this configured scorer's fit depends on the seed (:attr:`stochastic`; a fusion asks its parts)."""
        return self.stochastic

    @classmethod
    def search_config(
        cls,
        config: dict[str, Any],
        fit: Dataset,
        users: np.ndarray,
        truth: sp.csr_matrix,
        *,
        k: int,
        options: TrainOptions,
    ) -> tuple[dict[str, Any], list[dict[str, Any]]] | None:
        """Choose a configuration on validation targets, for scorers that can do better than grid refits.

        The evaluation runner calls this with the training data (``fit``), the validation users (external ids)
        and their held-out items (``truth``, rows aligned with ``users``). Return ``(config, tried)`` where
        ``tried`` lists ``{"config": ..., "ndcg@k": ...}``, or ``None`` to use :attr:`tuning_grid` (the default).
        """
        return None

    # -- training ------------------------------------------------------------------------------------
    def fit(self, data: Dataset, options: TrainOptions | None = None) -> Self:
        """Learn from ``data`` (the training interactions) and return ``self``."""
        options = options or TrainOptions()
        if len(data) == 0:
            raise ConfigError(f"cannot fit {self.name} on an empty dataset")
        self._check_privacy_options(options)
        self.privacy = None
        self._attach(data)
        self._fit(data, options)
        self._fitted_at = datetime.now(UTC).isoformat(timespec="seconds")
        return self

    def _check_privacy_options(self, options: TrainOptions) -> None:
        """Refuse DP or federated training this scorer cannot do (a silent ordinary fit would claim a guarantee)."""
        if options.dp is not None and not self.supports_dp:
            raise PrivacyError(
                f"{self.name} cannot train with differential privacy",
                field="options.dp",
                fix="use sasrec or bert4rec (trained with DP-SGD), or drop the dp option",
            )
        if options.federated is not None and not self.supports_federated:
            raise PrivacyError(
                f"{self.name} cannot train federated",
                field="options.federated",
                fix="use sasrec or bert4rec (trained with FedAvg), or drop the federated option",
            )
        if options.dp is not None and options.federated is not None:
            raise PrivacyError(
                "dp and federated cannot be combined in one fit",
                field="options.dp",
                fix="for DP in federated training use FederatedOptions(client_dp=ClientDPOptions(...))",
            )

    def _attach(self, data: Dataset) -> None:
        """Take ``data`` as the training data: what ``fit`` and ``load`` share before the model's own state."""
        self._data = data
        self._seen = data.matrix("binary")
        self._fallback = data.item_popularity.astype(np.float64)

    @property
    def fitted_at(self) -> str | None:
        """When the model was fitted (ISO 8601, UTC; kept through save and load), ``None`` before ``fit``."""
        return self._fitted_at

    @abstractmethod
    def _fit(self, data: Dataset, options: TrainOptions) -> None:
        """Learn the model's parameters."""

    @abstractmethod
    def _score(self, user_idx: np.ndarray) -> np.ndarray:
        """Scores of all items for known users: ``(len(user_idx), n_items)`` float array."""

    def _score_histories(self, histories: list[np.ndarray]) -> np.ndarray:
        """Scores of all items for unseen users given only their (non-empty) histories; see :meth:`score_histories`.

        Scorers that can fold a new history into their fitted parameters override this.
        """
        raise ConfigError(
            f"{self.name} cannot score a history it was not trained on. Fix: use a scorer that can "
            "(popular, itemknn, ease, als, bpr, content, sasrec, bert4rec, or a fusion of them)"
        )

    def _history_matrix(self, histories: list[np.ndarray]) -> sp.csr_matrix:
        """Binary ``(len(histories), n_items)`` matrix of the histories (repeats count once)."""
        rows = np.repeat(np.arange(len(histories)), [len(h) for h in histories])
        cols = np.concatenate(histories) if histories else np.zeros(0, dtype=np.int64)
        out = sp.csr_matrix((np.ones(len(cols)), (rows, cols)), shape=(len(histories), self.data.n_items))
        out.data[:] = 1.0
        return out

    # -- saving and loading ----------------------------------------------------------------------------
    def _state(self) -> dict[str, np.ndarray]:
        """The fitted parameters as named numpy arrays (no object dtype); what :meth:`save` writes to ``arrays.npz``.

        The training data, vocabularies, configuration and popularity fallback are saved by the base class.
        """
        raise ConfigError(f"{self.name} cannot be saved: it does not implement _state() and _set_state()")

    def _set_state(self, state: Mapping[str, np.ndarray]) -> None:
        """Restore what :meth:`_state` returned; the training data is already attached (``self.data``)."""
        raise ConfigError(f"{self.name} cannot be loaded: it does not implement _state() and _set_state()")

    @staticmethod
    def _array(state: Mapping[str, np.ndarray], key: str, shape: tuple[int | None, ...] | None = None) -> np.ndarray:
        """``state[key]``, checked against ``shape`` (``None`` entries match any size).

        Raises:
            KeyError: The array is missing.
            ValueError: Its shape differs (both become an :class:`ArtifactError` in :meth:`load`).

        """
        if key not in state:
            raise KeyError(f"array {key!r} is missing")
        array = state[key]
        if shape is not None and (
            array.ndim != len(shape)
            or any(want is not None and got != want for got, want in zip(array.shape, shape, strict=True))
        ):
            raise ValueError(f"array {key!r} has shape {array.shape}, expected {shape}")
        return array

    def _save_extra(self, folder: Path) -> None:
        """Write fitted state that is not a plain array (torch weights, member scorers) into ``folder``."""
        return  # an optional hook: most scorers have nothing beyond their arrays

    def _load_extra(self, folder: Path) -> None:
        """Read what :meth:`_save_extra` wrote (called after :meth:`_set_state`)."""
        return  # an optional hook, as _save_extra

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Save the fitted scorer to the folder ``path`` (created; a previous save there is replaced).

        The folder holds ``scorer.json`` (name, config, format and llmrec versions, when it was fitted),
        ``arrays.npz`` (the fitted parameters) and ``dataset/`` (the vocabularies and the training data it needs
        to recommend: seen items, histories, titles). Nothing is pickled; :meth:`load` reads it back without a refit.

        Args:
            path: The folder to write. It must be new, empty, or a folder an earlier save wrote.

        Returns:
            The folder written.

        Raises:
            NotFittedError: The scorer is not fitted.
            ConfigError: ``path`` is a file or a non-empty folder that is not a saved model.

        """
        data = self.data
        target = Path(path).expanduser()
        with writing_folder(target, SCORER_FILE) as tmp:
            save_dataset(data, tmp / DATASET_DIR)
            self._save_to(tmp, data_dir=DATASET_DIR)
        log.info("saved %s fitted on %r to %s", self.name, data, target)
        return target

    def _save_to(self, folder: Path, *, data_dir: str | None) -> None:
        """Write ``scorer.json``, ``arrays.npz`` and extras into ``folder``; ``data_dir=None``: the parent's data."""
        folder.mkdir(parents=True, exist_ok=True)
        save_arrays(folder / ARRAYS_FILE, self._state())
        self._save_extra(folder)
        data = self.data
        meta = {
            **new_header(SCORER_KIND),
            "name": self.name,
            "config": self.config.model_dump(mode="json"),
            "fitted_at": self._fitted_at,
            "privacy": None if self.privacy is None else self.privacy.model_dump(mode="json"),
            "data": data_dir,
            "dataset": {"name": data.name, "users": data.n_users, "items": data.n_items, "interactions": len(data)},
        }
        write_meta(folder / SCORER_FILE, meta)  # written last: a folder without it is an unfinished save

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Scorer:
        """A fitted scorer read back from a folder :meth:`save` wrote (the class is chosen by its saved name).

        ``Scorer.load(path)`` returns whichever scorer is saved there; ``EASE.load(path)`` also checks that it is
        an EASE. Scores and recommendations equal those of the scorer that was saved.

        Args:
            path: The saved folder.

        Raises:
            ArtifactError: The folder is missing, incomplete or corrupt, was written by a newer llmrec, holds
                another scorer than ``cls``, or is a fusion's member (load the fusion's folder instead).

        """
        folder = Path(path).expanduser()
        meta = read_meta(folder / SCORER_FILE, SCORER_KIND)
        if meta.get("data") != DATASET_DIR:
            raise ArtifactError(
                f"{folder} is a member of a saved fusion and has no data of its own. Fix: load the fusion's folder "
                f"({folder.parent.parent})"
            )
        data = load_dataset(folder / DATASET_DIR)
        scorer = cls._load_from(folder, data, meta)
        log.info("loaded %s (fitted %s) from %s", scorer.name, scorer.fitted_at or "?", folder)
        return scorer

    @classmethod
    def _load_from(cls, folder: Path, data: Dataset, meta: dict[str, Any] | None = None) -> Scorer:
        """The scorer saved in ``folder``, attached to ``data`` (its own, or a fusion's shared data)."""
        from llmrec.models.registry import SCORERS

        meta = meta if meta is not None else read_meta(folder / SCORER_FILE, SCORER_KIND)
        name = meta.get("name")
        klass = SCORERS.get(str(name))
        if klass is None:
            raise ArtifactError(
                f"{folder} holds a scorer named {name!r}, which this llmrec does not have "
                f"(known: {', '.join(sorted(SCORERS))}). Fix: load it with the llmrec version that saved it "
                f"({meta.get('llmrec_version', '?')})"
            )
        if not issubclass(klass, cls):
            raise ArtifactError(f"{folder} holds a {name} scorer, not a {cls.__name__}. Fix: use Scorer.load")
        try:
            config = klass.config_class.model_validate(meta.get("config", {}))
        except ValidationError as exc:
            raise ArtifactError(f"{folder / SCORER_FILE}: invalid {name} config ({exc})") from exc
        scorer = klass(config)
        scorer._attach(data)
        scorer._fitted_at = meta.get("fitted_at")
        if meta.get("privacy") is not None:
            try:
                scorer.privacy = PrivacyReport.model_validate(meta["privacy"])
            except ValidationError as exc:
                raise ArtifactError(f"{folder / SCORER_FILE}: invalid privacy report ({exc})") from exc
        state = load_arrays(folder / ARRAYS_FILE)
        try:
            scorer._set_state(state)
            scorer._load_extra(folder)
        except ArtifactError:
            raise
        except (KeyError, ValueError, IndexError, RuntimeError) as exc:  # a missing array, wrong shapes
            raise ArtifactError(
                f"{folder}: the saved {name} state is incomplete or does not fit its data ({type(exc).__name__}: "
                f"{exc}). Fix: save the model again"
            ) from exc
        return scorer

    # -- inference -----------------------------------------------------------------------------------
    @property
    def data(self) -> Dataset:
        """The training dataset (raises :class:`NotFittedError` before ``fit``)."""
        if self._data is None:
            raise NotFittedError(f"{self.name} is not fitted: call fit(dataset) first")
        return self._data

    def _score_idx(self, uidx: np.ndarray) -> np.ndarray:
        """All-item scores for dense user indices, -1 meaning unknown (popularity fallback)."""
        out = np.empty((len(uidx), self.data.n_items), dtype=np.float64)
        known = uidx >= 0
        known[known] = np.diff(self._seen.indptr)[uidx[known]] > 0  # no training history: cold, fall back
        if (~known).any():
            out[~known] = self._fallback
        if known.any():
            rows = np.flatnonzero(known)
            for start in range(0, len(rows), self.batch_size):
                sel = rows[start : start + self.batch_size]
                out[sel] = self._score(uidx[sel])
        return out

    def score_histories(self, histories: Sequence[Sequence[int] | np.ndarray]) -> np.ndarray:
        """All-item scores for users known only by an item history: the fitted model, folded in.

        This is how a chat session's liked items, or feedback that arrived after the last fit, change the next
        answer at once without a refit. The parameters stay as fitted; each history is scored as a user with
        exactly those interactions would be (EASE/ItemKNN: the history row times the item weights; ALS/BPR: one
        least-squares user step; content: the recency-weighted mean of the items' text vectors; SASRec and
        BERT4Rec: the history as the input sequence).

        Args:
            histories: Per user, dense item indices, oldest first (an empty history gets the popularity
                fallback, as an unknown user does).

        Returns:
            ``(len(histories), n_items)`` float64 scores.

        Raises:
            ConfigError: An index is outside the catalogue, or this scorer cannot fold in histories.

        """
        n_items = self.data.n_items
        arrays = [np.asarray(h, dtype=np.int64).ravel() for h in histories]
        for row, h in enumerate(arrays):
            if len(h) and (h.min() < 0 or h.max() >= n_items):
                raise ConfigError(
                    f"history {row} holds item index {int(h.min() if h.min() < 0 else h.max())}, outside the "
                    f"catalogue of {n_items} items. Fix: map external ids with data.item_vocab.index first"
                )
        out = np.empty((len(arrays), n_items), dtype=np.float64)
        full = np.array([len(h) > 0 for h in arrays], dtype=bool)
        out[~full] = self._fallback
        rows = np.flatnonzero(full)
        for start in range(0, len(rows), self.batch_size):
            sel = rows[start : start + self.batch_size]
            out[sel] = self._score_histories([arrays[r] for r in sel])
        return out

    def score(
        self, users: Sequence[object] | np.ndarray, items: Sequence[object] | np.ndarray | None = None
    ) -> np.ndarray:
        """Scores for each user over ``items`` (all catalogue items in index order when ``None``).

        Returns:
            ``(len(users), len(items))`` float64 array; NaN for items not in the catalogue.

        """
        uidx = self.data.user_vocab.index(users, missing="negative")
        full = self._score_idx(uidx)
        if items is None:
            return full
        iidx = self.data.item_vocab.index(items, missing="negative")
        out = full[:, np.maximum(iidx, 0)]
        out[:, iidx < 0] = np.nan
        return out

    def recommend(
        self,
        users: Sequence[object] | np.ndarray,
        k: int = 10,
        exclude_seen: bool = True,
        candidates: Sequence[object] | np.ndarray | None = None,
        tie_seed: int | None = None,
    ) -> Recommendations:
        """Top-``k`` items per user.

        Args:
            users: External user ids.
            k: List length (rows are padded when fewer items qualify).
            exclude_seen: Leave out items the user interacted with in the training data.
            candidates: Restrict to these external item ids (unknown ones are ignored).
            tie_seed: Break equal scores by a seeded random order per user instead of catalogue order
                (see :func:`top_k`).

        """
        if k < 1:
            raise ConfigError(f"k must be >= 1, got {k}")
        users_arr = np.array([str(u) for u in users], dtype=object)
        uidx = self.data.user_vocab.index(users_arr, missing="negative")
        scores = self._score_idx(uidx)
        allowed = None if candidates is None else self.data.item_vocab.mask(candidates)
        blocked = None
        if exclude_seen:  # unknown users have seen nothing
            blocked = sp.csr_matrix(sp.diags((uidx >= 0).astype(np.float64)) @ self._seen[np.maximum(uidx, 0)])
        mask_scores(scores, blocked=blocked, allowed=allowed)
        idx, vals = top_k(scores, k, tie_seed=tie_seed)
        return Recommendations(users_arr, self.data.item_vocab.ids_of(idx), vals, idx)
