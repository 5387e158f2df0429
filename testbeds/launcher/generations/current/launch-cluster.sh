#!/bin/sh
# Thin wrapper: the current generation's launch-cluster.sh is testbeds/launcher/repo/standin.py with
# STANDIN_GENERATION=current. The lines below are the upstream script's own markers, which
# cluster/launch/generation.py probes (docs/launcher.md names the file and version).
SCRIPT_DIR=$(cd "$(dirname "$0")" && pwd)
NO_RAY_MODE="true"    # launch-cluster.sh default since 2026-07: `--ray` opts back in
CONFIG_FILE="$SCRIPT_DIR/.env"    # as upstream: the .env beside the script
. "$SCRIPT_DIR/standin.env"
STANDIN_GENERATION=current
export STANDIN_GENERATION
exec "$PYTHON" "$SCRIPT_DIR/standin.py" launch-cluster "$@"
