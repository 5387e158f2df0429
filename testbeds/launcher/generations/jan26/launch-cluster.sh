#!/bin/sh
# Thin wrapper: the jan26 generation's launch-cluster.sh is testbeds/launcher/repo/standin.py with
# STANDIN_GENERATION=jan26. The lines below are the upstream script's own markers, which
# cluster/launch/generation.py probes (docs/launcher.md names the file and version).
SCRIPT_DIR=$(cd "$(dirname "$0")" && pwd)
# 74c02c3 has no NO_RAY_MODE (Ray only) and reads no .env (autodiscover.sh only)
. "$SCRIPT_DIR/standin.env"
STANDIN_GENERATION=jan26
export STANDIN_GENERATION
exec "$PYTHON" "$SCRIPT_DIR/standin.py" launch-cluster "$@"
