#!/usr/bin/env bash
# Installs the tools that validate charts/swarmd without a cluster:
#   - helm (built from its Go module, pinned)
#   - helm-unittest (built in a generated wrapper module: its go.mod has a
#     `replace`, so `go install` refuses it)
#   - the Dapr CRDs (read at test time from the Dapr Go module in GOMODCACHE)
#   - KEDA's ScaledObject schema (npm package @kubernetes-models/keda)
#
# Everything goes under ${XDG_CACHE_HOME:-$HOME/.cache}/swarmd/tools, never
# into the repo. Idempotent: each step is skipped when its pinned version is
# already in place (stamp files), so a warm run takes about a second.
#
# The Python side (kubernetes-validate, jsonschema, pytest) is pinned in
# tests/chart/requirements.txt and installed into the project venv by the
# Makefile, not here.
#
# Prints the environment the tests read (SWARMD_CHART_TOOLS=...) at the end.
set -euo pipefail

# --- pins -------------------------------------------------------------------
HELM_VERSION="v4.3.1"
HELM_UNITTEST_VERSION="v1.1.2"
KEDA_MODELS_VERSION="2.0.0"   # npm @kubernetes-models/keda (KEDA 2.x CRDs)
REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# The Dapr control plane release the chart targets: the chart's own
# annotation swarmd.dev/dapr-version (the tests read the same). It is the
# cluster's Dapr, independent of the local runtime pin in versions.env.
DAPR_VERSION="$(sed -n 's/^ *swarmd.dev\/dapr-version: *"\{0,1\}\([0-9.]*\)"\{0,1\} *$/\1/p' \
  "${REPO_ROOT}/charts/swarmd/Chart.yaml")"
[[ -n "${DAPR_VERSION}" ]] || { echo "no swarmd.dev/dapr-version in charts/swarmd/Chart.yaml" >&2; exit 1; }

TOOLS_DIR="${XDG_CACHE_HOME:-$HOME/.cache}/swarmd/tools"
BIN_DIR="${TOOLS_DIR}/bin"
STAMPS="${TOOLS_DIR}/stamps"
mkdir -p "${BIN_DIR}" "${STAMPS}"

log() { printf '[setup_chart_tools] %s\n' "$*" >&2; }
need() { command -v "$1" >/dev/null 2>&1 || { log "missing required command: $1"; exit 1; }; }
need go
need npm

GOMODCACHE_DIR="$(go env GOMODCACHE)"
# Keep go from picking up a go.work or module of the caller's directory.
export GOWORK=off
export GOFLAGS="${GOFLAGS:-} -buildvcs=false"

# --- helm ---------------------------------------------------------------------
install_helm() {
  local stamp="${STAMPS}/helm-${HELM_VERSION}"
  if [[ -f "${stamp}" && -x "${BIN_DIR}/helm" ]]; then
    return
  fi
  log "building helm ${HELM_VERSION} (go install; a few minutes cold)"
  # helm has no `replace` in its go.mod, so a plain go install works. The
  # ldflags give `helm version` a real version instead of a dev string.
  (cd "${TOOLS_DIR}" && GOBIN="${BIN_DIR}" CGO_ENABLED=0 go install \
    -ldflags "-s -w -X helm.sh/helm/v4/internal/version.version=${HELM_VERSION}" \
    "helm.sh/helm/v4/cmd/helm@${HELM_VERSION}")
  touch "${stamp}"
}

# --- helm-unittest ------------------------------------------------------------
install_helm_unittest() {
  local stamp="${STAMPS}/helm-unittest-${HELM_UNITTEST_VERSION}"
  if [[ -f "${stamp}" && -x "${BIN_DIR}/helm-unittest" ]]; then
    return
  fi
  log "building helm-unittest ${HELM_UNITTEST_VERSION} in a wrapper module"
  local mod="github.com/helm-unittest/helm-unittest"
  local wrap="${TOOLS_DIR}/src/helm-unittest-${HELM_UNITTEST_VERSION}"
  go mod download "${mod}@${HELM_UNITTEST_VERSION}"
  local src="${GOMODCACHE_DIR}/github.com/helm-unittest/helm-unittest@${HELM_UNITTEST_VERSION}"
  local sums
  sums="$(go mod download -json "${mod}@${HELM_UNITTEST_VERSION}")"
  local zsum modsum
  zsum="$(printf '%s' "${sums}" | sed -n 's/^[[:space:]]*"Sum": "\(.*\)",\{0,1\}$/\1/p')"
  modsum="$(printf '%s' "${sums}" | sed -n 's/^[[:space:]]*"GoModSum": "\(.*\)",\{0,1\}$/\1/p')"
  rm -rf "${wrap}"
  mkdir -p "${wrap}"
  # go.mod: our own module path, helm-unittest required at the pin, then its
  # own require and replace blocks verbatim (the build list stays exactly
  # the one upstream tested; no `go mod tidy`).
  {
    echo "module swarmd.local/tools/helm-unittest"
    echo
    sed -n 's/^go \(.*\)$/go \1/p' "${src}/go.mod"
    echo
    echo "require ${mod} ${HELM_UNITTEST_VERSION}"
    echo
    sed -n '/^require\|^replace\|^exclude/,$p' "${src}/go.mod"
  } > "${wrap}/go.mod"
  cp "${src}/go.sum" "${wrap}/go.sum"
  chmod u+w "${wrap}/go.sum"
  printf '%s %s %s\n%s %s/go.mod %s\n' \
    "${mod}" "${HELM_UNITTEST_VERSION}" "${zsum}" \
    "${mod}" "${HELM_UNITTEST_VERSION}" "${modsum}" >> "${wrap}/go.sum"
  # -mod=readonly: the build fails rather than silently changing the pins.
  (cd "${wrap}" && CGO_ENABLED=0 go build -mod=readonly -trimpath \
    -ldflags "-s -w -X ${mod}/internal/build.version=${HELM_UNITTEST_VERSION#v}" \
    -o "${BIN_DIR}/helm-unittest" "${mod}/cmd/helm-unittest")
  touch "${stamp}"
}

# --- Dapr CRDs ----------------------------------------------------------------
fetch_dapr_crds() {
  local dir="${GOMODCACHE_DIR}/github.com/dapr/dapr@v${DAPR_VERSION}/charts/dapr/crds"
  if [[ -f "${dir}/components.yaml" ]]; then
    return
  fi
  log "downloading github.com/dapr/dapr@v${DAPR_VERSION} (for its CRDs)"
  (cd "${TOOLS_DIR}" && go mod download "github.com/dapr/dapr@v${DAPR_VERSION}")
  [[ -f "${dir}/components.yaml" ]] || { log "no CRDs at ${dir}"; exit 1; }
}

# --- KEDA CRD schema (npm) ----------------------------------------------------
install_keda_schema() {
  local stamp="${STAMPS}/keda-models-${KEDA_MODELS_VERSION}"
  local prefix="${TOOLS_DIR}/npm"
  if [[ -f "${stamp}" && -d "${prefix}/node_modules/@kubernetes-models/keda" ]]; then
    return
  fi
  log "installing @kubernetes-models/keda@${KEDA_MODELS_VERSION} (npm)"
  mkdir -p "${prefix}"
  npm install --prefix "${prefix}" --no-audit --no-fund --silent \
    --save-exact "@kubernetes-models/keda@${KEDA_MODELS_VERSION}" >/dev/null
  touch "${stamp}"
}

start=$(date +%s)
install_helm
install_helm_unittest
fetch_dapr_crds
install_keda_schema
log "done in $(( $(date +%s) - start ))s; tools in ${BIN_DIR}"
"${BIN_DIR}/helm" version --short >&2 || true
