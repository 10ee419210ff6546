"""Time-respecting train / validation / test splits, and the guard against training on the future.

Three protocols (DESIGN.md "Evaluation protocol"; the first two are time-respecting):

* ``leave-last-out``: per user, the last interaction (by time) is the test target, the second-last the
  validation target, the rest is training data. Users with fewer than ``min_interactions`` stay in training.
* ``temporal``: one global cut in time; interactions before ``t_valid`` train, ``[t_valid, t_test)`` validate,
  from ``t_test`` on test. Targets are kept only for users with earlier history (warm users).
* ``timeline``: one global cut in time, like ``temporal``, but every event after the cut of every user is a
  target query of its own (at most ``max_queries`` per user, evenly spaced): the model, fitted only on events
  before the cut, ranks the catalogue for the user's history up to that event (folded in, no refit) and is
  scored on the event's item. Nothing a model learns from is later than any target (one global timeline; no
  user's future leaks through another user's training events, which leave-last-out allows), and users whose
  history starts after the cut count too, so it has many more targets than ``temporal``.
* ``cold-items`` (item cold start, see :func:`cold_item_split`): a random, seeded set of items is held out of
  training entirely; every interaction with them is a target. Validation holds out a second, disjoint set of
  items the same way. Models are ranked among the held-out items of the stage (the runner passes them as
  candidates): which of the new items will this user like? Only a model that reads item content can answer.

Tuning fits on :meth:`Split.fit_data` ``("valid")`` (train only) and scores the validation targets; the final
model fits on ``fit_data("test")`` (train + validation) and scores the test targets. :meth:`Split.check` raises
:class:`~llmrec.errors.LeakageError` if a fit set holds a target interaction or anything later than a target.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import pandas as pd
import scipy.sparse as sp

from llmrec.data.dataset import Dataset
from llmrec.errors import ConfigError, LeakageError

__all__ = [
    "PROTOCOLS",
    "Protocol",
    "Split",
    "Stage",
    "cold_item_split",
    "leave_last_out",
    "make_split",
    "temporal_split",
    "timeline_split",
]

Protocol = Literal["leave-last-out", "temporal", "timeline", "cold-items"]
Stage = Literal["valid", "test"]
PROTOCOLS: tuple[str, ...] = ("leave-last-out", "temporal", "timeline", "cold-items")


@dataclass(frozen=True)
class Split:
    """A train / validation / test split of one dataset (all three share its vocabularies).

    Attributes:
        protocol: ``"leave-last-out"``, ``"temporal"`` or ``"cold-items"``.
        train: Training interactions.
        valid: Validation targets (for tuning).
        test: Test targets (for the final report).
        valid_period: Every interaction of the validation period, added to ``train`` for the final fit. It
            differs from ``valid`` when targets are filtered (the temporal and cold-item splits keep warm users
            only); ``None`` means the same as ``valid``.
        cold_valid: ``cold-items`` only: dense indices of the items held out for validation (sorted).
        cold_test: ``cold-items`` only: dense indices of the items held out for test (sorted).

    """

    protocol: Protocol
    train: Dataset
    valid: Dataset
    test: Dataset
    valid_period: Dataset | None = None
    cold_valid: np.ndarray | None = field(default=None, compare=False)
    cold_test: np.ndarray | None = field(default=None, compare=False)

    def fit_data(self, stage: Stage) -> Dataset:
        """What a model may learn from before predicting ``stage``: train, or train + validation for test."""
        if stage == "valid":
            return self.train
        if stage == "test":
            extra = self.valid if self.valid_period is None else self.valid_period
            return self.train.union(extra, name=self.train.name)
        raise ConfigError(f"stage must be 'valid' or 'test', got {stage!r}")

    def targets(self, stage: Stage) -> Dataset:
        """The held-out interactions a model is scored on at ``stage``."""
        return self.valid if stage == "valid" else self.test

    def unseen_targets(self, stage: Stage, users: np.ndarray, fit: Dataset | None = None) -> sp.csr_matrix:
        """``stage``'s targets of ``users`` (dense indices; one row each) minus the items those users already have.

        An item the user already had cannot be recommended with exclude-seen, so it is not a fair target.
        ``fit`` is :meth:`fit_data` of ``stage``, passed when the caller holds it already (it is built otherwise).
        """
        fit = self.fit_data(stage) if fit is None else fit
        truth = self.targets(stage).matrix("binary")[users]
        out = sp.csr_matrix(truth - truth.multiply(fit.matrix("binary")[users]))
        out.eliminate_zeros()
        return out

    def cold_items(self, stage: Stage) -> np.ndarray | None:
        """Dense indices of the items held out of training for ``stage`` (``None`` unless ``cold-items``)."""
        return self.cold_valid if stage == "valid" else self.cold_test

    def check(self, fit: Dataset, stage: Stage) -> None:
        """Raise :class:`LeakageError` if ``fit`` contains a ``stage`` target or anything after one.

        For ``leave-last-out`` "after" is per user (a user's training events must not be later than that
        user's target); for ``temporal`` it is global (nothing at or after the cut). For ``cold-items`` there is
        no time order; instead ``fit`` must not hold a single interaction with an item held out for ``stage``.
        """
        targets = self.targets(stage)
        if len(targets) == 0 or len(fit) == 0:
            return
        keys = ["user_id", "item_id", "timestamp"]
        overlap = fit.interactions[keys].merge(targets.interactions[keys], on=keys, how="inner")
        if len(overlap):
            row = overlap.iloc[0]
            raise LeakageError(
                f"the training data contains {len(overlap)} {stage} target(s), e.g. user {row.user_id} item "
                f"{row.item_id}: a model would be scored on what it trained on. Fit on split.fit_data({stage!r})"
            )
        if self.protocol == "cold-items":
            cold = self.cold_items(stage)
            touched = np.isin(fit.item_idx, cold) if cold is not None else np.zeros(len(fit), dtype=bool)
            if touched.any():
                item = fit.item_vocab.id(int(fit.item_idx[np.argmax(touched)]))
                raise LeakageError(
                    f"the training data holds {int(touched.sum())} interaction(s) with items held out as cold "
                    f"{stage} items (e.g. item {item}): they would not be cold. Fit on split.fit_data({stage!r})"
                )
            return
        if self.protocol in ("temporal", "timeline"):
            cut = int(targets.timestamps.min())
            later = fit.timestamps >= cut
            if later.any():
                raise LeakageError(
                    f"{int(later.sum())} training interaction(s) are at or after the {stage} cut-off "
                    f"{pd.Timestamp(cut, unit='s')}: training on the future. Fit on split.fit_data({stage!r})"
                )
            return
        first_target = pd.Series(targets.timestamps).groupby(targets.user_idx).min()
        last_fit = pd.Series(fit.timestamps).groupby(fit.user_idx).max()
        both = pd.concat([last_fit.rename("fit"), first_target.rename("target")], axis=1, join="inner")
        bad = both[both["fit"] > both["target"]]
        if len(bad):
            user = fit.user_vocab.id(int(bad.index[0]))
            raise LeakageError(
                f"{len(bad)} user(s) have training interactions after their {stage} target (e.g. user {user}): "
                f"training on the future. Fit on split.fit_data({stage!r})"
            )

    def describe(self) -> dict[str, int | str]:
        """Sizes of the three parts, for reports."""
        out: dict[str, int | str] = {
            "protocol": self.protocol,
            "train_interactions": len(self.train),
            "valid_users": len(np.unique(self.valid.user_idx)),
            "test_users": len(np.unique(self.test.user_idx)),
        }
        if self.cold_valid is not None and self.cold_test is not None:
            out["cold_valid_items"] = len(self.cold_valid)
            out["cold_test_items"] = len(self.cold_test)
        return out


def leave_last_out(data: Dataset, *, min_interactions: int = 3) -> Split:
    """Per-user temporal leave-last-out: last event = test, second-last = validation.

    Ties in time are broken by input order (the dataset is stably time-sorted), so the split is deterministic.

    Args:
        data: The whole dataset.
        min_interactions: Users with fewer events keep them all in training (they have too little history
            to hold two out).

    """
    if min_interactions < 3:
        raise ConfigError("min_interactions must be >= 3 (one training, one validation, one test event)")
    # data is time-sorted; position from the end within each user: 0 = last.
    from_end = pd.Series(np.arange(len(data))).groupby(data.user_idx).cumcount(ascending=False).to_numpy()
    counts = np.bincount(data.user_idx, minlength=data.n_users)[data.user_idx]
    eligible = counts >= min_interactions
    test = eligible & (from_end == 0)
    valid = eligible & (from_end == 1)
    return Split(
        "leave-last-out",
        data.subset(~(test | valid), name=data.name),
        data.subset(valid, name=data.name),
        data.subset(test, name=data.name),
    )


def _time_cuts(data: Dataset, valid_fraction: float, test_fraction: float) -> tuple[int, int]:
    """The validation and test cut-off times: the last ``test_fraction`` of events test, ``valid_fraction`` before."""
    if not (0 < valid_fraction < 1 and 0 < test_fraction < 1 and valid_fraction + test_fraction < 1):
        raise ConfigError("valid_fraction and test_fraction must be in (0, 1) and sum to less than 1")
    t_valid = np.quantile(data.timestamps, 1 - valid_fraction - test_fraction, method="higher")
    t_test = np.quantile(data.timestamps, 1 - test_fraction, method="higher")
    if t_valid >= t_test:
        raise ConfigError("not enough distinct timestamps for a temporal split; use leave-last-out")
    return int(t_valid), int(t_test)


def temporal_split(data: Dataset, *, valid_fraction: float = 0.1, test_fraction: float = 0.1) -> Split:
    """One global cut in time: the last ``test_fraction`` of events test, the ``valid_fraction`` before validate.

    Targets keep only users who have events before the cut (warm users); cold users need another protocol.
    """
    t_valid, t_test = _time_cuts(data, valid_fraction, test_fraction)
    train_mask = data.timestamps < t_valid
    valid_mask = (data.timestamps >= t_valid) & (data.timestamps < t_test)
    test_mask = data.timestamps >= t_test
    warm_valid = np.isin(data.user_idx, data.user_idx[train_mask])
    warm_test = np.isin(data.user_idx, data.user_idx[train_mask | valid_mask])
    return Split(
        "temporal",
        data.subset(train_mask, name=data.name),
        data.subset(valid_mask & warm_valid, name=data.name),
        data.subset(test_mask & warm_test, name=data.name),
        valid_period=data.subset(valid_mask, name=data.name),
    )


def timeline_split(data: Dataset, *, valid_fraction: float = 0.1, test_fraction: float = 0.5) -> Split:
    """One global cut in time whose later events, of every user, are all targets (see the module docstring).

    Like :func:`temporal_split`, but targets are not restricted to warm users: a user who appears only after
    the cut is scored from their second event on, with the events before it as the folded-in history. The
    queries themselves are built by the evaluation runner (:func:`llmrec.eval.runner.timeline_queries`).
    """
    t_valid, t_test = _time_cuts(data, valid_fraction, test_fraction)
    return Split(
        "timeline",
        data.subset(data.timestamps < t_valid, name=data.name),
        data.subset((data.timestamps >= t_valid) & (data.timestamps < t_test), name=data.name),
        data.subset(data.timestamps >= t_test, name=data.name),
    )


def cold_item_split(
    data: Dataset, fraction: float = 0.1, *, valid_fraction: float | None = None, seed: int = 42
) -> Split:
    """Item cold start: hold a random set of items out of training entirely; their interactions are the targets.

    Of the items with at least one interaction, a seeded random ``fraction`` becomes the test items and a
    disjoint ``valid_fraction`` (default: ``fraction``) the validation items. Training keeps every interaction
    with the remaining (warm) items. The validation targets are all interactions with validation items, the
    test targets all interactions with test items, each kept only for users who have history in the stage's
    fit data (a user with no history cannot be personalised; that is the user cold start, another question).
    For the final fit the validation items join training (like the validation targets of the other
    protocols), so at test time they are warm and only the test items are cold; at validation time both sets
    are absent from training. The split ignores time on purpose: it asks "which new item will this user like",
    not "what comes next".

    Args:
        data: The whole dataset.
        fraction: Share of interacted items held out as cold test items.
        valid_fraction: Share held out (disjointly) as cold validation items; ``None`` = ``fraction``.
        seed: Seed of the item draw (the same seed gives the same split).

    Raises:
        ConfigError: The fractions are out of range or leave no item for training.

    """
    valid_fraction = fraction if valid_fraction is None else valid_fraction
    if not (0 < fraction < 1 and 0 < valid_fraction < 1 and fraction + valid_fraction < 1):
        raise ConfigError("fraction and valid_fraction must be in (0, 1) and sum to less than 1")
    pool = np.unique(data.item_idx)
    n_test = max(1, round(fraction * len(pool)))
    n_valid = max(1, round(valid_fraction * len(pool)))
    if n_test + n_valid >= len(pool):
        raise ConfigError(f"only {len(pool)} item(s) have interactions: too few to hold out cold items")
    drawn = np.random.default_rng(seed).permutation(pool)
    cold_test = np.sort(drawn[:n_test]).astype(np.int64)
    cold_valid = np.sort(drawn[n_test : n_test + n_valid]).astype(np.int64)
    is_test = np.isin(data.item_idx, cold_test)
    is_valid = np.isin(data.item_idx, cold_valid)
    train_mask = ~(is_test | is_valid)
    warm_valid = np.isin(data.user_idx, data.user_idx[train_mask])
    warm_test = np.isin(data.user_idx, data.user_idx[train_mask | is_valid])
    return Split(
        "cold-items",
        data.subset(train_mask, name=data.name),
        data.subset(is_valid & warm_valid, name=data.name),
        data.subset(is_test & warm_test, name=data.name),
        valid_period=data.subset(is_valid, name=data.name),
        cold_valid=cold_valid,
        cold_test=cold_test,
    )


def make_split(data: Dataset, protocol: str = "leave-last-out") -> Split:
    """Split ``data`` with a protocol named by string (for the CLI and configs)."""
    if protocol == "leave-last-out":
        return leave_last_out(data)
    if protocol == "temporal":
        return temporal_split(data)
    if protocol == "timeline":
        return timeline_split(data)
    if protocol == "cold-items":
        return cold_item_split(data)
    raise ConfigError(f"unknown protocol {protocol!r}; choose one of {', '.join(PROTOCOLS)}")
