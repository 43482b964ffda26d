#!/bin/sh
# Installs every build and runtime dependency of sandboxd from Debian packages.
# Idempotent: packages already present are left alone, and apt runs only when needed.
set -eu

PKGS="build-essential pkg-config
libmicrohttpd-dev libjansson-dev libsqlite3-dev libseccomp-dev libyaml-dev libcurl4-openssl-dev
libarchive-dev libssl-dev
mmdebstrap busybox-static ca-certificates curl
python3 python3-pytest clang-format
clang libclang-rt-14-dev clang-tools
docker-registry"

missing=""
for p in $PKGS; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
        missing="$missing $p"
    fi
done
if [ -z "$missing" ]; then
    echo "install-deps: all dependencies are installed"
    exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
    SUDO=sudo
else
    SUDO=
fi
echo "install-deps: installing:$missing"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
# shellcheck disable=SC2086
$SUDO apt-get install -y -qq --no-install-recommends $missing
