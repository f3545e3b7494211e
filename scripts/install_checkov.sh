#!/usr/bin/env bash
# Make checkov (the Kubernetes manifest scanner security teams run in CI) available for the
# hardening tests; print the path of the checkov executable.
#
# Idempotent: reuses .tools/checkov/ when it holds the pinned version, else installs it from PyPI
# into that virtualenv of its own (checkov pins many libraries; kept apart from .venv so its
# pins never move the project's).
set -euo pipefail

VERSION="3.3.30"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.tools/checkov"
BIN="$VENV/bin/checkov"

if [ -x "$BIN" ] && [ "$("$VENV/bin/python" -c 'import importlib.metadata as m; print(m.version("checkov"))' 2>/dev/null)" = "$VERSION" ]; then
    echo "$BIN"
    exit 0
fi
echo "install_checkov.sh: installing checkov $VERSION into $VENV" >&2
python3 -m venv "$VENV"
"$VENV/bin/python" -m pip install -q "checkov==$VERSION" >&2
echo "$BIN"
