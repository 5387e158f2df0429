#!/bin/sh
# Thin wrapper: the seed generation's launch-cluster.sh is testbeds/launcher/repo/standin.py with
# STANDIN_GENERATION=seed. The lines below are the upstream script's own markers, which
# cluster/launch/generation.py probes (docs/launcher.md names the file and version).
SCRIPT_DIR=$(cd "$(dirname "$0")" && pwd)
NO_RAY_MODE="false"   # launch-cluster.sh default in the Ray era: `--no-ray` opts out
CONFIG_FILE="$SCRIPT_DIR/.env"    # as upstream: the .env beside the script
. "$SCRIPT_DIR/standin.env"
STANDIN_GENERATION=seed
export STANDIN_GENERATION
exec "$PYTHON" "$SCRIPT_DIR/standin.py" launch-cluster "$@"
