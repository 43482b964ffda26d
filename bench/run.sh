#!/bin/sh
# Runs the benchmark harness as root: starts its own sandboxd on a free port with a temporary
# state dir and a busybox image, measures, and writes docs/benchmarks.md plus raw JSON.
set -eu
cd "$(dirname "$0")/.."
# bubblewrap is the peer the lifecycle figure is compared with.
command -v bwrap >/dev/null 2>&1 || apt-get install -y -qq bubblewrap >/dev/null 2>&1 || echo "bench: bubblewrap not available; comparing with fork+exec only" >&2
exec /usr/bin/python3 bench/bench.py "$@"
