#!/usr/bin/env bash
# Install Redis (Debian's redis-server package) if it is missing.
#
# The local stack starts its own redis-server (port from Ports.redis, data
# under the data dir) for the Dapr lock store (lock.redis, components/
# lockstore.yaml); the package's system service is not used. Idempotent:
# does nothing when redis-server is already on PATH.
set -euo pipefail

if command -v redis-server >/dev/null 2>&1; then
    exit 0
fi
if [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null 2>&1; then
    SUDO=sudo
else
    SUDO=
fi
echo "[setup-redis] installing redis-server (Debian package)" >&2
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -q
$SUDO apt-get install -y -q --no-install-recommends redis-server
command -v redis-server >/dev/null
