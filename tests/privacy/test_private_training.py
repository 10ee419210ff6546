"""DP-SGD (Opacus) and federated averaging for the sequential scorers: budgets, noise, aggregation, typed errors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from required import require

torch = require("torch")
require("opacus")

from llmrec.data.dataset import Dataset  # noqa: E402
from llmrec.errors import ConfigError, PrivacyError  # noqa: E402
from llmrec.eval.runner import evaluate_models  # noqa: E402
from llmrec.models.base import ClientDPOptions, DPOptions, FederatedOptions, Scorer, TrainOptions  # noqa: E402
from llmrec.models.bert4rec import BERT4Rec  # noqa: E402
from llmrec.models.ease import EASE  # noqa: E402
from llmrec.models.sasrec import SASRec  # noqa: E402
from llmrec.privacy import federated  # noqa: E402

#: Tiny and fast: a DP epoch of 40 users takes well under a second.
FAST = {"max_len": 8, "hidden": 16, "blocks": 1, "heads": 1, "max_epochs": 2, "batch_size": 16, "negatives": 8}


def weights(model: Scorer) -> dict[str, np.ndarray]:
    return {k: v.detach().cpu().numpy().copy() for k, v in model.model.state_dict().items()}  # type: ignore[attr-defined]


# -- DP-SGD --------------------------------------------------------------------------------------------------
@pytest.mark.slow  # over 1 s in CI: outside the fast lane (make test-fast)
def test_dp_training_spends_close_to_its_target_and_the_harness_reports_it(chain: Dataset) -> None:
    options = TrainOptions(seed=3, dp=DPOptions(epsilon=3.0, delta=1e-4))
    # Through the evaluation harness (one fit, no tuning): every result row of a DP model carries its report.
    results = evaluate_models(chain, [("sasrec", FAST, "sasrec+dp")], tune=False, options=options)
    report = results.result("sasrec+dp").privacy
    assert report is not None and report["mechanism"] == "dp-sgd" and report["unit"] == "user"
    assert 2.9 <= report["epsilon"] <= 3.0  # calibrated to spend at most the target, and close to it
    assert report["noise_multiplier"] > 0.3 and report["target_epsilon"] == 3.0
    # 40 users, 16 expected per step: Poisson rate 0.4, ceil(1 / 0.4) = 3 steps per epoch, 2 epochs.
    assert report["sample_rate"] == pytest.approx(0.4) and report["steps"] == 6 and report["epochs"] == 2


def test_noise_changes_the_weights_and_only_the_noise(chain: Dataset) -> None:
    def fit(dp: DPOptions) -> dict[str, np.ndarray]:
        return weights(SASRec(**FAST).fit(chain, TrainOptions(seed=7, dp=dp)))

    clip_only = fit(DPOptions(noise_multiplier=0.0))
    again = fit(DPOptions(noise_multiplier=0.0))
    noisy = fit(DPOptions(epsilon=1.0))
    for name in clip_only:  # same seed, same Poisson draws, same clipping: identical without noise
        np.testing.assert_array_equal(clip_only[name], again[name])
    moved = {n: float(np.abs(noisy[n] - clip_only[n]).max()) for n in clip_only}
    assert all(v > 1e-4 for v in moved.values()), moved  # noise reaches every parameter


def test_clip_only_reports_no_privacy_and_reports_survive_save_and_load(chain: Dataset, tmp_path: Path) -> None:
    model = SASRec(**FAST).fit(chain, TrainOptions(seed=1, dp=DPOptions(noise_multiplier=0.0)))
    assert model.privacy is not None and model.privacy.epsilon == float("inf")
    assert len(model.history) == 2 and np.isfinite(model.score(["u1"])).all()
    assert Scorer.load(model.save(tmp_path / "dp")).privacy == model.privacy


def test_bert4rec_trains_with_dp_on_the_full_softmax(chain: Dataset) -> None:
    model = BERT4Rec(**{**FAST, "max_epochs": 1}).fit(chain, TrainOptions(seed=4, dp=DPOptions(epsilon=8.0)))
    assert model.config.loss == "ce" and model.privacy is not None and 7.9 <= (model.privacy.epsilon or 0) <= 8.0
    assert np.isfinite(model.score(["u1", "u2"])).all()


# -- federated -------------------------------------------------------------------------------------------------
def test_fedavg_is_the_example_weighted_mean() -> None:
    a = [np.array([0.0, 2.0], dtype=np.float32), np.array([[1.0]], dtype=np.float32)]
    b = [np.array([4.0, 6.0], dtype=np.float32), np.array([[3.0]], dtype=np.float32)]
    out = federated.fedavg([(a, 1), (b, 3)])
    np.testing.assert_allclose(out[0], [3.0, 5.0])
    np.testing.assert_allclose(out[1], [[2.5]])
    assert out[0].dtype == np.float32


def test_federated_rounds_average_the_clients(chain: Dataset, monkeypatch: pytest.MonkeyPatch) -> None:
    sent: list[list[tuple[list[np.ndarray], int]]] = []
    fit = federated.SequentialClient.fit

    def recording(self: federated.SequentialClient, parameters: Any, config: dict[str, Any]) -> Any:
        out = fit(self, parameters, config)
        if self.cid == 0:
            sent.append([])
        sent[-1].append((out[0], out[1]))
        return out

    monkeypatch.setattr(federated.SequentialClient, "fit", recording)
    options = TrainOptions(seed=5, federated=FederatedOptions(clients=3, rounds=2, local_epochs=1))
    model = SASRec(**{**FAST, "early_stopping": False}).fit(chain, options)
    assert len(sent) == 2 and all(len(r) == 3 for r in sent)
    final = list(weights(model).values())
    expected = federated.fedavg(sent[-1])
    for got, want in zip(final, expected, strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)
    for client_weights, _ in sent[-1]:  # skipping aggregation (keeping any one client's model) would fail here
        assert any(np.abs(g - c).max() > 1e-6 for g, c in zip(final, client_weights, strict=True))
    assert model.privacy is not None and model.privacy.mechanism == "fedavg" and model.privacy.clients == 3
    assert model.best_epoch == 2 and len(model.history) == 2


def test_clients_speak_flower_and_the_server_aggregates_with_flowers_fedavg(chain: Dataset) -> None:
    flwr = require("flwr", "test")
    options = TrainOptions(seed=5)
    scorer = SASRec(**FAST)
    client = federated.SequentialClient(0, scorer, chain, np.arange(chain.n_users), options)
    proxy = federated.flower_client(client)
    assert isinstance(proxy, flwr.client.Client)
    weights0 = client.get_parameters({})
    reply = proxy.fit(flwr.common.FitIns(flwr.common.ndarrays_to_parameters(weights0), {"local_epochs": 1}))
    trained = flwr.common.parameters_to_ndarrays(reply.parameters)
    assert reply.num_examples == len(client.windows) and any(
        np.abs(t - w).max() > 0 for t, w in zip(trained, weights0, strict=True)
    )


def test_client_dp_clips_updates_and_reports_a_client_level_budget(chain: Dataset) -> None:
    rng = np.random.default_rng(0)
    global_w = [np.zeros(4, dtype=np.float32)]
    far = [np.full(4, 10.0, dtype=np.float32)]  # update norm 20, clipped to 1
    near = [np.full(4, 0.1, dtype=np.float32)]  # norm 0.2, kept
    out = federated.dp_fedavg(global_w, [(far, 100), (near, 1)], ClientDPOptions(clip_norm=1.0), rng)
    np.testing.assert_allclose(out[0], (np.full(4, 0.5) + np.full(4, 0.1)) / 2, rtol=1e-5)
    dp = ClientDPOptions(clip_norm=1.0, noise_multiplier=1.0, delta=1e-3)
    options = TrainOptions(seed=2, federated=FederatedOptions(clients=4, rounds=2, client_dp=dp))
    model = SASRec(**{**FAST, "early_stopping": False}).fit(chain, options)
    assert model.privacy is not None and model.privacy.mechanism == "dp-fedavg" and model.privacy.unit == "client"
    assert model.privacy.epsilon is not None and 0 < model.privacy.epsilon < 20


# -- typed errors ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({}, "dp.epsilon"),
        ({"epsilon": 1.0, "noise_multiplier": 1.0}, "dp.epsilon"),
        ({"epsilon": 0.0}, "dp.epsilon"),
        ({"epsilon": float("inf")}, "dp.epsilon"),
        ({"epsilon": 1.0, "delta": 1.0}, "dp.delta"),
        ({"epsilon": 1.0, "max_grad_norm": -1.0}, "dp.max_grad_norm"),
        ({"noise_multiplier": -0.5}, "dp.noise_multiplier"),
    ],
)
def test_bad_dp_options_raise_a_privacy_error(kwargs: dict[str, float], field: str) -> None:
    with pytest.raises(PrivacyError) as info:
        DPOptions(**kwargs)
    assert info.value.field == field and isinstance(info.value, ConfigError)


def test_privacy_asked_of_a_scorer_that_cannot_is_refused(chain: Dataset) -> None:
    with pytest.raises(PrivacyError, match="ease cannot train with differential privacy"):
        EASE().fit(chain, TrainOptions(dp=DPOptions(epsilon=1.0)))
    with pytest.raises(PrivacyError, match="ease cannot train federated"):
        EASE().fit(chain, TrainOptions(federated=FederatedOptions()))
    both = TrainOptions(dp=DPOptions(epsilon=1.0), federated=FederatedOptions())
    with pytest.raises(PrivacyError, match="cannot be combined"):
        SASRec(**FAST).fit(chain, both)
    with pytest.raises(PrivacyError, match="clients"):
        FederatedOptions(clients=0)
    with pytest.raises(PrivacyError, match="41 clients for 40 users"):
        SASRec(**FAST).fit(chain, TrainOptions(federated=FederatedOptions(clients=41)))
    with pytest.raises(PrivacyError, match="clip_norm"):
        ClientDPOptions(clip_norm=0.0)
