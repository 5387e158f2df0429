#!/bin/sh
# Thin wrapper, as upstream's run-recipe.sh wraps run-recipe.py.
here=$(cd "$(dirname "$0")" && pwd)
. "$here/standin.env"
exec "$PYTHON" "$here/run-recipe.py" "$@"
