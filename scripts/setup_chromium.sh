#!/usr/bin/env bash
# Install Chromium (Debian's chromium package) if it is missing.
#
# The viewer's browser tests (tests/ui) drive it headless through Playwright's
# Python client with executable_path set to this binary: Playwright's own
# browser download needs a CDN that these machines cannot reach, and Debian's
# build is the one the project supports. Idempotent: does nothing when
# chromium is already on PATH.
set -euo pipefail

if command -v chromium >/dev/null 2>&1; then
    exit 0
fi
. "$(dirname "$0")/apt_install.sh"
apt_install chromium chromium fonts-dejavu-core
command -v chromium >/dev/null
