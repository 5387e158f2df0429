#!/bin/sh
# Stand-in for spark-vllm-docker's launch-cluster.sh (see standin.py): start|stop|status.
here=$(cd "$(dirname "$0")" && pwd)
. "$here/standin.env"
exec "$PYTHON" "$here/standin.py" launch-cluster "$@"
