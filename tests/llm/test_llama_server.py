"""The OpenAI-compatible client against a third-party server, llama.cpp's (llama-cpp-python[server]), and its
calibration probe against scripted echo servers (issue 19, "a stronger model when the user has one").

The scripted servers run everywhere (CI included): an aligned one, ones that report each log-probability one
position off, and one that answers like llama-cpp-python 0.3.36 (special tokens printed empty and left out of the
offsets, ``max_tokens: 0`` read as "unlimited", one prompt per request). The real llama.cpp server runs only where
``bash scripts/llama_server.sh install`` has built it (a ~25-minute source build, cached; CI never builds it):
elsewhere those tests skip and say so.
"""

from __future__ import annotations

import itertools
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from llm_support import ScriptedServer

from llmrec.llm.errors import LMCapabilityError
from llmrec.llm.openai_http import CHATML_TEMPLATE, PROBE_SURPRISE, EchoProbe, OpenAIChatLM, OpenAIConfig
from llmrec.llm.rerank import LMReranker, RerankConfig
from required import require

require("httpx")

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "llama_server.sh"
PROMPT = "I enjoyed Heat (1995) and Casino (1995). Name one more movie I would like."
TITLES = ["Goodfellas (1990)", "Toy Story (1995)", "Babe (1995)", "Up"]
HISTORY = ["Heat (1995)", "Casino (1995)", "Godfather, The (1972)"]
CANDIDATES = ["Goodfellas (1990)", "Toy Story (1995)", "Babe (1995)", "Pocahontas (1995)", "Scarface (1983)"]

# -- scripted echo servers ----------------------------------------------------------------------------------------

_TOKEN = re.compile(r"<\|[a-z_]+\|>|\n| ?[A-Za-z]+|.", re.DOTALL)
SPECIAL = re.compile(r"<\|[a-z_]+\|>")


def _tokens(text: str) -> list[str]:
    return _TOKEN.findall(text)


def _value(tokens: list[str], i: int) -> float:
    """A toy model that copies: a token seen earlier in the text is near-certain, a new one unlikely, and the
    probe's changed word (a noun the copied sentence rules out) least likely of all, as in SmolLM2 (-17.6)."""
    if tokens[i] in tokens[:i]:
        return -0.1
    return -16.0 if PROBE_SURPRISE in tokens[i] else -8.0


class EchoFake:
    """Answers ``/completions`` with echo like a server of the given kind.

    ``aligned``: OpenAI semantics (``max_tokens: 0`` generates nothing, several prompts per request).
    ``vllm``: aligned, but ``max_tokens: 0`` is a 400.
    ``shift``: each value reported ``shift`` positions late (+1) or early (-1).
    ``llama``: llama-cpp-python 0.3.36: the leading BOS (``<|im_start|>``) dropped, special tokens printed as ""
    and left out of the offsets, ``max_tokens: 0`` = unlimited, a list of two prompts answered with a 500.
    """

    def __init__(self, kind: str = "aligned", shift: int = 0) -> None:
        self.kind, self.shift = kind, shift

    def __call__(self, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        prompts = [body["prompt"]] if isinstance(body["prompt"], str) else list(body["prompt"])
        if self.kind == "vllm" and body.get("max_tokens") == 0:
            return 400, {"error": {"message": "max_tokens must be at least 1, got 0."}}
        if self.kind == "llama" and len(prompts) > 1:
            return 500, {"error": {"message": "AssertionError"}}
        choices, generated = [], 0
        for i, prompt in enumerate(prompts):
            choice, n = self._choice(prompt, int(body.get("max_tokens", 16)), body.get("stop") or [])
            choices.append({"index": i, **choice})
            generated += n
        return 200, {"choices": choices, "usage": {"completion_tokens": generated}}

    def _choice(self, prompt: str, max_tokens: int, stop: list[str]) -> tuple[dict[str, Any], int]:
        unlimited = self.kind == "llama" and max_tokens == 0
        new = ["\n"] if max_tokens > 0 or unlimited else []  # the "model" answers a newline (a stop string)
        tokens = _tokens(prompt) + new
        values: list[float | None] = [_value(tokens, i) for i in range(len(tokens))]
        if self.shift:
            late = self.shift > 0  # value i is that of token i - shift (late) or i + |shift| (early)
            pad: list[float | None] = [-0.1] * abs(self.shift)
            values = pad + values[: -self.shift] if late else values[-self.shift :] + pad
        values[0] = None
        shown = "" if new and new[0] in stop else "".join(new)
        if self.kind == "llama":
            keep = tokens[1:] if tokens and tokens[0] == "<|im_start|>" else tokens
            values = values[len(tokens) - len(keep) :]
            values[0] = None
            tokens = ["" if SPECIAL.fullmatch(t) else t for t in keep]
        offsets = np.cumsum([0] + [len(t) for t in tokens[:-1]]).tolist()
        logprobs = {"tokens": tokens, "text_offset": offsets, "token_logprobs": values, "top_logprobs": None}
        return {"text": prompt + shown, "logprobs": logprobs, "finish_reason": "length"}, len(new)


def _client(url: str, **config: Any) -> OpenAIChatLM:
    return OpenAIChatLM(OpenAIConfig(base_url=url + "/v1", max_retries=0, **config))


def _scores(prompt: str, titles: list[str]) -> list[float]:
    """What an aligned client must find for each title on the toy model (reply tokens incl. <|im_end|>)."""
    head = OpenAIChatLM().render(prompt)
    totals = []
    for title in titles:
        tokens = _tokens(head + title + "<|im_end|>")
        start = len(_tokens(head))
        totals.append(sum(_value(tokens, i) for i in range(start, len(tokens))))
    return totals


def test_the_probe_accepts_an_aligned_server(scripted: ScriptedServer) -> None:
    scripted.script.completions = EchoFake()
    client = _client(scripted.url)
    probe = client.probe()
    assert (probe.aligned, probe.shift, probe.attribution, probe.echo_max_tokens, probe.batch) == (
        True,
        0,
        "offsets",
        0,
        True,
    )
    assert probe.first_is_null and probe.copied_median == pytest.approx(-0.1)
    ll = client.loglik(PROMPT, TITLES)
    np.testing.assert_allclose(ll.total, _scores(PROMPT, TITLES))
    ranking = [r for r in scripted.script.requests if "chat" not in r["path"]][-1]["body"]
    assert ranking["prompt"] == [client.render(PROMPT) + t + "<|im_end|>" for t in TITLES]  # one batched request
    assert ranking["max_tokens"] == 0


@pytest.mark.parametrize("shift", [1, -1])
def test_the_probe_refuses_a_server_whose_values_are_one_position_off(scripted: ScriptedServer, shift: int) -> None:
    scripted.script.completions = EchoFake(shift=shift)
    client = _client(scripted.url)
    assert not client.probe().aligned and client.probe().shift == shift
    with pytest.raises(LMCapabilityError, match="not aligned with their tokens.*silently wrong") as caught:
        client.loglik(PROMPT, TITLES)
    assert scripted.url in str(caught.value) and "BOS" in (caught.value.fix or "")
    probes = len(scripted.script.requests)
    with pytest.raises(LMCapabilityError):
        client.loglik(PROMPT, TITLES)
    assert len(scripted.script.requests) == probes  # the verdict is cached: no second probe, no ranking request


def test_a_llama_cpp_like_server_is_read_by_token_text_one_prompt_at_a_time(scripted: ScriptedServer) -> None:
    scripted.script.completions = EchoFake("llama")
    client = _client(scripted.url)
    probe = client.probe()
    assert (probe.aligned, probe.attribution, probe.echo_max_tokens, probe.batch) == (True, "tokens", 1, False)
    before = len(scripted.script.requests)
    ll = client.loglik(PROMPT, TITLES)
    np.testing.assert_allclose(ll.total, _scores(PROMPT, TITLES))
    ranking = [r["body"] for r in scripted.script.requests[before:]]
    assert [r["prompt"] for r in ranking] == [client.render(PROMPT) + t + "<|im_end|>" for t in TITLES]
    assert {r["max_tokens"] for r in ranking} == {1}  # never 0: llama-cpp-python would generate to the context end
    zero = [r["body"] for r in scripted.script.requests[:before] if r["body"].get("max_tokens") == 0]
    assert zero and all(r.get("stop") for r in zero)  # the one 0 the probe sends carries stop strings


@pytest.mark.parametrize("echo_max_tokens", [None, 0])
def test_a_server_that_rejects_max_tokens_0_is_sent_1(scripted: ScriptedServer, echo_max_tokens: int | None) -> None:
    scripted.script.completions = EchoFake("vllm")
    client = _client(scripted.url, echo_max_tokens=echo_max_tokens)
    assert (client.probe().aligned, client.probe().echo_max_tokens, client.probe().batch) == (True, 1, True)
    np.testing.assert_allclose(client.loglik(PROMPT, TITLES).total, _scores(PROMPT, TITLES))
    assert scripted.script.requests[-1]["body"]["max_tokens"] == 1


def test_a_llama_cpp_like_server_without_a_leading_bos_is_refused(scripted: ScriptedServer) -> None:
    scripted.script.completions = EchoFake("llama", shift=1)
    client = _client(scripted.url, chat_template="Chat.\n" + CHATML_TEMPLATE)
    with pytest.raises(LMCapabilityError, match="not aligned"):
        client.loglik(PROMPT, TITLES)


def test_a_server_without_prompt_logprobs_cannot_rank(scripted: ScriptedServer) -> None:
    scripted.script.completions = lambda body: (200, {"choices": [{"index": 0, "text": "x", "logprobs": None}]})
    with pytest.raises(LMCapabilityError, match="cannot rank.*echo"):
        _client(scripted.url).loglik(PROMPT, TITLES)


# -- the real llama.cpp server --------------------------------------------------------------------------------------


def _llama_venv() -> Path:
    default = Path.home() / ".cache" / "llmrec" / "llama-venv"
    return Path(os.environ.get("LLMREC_LLAMA_VENV") or default)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _ready(url: str) -> bool:
    import httpx

    try:
        return httpx.get(url + "/v1/models", timeout=2.0).status_code == 200
    except httpx.HTTPError:
        return False


@pytest.fixture(scope="session")
def llama_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """llama.cpp's server over the packaged SmolLM2 GGUF on a free loopback port; skipped when it is not built.

    Skipped (never failed, CI included: CI does not build it) without the cached venv of
    ``scripts/llama_server.sh``. Killed at the end of the session.
    """
    venv = _llama_venv()
    if not list(venv.glob("lib/python*/site-packages/llama_cpp/server/__main__.py")):
        reason = f"llama-cpp-python[server] is not built in {venv}: run 'bash scripts/llama_server.sh install'"
        print(f"\n{reason}", file=sys.stderr)
        pytest.skip(reason)
    port = _free_port()
    log = tmp_path_factory.mktemp("llama") / "server.log"
    env = {**os.environ, "LLMREC_PYTHON": sys.executable, "LLMREC_LLAMA_VENV": str(venv)}
    with log.open("wb") as out:
        proc = subprocess.Popen(
            ["bash", str(SCRIPT), "serve", str(port)], stdout=out, stderr=subprocess.STDOUT, env=env,
            start_new_session=True,
        )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while not _ready(url):
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"llama.cpp server did not start: {log.read_text()[-2000:]}")
            time.sleep(0.5)
        yield url
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


@pytest.fixture(scope="module")
def llama(llama_server: str, lm: Any) -> Iterator[OpenAIChatLM]:
    """The client on the llama.cpp server, with the in-process model's chat template and end of turn."""
    config = OpenAIConfig(
        base_url=llama_server + "/v1",
        model="smollm2",
        chat_template=lm.chat_template,
        end_of_turn=lm.end_of_turn_text,
        max_retries=0,
        timeout_s=120,
    )
    with OpenAIChatLM(config) as client:
        yield client


@pytest.mark.slow  # a real llama.cpp server: seconds per request on a busy 2-core machine
def test_llama_generate_and_stream_agree(llama: OpenAIChatLM) -> None:
    text = llama.generate("Name three colors.", max_new_tokens=8)
    pieces = list(llama.stream("Name three colors.", max_new_tokens=8))
    assert text.strip() and len(pieces) > 1
    assert "".join(pieces) == text  # greedy: the stream is the same reply, piece by piece


@pytest.mark.slow
def test_llama_probe_verdict(llama: OpenAIChatLM) -> None:
    probe = llama.probe()
    assert isinstance(probe, EchoProbe)
    print(probe.describe())
    # SmolLM2's chat template starts with <|im_start|>, its BOS: llama-cpp-python 0.3.36 then aligns the values.
    # It prints special tokens as "" (offsets unusable), reads max_tokens 0 as unlimited, takes one prompt at once.
    assert (probe.aligned, probe.shift, probe.attribution, probe.echo_max_tokens, probe.batch) == (
        True,
        0,
        "tokens",
        1,
        False,
    )


@pytest.mark.slow
def test_llama_without_a_leading_bos_is_refused(llama_server: str) -> None:
    config = OpenAIConfig(base_url=llama_server + "/v1", chat_template="Chat.\n" + CHATML_TEMPLATE, max_retries=0)
    with OpenAIChatLM(config) as client:
        probe = client.probe()
        print(probe.describe())
        assert not probe.aligned
        with pytest.raises(LMCapabilityError, match="not aligned"):
            client.loglik(PROMPT, TITLES)


@pytest.mark.slow
def test_llama_loglik_and_rerank_match_the_in_process_model(llama: OpenAIChatLM, lm: Any) -> None:
    remote, local = llama.loglik(PROMPT, TITLES), lm.loglik(PROMPT, TITLES)
    print("llama.cpp", remote.total, "in-process", local.total)
    assert remote.n_tokens.tolist() == local.n_tokens.tolist()
    np.testing.assert_allclose(remote.total, local.total, atol=LOGLIK_ATOL)
    config = RerankConfig(method="loglik")
    served = LMReranker(llama, config).score(HISTORY, CANDIDATES)
    in_process = LMReranker(lm, config).score(HISTORY, CANDIDATES)
    print("rerank llama.cpp", served, "in-process", in_process)
    np.testing.assert_allclose(served, in_process, atol=RERANK_ATOL)
    # The order is as exact as the scores: every pair the in-process model separates by more than the tolerance
    # keeps its order (quantized llama.cpp kernels may swap a near-tie: measured gaps of 0.03 swapped).
    for i, j in itertools.combinations(range(len(CANDIDATES)), 2):
        if abs(in_process[i] - in_process[j]) > RERANK_ATOL:
            assert (served[i] > served[j]) == (in_process[i] > in_process[j]), (CANDIDATES[i], CANDIDATES[j])


# llama.cpp runs the Q4_1 weights with quantized activations, LocalLM the same weights dequantized to fp32.
# Measured (SmolLM2-135M, llama-cpp-python 0.3.36): totals within 0.29 nats, rerank scores within 0.06.
LOGLIK_ATOL = 0.5
RERANK_ATOL = 0.1
