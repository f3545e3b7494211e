#!/usr/bin/env bash
# The real-cluster suite (tests/e2e) on a local kind cluster: `make e2e-kind` runs this.
# It needs Docker (a running engine) and kind; where either is missing it says why and exits 0,
# so machines without Docker (like CI) stay green. Knobs: E2E_KIND_CLUSTER (cluster name),
# E2E_KEEP_CLUSTER=1 (keep it afterwards), E2E_IMAGE (use this image instead of building one).
# Extra arguments go to pytest (e.g. -k quickstart).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}

skip() {
    echo "e2e-kind: skipped: $1"
    exit 0
}

command -v docker >/dev/null 2>&1 || skip "docker is not installed (kind runs Kubernetes nodes as Docker containers)"
docker info >/dev/null 2>&1 || skip "no Docker engine answers (\`docker info\` failed): start Docker and run again"
command -v kind >/dev/null 2>&1 || skip "kind is not installed: https://kind.sigs.k8s.io/docs/user/quick-start/#installation"

exec "$PY" -m pytest tests/e2e -v -rs -p no:cacheprovider "$@"
