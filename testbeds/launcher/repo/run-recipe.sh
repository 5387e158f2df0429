#!/bin/sh
# Stand-in for spark-vllm-docker's run-recipe.sh (see standin.py): same flags, same prompt.
here=$(cd "$(dirname "$0")" && pwd)
. "$here/standin.env"
exec "$PYTHON" "$here/standin.py" run-recipe "$@"
