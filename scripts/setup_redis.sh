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
. "$(dirname "$0")/apt_install.sh"
apt_install redis redis-server
command -v redis-server >/dev/null
