# Helpers shared by the e2e scripts (sourced; the caller defines `dump` and sets E2E_NAME).
log() { printf '\n=== %s\n' "$*"; }
fail() { printf '\nFAIL: %s\n' "$*" >&2; dump; exit 1; }
need() { command -v "$1" >/dev/null || { echo "${E2E_NAME:-e2e}: '$1' is required (see README: Kubernetes e2e)" >&2; exit 2; }; }

# poll CMD until it succeeds (or TIMEOUT seconds pass)
until_ok() {
  local timeout=$1; shift
  local deadline=$((SECONDS + timeout))
  until "$@" >/dev/null 2>&1; do
    (( SECONDS < deadline )) || return 1
    sleep 2
  done
}
