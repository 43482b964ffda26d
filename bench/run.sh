#!/bin/sh
# Runs the benchmark harness as root: starts its own sandboxd on a free port with a temporary
# state dir and a busybox image, measures it against its peers, and writes docs/benchmarks.md
# plus raw JSON (bench/results/).  `--quick` is the CI smoke test: every scenario, few rounds,
# no docs.
set -eu
cd "$(dirname "$0")/.."
# The peers come from Debian packages: bubblewrap, crun, runc (its `runc spec` also makes the
# OCI bundles), util-linux (nsenter, unshare) and perf for the profile.  A peer whose package
# cannot be installed is skipped with a note, here and again by the harness.
for pair in bwrap:bubblewrap crun:crun runc:runc nsenter:util-linux perf:linux-perf; do
    cmd=${pair%%:*} pkg=${pair#*:}
    command -v "$cmd" >/dev/null 2>&1 && continue
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$pkg" >/dev/null 2>&1 ||
        echo "bench: $pkg could not be installed; the $cmd peer is skipped" >&2
done
# The kernel floor: the same namespace, overlay and pivot_root work with nothing else.
mkdir -p build
gcc -O2 -Wall -Wextra -o build/bench-floor bench/floor.c
exec /usr/bin/python3 bench/bench.py "$@"
