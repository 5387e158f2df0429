#!/bin/sh
# The seed cluster's per-model wrapper: remove the previous container on every node, then launch.
cd "$(dirname "$0")" || exit 1
. ./.env
for n in $(echo "$CLUSTER_NODES" | tr ',' ' '); do
  if [ "$n" = "$LOCAL_IP" ]; then docker rm -f "$CONTAINER_NAME" >/dev/null 2>&1 &
  else ssh -o BatchMode=yes "$n" "docker rm -f $CONTAINER_NAME" >/dev/null 2>&1 & fi
done
wait
exec ./run-recipe.sh recipes/4x-spark-cluster/nemotron-3-ultra-nvfp4.yaml -d --master-port 29520 "$@"
