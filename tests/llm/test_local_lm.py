from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from llm_support import THREADS

from llmrec.errors import ConfigError
from llmrec.llm.base import LanguageModel
from llmrec.llm.local import LocalLM, LocalLMConfig
from required import require

PROMPT = "I enjoyed Heat (1995) and Casino (1995). Name one more movie I would like."
TITLES = ["Goodfellas (1990)", "Toy Story (1995)", "The Godfather (1972)", "Babe (1995)", "Alien (1979)", "Up"]


def config(**kwargs: Any) -> LocalLMConfig:
    return LocalLMConfig(threads=THREADS, **kwargs)


def full_sequence_loglik(lm: LocalLM, prompt: str, continuations: list[str]) -> np.ndarray:
    """The reference: each prompt + continuation + end-of-turn as one sequence, straight through the model."""
    import torch

    state = lm._state()
    prompt_ids = lm.encode(lm.render(prompt))
    out = []
    before = torch.get_num_threads()
    torch.set_num_threads(THREADS)
    try:
        with torch.inference_mode():
            for text in continuations:
                target = [*lm.encode(text), state.end_of_turn_id]
                ids = torch.tensor([prompt_ids + target])
                logprobs = torch.log_softmax(state.model(input_ids=ids).logits[0].float(), dim=-1)
                rows = logprobs[len(prompt_ids) - 1 : -1]
                out.append(float(rows.gather(1, torch.tensor(target)[:, None]).sum()))
    finally:
        torch.set_num_threads(before)
    return np.array(out)


def test_protocol_and_identity(lm: LocalLM) -> None:
    assert isinstance(lm, LanguageModel)
    assert lm.model_id == "SmolLM2-135M-Instruct.Q4_1"
    assert lm.end_of_turn_text == "<|im_end|>"
    assert lm.render("hi").endswith("<|im_start|>assistant\n")
    with pytest.raises(Exception):  # frozen pydantic config  # noqa: B017
        lm.config.dtype = "bfloat16"  # type: ignore[misc]


@pytest.fixture(scope="module")
def reference(lm: LocalLM) -> np.ndarray:
    return full_sequence_loglik(lm, PROMPT, TITLES)


@pytest.mark.slow  # over 1 s in CI: outside the fast lane (make test-fast)
@pytest.mark.parametrize("strategy", ["packed", "batch", "naive"])
def test_loglik_equals_full_sequence_computation(lm: LocalLM, reference: np.ndarray, strategy: str) -> None:
    got = lm.loglik(PROMPT, TITLES, strategy=strategy)  # type: ignore[arg-type]
    assert np.max(np.abs(got.total - reference)) < 1e-3
    assert got.n_tokens.tolist() == [len(lm.encode(t)) + 1 for t in TITLES]
    assert np.all(got.total < 0)


@pytest.mark.slow  # over 1 s in CI: outside the fast lane (make test-fast)
def test_prefix_reuse_ranks_like_naive(lm: LocalLM) -> None:
    titles = [*TITLES, "Heat (1995)", "Jumanji (1995)", "Casino (1995)", "Sabrina (1995)"]
    messages = [{"role": "system", "content": "You recommend movies."}, {"role": "user", "content": PROMPT}]
    reuse = lm.loglik(messages, titles)  # type: ignore[arg-type]
    naive = lm.loglik(messages, titles, strategy="naive")  # type: ignore[arg-type]
    np.testing.assert_allclose(reuse.total, naive.total, atol=1e-3)
    assert np.argsort(-reuse.mean).tolist() == np.argsort(-naive.mean).tolist()


@pytest.mark.slow  # over 1 s in CI: outside the fast lane (make test-fast)
def test_prompt_cache_across_calls_changes_nothing(lm: LocalLM) -> None:
    first = PROMPT + " Answer with a title."
    second = PROMPT + " Answer with the title only, please."
    lm.loglik(first, TITLES[:2])  # leaves `first` in the prompt cache; `second` shares its beginning
    cached = lm.loglik(second, TITLES)
    uncached = LocalLM(config(prompt_cache_size=0)).loglik(second, TITLES)
    np.testing.assert_allclose(cached.total, uncached.total, atol=1e-4)


@pytest.mark.slow  # over 1 s in CI: outside the fast lane (make test-fast)
def test_loglik_edge_cases(lm: LocalLM) -> None:
    assert lm.loglik(PROMPT, []).total.shape == (0,)
    empty = lm.loglik(PROMPT, ["", "Up"])
    assert empty.n_tokens.tolist() == [1, 2]  # "" is the end-of-turn token alone
    bare = lm.loglik(PROMPT, ["", "Up"], end_of_turn=False)
    assert bare.n_tokens.tolist() == [0, 1] and bare.total[0] == 0.0
    # Long candidate lists are split in chunks with the same result.
    small = LocalLM(config(max_batch_tokens=4)).loglik(PROMPT, TITLES)
    np.testing.assert_allclose(small.total, lm.loglik(PROMPT, TITLES).total, atol=1e-4)


@pytest.mark.slow  # over 1 s in CI: outside the fast lane (make test-fast)
def test_generate_is_deterministic_greedy_and_stream_joins_to_it(lm: LocalLM) -> None:
    first = lm.generate("Name three colors.", max_new_tokens=12)
    assert first and first == lm.generate("Name three colors.", max_new_tokens=12)
    pieces = list(lm.stream("Name three colors.", max_new_tokens=12))
    assert len(pieces) > 1
    assert "".join(pieces) == first


@pytest.mark.slow  # over 1 s in CI: outside the fast lane (make test-fast)
def test_stop_strings_and_max_new_tokens(lm: LocalLM) -> None:
    full = lm.generate("Count from one to ten in words.", max_new_tokens=16)
    stop = full[len(full) // 2 : len(full) // 2 + 3]
    expected = full[: full.index(stop)]
    assert lm.generate("Count from one to ten in words.", max_new_tokens=16, stop=[stop]) == expected
    assert "".join(lm.stream("Count from one to ten in words.", max_new_tokens=16, stop=[stop])) == expected
    one = lm.generate("Count from one to ten in words.", max_new_tokens=1)
    assert one and full.startswith(one) and lm.count_tokens(one) == 1
    assert lm.generate("Count from one to ten in words.", max_new_tokens=0) == ""


def test_sampling_is_reproducible_with_a_seed(lm: LocalLM) -> None:
    a = lm.generate("Write a word.", max_new_tokens=6, temperature=1.0, seed=7)
    assert a == lm.generate("Write a word.", max_new_tokens=6, temperature=1.0, seed=7)
    with pytest.raises(ConfigError):
        lm.generate("x", temperature=-1)


def test_score_texts_matches_loglik(lm: LocalLM) -> None:
    head = lm.render(PROMPT)
    scores = lm.score_texts([head + t + "<|im_end|>" for t in TITLES[:3]])
    expected = lm.loglik(PROMPT, TITLES[:3]).total
    for score, want in zip(scores, expected, strict=True):
        assert np.isnan(score.logprobs[0]) and score.offsets[0] == 0
        part = [lp for off, lp in zip(score.offsets, score.logprobs, strict=True) if off >= len(head)]
        assert abs(sum(part) - want) < 1e-3
        assert np.all(score.top_logprobs[1:] >= score.logprobs[1:] - 1e-5)


def test_bad_paths_raise_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        _ = LocalLM(LocalLMConfig(model_path=str(tmp_path / "nope"))).model_id
    (tmp_path / "weights.bin").write_bytes(b"")
    with pytest.raises(ConfigError, match="not a .gguf"):
        LocalLM(LocalLMConfig(model_path=str(tmp_path / "weights.bin"))).load()
    with pytest.raises(ConfigError, match="neither config.json"):
        LocalLM(LocalLMConfig(model_path=str(tmp_path))).load()


def _save_adapter(lm: LocalLM, tmp_path: Path, kind: str) -> Path:
    import torch
    from peft import LoraConfig, PromptTuningConfig, get_peft_model

    torch.manual_seed(0)
    base = copy.deepcopy(lm._state().model)
    config: Any
    if kind == "lora":
        config = LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False, task_type="CAUSAL_LM")
    else:
        config = PromptTuningConfig(num_virtual_tokens=3, task_type="CAUSAL_LM")
    model = get_peft_model(base, config)
    path = tmp_path / f"{kind}-adapter"
    model.save_pretrained(str(path))
    return path


@pytest.mark.slow  # over 1 s in CI: outside the fast lane (make test-fast)
@pytest.mark.parametrize("kind", ["lora", "prompt"])
def test_adapter_loads_on_top(lm: LocalLM, tmp_path: Path, kind: str) -> None:
    require("peft")
    path = _save_adapter(lm, tmp_path, kind)
    tuned = LocalLM(config(adapter=str(path)))
    assert tuned.model_id == f"SmolLM2-135M-Instruct.Q4_1+{kind}-adapter"
    base = lm.loglik(PROMPT, TITLES[:3]).total
    got = tuned.loglik(PROMPT, TITLES[:3])
    assert np.max(np.abs(got.total - base)) > 1e-3  # the adapter changes the scores
    naive = tuned.loglik(PROMPT, TITLES[:3], strategy="naive")
    np.testing.assert_allclose(got.total, naive.total, atol=1e-3)
    assert tuned.generate("Say hi.", max_new_tokens=3)


@pytest.mark.slow  # over 1 s in CI: outside the fast lane (make test-fast)
def test_int8_quantization_keeps_the_ranking(lm: LocalLM) -> None:
    quantized = LocalLM(lm.config.model_copy(update={"quantize": "int8"}))
    assert quantized.model_id.endswith("@int8") and quantized.model_id != lm.model_id
    prompt = "The user enjoyed Heat, Ronin and Alien. Name one more movie."
    titles = ["Die Hard", "Aliens", "Toy Story", "The Matrix", "Notting Hill", "Jaws", "Saw", "Speed", "Babe", "Fargo"]
    exact, fast = lm.loglik(prompt, titles).mean, quantized.loglik(prompt, titles).mean
    assert not np.allclose(exact, fast)  # really quantized
    assert np.abs(exact - fast).mean() < 2.0  # per-token nats: a coarse model, but the order below holds
    rank = lambda x: np.argsort(np.argsort(x))  # noqa: E731
    assert np.corrcoef(rank(exact), rank(fast))[0, 1] > 0.7
    assert quantized.generate(prompt, max_new_tokens=4)
