#!/usr/bin/env bash
# Make Debian's Chromium available for the web page test, and print its path on stdout.
#
#   export LLMREC_TEST_CHROMIUM=$(bash scripts/chromium.sh)
#
# Installs Debian's `chromium` package when no chromium is on PATH (we are root on a Debian machine). Playwright
# drives this browser; it never downloads one of its own. Quiet: stdout carries only the path; the log of a
# failed install goes to stderr.
set -euo pipefail

if ! command -v chromium >/dev/null 2>&1; then
    LOG=$(mktemp -t llmrec-chromium.XXXXXX)
    trap 'rm -f "$LOG"' EXIT
    if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        chromium; } >"$LOG" 2>&1; then
        echo "scripts/chromium.sh: installing Debian's chromium failed (the web page test needs it)" >&2
        cat "$LOG" >&2
        exit 1
    fi
fi
command -v chromium
