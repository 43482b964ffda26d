#!/bin/sh
# Starts sandboxd in the background (unless one already answers) and runs a first sandbox:
# Python from the `python` preset, built from Debian packages on first use.
set -eu
cd "$(dirname "$0")/.."
URL=${SANDBOXD_URL:-http://127.0.0.1:3111}
LOG=${SANDBOXD_LOG:-/var/log/sandboxd.log}
SUDO=
[ "$(id -u)" -eq 0 ] || SUDO=sudo

healthy() { curl -fsS "$URL/health" >/dev/null 2>&1; }

if healthy; then
    echo "sandboxd already answers at $URL"
else
    echo "starting sandboxd (log: $LOG)"
    $SUDO sh -c "nohup '$PWD/build/sandboxd' >>'$LOG' 2>&1 &"
    i=0
    until healthy; do
        i=$((i + 1))
        if [ $i -gt 100 ]; then
            echo "sandboxd did not start; the end of its log:" >&2
            tail -n 20 "$LOG" >&2
            exit 1
        fi
        sleep 0.1
    done
    echo "sandboxd is up at $URL"
fi

echo
echo "\$ sandbox run python -- python3 -c 'import platform; print(\"hello from\", platform.python_version())'"
echo "(the first run builds the python image from Debian packages: about a minute)"
SANDBOXD_URL=$URL build/sandbox run python -- python3 -c 'import platform; print("hello from", platform.python_version())'
echo
echo "sandboxd keeps running. Try:"
echo "  SB=\$(build/sandbox create python)"
echo "  build/sandbox exec \"\$SB\" -- python3 -c 'print(2+2)'"
echo "  build/sandbox list"
echo "  build/sandbox stop \"\$SB\""
echo "Stop the daemon with: sudo pkill -TERM -x sandboxd"
