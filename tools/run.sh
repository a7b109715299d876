#!/usr/bin/env bash
# The README's entry point: installs everything (make included, which a fresh Debian may lack),
# then runs a Makefile target: `bash tools/run.sh demo` or `bash tools/run.sh test`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/setup.sh
exec make "$@"
