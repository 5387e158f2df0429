#!/usr/bin/env bash
# Stand-in for eugr/spark-vllm-docker's build-and-copy.sh in gx10-ops tests. It builds the image
# with the real engine (`docker build` of ./Dockerfile, FROM a busybox test base) and reports the
# versions a real build would: vLLM from the wheel in wheels/, torch and CUDA from ./standin-torch,
# so a test makes the build regress the way the seed's did by writing "2.10.0+cpu None" there.
# The copy flags fail loudly: gx10-ops must never let the launcher copy an unverified image.
set -euo pipefail
cd "$(dirname "$0")"
tag=vllm-node
transformers=4.57.6
use_wheels=false
while [ $# -gt 0 ]; do
  case $1 in
    -t | --tag) tag=$2; shift 2 ;;
    --use-wheels) use_wheels=true; shift ;;
    --pre-tf | --tf5) transformers=4.57.1; shift ;;
    -c | --copy-to | --copy-to=* | --copy-parallel)
      echo "stand-in build-and-copy.sh: $1 would copy an unverified image" >&2; exit 64 ;;
    *) echo "stand-in build-and-copy.sh: unsupported flag $1" >&2; exit 64 ;;
  esac
done
$use_wheels || { echo "stand-in build-and-copy.sh: only --use-wheels builds are modelled" >&2; exit 64; }
wheel=$(find wheels -maxdepth 1 -name 'vllm-*.whl' | head -n 1)
[ -n "$wheel" ] || { echo "stand-in build-and-copy.sh: no vllm wheel in wheels/" >&2; exit 65; }
vllm=$(basename "$wheel" | sed 's/^vllm-//; s/-cp[0-9].*$//')
read -r torch cuda < standin-torch
echo "Building $tag with vllm $vllm, torch $torch (CUDA $cuda), transformers $transformers"
docker build --build-arg "TORCH=$torch" --build-arg "CUDA=$cuda" --build-arg "VLLM=$vllm" \
  --build-arg "TRANSFORMERS=$transformers" -f Dockerfile -t "$tag" .
echo "Build complete: $tag"
